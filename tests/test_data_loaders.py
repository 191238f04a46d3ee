"""Dataset loaders on the real sample files: 7-Scenes, Redwood, TUM/SUN/NYU single frames, ScanNet."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ovseg3d_core.data.root import DataNotFoundError, data_path
from ovseg3d_core.data.scenes.image_io import read_depth_u16
from ovseg3d_core.data.scenes.redwood import RedwoodFormatError, RedwoodSequence, read_trajectory_log
from ovseg3d_core.data.scenes.scannet import (
    IGNORE_INDEX,
    SCANNET20_BACKGROUND_IDS,
    SCANNET20_CLASSES,
    SCANNET200_BACKGROUND_IDS,
    SCANNET200_CLASSES,
    SCANNET200_RAW_IDS,
    ScanNetLabelTable,
    load_scannet_scan,
)
from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
from ovseg3d_core.data.scenes.single_frames import load_nyu_frame, load_sun_frame, load_tum_frame, read_pgm16
from ovseg3d_core.frame import depth_mm_to_metres, metres_to_depth_mm
from ovseg3d_core.geometry import GeometryError, backproject_depth


@pytest.fixture(scope="module")
def scan():
    return load_scannet_scan()


def _assert_rigid(pose: np.ndarray) -> None:
    rotation = pose[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-3)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])


# --- 7-Scenes -----------------------------------------------------------------------------------


def test_sevenscenes_has_1000_frames_with_rigid_poses():
    dataset = SevenScenes()
    assert len(dataset) == 1000
    assert (dataset.intrinsics.fx, dataset.intrinsics.cx, dataset.intrinsics.width) == (585.0, 320.0, 640)
    poses = dataset.poses()
    assert poses.shape == (1000, 4, 4)
    for pose in poses[::37]:
        _assert_rigid(pose)
    # The camera moves, and smoothly: consecutive frames are centimetres apart, not metres.
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 0.2 and np.ptp(poses[:, :3, 3], axis=0).max() > 0.5


def test_sevenscenes_depth_range_over_all_frames_matches_readme():
    root = data_path("7scenes")
    low, high = np.inf, -np.inf
    for index in range(1000):
        depth = depth_mm_to_metres(read_depth_u16(root / f"frame-{index:06d}.depth.png"), invalid=65535)
        valid = depth[depth > 0]
        low, high = min(low, valid.min()), max(high, valid.max())
    assert low == pytest.approx(0.801) and high == pytest.approx(3.975)


def test_sevenscenes_frames_are_consistent_rgbd():
    dataset = SevenScenes()
    for index in (0, 499, -1):
        frame = dataset[index]
        assert frame.color.shape == (480, 640, 3) and frame.color.dtype == np.uint8
        assert frame.depth.dtype == np.float32
        valid = frame.depth[frame.depth > 0]
        assert valid.min() >= 0.8 and valid.max() <= 3.976 and valid.size > 0.5 * frame.depth.size
        assert frame.color.std() > 10  # a real image, not a blank buffer
    assert dataset[-1].name == "frame-000999" and dataset[-1].stamp > dataset[0].stamp
    with pytest.raises(IndexError):
        dataset[1000]


def test_sevenscenes_consecutive_frames_back_project_to_the_same_surface():
    from scipy.spatial import cKDTree

    dataset = SevenScenes()
    a, b = dataset[100], dataset[101]
    points_a, _ = backproject_depth(a.depth, a.intrinsics, a.pose, stride=4)
    points_b, _ = backproject_depth(b.depth, b.intrinsics, b.pose, stride=4)
    distance, _ = cKDTree(points_a).query(points_b)
    assert np.median(distance) < 0.02  # poses are camera-to-world: a world point stays put


def test_sevenscenes_missing_folder_and_bad_pose(tmp_path):
    with pytest.raises(DataNotFoundError):
        SevenScenes(tmp_path / "absent")
    root = data_path("7scenes")
    for suffix in ("color.jpg", "depth.png"):
        shutil.copy(root / f"frame-000000.{suffix}", tmp_path / f"frame-000000.{suffix}")
    shutil.copy(root / "camera-intrinsics.txt", tmp_path / "camera-intrinsics.txt")
    (tmp_path / "frame-000000.pose.txt").write_text("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(GeometryError, match="non-rigid"):
        SevenScenes(tmp_path)[0]


# --- Redwood ------------------------------------------------------------------------------------


def test_redwood_sequence_matches_open3d_readers():
    import open3d as o3d

    sequence = RedwoodSequence()
    assert len(sequence) == 5
    root = data_path("open3d_rgbd")
    reference = o3d.io.read_pinhole_camera_intrinsic(str(root / "camera_primesense.json"))
    np.testing.assert_allclose(sequence.intrinsics.matrix, reference.intrinsic_matrix)
    assert (sequence.intrinsics.cx, sequence.intrinsics.cy) == (319.5, 239.5)
    trajectory = o3d.io.read_pinhole_camera_trajectory(str(root / "trajectory.log"))
    for frame, parameters in zip(sequence, trajectory.parameters, strict=True):
        np.testing.assert_allclose(frame.pose, np.linalg.inv(parameters.extrinsic), atol=1e-9)
        valid = frame.depth[frame.depth > 0]
        assert valid.min() > 0.3 and valid.max() < 10.0
        o3d_depth = np.asarray(o3d.io.read_image(str(root / "depth" / f"{frame.name}.png")), dtype=np.float32) / 1000
        np.testing.assert_allclose(frame.depth, o3d_depth, atol=1e-6)


def test_redwood_malformed_log_is_rejected(tmp_path):
    bad = tmp_path / "trajectory.log"
    bad.write_text("0 0 1\n1 0 0 0\n0 1 0 0\n")
    with pytest.raises(RedwoodFormatError):
        read_trajectory_log(bad)


# --- TUM / SUN / NYU ----------------------------------------------------------------------------


def _open3d_depth(kind: str, color: np.ndarray, raw: np.ndarray) -> np.ndarray:
    import open3d as o3d

    create = getattr(o3d.geometry.RGBDImage, f"create_from_{kind}_format")
    return np.asarray(create(o3d.geometry.Image(color), o3d.geometry.Image(raw), False).depth)


@pytest.mark.parametrize(
    ("kind", "loader", "depth_file"),
    [("tum", load_tum_frame, "TUM_depth.png"), ("sun", load_sun_frame, "SUN_depth.png"), ("nyu", load_nyu_frame, None)],
)
def test_single_frames_decode_like_open3d(kind, loader, depth_file):
    frame = loader()
    folder = data_path("open3d_rgbd", "other_formats")
    raw = read_pgm16(folder / "NYU_depth.pgm") if depth_file is None else read_depth_u16(folder / depth_file)
    reference = _open3d_depth(kind, frame.color, raw)
    both = (reference > 0) & (frame.depth > 0)
    assert both.sum() > 0.5 * frame.depth.size
    np.testing.assert_allclose(frame.depth[both], reference[both], atol=1e-3)
    valid = frame.depth[frame.depth > 0]
    assert 0.3 < np.median(valid) < 6.0 and valid.max() < 12.0  # plausible indoor metres
    np.testing.assert_array_equal(frame.pose, np.eye(4))
    assert frame.intrinsics.width == 640 and frame.intrinsics.height == 480


def test_depth_mm_round_trip():
    depth = np.array([[0.0, 1.2344, np.nan], [-1.0, 70.0, 0.0005]], dtype=np.float32)
    millimetres = metres_to_depth_mm(depth)
    np.testing.assert_array_equal(millimetres, [[0, 1234, 0], [0, 65534, 1]])
    np.testing.assert_allclose(depth_mm_to_metres(millimetres)[0, 1], 1.234)


# --- ScanNet ------------------------------------------------------------------------------------


def test_scannet_mesh_and_instances(scan):
    assert scan.vertices.shape == (81369, 3) and scan.triangles.shape == (153587, 3)
    assert scan.colors.dtype == np.uint8 and scan.colors.std() > 10
    assert len(scan.instance_labels) == 67
    assert len(np.unique(scan.segment_ids)) == 668
    for array in (scan.raw_ids, scan.nyu40_ids, scan.scannet20_ids, scan.scannet200_ids, scan.instance_ids):
        assert array.shape == (81369,)


def test_scannet20_labels(scan):
    counts = {name: int(np.sum(scan.scannet20_ids == i)) for i, name in enumerate(SCANNET20_CLASSES)}
    for name in ("wall", "floor", "table", "bed", "sofa", "cabinet", "toilet", "refrigerator"):
        assert counts[name] > 100, name
    unlabeled = scan.instance_ids == -1
    assert unlabeled.any() and np.all(scan.scannet20_ids[unlabeled] == IGNORE_INDEX)
    assert np.all(scan.raw_labels[unlabeled] == "")
    # "couch" maps through NYU40 "sofa"; "stool" is NYU40 otherprop, outside the 20 classes.
    assert np.all(scan.scannet20_ids[scan.raw_labels == "couch"] == SCANNET20_CLASSES.index("sofa"))
    assert np.all(scan.scannet20_ids[scan.raw_labels == "stool"] == IGNORE_INDEX)
    # Geometry agrees with semantics: z is up, so the floor is the lowest labeled surface.
    floor_z = np.median(scan.vertices[scan.scannet20_ids == 1, 2])
    wall_z = scan.vertices[scan.scannet20_ids == 0, 2]
    assert abs(floor_z) < 0.15 and np.percentile(wall_z, 90) > floor_z + 1.5
    assert SCANNET20_BACKGROUND_IDS == (0, 1)


def test_scannet200_labels_and_constants(scan):
    table = ScanNetLabelTable()
    # The hard-coded benchmark list must agree with the label table's own category names.
    assert len(SCANNET200_RAW_IDS) == len(SCANNET200_CLASSES) == 200
    for raw_id, name in zip(SCANNET200_RAW_IDS, SCANNET200_CLASSES, strict=True):
        assert table.category_of_raw_id(raw_id) == name
    stool = SCANNET200_CLASSES.index("stool")
    assert np.all(scan.scannet200_ids[scan.raw_labels == "stool"] == stool)
    assert [SCANNET200_CLASSES[i] for i in SCANNET200_BACKGROUND_IDS] == ["wall", "floor", "ceiling"]
    assert np.sum(scan.scannet200_ids == SCANNET200_CLASSES.index("ceiling")) > 100
    labeled = scan.instance_ids >= 0
    assert np.mean(scan.scannet200_ids[labeled] != IGNORE_INDEX) > 0.99


def test_label_table_quirks():
    table = ScanNetLabelTable()
    assert len(table) == 607
    furnace = table["furnace"]  # the row with only 15 fields
    assert (furnace.raw_id, furnace.nyu40_id, furnace.mpcat40) == (363, 39, "")
    assert table.short_rows == [536]
    assert table["wardrobe cabinet"].category == "wardrobe"  # trailing space stripped
    with pytest.raises(KeyError, match="not a raw_category"):
        table["flux capacitor"]


def test_unknown_aggregation_label_warns_and_stays_unlabeled(tmp_path):
    source = data_path("scannet", "scene0000_00")
    scene = tmp_path / "scene0000_00"
    scene.mkdir()
    for path in source.iterdir():
        (scene / path.name).symlink_to(path)
    aggregation = json.loads((source / "scene0000_00_vh_clean.aggregation.json").read_text())
    aggregation["segGroups"][0]["label"] = "flux capacitor"
    target = scene / "scene0000_00_vh_clean.aggregation.json"
    target.unlink()
    target.write_text(json.dumps(aggregation))
    with pytest.warns(UserWarning, match="flux capacitor"):
        modified = load_scannet_scan(scene, data_path("scannet", "scannetv2-labels.combined.tsv"))
    first = modified.instance_ids == 0
    assert first.any() and np.all(modified.nyu40_ids[first] == 0)
    assert np.all(modified.scannet20_ids[first] == IGNORE_INDEX)
