"""Views of a scan that has points but no faces (Pointcept's layout: coord, color, normal, segment, instance).

The points' surface is reconstructed once (screened Poisson from the oriented normals, trimmed to
where points support it), every surface vertex takes the label and instance id of its nearest
input point (and a blend of the nearest points' colours), and
:class:`~ovseg3d_core.data.scenes.rendering.MeshRaycaster` renders it: views, trajectories and coverage
then work exactly as for a mesh.

Chosen by measurement on scene0000_00: its 81,369 mesh vertices (with their colours, ScanNet20
labels, instance ids and vertex normals) as the points, 12 views of 640x480 along
``generate_trajectory(mesh, 12, seed=7)``, compared with the mesh's own renders on the pixels
where both have depth (2 shared cores; "seconds" is the one-off build, then per view; rows marked
* come from an earlier run of the same script, the others from one run)::

    candidate                          labels  instances  median |dz|  p90 |dz|  mesh pixels  seconds
    Poisson depth 9, vertex transfer   97.2%   96.9%      3 mm         12 mm     100.0%       5.0 + 0.077
    Poisson depth 8, vertex transfer   97.1%   96.7%      3 mm         14 mm     100.0%       2.9 + 0.075
    Poisson depth 9, per-pixel nearest 97.9%   97.6%*     3 mm         12 mm     100.0%       4.4 + 0.210
    ball pivoting (4, 8, 16 cm)        97.5%   97.2%      0 mm          7 mm      95.7%       1.1 + 0.079
    splats r = 0.75 x 2nd-NN distance  95.9%   95.4%      1 mm         21 mm      96.1%       0.1 + 0.081
      * the same + hole filling        95.9%   95.4%      2 mm         20 mm      99.5%       0.1 + 0.090
    splats r = 3rd-NN distance         94.6%   94.1%      2 mm         65 mm      99.97%      0.1 + 0.118
    the mesh itself                                                                           0.071 per view

"mesh pixels" is the share of the mesh render's depth pixels the candidate also has depth on.
Ball pivoting agrees best where it has surface but leaves 4% of each view empty, where background
shows through. Splats (a numba z-buffer of discs oriented by the normals, labelled by the nearest
disc centre, holes up to 3 px filled from the nearest pixel) stay 1.3% below Poisson in
agreement with a p90 depth error twice as large, and growing them to close holes spills them over
silhouettes (the 65 mm p90). Poisson has no holes, agrees on 97%, renders at the speed of the
mesh itself, and its surface also serves the trajectory generators, which ray-cast a surface.
Per-pixel nearest-point labels would buy 0.7% for 2.7x the time per view, so labels go to the
surface's vertices. The default here (one reconstruction thread, colours blended from 3 points)
measured 97.2% / 96.9% / 3 mm / 12 mm, 6.5 s + 0.088 s per view (the mesh 0.074 s) and a mean
colour error of 5.6 (of 255) per channel in a later run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.data.scenes.rendering import (
    DEFAULT_IGNORE_LABEL,
    DEFAULT_RENDER_INTRINSICS,
    MeshRaycaster,
    render_views,
)
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.geometry import CameraIntrinsics, knn

# Surface vertices blend the colours of this many nearest points (inverse distance): against the
# mesh render of scene0000_00 the mean colour error falls from 6.2 (nearest point) to 5.6 per
# channel and the patchwork of nearest-point colours smooths out; labels stay nearest-point.
COLOR_NEIGHBOURS = 3


class PointCloudError(ValueError):
    """Points (or their per-point arrays) cannot be turned into a surface."""


@dataclass
class SurfaceConfig(Config):
    """How the surface of a point scan is reconstructed."""

    poisson_depth: int = setting(
        9,
        "octree depth of the Poisson reconstruction (cells of ~1.1 x extent / 2^depth: 1.9 cm in a 9 m room)",
        low=5,
        high=12,
    )
    max_gap_m: float = setting(
        0.1,
        "surface farther than this from every input point is cut away (Poisson closes an open room over its top)",
        low=0.005,
        high=2.0,
    )
    threads: int = setting(
        1,
        "threads of the reconstruction: 1 gives the same surface on every run (views and trajectories reproduce); "
        "-1 (every core) gives slightly different vertices each run (81k points: 6.4-7.0 s vs 6.5-10 s, 2 busy cores)",
        low=-1,
        high=1024,
    )

    def validate(self) -> None:
        super().validate()
        if self.threads == 0:
            raise ConfigError("SurfaceConfig.threads must be -1 (every core) or a positive count, got 0")


@dataclass(eq=False)
class PointSurface:
    """A surface reconstructed from points: float32 Vx3 ``vertices``, int64 Tx3 ``triangles``, uint8 Vx3
    ``colors`` and ``source``, the index of each vertex's nearest input point (how per-point arrays
    reach the surface, see :meth:`transfer`; colours blend the nearest points). Mesh-like, so
    :class:`MeshRaycaster` takes it."""

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray
    source: np.ndarray

    def transfer(self, values: np.ndarray | None) -> np.ndarray | None:
        """Per-point ``values`` (labels, instance ids, ...) as per-vertex values of the surface."""
        if values is None:
            return None
        values = np.asarray(values)
        if len(values) <= int(self.source.max()):
            raise PointCloudError(f"{len(values)} values for a surface built from more points")
        return values[self.source]


def _checked_points(points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(points, dtype=np.float64)
    normals = np.asarray(normals, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 4:
        raise PointCloudError(f"points must be an N x 3 array of at least 4 points, got shape {points.shape}")
    if normals.shape != points.shape:
        raise PointCloudError(f"normals must match the points' shape {points.shape}, got {normals.shape}")
    if not (np.isfinite(points).all() and np.isfinite(normals).all()):
        raise PointCloudError("points or normals contain NaN or inf")
    return points, normals


def _checked_ids(values: np.ndarray | None, count: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    ids = np.asarray(values)
    if ids.shape != (count,) or not np.issubdtype(ids.dtype, np.integer):
        raise PointCloudError(f"{what} must be {count} integers, got {ids.shape} {ids.dtype}")
    return ids


def reconstruct_surface(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray | None = None, config: SurfaceConfig | None = None
) -> PointSurface:
    """Screened Poisson surface of oriented points, trimmed to within ``max_gap_m`` of a point.

    Normals must point out of the surfaces towards where a scanner saw them from (mesh vertex
    normals and Pointcept's ``normal`` arrays do); zero normals (a mesh vertex on no triangle) do
    not steer the reconstruction but still pass on their colour and labels. Each vertex takes the
    inverse-distance blend of its :data:`COLOR_NEIGHBOURS` nearest points' colours. Poisson fills
    small holes and, in a room without a ceiling, closes it with a surface no point supports: the
    trim removes that lid and anything else farther than ``max_gap_m`` from the input. 6-10 s for
    81k points on one thread.
    """
    import open3d as o3d

    config = config or SurfaceConfig()
    points, normals = _checked_points(points, normals)
    if colors is None:
        colors = np.full(points.shape, 128, dtype=np.uint8)
    colors = np.asarray(colors)
    if colors.shape != points.shape or colors.dtype != np.uint8:
        raise PointCloudError(f"colors must be {points.shape} uint8, got {colors.shape} {colors.dtype}")
    length = np.linalg.norm(normals, axis=1)
    oriented = length > 1e-6
    if oriented.sum() < 4:
        raise PointCloudError("fewer than 4 points have a normal: cannot reconstruct a surface")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[oriented]))
    cloud.normals = o3d.utility.Vector3dVector(normals[oriented] / length[oriented, None])
    mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        cloud, depth=config.poisson_depth, n_threads=config.threads
    )
    vertices = np.asarray(mesh.vertices)
    triangles = np.asarray(mesh.triangles, dtype=np.int64)
    if len(triangles) == 0:
        raise PointCloudError("Poisson reconstruction produced no surface")
    gap, nearest = knn(points, COLOR_NEIGHBOURS, queries=vertices)
    supported = np.isfinite(vertices).all(axis=1) & (gap[:, 0] <= config.max_gap_m)
    triangles = triangles[supported[triangles].all(axis=1)]
    if len(triangles) == 0:
        raise PointCloudError(f"no reconstructed surface lies within max_gap_m={config.max_gap_m} of the points")
    used = np.unique(triangles)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    source = nearest[used, 0].astype(np.int64)
    weights = 1.0 / np.maximum(gap[used], 1e-3)
    blended = np.einsum("nk,nkc->nc", weights / weights.sum(axis=1, keepdims=True), colors[nearest[used]])
    return PointSurface(
        vertices=vertices[used].astype(np.float32),
        triangles=remap[triangles],
        colors=np.clip(np.rint(blended), 0, 255).astype(np.uint8),
        source=source,
    )


def point_raycaster(
    points: np.ndarray,
    colors: np.ndarray,
    normals: np.ndarray,
    labels: np.ndarray | None = None,
    instances: np.ndarray | None = None,
    config: SurfaceConfig | None = None,
) -> MeshRaycaster:
    """A :class:`MeshRaycaster` of the reconstructed surface carrying the points' labels and instance ids.

    Build it once per scan and pass it to :func:`~ovseg3d_core.data.scenes.rendering.render_views`,
    :func:`~ovseg3d_core.data.scenes.rendering.generate_trajectory` or
    :func:`~ovseg3d_core.data.scenes.rendering.generate_coverage_trajectory`. Each pixel shows the label
    (N ints, e.g. Pointcept's ``segment20``) and instance (N ints, ``instance``) of the input point
    nearest to the surface vertex that dominates the hit triangle, and colours (N x 3 uint8)
    blended from the nearest points.
    """
    count = len(np.asarray(points))
    labels = _checked_ids(labels, count, "labels")
    instances = _checked_ids(instances, count, "instances")
    surface = reconstruct_surface(points, normals, colors, config)
    return MeshRaycaster(surface, surface.transfer(labels), surface.transfer(instances))


def render_point_views(
    points: np.ndarray,
    colors: np.ndarray,
    normals: np.ndarray,
    labels: np.ndarray | None,
    instances: np.ndarray | None,
    poses: np.ndarray,
    intrinsics: CameraIntrinsics = DEFAULT_RENDER_INTRINSICS,
    ignore_label: int = DEFAULT_IGNORE_LABEL,
    config: SurfaceConfig | None = None,
    progress: bool = False,
) -> list[RGBDFrame]:
    """:func:`~ovseg3d_core.data.scenes.rendering.render_views` for a scan given as points (one frame per pose).

    Frames are as for a mesh: colour, depth in whole millimetres (``frame.depth_mm`` is the uint16
    image), ``labels`` (``ignore_label`` where nothing is hit; pass -1 for Pointcept's convention)
    and ``instances`` (-1 where nothing is hit). Reconstructs the surface on every call: for more
    than one batch of views build :func:`point_raycaster` once.
    """
    raycaster = point_raycaster(points, colors, normals, labels, instances, config)
    return render_views(raycaster, None, poses, intrinsics, ignore_label, progress)
