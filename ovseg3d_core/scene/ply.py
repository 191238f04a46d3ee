"""PLY export of per-voxel data (labelled maps for point-cloud viewers such as MeshLab or CloudCompare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ply(path: str | Path, positions: np.ndarray, fields: dict[str, np.ndarray]) -> Path:
    """Write ``positions`` (N x 3) and per-point ``fields`` (N rows each, e.g. ``colors``, ``normals``,
    ``label``) as a binary PLY point cloud (Open3D tensor API); floats are stored as float32, other
    non-uint8 values as int32."""
    import open3d as o3d  # lazy: heavy, and only the export needs it

    path = Path(path)
    cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(positions.astype(np.float32)))
    for name, values in fields.items():
        values = np.asarray(values)
        if len(values) != len(positions):
            raise ValueError(f"PLY field {name!r} has {len(values)} rows for {len(positions)} voxels")
        values = values.reshape(len(positions), -1)
        if values.dtype.kind == "f":
            values = values.astype(np.float32)
        elif values.dtype != np.uint8:
            values = values.astype(np.int32)
        cloud.point[name] = o3d.core.Tensor(np.ascontiguousarray(values))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.t.io.write_point_cloud(str(path), cloud, write_ascii=False):
        raise OSError(f"Open3D could not write {path}")
    return path
