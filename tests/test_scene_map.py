"""SceneMap: reconstruction against Open3D on real 7-Scenes frames, eviction, I/O and bad input."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, pack_voxel_keys
from ovseg3d_core.scene import FORMAT_VERSION, SceneConfig, SceneFormatError, SceneMap, SkippedFrameWarning

SUBSET = range(0, 200, 20)  # 10 frames spread over the first 7 s of the sequence


@pytest.fixture(scope="module")
def frames() -> list[RGBDFrame]:
    dataset = SevenScenes()
    return [dataset[i] for i in SUBSET]


@pytest.fixture(scope="module")
def scene(frames: list[RGBDFrame]) -> SceneMap:
    scene = SceneMap()
    for frame in frames:
        scene.integrate(frame)
    return scene


def snapshot(scene: SceneMap) -> dict[str, np.ndarray]:
    return {
        "keys": scene.keys,
        "positions": scene.positions(),
        "colors": scene.colors(),
        "counts": scene.counts(),
        "last_seen": scene.last_seen(),
        "features": scene.features(),
        "weights": scene.feature_weights(),
    }


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance: mean of the two directed mean nearest-neighbour distances."""
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def test_reconstruction_matches_open3d(frames: list[RGBDFrame], scene: SceneMap) -> None:
    import open3d as o3d
    import open3d.core as o3c

    intrinsic = o3c.Tensor(frames[0].intrinsics.matrix, o3c.float64)
    clouds = []
    for frame in frames:
        depth = o3d.t.geometry.Image(o3c.Tensor(np.round(frame.depth * 1000).astype(np.uint16)))
        extrinsic = o3c.Tensor(np.linalg.inv(frame.pose), o3c.float64)
        cloud = o3d.t.geometry.PointCloud.create_from_depth_image(depth, intrinsic, extrinsic, 1000.0, 5.0)
        clouds.append(cloud.point.positions.numpy())
    raw = np.concatenate(clouds).astype(np.float64)
    reference = np.asarray(
        o3d.geometry.PointCloud(o3d.utility.Vector3dVector(raw)).voxel_down_sample(scene.voxel_size).points
    )
    ours = scene.positions()
    assert chamfer(ours, reference) < 0.01
    # Voxel means lie on the observed surface (sub-voxel accuracy), and nothing is invented.
    assert np.median(cKDTree(raw).query(ours)[0]) < 0.003
    assert 0.7 < len(ours) / len(reference) < 1.3
    # A pose convention error (world-to-camera used as camera-to-world) is caught by the same metric.
    wrong = SceneMap()
    wrong.integrate(replace(frames[0], pose=np.linalg.inv(frames[0].pose)))
    assert chamfer(wrong.positions(), reference) > 0.05


def open3d_tsdf_surface(frames: list[RGBDFrame], voxel_size: float, depth_max: float) -> np.ndarray:
    """Open3D's TSDF reconstruction of ``frames``: surface points of a CPU ``VoxelBlockGrid``.

    Settings as in benchmarks/bench_scene.py's ``bench_vbg`` except the voxel size: uint16
    millimetre depth (scale 1000), 16^3 blocks, Open3D's default truncation (8 voxels).
    Extraction keeps every observed voxel (weight > 0), as SceneMap does; the benchmark's weight
    threshold of 1 would drop surfaces seen by a single frame.
    """
    import open3d as o3d
    import open3d.core as o3c

    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)),
        voxel_size=voxel_size,
        block_resolution=16,
        block_count=50_000,
        device=o3c.Device("CPU:0"),
    )
    for frame in frames:
        intrinsic = o3c.Tensor(frame.intrinsics.matrix, o3c.float64)
        depth = o3d.t.geometry.Image(o3c.Tensor(frame.depth_mm))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(frame.color)))
        extrinsic = o3c.Tensor(np.linalg.inv(frame.pose), o3c.float64)
        blocks = grid.compute_unique_block_coordinates(depth, intrinsic, extrinsic, 1000.0, depth_max)
        grid.integrate(blocks, depth, color, intrinsic, extrinsic, 1000.0, depth_max)
    return grid.extract_point_cloud(weight_threshold=0.0).point.positions.numpy().astype(np.float64)


def test_reconstruction_matches_open3d_tsdf(frames: list[RGBDFrame], scene: SceneMap) -> None:
    """SceneMap (2 cm) against Open3D's TSDF reconstruction of the same frames at 5 mm.

    The reference is finer than the map on purpose: a TSDF's surface points lie on its voxel-corner
    lattice, so at the map's own 2 cm they sit up to a centimetre from any voxel mean and the
    Chamfer distance measures that lattice (1.8 cm measured), not the geometry. At 5 mm: 0.87 cm.
    """
    surface = open3d_tsdf_surface(frames, voxel_size=0.005, depth_max=scene.config.depth_max)
    ours = scene.positions()
    assert chamfer(ours, surface) < 0.01
    # Most of our voxels lie within a voxel of its surface and most of it within a voxel of ours (93%, 96%).
    assert np.mean(cKDTree(surface).query(ours)[0] < scene.voxel_size) > 0.8
    assert np.mean(cKDTree(ours).query(surface)[0] < scene.voxel_size) > 0.8
    # A pose convention error (world-to-camera used as camera-to-world) is caught by the same metric.
    wrong = SceneMap(scene.config)
    wrong.integrate(replace(frames[0], pose=np.linalg.inv(frames[0].pose)))
    assert chamfer(wrong.positions(), surface) > 0.05


def test_voxel_means_are_exact_averages() -> None:
    scene = SceneMap(SceneConfig(voxel_size=0.1))
    points = np.array([[0.01, 0.02, 0.03], [0.05, 0.06, 0.07], [0.25, 0.01, 0.01]], np.float32)
    colors = np.array([[10, 20, 30], [30, 40, 50], [200, 200, 200]], np.uint8)
    assert scene.integrate_points(points, colors, stamp=3.0) == 2
    scene.integrate_points(points[:1] + 0.02, colors[:1], stamp=4.0)
    order = np.argsort(scene.positions()[:, 0])
    np.testing.assert_allclose(scene.positions()[order[0]], (points[0] + points[1] + points[0] + 0.02) / 3, atol=1e-6)
    np.testing.assert_array_equal(scene.colors()[order[0]], [17, 27, 37])  # (10+30+10)/3 rounded
    np.testing.assert_array_equal(scene.counts()[order], [3, 1])
    np.testing.assert_array_equal(scene.last_seen()[order], [4.0, 3.0])
    np.testing.assert_array_equal(np.sort(scene.keys), np.sort(pack_voxel_keys(np.array([[0, 0, 0], [2, 0, 0]]))))


def test_normals_follow_surface_and_face_camera() -> None:
    grid = np.stack(np.meshgrid(np.arange(0, 1, 0.01), np.arange(0, 1, 0.01)), axis=-1).reshape(-1, 2)
    plane = np.column_stack([grid, np.full(len(grid), 2.0)]).astype(np.float32)
    scene = SceneMap()
    scene.integrate_points(plane, viewpoint=np.array([0.5, 0.5, 0.0]))
    normals = scene.normals()
    assert np.all(normals[:, 2] < -0.99)  # the plane z = 2 seen from z = 0 faces -z


def test_crop_keeps_box(scene: SceneMap) -> None:
    low, high = np.array([-0.5, -0.5, 1.0]), np.array([0.5, 0.5, 2.5])
    cropped = scene.crop(low, high)
    inside = np.all((scene.positions() >= low) & (scene.positions() <= high), axis=1)
    assert 0 < len(cropped) == int(inside.sum()) < len(scene)
    np.testing.assert_array_equal(np.sort(cropped.keys), np.sort(scene.keys[inside]))
    with pytest.raises(GeometryError):
        scene.crop(high, low)


def test_eviction_keeps_cap_and_latest_frame(frames: list[RGBDFrame]) -> None:
    cap = 40_000
    scene = SceneMap(SceneConfig(max_voxels=cap))
    for frame in frames:
        touched = scene.integrate(frame)
        assert len(scene) <= cap
    latest = SceneMap()
    latest.integrate(frames[-1])
    assert touched == len(latest) < cap
    assert np.isin(latest.keys, scene.keys).all()  # the newest observations are never the ones evicted
    # Per-voxel channels stay aligned with their voxels through growth and compaction.
    tag = scene.channel("key", (), np.int64, fill=-1)
    tag[: len(scene)] = scene.keys
    for frame in frames[:4]:
        scene.integrate(frame)
        assert len(scene) <= cap
    tag = scene.channel("key", (), np.int64)[: len(scene)]
    survived = tag >= 0
    assert 0 < survived.sum() < len(scene)
    np.testing.assert_array_equal(tag[survived], scene.keys[survived])


def test_save_load_round_trip(tmp_path, scene: SceneMap) -> None:
    copy = scene.subset(np.arange(len(scene)))
    rng = np.random.default_rng(0)
    slots = np.arange(0, len(copy), 3)
    copy.accumulate_features(slots, rng.standard_normal((7, 16)).astype(np.float32), rng.integers(0, 7, len(slots)))
    copy.channel("classes", (2,), np.int32, fill=-1)
    path = copy.save(tmp_path / "scene.npz")
    loaded = SceneMap.load(path)
    assert_same(snapshot(copy), snapshot(loaded))
    assert loaded.config == copy.config
    assert loaded.has_channel("classes")
    assert len(SceneMap.load(path, SceneConfig(max_voxels=1000))) <= 1000
    # The rebuilt key index works: integrating the same points again updates, never duplicates.
    loaded.integrate_points(copy.positions()[:100])
    assert len(loaded) == len(copy)
    assert np.all(loaded.counts()[:100] == copy.counts()[:100] + 1)
    # New voxels get the channel's fill value, not zeros.
    loaded.integrate_points(np.array([[50.0, 50.0, 50.0]], np.float32))
    assert np.all(loaded.channel("classes", (2,), np.int32)[len(loaded) - 1] == -1)


def test_integrations_count_frames_and_points_across_save_and_reset(tmp_path, frames, scene: SceneMap) -> None:
    assert scene.integrations == len(frames)
    copy = scene.subset(np.arange(len(scene)))
    copy.integrate_points(np.array([[50.0, 50.0, 50.0]], np.float32))
    loaded = SceneMap.load(copy.save(tmp_path / "scene.npz"))
    assert loaded.integrations == copy.integrations == len(frames) + 1
    loaded.reset()
    assert loaded.integrations == 0


def test_interrupted_save_keeps_previous_file(tmp_path, scene: SceneMap, monkeypatch) -> None:
    path = scene.save(tmp_path / "scene.npz")
    before = path.read_bytes()

    def failing_savez(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        SceneMap().save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scene.npz"]


def test_loads_version_1_file(tmp_path) -> None:
    positions = np.array([[0.011, 0.012, 0.013], [0.5, 0.5, 0.5]], np.float32)
    keys = pack_voxel_keys(np.floor(positions / 0.05).astype(np.int64))
    np.savez(
        tmp_path / "old.npz",
        format_version=np.array(1),
        voxel_size=np.array(0.05),
        keys=keys,
        positions=positions,
        colors=np.array([[10, 20, 30], [40, 50, 60]], np.uint8),
        count=np.array([4, 2], np.int32),
        last_seen=np.array([1.0, 2.0]),
    )
    scene = SceneMap.load(tmp_path / "old.npz")
    assert scene.voxel_size == 0.05 and FORMAT_VERSION > 1
    np.testing.assert_allclose(scene.positions(), positions, atol=1e-6)
    np.testing.assert_array_equal(scene.colors(), [[10, 20, 30], [40, 50, 60]])
    np.testing.assert_array_equal(scene.counts(), [4, 2])
    scene.integrate_points(positions[:1])
    assert len(scene) == 2 and scene.counts()[0] == 5


def test_rejects_bad_files(tmp_path, scene: SceneMap) -> None:
    with pytest.raises(FileNotFoundError):
        SceneMap.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SceneFormatError):
        SceneMap.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "future.npz", format_version=np.array(FORMAT_VERSION + 1))
    with pytest.raises(SceneFormatError, match="knows up to"):
        SceneMap.load(tmp_path / "future.npz")
    path = scene.save(tmp_path / "scene.npz")
    with pytest.raises(SceneFormatError, match="voxel"):
        SceneMap.load(path, SceneConfig(voxel_size=0.05))
    assert json.loads(str(np.load(path)["config_json"]))["voxel_size"] == scene.voxel_size


def test_to_ply(tmp_path, scene: SceneMap) -> None:
    import open3d as o3d

    path = scene.to_ply(tmp_path / "scene.ply")
    cloud = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(cloud.points), scene.positions(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(cloud.colors) * 255, scene.colors(), atol=0.51)
    assert cloud.has_normals()


def test_to_ply_with_label_fields(tmp_path, scene: SceneMap) -> None:
    import open3d as o3d

    labels = np.arange(len(scene)) % 7
    scores = np.linspace(-1, 1, len(scene), dtype=np.float32)
    colors = np.zeros((len(scene), 3), np.uint8)
    path = scene.to_ply(tmp_path / "labeled.ply", colors=colors, fields={"label": labels, "score": scores})
    header = path.read_bytes()[:400].decode("latin-1")
    assert "property uchar red" in header and "property int label" in header and "property float score" in header
    cloud = o3d.t.io.read_point_cloud(str(path))
    np.testing.assert_array_equal(cloud.point.label.numpy().ravel(), labels)
    np.testing.assert_allclose(cloud.point.score.numpy().ravel(), scores)
    with pytest.raises(ValueError, match="label"):
        scene.to_ply(tmp_path / "bad.ply", fields={"label": labels[:3]})


def test_reset(scene: SceneMap) -> None:
    copy = scene.subset(np.arange(len(scene)))
    copy.reset()
    assert len(copy) == 0 and copy.positions().shape == (0, 3) and len(scene) > 0


@pytest.mark.parametrize(("name", "depth_value"), [("nan", np.nan), ("inf", np.inf), ("zero", 0.0), ("negative", -1.0)])
def test_unusable_depth_is_skipped(frames: list[RGBDFrame], name: str, depth_value: float) -> None:
    scene = SceneMap()
    scene.integrate(frames[0])
    before = snapshot(scene)
    bad = replace(frames[1], depth=np.full_like(frames[1].depth, depth_value))
    with pytest.warns(SkippedFrameWarning, match="valid depth pixels"):
        assert scene.integrate(bad) == 0
    assert_same(before, snapshot(scene))


def test_partially_invalid_depth_never_leaks_nan(frames: list[RGBDFrame]) -> None:
    depth = frames[0].depth.copy()
    depth[:100] = np.nan
    depth[100:200] = np.inf
    scene = SceneMap()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scene.integrate(replace(frames[0], depth=depth)) > 0
    assert np.isfinite(scene.positions()).all()


def test_structurally_bad_frames_cannot_be_built(frames: list[RGBDFrame]) -> None:
    """A frame is validated once, where it is built: a bad one never exists, so no map can take it."""
    scene = SceneMap()
    scene.integrate(frames[0])
    before = snapshot(scene)
    frame = frames[1]
    shear = frame.pose.copy()
    shear[0, 1] += 0.3
    bad_parts = {
        "colour": {"color": frame.color[:240, :320]},
        "depth": {"depth": frame.depth[:, :320]},
        "rigid": {"pose": shear},
        "rigid ": {"pose": np.diag([2.0, 2.0, 2.0, 1.0])},
        "float metres": {"depth": (frame.depth * 1000).astype(np.uint16)},
    }
    for message, parts in bad_parts.items():
        with pytest.raises(GeometryError, match=message.strip()):
            replace(frame, **parts)
        assert_same(before, snapshot(scene))
    for fx, width in ((0.0, 640), (-585.0, 640), (585.0, 0)):
        with pytest.raises(GeometryError):
            CameraIntrinsics(fx, 585.0, 320.0, 240.0, width, 480)


def test_empty_inputs_are_skipped() -> None:
    scene = SceneMap()
    with pytest.warns(SkippedFrameWarning):
        assert scene.integrate_points(np.empty((0, 3), np.float32)) == 0
    with pytest.warns(SkippedFrameWarning):
        assert scene.integrate_points(np.full((5, 3), np.nan, np.float32)) == 0
    with pytest.raises(GeometryError):
        scene.integrate_points(np.zeros((5, 2), np.float32))
    with pytest.raises(GeometryError):
        scene.integrate_points(np.zeros((5, 3), np.float32), np.zeros((4, 3), np.uint8))
    assert len(scene) == 0


def test_config_rejects_inverted_depth_range() -> None:
    with pytest.raises(GeometryError):
        SceneConfig(depth_min=3.0, depth_max=2.0)
