"""Local normals of the voxel map: PCA over neighbouring voxels (Open3D), updated where the geometry changed.

A normal is a function of the voxels inside its search ball, so after a change only the voxels
within the search radius of a voxel that appeared, moved or was evicted need re-estimating, by
the same Open3D call on a crop of the map holding every voxel within the radius of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.geometry import unpack_voxel_keys
from ovseg3d_core.grid_neighbourhood import chebyshev_neighbourhood
from ovseg3d_core.scene.config import SceneConfig

_NORMALS_FULL_FRACTION = 0.3  # above this share of voxels to re-estimate, one Open3D pass over the map is cheaper


@dataclass
class RawNormals:
    """Unoriented normals of the first ``len(normals)`` slots, the positions they were estimated at, and the
    packed keys of voxels evicted since (their neighbours' normals are stale)."""

    normals: np.ndarray
    positions: np.ndarray
    removed: np.ndarray

    def compacted(self, keep: np.ndarray, keys: np.ndarray) -> RawNormals:
        """The estimate for the slots ``keep`` (sorted) of a compaction; ``keys``: the slots' keys before it."""
        m = len(self.normals)
        cached = keep[keep < m]
        gone = np.ones(m, dtype=bool)
        gone[cached] = False
        return RawNormals(self.normals[cached], self.positions[cached], np.concatenate([self.removed, keys[:m][gone]]))


def estimate_normals(
    positions: np.ndarray, keys: np.ndarray, previous: RawNormals | None, config: SceneConfig
) -> RawNormals:
    """Unoriented PCA normals of every voxel (``positions``, packed ``keys``), reusing ``previous``
    where no voxel within the search radius changed; more than ``_NORMALS_FULL_FRACTION`` of the
    map to redo, or no earlier estimate, runs one full pass."""
    n = len(positions)
    if previous is not None:
        m = len(previous.positions)
        moved = np.flatnonzero(np.any(positions[:m] != previous.positions, axis=1))
        changed = np.concatenate([moved, np.arange(m, n)])
        seeds = np.concatenate([keys[changed], previous.removed])
        coords = unpack_voxel_keys(keys)
        reach = int(np.ceil(config.normal_radius_voxels - 1e-9))
        redo = chebyshev_neighbourhood(coords, unpack_voxel_keys(seeds), reach) if len(seeds) else None
        if redo is None:
            raw = previous.normals
        elif np.count_nonzero(redo) <= _NORMALS_FULL_FRACTION * n:
            crop = np.flatnonzero(chebyshev_neighbourhood(coords, coords[redo], reach))
            raw = np.empty((n, 3), np.float32)
            raw[:m] = previous.normals
            redo = np.flatnonzero(redo)
            raw[redo] = _open3d_normals(positions[crop], config)[np.searchsorted(crop, redo)]
        else:
            raw = _open3d_normals(positions, config)
    else:
        raw = _open3d_normals(positions, config)
    return RawNormals(raw, positions, np.empty(0, np.int64))


def orient_normals(raw: np.ndarray, view_sum: np.ndarray) -> np.ndarray:
    """A copy of ``raw`` with each normal flipped to face the summed direction towards the cameras that saw it."""
    normals = raw.copy()
    flip = np.einsum("ij,ij->i", normals, view_sum) < 0
    normals[flip] *= -1
    return normals


def _open3d_normals(positions: np.ndarray, config: SceneConfig) -> np.ndarray:
    import open3d as o3d  # lazy: heavy, and only the estimation needs it

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(positions.astype(np.float64)))
    radius = config.normal_radius_voxels * config.voxel_size
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=config.normal_max_nn))
    return np.asarray(cloud.normals, dtype=np.float32)
