"""PNG renders of labeled point clouds: top-down and perspective panels side by side, with a legend.

Points are splatted into an image with a numpy z-buffer and shown with ``imshow`` (matplotlib Agg),
which stays well under a second for 100k+ points where a matplotlib scatter takes many seconds.
Labels outside ``[0, C)`` (background, unlabeled ground truth) are drawn grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovseg3d_core.geometry import CameraIntrinsics, look_along, project_points

UNLABELED_COLOR = np.array([0.72, 0.72, 0.72])
VIEWS = ("top", "perspective")


class RenderError(ValueError):
    """Points, labels or view settings cannot be rendered."""


def label_palette(num_classes: int) -> np.ndarray:
    """``(num_classes + 1) x 3`` RGB in [0, 1]: distinct class colours, then grey for background."""
    import matplotlib

    if num_classes <= 20:
        tab20 = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
        tab20b = matplotlib.colormaps["tab20b"](np.arange(20))[:, :3]
        # Dark shades first so small sets stay distinct; tab20's greys (14, 15) would read as background.
        dark, light = [i for i in range(0, 20, 2) if i != 14], [i for i in range(1, 20, 2) if i != 15]
        colors = np.concatenate([tab20[dark], tab20[light], tab20b[[0, 8]]])[:num_classes]
    else:
        colors = matplotlib.colormaps["hsv"](np.linspace(0, 1, num_classes, endpoint=False))[:, :3]
    return np.vstack([colors, UNLABELED_COLOR])


def score_colors(scores: np.ndarray) -> np.ndarray:
    """N x 3 uint8 inferno colours of scores scaled over their own range (dark = weakest match)."""
    import matplotlib

    if len(scores) == 0:
        return np.zeros((0, 3), np.uint8)
    scaled = (scores - scores.min()) / max(float(scores.max() - scores.min()), 1e-6)
    return (matplotlib.colormaps["inferno"](scaled)[:, :3] * 255).astype(np.uint8)


def rasterize(
    positions: np.ndarray,
    colors: np.ndarray,
    view: str = "top",
    size: int = 600,
    splat: int = 2,
    azimuth_deg: float = -60.0,
    elevation_deg: float = 35.0,
) -> np.ndarray:
    """Splat coloured points into a ``size`` x ``size`` RGB float image (white background).

    ``top`` looks straight down the z axis (orthographic, highest point wins); ``perspective`` is a
    pinhole camera on a sphere around the cloud, nearest point wins.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) == 0:
        raise RenderError(f"positions must be a non-empty N x 3 array, got shape {positions.shape}")
    if not np.isfinite(positions).all():
        raise RenderError("positions contain NaN or inf")
    if view not in VIEWS:
        raise RenderError(f"view must be one of {VIEWS}, got {view!r}")
    low, high = positions.min(axis=0), positions.max(axis=0)
    center = (low + high) / 2
    if view == "top":
        extent = max(float((high - low)[:2].max()), 1e-6) * 1.02
        u = (positions[:, 0] - center[0]) / extent * (size - 1) + (size - 1) / 2
        v = (center[1] - positions[:, 1]) / extent * (size - 1) + (size - 1) / 2
        nearness = positions[:, 2]
    else:
        radius = max(float(np.linalg.norm(high - low)) / 2, 1e-6)
        az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
        direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        eye = center + 1.8 * radius * direction
        pose = look_along(eye, center - eye, np.array([0.0, 0.0, 1.0]))
        focal = size / (2 * np.tan(np.radians(25)))
        intrinsics = CameraIntrinsics(focal, focal, (size - 1) / 2, (size - 1) / 2, size, size)
        u, v, z = project_points(positions, intrinsics, pose)
        nearness = -z
        keep = z > 1e-6
        u, v, nearness, colors = u[keep], v[keep], nearness[keep], np.asarray(colors)[keep]
    image = np.ones((size, size, 3))
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    offsets = [(du, dv) for du in range(splat) for dv in range(splat)]
    ui = np.concatenate([ui + du for du, _ in offsets])
    vi = np.concatenate([vi + dv for _, dv in offsets])
    nearness = np.tile(nearness, len(offsets))
    rgb = np.tile(np.asarray(colors, dtype=np.float64), (len(offsets), 1))
    inside = (ui >= 0) & (ui < size) & (vi >= 0) & (vi < size)
    pixel = vi[inside] * size + ui[inside]
    order = np.lexsort((nearness[inside], pixel))
    last = np.r_[pixel[order][1:] != pixel[order][:-1], True]
    winners = order[last]
    image.reshape(-1, 3)[pixel[winners]] = rgb[inside][winners]
    return image


def render_label_panels(
    path: str | Path,
    positions: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    view: str = "top",
    size: int = 600,
    title: str | None = None,
) -> Path:
    """Write a PNG with one panel per (title, labels) pair side by side and a shared class legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if not panels:
        raise RenderError("need at least one panel")
    positions = np.asarray(positions)
    palette = label_palette(len(class_names))
    present: set[int] = set()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.2, 4.6), squeeze=False)
    for ax, (name, labels) in zip(axes[0], panels, strict=True):
        labels = np.asarray(labels).ravel()
        if labels.shape[0] != len(positions):
            raise RenderError(f"panel {name!r} has {labels.shape[0]} labels for {len(positions)} points")
        index = np.where((labels >= 0) & (labels < len(class_names)), labels, len(class_names)).astype(np.int64)
        present.update(np.unique(index).tolist())
        ax.imshow(rasterize(positions, palette[index], view=view, size=size), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    names = [*class_names, "unlabeled / background"]
    handles = [Patch(color=palette[i], label=names[i]) for i in sorted(present)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
