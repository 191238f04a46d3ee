"""Pinhole cameras, rigid poses, projection, voxel keys and nearest neighbours.

Conventions: camera optical frame (x right, y down, z forward); poses are 4x4 camera-to-world
matrices in metres; depth images are float32 metres with 0 meaning "no measurement".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class GeometryError(ValueError):
    """Invalid camera intrinsics, pose or image geometry."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise GeometryError(f"intrinsics must be finite, got {self}")
        if self.fx <= 0 or self.fy <= 0:
            raise GeometryError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise GeometryError(f"image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_matrix(cls, k: np.ndarray, width: int, height: int) -> CameraIntrinsics:
        k = np.asarray(k, dtype=np.float64)
        if k.shape != (3, 3):
            raise GeometryError(f"K must be 3x3, got shape {k.shape}")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height))

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera seen at another resolution (e.g. a feature map of H' x W')."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )


def validate_pose(pose: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """Return ``pose`` as float64 4x4 after checking it is a finite rigid transform."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise GeometryError(f"pose must be 4x4, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise GeometryError("pose contains NaN or inf")
    rotation = pose[:3, :3]
    if (
        not np.allclose(rotation @ rotation.T, np.eye(3), atol=tolerance)
        or abs(np.linalg.det(rotation) - 1) > tolerance
    ):
        raise GeometryError("pose rotation is not orthonormal with determinant +1 (non-rigid transform)")
    if not np.allclose(pose[3], [0, 0, 0, 1], atol=tolerance):
        raise GeometryError(f"pose last row must be [0 0 0 1], got {pose[3]}")
    return pose


def look_along(position: np.ndarray, forward: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (optical frame: x right, y down, z forward) at ``position`` looking along
    ``forward``, with no roll about ``up``."""
    forward = np.asarray(forward, dtype=np.float64)
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    pose[:3, 3] = position
    return pose


def transform_points(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to Nx3 points."""
    # einsum, not ``points @ R.T``: an N x 3 by 3 x 3 matmul goes to multi-threaded BLAS, whose
    # threads spin on busy CPUs (measured 8x more CPU time for 285k points on 2 shared cores).
    return np.einsum("nj,ij->ni", points, pose[:3, :3]) + pose[:3, 3]


def backproject_depth(
    depth_m: np.ndarray, intrinsics: CameraIntrinsics, pose_c2w: np.ndarray, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Lift valid depth pixels to world points; returns (Nx3 float32 points, Nx2 int pixel (v, u))."""
    depth = np.asarray(depth_m)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise GeometryError(f"depth is {depth.shape[::-1]} but intrinsics are {intrinsics.width}x{intrinsics.height}")
    sub = depth[::stride, ::stride]
    v, u = np.nonzero(np.isfinite(sub) & (sub > 0))
    z = sub[v, u].astype(np.float32)
    v, u = v * stride, u * stride
    x = (u - intrinsics.cx) / intrinsics.fx * z
    y = (v - intrinsics.cy) / intrinsics.fy * z
    cam = np.stack([x, y, z], axis=1).astype(np.float32)
    world = transform_points(cam, np.asarray(pose_c2w, dtype=np.float32))
    return world, np.stack([v, u], axis=1)


def project_points(
    points_world: np.ndarray, intrinsics: CameraIntrinsics, pose_c2w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points; returns (u float, v float, z camera depth). Points behind have z <= 0."""
    world_to_cam = np.linalg.inv(pose_c2w)
    cam = transform_points(np.asarray(points_world, dtype=np.float64), world_to_cam)
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = cam[:, 0] / z * intrinsics.fx + intrinsics.cx
        v = cam[:, 1] / z * intrinsics.fy + intrinsics.cy
    return u, v, z


_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)
_KEY_MASK = (1 << _KEY_BITS) - 1


def voxel_coords(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Integer voxel coordinates (Nx3 int64) of points for a given voxel edge length."""
    return np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)


def pack_voxel_keys(coords: np.ndarray) -> np.ndarray:
    """Pack Nx3 int voxel coordinates into one int64 key each (21 bits per axis, +-1M voxels)."""
    shifted = np.asarray(coords, dtype=np.int64) + _KEY_OFFSET
    if shifted.size and (shifted.min() < 0 or shifted.max() > _KEY_MASK):
        raise GeometryError("voxel coordinates exceed the +-2^20 range of packed keys")
    return (shifted[:, 0] << (2 * _KEY_BITS)) | (shifted[:, 1] << _KEY_BITS) | shifted[:, 2]


def unpack_voxel_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_voxel_keys`."""
    keys = np.asarray(keys, dtype=np.int64)
    coords = np.stack(
        [(keys >> (2 * _KEY_BITS)) & _KEY_MASK, (keys >> _KEY_BITS) & _KEY_MASK, keys & _KEY_MASK], axis=1
    )
    return coords - _KEY_OFFSET


def knn(points: np.ndarray, k: int, queries: np.ndarray | None = None, exclude_self: bool = False):
    """k nearest neighbours with scipy's cKDTree; returns (distances, indices), each Q x k.

    With ``exclude_self`` the query set is ``points`` and each point's own index is dropped.
    Fewer than ``k`` available neighbours is an error, so callers decide how to degrade.
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, dtype=np.float64)
    available = len(points) - (1 if exclude_self else 0)
    if k < 1 or available < k:
        raise GeometryError(f"need at least {k} neighbours, have {max(available, 0)} points")
    tree = cKDTree(points)
    if exclude_self:
        dist, idx = tree.query(points, k=k + 1, workers=-1)
        own = idx == np.arange(len(points))[:, None]
        # Duplicated coordinates can put the point itself anywhere in the row: drop exactly one entry.
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(points)), drop] = False
        return dist[keep].reshape(-1, k), idx[keep].reshape(-1, k)
    dist, idx = tree.query(points if queries is None else np.asarray(queries, dtype=np.float64), k=k, workers=-1)
    if k == 1:
        dist, idx = dist[:, None], idx[:, None]
    return dist, idx
