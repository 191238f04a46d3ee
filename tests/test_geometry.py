"""Camera, pose, projection, voxel-key and kNN primitives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ovseg3d_core.geometry import (
    CameraIntrinsics,
    GeometryError,
    backproject_depth,
    knn,
    pack_voxel_keys,
    project_points,
    unpack_voxel_keys,
    validate_pose,
    voxel_coords,
)

K = CameraIntrinsics(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)


def _pose(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pose = np.eye(4)
    pose[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    pose[:3, 3] = rng.normal(size=3)
    return pose


def test_backprojected_pixels_project_back_to_themselves():
    depth = np.random.default_rng(1).uniform(0.5, 4.0, size=(480, 640)).astype(np.float32)
    depth[::7, ::5] = 0
    pose = _pose(3)
    points, pixels = backproject_depth(depth, K, pose)
    assert len(points) == int((depth > 0).sum())
    u, v, z = project_points(points, K, pose)
    np.testing.assert_allclose(u, pixels[:, 1], atol=2e-3)
    np.testing.assert_allclose(v, pixels[:, 0], atol=2e-3)
    np.testing.assert_allclose(z, depth[pixels[:, 0], pixels[:, 1]], rtol=1e-5)


def test_scaled_intrinsics_map_pixel_centres():
    half = K.scaled(320, 240)
    point = np.array([[0.3, -0.2, 2.0]])
    u, v, _ = project_points(point, K, np.eye(4))
    u2, v2, _ = project_points(point, half, np.eye(4))
    np.testing.assert_allclose((u2 + 0.5) * 2 - 0.5, u, atol=1e-9)
    np.testing.assert_allclose((v2 + 0.5) * 2 - 0.5, v, atol=1e-9)


@pytest.mark.parametrize("bad", [dict(fx=0.0), dict(fy=-1.0), dict(cx=float("nan")), dict(width=0)])
def test_invalid_intrinsics_raise(bad):
    with pytest.raises(GeometryError):
        CameraIntrinsics(**{**K.__dict__, **bad})


def test_pose_validation():
    validate_pose(_pose(2))
    scaled = _pose(2)
    scaled[:3, :3] *= 1.5
    for bad in (scaled, np.full((4, 4), np.nan), np.eye(3), np.diag([1.0, 1.0, -1.0, 1.0])):
        with pytest.raises(GeometryError):
            validate_pose(bad)


def test_voxel_keys_round_trip_and_uniqueness():
    rng = np.random.default_rng(0)
    coords = rng.integers(-(2**20), 2**20 - 1, size=(10000, 3))
    np.testing.assert_array_equal(unpack_voxel_keys(pack_voxel_keys(coords)), coords)
    assert len(np.unique(pack_voxel_keys(coords))) == len(np.unique(coords, axis=0))
    np.testing.assert_array_equal(voxel_coords(np.array([[0.019, -0.001, 0.04]]), 0.02), [[0, -1, 2]])
    with pytest.raises(GeometryError):
        pack_voxel_keys(np.array([[2**21, 0, 0]]))


def test_knn_excluding_self_matches_brute_force():
    points = np.random.default_rng(4).normal(size=(300, 3))
    points[10] = points[11]  # duplicated coordinates must still drop exactly the point itself
    dist, idx = knn(points, 5, exclude_self=True)
    assert idx.shape == (300, 5)
    assert not np.any(idx == np.arange(300)[:, None])
    brute = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(brute, np.inf)
    np.testing.assert_allclose(np.sort(dist, axis=1), np.sort(brute, axis=1)[:, :5], atol=1e-12)
    with pytest.raises(GeometryError):
        knn(points[:3], 5, exclude_self=True)
