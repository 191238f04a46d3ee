"""Feature lifting: direct projection, occlusion, border crop, fusion modes, real frames, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
from ovseg3d_core.geometry import CameraIntrinsics, GeometryError
from ovseg3d_core.lifting import TOPK_FEATURES, FeatureLifter, LiftingConfig
from ovseg3d_core.scene import SceneConfig, SceneMap

CAMERA = CameraIntrinsics(fx=60.0, fy=60.0, cx=31.37, cy=23.61, width=64, height=48)  # off-grid centre: no .5 ties


def rotation_pose(angle: float = 0.2, translation=(0.3, -0.1, 0.5)) -> np.ndarray:
    """A camera-to-world pose with a real rotation, so convention mistakes show."""
    c, s = np.cos(angle), np.sin(angle)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pose[:3, 3] = translation
    return pose


def plane_points(depth: float, pose: np.ndarray, spacing: float = 0.01, half: float = 0.45) -> np.ndarray:
    """World points of a camera-facing plane at ``depth`` in front of the camera ``pose``."""
    grid = np.arange(-half, half + 1e-9, spacing)
    x, y = np.meshgrid(grid, grid)
    camera = np.column_stack([x.ravel(), y.ravel(), np.full(x.size, depth)])
    return (camera @ pose[:3, :3].T + pose[:3, 3]).astype(np.float32)


def expected_by_direct_projection(
    positions: np.ndarray, feature_map: np.ndarray, depth: np.ndarray, pose: np.ndarray, border: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel loop written from DESIGN §3: the feature each voxel should receive, and whether it does."""
    height, width = feature_map.shape[:2]
    world_to_camera = np.linalg.inv(pose)
    expected = np.zeros((len(positions), feature_map.shape[2]), np.float32)
    seen = np.zeros(len(positions), bool)
    for i, point in enumerate(positions.astype(np.float64)):
        x, y, z = world_to_camera[:3, :3] @ point + world_to_camera[:3, 3]
        if z <= 0:
            continue
        u, v = CAMERA.fx * x / z + CAMERA.cx, CAMERA.fy * y / z + CAMERA.cy
        ui, vi = round(u), round(v)
        if not (border <= ui < CAMERA.width - border and border <= vi < CAMERA.height - border):
            continue
        d = depth[vi, ui]
        if d <= 0 or abs(d - z) > ratio * d:
            continue
        # Pixel centres map between resolutions as (p + 0.5) * scale - 0.5.
        fu = min(max(round((u + 0.5) * width / CAMERA.width - 0.5), 0), width - 1)
        fv = min(max(round((v + 0.5) * height / CAMERA.height - 0.5), 0), height - 1)
        expected[i], seen[i] = feature_map[fv, fu], True
    return expected, seen


@pytest.fixture
def two_planes() -> tuple[SceneMap, np.ndarray]:
    pose = rotation_pose()
    scene = SceneMap(SceneConfig(voxel_size=0.02))
    scene.integrate_points(plane_points(1.0, pose))
    scene.integrate_points(plane_points(1.5, pose))
    return scene, pose


@pytest.mark.parametrize("map_size", [(48, 64), (12, 16), (7, 11)])
def test_lifting_equals_direct_projection(two_planes, map_size: tuple[int, int]) -> None:
    scene, pose = two_planes
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)  # the front plane hides the rear one
    feature_map = np.random.default_rng(1).standard_normal((*map_size, 8)).astype(np.float32)
    lifter = FeatureLifter(LiftingConfig(border_px=5))
    updated = lifter.lift(scene, feature_map, depth, CAMERA, pose)
    expected, seen = expected_by_direct_projection(scene.positions(), feature_map, depth, pose, 5, 0.05)
    assert updated == seen.sum() > 100
    np.testing.assert_allclose(scene.features()[seen], expected[seen], atol=2e-3)  # float16 storage
    assert np.all(scene.features()[~seen] == 0)
    np.testing.assert_array_equal(scene.feature_weights(), seen.astype(np.float32))


def test_invalid_pixels_contribute_nothing(two_planes) -> None:
    scene, pose = two_planes
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    feature_map = np.random.default_rng(2).standard_normal((12, 16, 8)).astype(np.float32)
    valid = np.ones((12, 16), bool)
    valid[:, :8] = False  # the left half of the map carries no feature (a missed segment)
    updated = FeatureLifter(LiftingConfig(border_px=5)).lift(scene, feature_map, depth, CAMERA, pose, valid=valid)
    expected, seen = expected_by_direct_projection(scene.positions(), feature_map, depth, pose, 5, 0.05)
    masked = feature_map.copy()
    masked[~valid] = np.nan
    kept, _ = expected_by_direct_projection(scene.positions(), masked, depth, pose, 5, 0.05)
    from_valid = seen & np.isfinite(kept).all(axis=1)
    assert 100 < updated == from_valid.sum() < seen.sum()
    np.testing.assert_allclose(scene.features()[from_valid], expected[from_valid], atol=2e-3)
    np.testing.assert_array_equal(scene.feature_weights(), from_valid.astype(np.float32))
    with pytest.raises(GeometryError, match="valid mask"):
        FeatureLifter().lift(scene, feature_map, depth, CAMERA, pose, valid=np.ones((3, 3), bool))


def test_occlusion_hides_rear_plane(two_planes) -> None:
    scene, pose = two_planes
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    FeatureLifter().lift(scene, np.ones((48, 64, 4), np.float32), depth, CAMERA, pose)
    z = (scene.positions() - pose[:3, 3]) @ pose[:3, 2]  # depth along the optical axis
    front, rear = np.abs(z - 1.0) < 0.02, np.abs(z - 1.5) < 0.02
    assert front.sum() > 100 and rear.sum() > 100
    assert np.all(scene.feature_weights()[rear] == 0)
    assert np.count_nonzero(scene.feature_weights()[front]) > 500
    # With the front plane gone from the depth image the rear plane becomes visible.
    rear_depth = np.full_like(depth, 1.5)
    FeatureLifter().lift(scene, np.ones((48, 64, 4), np.float32), rear_depth, CAMERA, pose)
    assert np.count_nonzero(scene.feature_weights()[rear]) > 500


def test_border_crop(two_planes) -> None:
    scene, pose = two_planes
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    counts = [
        FeatureLifter(LiftingConfig(border_px=b)).lift(scene, np.ones((6, 8, 2), np.float32), depth, CAMERA, pose)
        for b in (0, 10)
    ]
    assert counts[1] < 0.6 * counts[0]


def test_mean_fusion_averages_views(two_planes) -> None:
    scene, pose = two_planes
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    lifter = FeatureLifter()
    for value in (1.0, 2.0, 6.0):
        lifter.lift(scene, np.full((4, 4, 3), value, np.float32), depth, CAMERA, pose)
    seen = scene.feature_weights() > 0
    np.testing.assert_array_equal(scene.feature_weights()[seen], 3)
    np.testing.assert_allclose(scene.features()[seen], 3.0, atol=1e-3)


def test_topk_agreement_keeps_agreeing_views() -> None:
    """Five views of one voxel: three say class 0 (confidence 0.6, 0.8, 0.9), two say class 1 with 0.99.

    Mean fusion mixes in class 1; top-2 agreement keeps the two most confident class-0 views.
    """
    classes = np.eye(4, dtype=np.float32)[:2]
    point = np.array([[0.0, 0.0, 1.0]], np.float32)
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    pose = np.eye(4)

    def view(cls: int, confidence: float) -> np.ndarray:
        feature = np.zeros(4, np.float32)
        feature[cls] = confidence
        feature[2 + cls] = np.sqrt(1 - confidence**2)  # unit vector whose cosine with its class is `confidence`
        return np.broadcast_to(feature, (3, 3, 4)).copy()

    views = [view(0, 0.6), view(1, 0.99), view(0, 0.9), view(1, 0.99), view(0, 0.8)]
    topk = SceneMap()
    topk.integrate_points(point)
    mean = SceneMap()
    mean.integrate_points(point)
    agreement = FeatureLifter(LiftingConfig(fusion="topk_agreement", topk=2), class_embeddings=classes)
    for feature_map in views:
        agreement.lift(topk, feature_map, depth, CAMERA, pose)
        FeatureLifter().lift(mean, feature_map, depth, CAMERA, pose)
    np.testing.assert_allclose(topk.features()[0], (views[2][0, 0] + views[4][0, 0]) / 2, atol=2e-3)
    np.testing.assert_allclose(mean.features()[0], np.mean([v[0, 0] for v in views], axis=0), atol=2e-3)
    assert topk.feature_weights()[0] == 5
    assert topk.channel(TOPK_FEATURES, (2, 4), np.float16).shape[1:] == (2, 4)


def test_topk_memory_keeps_the_map_dtype() -> None:
    """A float32 map holds features beyond float16's range; its top-k memory must not overflow them."""
    classes = np.eye(2, dtype=np.float32)
    point = np.array([[0.0, 0.0, 1.0]], np.float32)
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    scene = SceneMap(SceneConfig(feature_dtype="float32"))
    scene.integrate_points(point)
    agreement = FeatureLifter(LiftingConfig(fusion="topk_agreement", topk=2), class_embeddings=classes)
    for scale in (1e5, 3e5):
        agreement.lift(scene, np.full((3, 3, 2), [scale, 1.0], np.float32), depth, CAMERA, np.eye(4))
    np.testing.assert_allclose(scene.features()[0], [2e5, 1.0], rtol=1e-6)


def test_lifted_colours_match_integrated_colours() -> None:
    """Lifting each frame's own colour image as a 3-d feature map must reproduce the voxel colours."""
    dataset = SevenScenes()
    frames = [dataset[i] for i in range(0, 100, 25)]
    scene = SceneMap()
    lifter = FeatureLifter()
    for frame in frames:
        scene.integrate(frame)
    for frame in frames:
        lifter.lift_frame(scene, frame.color.astype(np.float32), frame)
    seen = scene.feature_weights() > 0
    assert seen.mean() > 0.6
    error = np.abs(scene.features()[seen] - scene.colors()[seen].astype(np.float32))
    assert np.median(error) < 8.0
    # A quarter-resolution feature map of the same images lands on the same colours.
    quarter = SceneMap()
    for frame in frames:
        quarter.integrate(frame)
    for frame in frames:
        lifter.lift_frame(quarter, frame.color[2::4, 2::4].astype(np.float32), frame)
    seen = quarter.feature_weights() > 0
    assert np.median(np.abs(quarter.features()[seen] - quarter.colors()[seen].astype(np.float32))) < 12.0


def test_bad_input_leaves_features_unchanged(two_planes) -> None:
    scene, pose = two_planes
    depth = np.full((CAMERA.height, CAMERA.width), 1.0, np.float32)
    lifter = FeatureLifter()
    lifter.lift(scene, np.ones((4, 4, 3), np.float32), depth, CAMERA, pose)
    before = scene.features(), scene.feature_weights()
    nan_map = np.ones((4, 4, 3), np.float32)
    nan_map[1, 2, 0] = np.nan
    shear = pose.copy()
    shear[0, 1] = 0.5
    bad_calls = [
        (nan_map, depth, CAMERA, pose),
        (np.ones((4, 4), np.float32), depth, CAMERA, pose),
        (np.ones((4, 4, 3), np.int32), depth, CAMERA, pose),
        (np.full((4, 4, 3), 1e6, np.float32), depth, CAMERA, pose),  # would overflow float16 storage
        (np.ones((4, 4, 5), np.float32), depth, CAMERA, pose),  # D differs from the map's
        (np.ones((4, 4, 3), np.float32), depth[:, :10], CAMERA, pose),
        (np.ones((4, 4, 3), np.float32), (depth * 1000).astype(np.uint16), CAMERA, pose),
        (np.ones((4, 4, 3), np.float32), depth, CAMERA, shear),
    ]
    for call in bad_calls:
        with pytest.raises(GeometryError):
            lifter.lift(scene, *call)
        np.testing.assert_array_equal(scene.features(), before[0])
        np.testing.assert_array_equal(scene.feature_weights(), before[1])
    without_classes = FeatureLifter(LiftingConfig(fusion="topk_agreement"))
    with pytest.raises(GeometryError, match="set_agreement_classes"):
        without_classes.lift(scene, np.ones((4, 4, 3), np.float32), depth, CAMERA, pose)
    np.testing.assert_array_equal(scene.features(), before[0])
    with pytest.raises(GeometryError):
        FeatureLifter(class_embeddings=np.zeros((2, 3), np.float32))
    assert FeatureLifter().lift(SceneMap(), np.ones((4, 4, 3), np.float32), depth, CAMERA, pose) == 0
