"""Labeled-cloud PNG renders: z-buffer order, palette, panels from the real ScanNet scan."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES, load_scannet_scan
from ovseg3d_core.viz.cloud_render import RenderError, label_palette, rasterize, render_label_panels


def test_palette_has_distinct_class_colours_and_grey_background_last():
    palette = label_palette(20)
    assert palette.shape == (21, 3)
    assert len({tuple(np.round(c, 3)) for c in palette}) == 21
    # No class colour is a grey that could be mistaken for background.
    assert (np.ptp(palette[:-1], axis=1) > 0.05).all()
    assert label_palette(50).shape == (51, 3)


def test_top_view_shows_the_highest_point_and_perspective_the_nearest():
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    colors = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    image = rasterize(positions, colors, view="top", size=21, splat=1)
    np.testing.assert_allclose(image[10, 10], [0, 1, 0])  # the upper point covers the lower one
    assert (image == 1.0).all(axis=2).sum() == 21 * 21 - 3
    # Perspective: a small green patch floating above a red floor hides the floor behind it.
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-1, 1, 201)), axis=-1).reshape(-1, 2)
    floor = np.column_stack([grid, np.zeros(len(grid))])
    patch = np.column_stack([0.3 * grid, np.full(len(grid), 0.5)])
    rgb = np.vstack([np.tile([1.0, 0, 0], (len(grid), 1)), np.tile([0, 1.0, 0], (len(grid), 1))])
    persp = rasterize(np.vstack([floor, patch]), rgb, view="perspective", size=101, splat=1, elevation_deg=60.0)
    np.testing.assert_allclose(persp[50, 50], [0, 1, 0])
    assert (np.abs(persp - [1, 0, 0]).sum(axis=2) < 1e-9).sum() > 500


def test_panels_of_the_scannet_scan_are_written(tmp_path):
    scan = load_scannet_scan()
    points, gt = scan.vertices[::3], scan.scannet20_ids[::3]
    path = render_label_panels(tmp_path / "panel.png", points, [("a", gt), ("b", np.zeros_like(gt))], SCANNET20_CLASSES)
    image = matplotlib.image.imread(path)
    assert image.shape[1] > image.shape[0] > 300
    assert (image[..., :3] < 0.9).any(axis=2).mean() > 0.05  # the clouds were drawn, not a blank page


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(RenderError, match="non-empty"):
        rasterize(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(RenderError, match="view"):
        rasterize(np.zeros((2, 3)), np.zeros((2, 3)), view="side")
    with pytest.raises(RenderError, match="labels"):
        render_label_panels(tmp_path / "x.png", np.zeros((3, 3)), [("a", np.zeros(2, int))], ("wall",))
    with pytest.raises(RenderError, match="panel"):
        render_label_panels(tmp_path / "x.png", np.zeros((3, 3)), [], ("wall",))
