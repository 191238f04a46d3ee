"""The common retrieval sample: one shape as a coloured point cloud, multi-view renders and captions.

Every source (Text2Shape voxels, ShapeNet meshes, procedural chairs/tables) produces
:class:`ShapeSample` through :func:`make_shape_sample`, so the retrieval model sees one format:
points N x 6 (xyz in a unit bounding sphere centred on the bounding-box centre, y up; rgb in
[0, 1]) and M views (uint8 RGB) from a fixed camera ring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.data.shapes.mesh import ColoredMesh, ShapeDataError
from ovseg3d_core.data.shapes.render import ViewRenderConfig, render_views


@dataclass
class ShapeSampleConfig(Config):
    """How a shape is turned into points and views (paper: 8,192 xyzrgb points, 6 views)."""

    n_points: int = setting(8192, "surface points per shape (xyzrgb)", low=16, high=1_000_000)
    views: ViewRenderConfig = setting(ViewRenderConfig(), "multi-view render settings")


@dataclass
class ShapeSample:
    """One shape for retrieval; ``attributes`` holds part-level facts (e.g. procedural part colours)."""

    shape_id: str
    category: str
    points: np.ndarray
    views: np.ndarray
    captions: list[str]
    attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 6 or self.points.dtype != np.float32:
            raise ShapeDataError(
                f"{self.shape_id}: points must be N x 6 float32, got {self.points.shape} {self.points.dtype}"
            )
        if len(self.points) == 0 or not np.all(np.isfinite(self.points)):
            raise ShapeDataError(f"{self.shape_id}: points are empty or not finite")
        rgb = self.points[:, 3:]
        if rgb.min() < 0 or rgb.max() > 1:
            raise ShapeDataError(f"{self.shape_id}: point colours must lie in [0, 1]")
        if self.views.ndim != 4 or self.views.shape[-1] != 3 or self.views.dtype != np.uint8:
            raise ShapeDataError(f"{self.shape_id}: views must be M x H x W x 3 uint8, got {self.views.shape}")
        if any(not isinstance(c, str) for c in self.captions):
            raise ShapeDataError(f"{self.shape_id}: captions must be strings")


def make_shape_sample(
    shape_id: str,
    category: str,
    mesh: ColoredMesh,
    captions: Sequence[str],
    config: ShapeSampleConfig | None = None,
    seed: int = 0,
    attributes: Mapping[str, str] | None = None,
) -> ShapeSample:
    """Normalise ``mesh``, sample its surface (deterministic in ``seed``) and render its views."""
    config = config or ShapeSampleConfig()
    mesh = mesh.normalized()
    points = mesh.sample_points(config.n_points, np.random.default_rng(seed))
    return ShapeSample(
        shape_id, category, points, render_views(mesh, config.views), list(captions), dict(attributes or {})
    )
