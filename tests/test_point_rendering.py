"""Views of a scan given as points only: agreement with the mesh's own views on ScanNet scene0000_00,
the coverage trajectory, an analytic open box, and the PNG of a view."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.config import ConfigError
from ovseg3d_core.data.scenes.image_io import read_color
from ovseg3d_core.data.scenes.point_rendering import (
    PointCloudError,
    SurfaceConfig,
    point_raycaster,
    reconstruct_surface,
    render_point_views,
)
from ovseg3d_core.data.scenes.rendering import (
    DEFAULT_RENDER_INTRINSICS,
    NO_INSTANCE,
    MeshError,
    MeshRaycaster,
    TrajectoryConfig,
    estimate_floor,
    generate_coverage_trajectory,
    generate_trajectory,
    points_seen,
    render_views,
    view_panels,
    write_view_png,
)
from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, load_scannet_scan
from ovseg3d_core.geometry import CameraIntrinsics, look_along

# Half resolution keeps the module well under a minute; the trajectory probes at its own resolution.
SMALL = DEFAULT_RENDER_INTRINSICS.scaled(320, 240)


@pytest.fixture(scope="module")
def scan():
    return load_scannet_scan()


@pytest.fixture(scope="module")
def normals(scan):
    """Vertex normals of the mesh: what Pointcept's ``normal`` array holds for a ScanNet scan."""
    mesh = scan.to_open3d()
    mesh.compute_vertex_normals()
    return np.asarray(mesh.vertex_normals)


@pytest.fixture(scope="module")
def mesh_caster(scan):
    return MeshRaycaster(scan, scan.scannet20_ids, scan.instance_ids)


@pytest.fixture(scope="module")
def point_caster(scan, normals):
    """Built from per-vertex arrays only: the faces never reach it."""
    return point_raycaster(scan.vertices, scan.colors, normals, scan.scannet20_ids, scan.instance_ids)


@pytest.fixture(scope="module")
def poses(point_caster):
    return generate_coverage_trajectory(point_caster, 12, seed=0, intrinsics=SMALL)


@pytest.fixture(scope="module")
def view_pairs(mesh_caster, point_caster, poses):
    chosen = poses[::3]
    mesh_views = render_views(mesh_caster, None, chosen, SMALL)
    return list(zip(mesh_views, render_views(point_caster, None, chosen, SMALL), strict=True))


def test_point_views_agree_with_mesh_views(view_pairs):
    for mesh_view, point_view in view_pairs:
        both = (mesh_view.depth > 0) & (point_view.depth > 0)
        assert both.sum() > 0.95 * (mesh_view.depth > 0).sum() > 0.5 * both.size  # few holes, a room in view
        assert np.mean(point_view.labels[both] == mesh_view.labels[both]) >= 0.9
        assert np.mean(point_view.instances[both] == mesh_view.instances[both]) >= 0.9
        assert np.median(np.abs(point_view.depth[both] - mesh_view.depth[both])) < 0.03
        colour_error = np.abs(point_view.color[both].astype(int) - mesh_view.color[both].astype(int)).mean()
        assert colour_error < 15


def test_point_views_are_frames_like_mesh_views(view_pairs):
    for _, view in view_pairs:
        view.validate()
        millimetres = view.depth_mm
        np.testing.assert_array_equal(millimetres, np.rint(view.depth.astype(np.float64) * 1000.0))
        assert view.labels.dtype == np.int32 and view.instances.dtype == np.int32
        missing = view.depth == 0
        np.testing.assert_array_equal(view.labels[missing], IGNORE_INDEX)
        np.testing.assert_array_equal(view.instances[missing], NO_INSTANCE)
        np.testing.assert_array_equal(view.color[missing], 0)
        assert len(np.unique(view.instances[~missing])) > 3


def test_coverage_trajectory_sees_most_labelled_points(scan, mesh_caster, point_caster, poses):
    labelled = scan.scannet20_ids != IGNORE_INDEX
    covered = points_seen(scan.vertices, render_views(mesh_caster, None, poses, SMALL))[labelled].mean()
    walk = generate_trajectory(point_caster, len(poses), seed=0)
    walked = points_seen(scan.vertices, render_views(mesh_caster, None, walk, SMALL))[labelled].mean()
    assert covered > 0.7 and covered > walked + 0.1  # measured 0.77 and 0.49


def test_coverage_trajectory_stands_in_free_space_at_eye_height(mesh_caster, point_caster, poses):
    config = TrajectoryConfig()
    floor = estimate_floor(mesh_caster)  # the true floor, not the reconstruction's
    positions = poses[:, :3, 3]
    np.testing.assert_allclose(positions @ floor.up - floor.height, config.eye_height_m, atol=0.03)
    assert mesh_caster.distance(positions).min() > config.clearance_m - config.grid_step_m
    seen_up = estimate_floor(point_caster).up  # the reconstruction's own up, 0.2 degrees off the mesh's
    assert np.degrees(np.arccos(seen_up @ floor.up)) < 1.0
    for pose in poses:
        assert abs(pose[:3, 0] @ seen_up) < 1e-9  # no roll
        assert pose[:3, 2] @ seen_up < 0  # every candidate pitch of the default config looks down
    np.testing.assert_array_equal(generate_coverage_trajectory(point_caster, 12, seed=0, intrinsics=SMALL), poses)


def test_points_seen_counts_only_unoccluded_points(view_pairs):
    view = view_pairs[0][0]
    k = view.intrinsics
    row, col = k.height // 2, k.width // 2
    z = float(view.depth[row, col])
    assert z > 0
    ray = view.pose[:3, :3] @ np.array([(col - k.cx) / k.fx, (row - k.cy) / k.fy, 1.0])
    points = view.pose[:3, 3] + np.outer([z, 0.5 * z, z + 0.5], ray)  # on the surface, in front, behind it
    behind_camera = view.pose[:3, 3] - ray
    np.testing.assert_array_equal(points_seen(np.vstack([points, behind_camera]), [view]), [True, False, False, False])


def _open_box(step: float = 0.04):
    """Points on the floor and four walls of a 4 x 3 x 2.5 m room without a ceiling, normals facing
    in; face f (floor 0, walls x+ 1, x- 2, y+ 3, y- 4) has label f and instance 10 + f."""
    a, b = np.arange(-2.0, 2.0 + 1e-9, step), np.arange(-1.5, 1.5 + 1e-9, step)
    h = np.arange(0.0, 2.5 + 1e-9, step)
    faces = [np.stack(np.meshgrid(a, b, [0.0], indexing="ij"), -1).reshape(-1, 3)]
    faces += [np.stack(np.meshgrid([x], b, h, indexing="ij"), -1).reshape(-1, 3) for x in (2.0, -2.0)]
    faces += [np.stack(np.meshgrid(a, [y], h, indexing="ij"), -1).reshape(-1, 3) for y in (1.5, -1.5)]
    inward = [(0, 0, 1), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0)]
    points = np.concatenate(faces)
    normals = np.concatenate([np.tile(n, (len(f), 1)) for n, f in zip(inward, faces, strict=True)]).astype(float)
    face = np.concatenate([np.full(len(f), i) for i, f in enumerate(faces)])
    colors = np.zeros((len(points), 3), np.uint8)
    colors[:, 0] = 40 * face
    return points, colors, normals, face, face + 10


def test_open_box_renders_its_walls_at_their_depth_and_no_lid():
    points, colors, normals, labels, instances = _open_box()
    intrinsics = CameraIntrinsics(100.0, 100.0, 50.0, 37.0, 101, 75)
    up, eye = np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.2])
    forwards = np.array([[1.0, 0.0, 0.0], [0.0, 0.4, -1.0], [1.0, 0.0, 1.0]])  # the x+ wall, the floor, the sky
    poses = np.stack([look_along(eye, f / np.linalg.norm(f), up) for f in forwards])
    config = SurfaceConfig(poisson_depth=7)
    ahead, down, sky = render_point_views(points, colors, normals, labels, instances, poses, intrinsics, config=config)
    centre = (37, 50)  # the optical axis: its z-depth is the distance along it
    assert abs(ahead.depth[centre] - 2.0) < 0.01 and ahead.labels[centre] == 1 and ahead.instances[centre] == 11
    assert ahead.color[centre][0] == 40
    assert abs(down.depth[centre] - 1.2 * np.sqrt(1.16)) < 0.01
    assert down.labels[centre] == 0 and down.instances[centre] == 10
    # Looking up: Poisson closes the open box over its top; that unsupported lid is trimmed away.
    assert sky.depth[centre] == 0 and sky.labels[centre] == IGNORE_INDEX and sky.instances[centre] == NO_INSTANCE
    assert (sky.labels[-1] == 1).all()  # the bottom row still sees the x+ wall below its top edge


def test_surface_keeps_per_point_arrays(scan, normals):
    subset = np.arange(0, len(scan.vertices), 8)
    points, labels = scan.vertices[subset], scan.scannet20_ids[subset]
    surface = reconstruct_surface(points, normals[subset], scan.colors[subset], SurfaceConfig(poisson_depth=7))
    assert surface.source.max() < len(subset) and surface.triangles.max() < len(surface.vertices)
    np.testing.assert_array_equal(surface.transfer(labels), labels[surface.source])
    gap = np.linalg.norm(surface.vertices - points[surface.source], axis=1)
    assert gap.max() <= SurfaceConfig().max_gap_m + 1e-6
    again = reconstruct_surface(points, normals[subset], scan.colors[subset], SurfaceConfig(poisson_depth=7))
    np.testing.assert_array_equal(again.vertices, surface.vertices)  # one thread: the same surface every run
    np.testing.assert_array_equal(again.triangles, surface.triangles)


def test_view_png_shows_colour_depth_labels_and_instances(view_pairs, tmp_path):
    view = view_pairs[0][1]
    path = tmp_path / "view.png"
    write_view_png(view, path)
    image = read_color(path)
    width = view.intrinsics.width
    assert image.shape == (view.intrinsics.height, 4 * width, 3)
    np.testing.assert_array_equal(image, view_panels(view))
    np.testing.assert_array_equal(image[:, :width], view.color)
    hit = view.depth > 0
    for panel in range(1, 4):
        np.testing.assert_array_equal(image[:, panel * width : (panel + 1) * width][~hit], 0)
    instance_panel = image[:, 3 * width :][hit]
    ids = view.instances[hit]
    a, b = np.unique(ids[ids >= 0])[:2]
    assert not np.array_equal(instance_panel[ids == a][0], instance_panel[ids == b][0])
    assert len(np.unique(instance_panel[ids == a], axis=0)) == 1  # one colour per instance


def test_bad_point_inputs_raise(scan, normals):
    with pytest.raises(PointCloudError, match="normals must match"):
        point_raycaster(scan.vertices, scan.colors, normals[:10])
    with pytest.raises(PointCloudError, match="NaN"):
        point_raycaster(np.full((10, 3), np.nan), np.zeros((10, 3), np.uint8), np.ones((10, 3)))
    with pytest.raises(PointCloudError, match="labels must be"):
        point_raycaster(scan.vertices, scan.colors, normals, labels=np.zeros(len(normals), np.float32))
    with pytest.raises(PointCloudError, match="instances must be"):
        point_raycaster(scan.vertices, scan.colors, normals, instances=np.zeros(5, np.int64))
    with pytest.raises(PointCloudError, match="colors must be"):
        reconstruct_surface(scan.vertices, normals, scan.colors.astype(np.float32))
    with pytest.raises(PointCloudError, match="have a normal"):
        reconstruct_surface(scan.vertices, np.zeros_like(normals))
    with pytest.raises(ConfigError, match="threads"):
        SurfaceConfig(threads=0)
    with pytest.raises(MeshError, match="vertex_instances"):
        MeshRaycaster(scan, vertex_instances=np.zeros(10, np.int64))
