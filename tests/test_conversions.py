"""sensor_msgs / geometry_msgs <-> numpy conversions: exact round trips and typed errors on bad input."""

from __future__ import annotations

import array
import struct

import numpy as np
import pytest
from geometry_msgs.msg import Pose, Quaternion
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.scenes.image_io import read_depth_u16
from ovseg3d_core.data.scenes.sevenscenes import SevenScenes, read_pose_txt
from ovseg3d_ros.conversions import (
    MessageConversionError,
    camera_info_to_intrinsics,
    cloud_to_structured,
    cloud_to_xyz,
    cloud_to_xyz_rgb,
    depth_to_image,
    image_to_depth,
    image_to_labels,
    image_to_rgb,
    intrinsics_to_camera_info,
    labeled_cloud_to_msg,
    labels_to_image,
    matrix_to_pose,
    pack_rgb,
    pose_to_matrix,
    read_labeled_cloud,
    rgb_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
    unpack_rgb,
    xyz_rgb_to_cloud,
)

HEADER = Header(frame_id="world")


@pytest.fixture(scope="module")
def seven_scenes_frame():
    return SevenScenes()[0]


def _random_labeled(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    points = rng.normal(scale=5.0, size=(n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    colors[0] = (255, 255, 255)
    colors[1] = (255, 0, 128)
    labels = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    labels[0] = 2**32 - 1
    scores = rng.random(n).astype(np.float32)
    return points, colors, labels, scores


def _field(name: str, offset: int, datatype: int, count: int = 1) -> PointField:
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


def _raw_cloud(fields, point_step, width, height, row_step, payload: bytes, is_bigendian=False) -> PointCloud2:
    data = array.array("B")
    data.frombytes(payload)
    return PointCloud2(
        header=HEADER,
        height=height,
        width=width,
        fields=fields,
        is_bigendian=is_bigendian,
        point_step=point_step,
        row_step=row_step,
        data=data,
        is_dense=False,
    )


# ---------------------------------------------------------------- PointCloud2


def test_labeled_cloud_round_trip_is_exact_and_uses_the_rviz_layout():
    points, colors, labels, scores = _random_labeled(1000)
    msg = labeled_cloud_to_msg(points, colors, labels, scores, HEADER)

    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
        ("label", 16, PointField.UINT32, 1),
        ("score", 20, PointField.FLOAT32, 1),
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 1000, 24, 24000)
    assert msg.header.frame_id == "world" and msg.is_dense and not msg.is_bigendian
    # The packed colour of point 1 (255, 0, 128) is the little-endian uint32 0x00FF0080.
    raw = bytes(msg.data)
    assert struct.unpack_from("<I", raw, 24 + 12)[0] == 0x00FF0080
    assert struct.unpack_from("<I", raw, 16)[0] == 2**32 - 1
    assert struct.unpack_from("<fff", raw, 0) == tuple(float(v) for v in points[0])

    cloud = read_labeled_cloud(msg)
    np.testing.assert_array_equal(cloud.points, points)
    np.testing.assert_array_equal(cloud.colors, colors)
    np.testing.assert_array_equal(cloud.labels, labels)
    np.testing.assert_array_equal(cloud.scores, scores)
    assert cloud.labels.dtype == np.uint32 and cloud.scores.dtype == np.float32


def test_300k_point_cloud_converts_both_ways():
    points, colors, labels, scores = _random_labeled(300_000, seed=1)
    msg = labeled_cloud_to_msg(points, colors, labels, scores, HEADER)
    assert len(msg.data) == 300_000 * 24
    cloud = read_labeled_cloud(msg)
    np.testing.assert_array_equal(cloud.points, points)
    np.testing.assert_array_equal(cloud.colors, colors)
    np.testing.assert_array_equal(cloud.labels, labels)
    np.testing.assert_array_equal(cloud.scores, scores)
    np.testing.assert_array_equal(cloud_to_xyz(msg), points)


def test_pack_and_unpack_rgb_are_inverse_and_follow_0x00rrggbb():
    colors = np.array([[1, 2, 3], [255, 255, 255], [0, 0, 0], [16, 32, 255]], dtype=np.uint8)
    packed = pack_rgb(colors)
    assert packed.dtype == np.float32
    assert packed.view(np.uint32).tolist() == [0x010203, 0xFFFFFF, 0, 0x1020FF]
    np.testing.assert_array_equal(unpack_rgb(packed), colors)
    np.testing.assert_array_equal(unpack_rgb(packed.view(np.uint32)), colors)


def test_xyz_rgb_cloud_round_trip():
    points, colors, _, _ = _random_labeled(50, seed=2)
    msg = xyz_rgb_to_cloud(points, colors, HEADER)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and msg.point_step == 16
    read_points, read_colors = cloud_to_xyz_rgb(msg)
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)


def _foreign_cloud(with_nan: bool) -> tuple[PointCloud2, np.ndarray, np.ndarray]:
    """An organised 2x3 cloud as a driver might send it: 32-byte points, fields out of order,
    uint32 rgb, an extra intensity field, and 8 bytes of padding after each row."""
    width, height, point_step = 3, 2, 32
    row_step = width * point_step + 8
    rng = np.random.default_rng(3)
    points = rng.normal(size=(height * width, 3)).astype(np.float32)
    if with_nan:
        points[4, 1] = np.nan
    colors = rng.integers(0, 256, size=(height * width, 3), dtype=np.uint8)
    payload = bytearray(b"\xab" * (row_step * height))
    for i, (p, c) in enumerate(zip(points, colors, strict=True)):
        base = (i // width) * row_step + (i % width) * point_step
        struct.pack_into("<f", payload, base + 20, 7.5)  # intensity
        struct.pack_into("<fff", payload, base + 4, *p)  # x, y, z at 4, 8, 12
        struct.pack_into("<I", payload, base + 16, (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]))
    fields = [
        _field("intensity", 20, PointField.FLOAT32),
        _field("rgb", 16, PointField.UINT32),
        _field("z", 12, PointField.FLOAT32),
        _field("x", 4, PointField.FLOAT32),
        _field("y", 8, PointField.FLOAT32),
    ]
    return _raw_cloud(fields, point_step, width, height, row_step, bytes(payload)), points, colors


def test_reading_respects_offsets_point_step_and_row_padding():
    msg, points, colors = _foreign_cloud(with_nan=False)
    read_points, read_colors = cloud_to_xyz_rgb(msg)
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)
    np.testing.assert_array_equal(cloud_to_structured(msg, ["intensity"])["intensity"], np.full(6, 7.5, np.float32))


def test_invalid_points_are_skipped_only_when_asked():
    msg, points, colors = _foreign_cloud(with_nan=True)
    kept, kept_colors = cloud_to_xyz_rgb(msg)
    np.testing.assert_array_equal(kept, np.delete(points, 4, axis=0))
    np.testing.assert_array_equal(kept_colors, np.delete(colors, 4, axis=0))
    everything = cloud_to_xyz(msg, skip_invalid=False)
    assert everything.shape == (6, 3) and np.isnan(everything[4, 1])


def test_empty_cloud_gives_empty_arrays():
    msg = labeled_cloud_to_msg(
        np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.uint32), np.zeros(0), HEADER
    )
    assert msg.width == 0 and len(msg.data) == 0
    assert cloud_to_xyz(msg).shape == (0, 3)
    assert read_labeled_cloud(msg).labels.shape == (0,)


XYZ_FIELDS = [_field("x", 0, 7), _field("y", 4, 7), _field("z", 8, 7)]


@pytest.mark.parametrize(
    ("fields", "point_step", "width", "height", "row_step", "n_bytes", "bigendian", "message"),
    [
        ([_field("x", 0, 7), _field("y", 4, 7)], 8, 2, 1, 16, 16, False, r"lacks field\(s\) \['z'\]"),
        (XYZ_FIELDS, 8, 2, 1, 16, 16, False, "exceeds point_step 8"),
        (XYZ_FIELDS, 12, 2, 1, 24, 20, False, "data holds 20 bytes"),
        (XYZ_FIELDS, 12, 2, 2, 24, 52, False, "data holds 52 bytes"),
        (XYZ_FIELDS, 12, 2, 2, 20, 40, False, "row_step 20 is smaller"),
        (XYZ_FIELDS, 12, 2, 1, 24, 24, True, "big-endian"),
        ([*XYZ_FIELDS[:2], _field("z", 8, 9)], 12, 2, 1, 24, 24, False, "unknown PointField datatype 9"),
        ([*XYZ_FIELDS, _field("x", 8, 7)], 12, 2, 1, 24, 24, False, "duplicate PointCloud2 field 'x'"),
        (XYZ_FIELDS, 0, 2, 1, 0, 0, False, "point_step must be positive"),
    ],
)
def test_malformed_clouds_raise_a_clear_error(fields, point_step, width, height, row_step, n_bytes, bigendian, message):
    msg = _raw_cloud(fields, point_step, width, height, row_step, bytes(n_bytes), is_bigendian=bigendian)
    with pytest.raises(MessageConversionError, match=message):
        cloud_to_xyz(msg)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": np.zeros((3, 2), np.float32)}, "points must be Nx3"),
        ({"colors": np.zeros((2, 3), np.uint8)}, "colors has 2 entries but there are 3 points"),
        ({"colors": np.zeros((3, 3), np.float32)}, "uint8"),
        ({"labels": np.array([0, -1, 2])}, "labels must be integers"),
        ({"labels": np.array([0.0, 1.0, 2.0])}, "labels must be integers"),
        ({"scores": np.zeros(4, np.float32)}, "scores has 4 entries"),
    ],
)
def test_bad_labeled_cloud_arrays_raise(kwargs, message):
    arrays = {
        "points": np.zeros((3, 3), np.float32),
        "colors": np.zeros((3, 3), np.uint8),
        "labels": np.zeros(3, np.uint32),
        "scores": np.zeros(3, np.float32),
    }
    arrays.update(kwargs)
    with pytest.raises(MessageConversionError, match=message):
        labeled_cloud_to_msg(header=HEADER, **arrays)


# ---------------------------------------------------------------- Image


def _raw_image(encoding: str, width: int, height: int, step: int, payload: bytes, bigendian: int = 0) -> Image:
    data = array.array("B")
    data.frombytes(payload)
    return Image(
        header=HEADER, width=width, height=height, encoding=encoding, step=step, data=data, is_bigendian=bigendian
    )


def test_rgb8_and_bgr8_round_trip_with_real_colour(seven_scenes_frame):
    rgb = seven_scenes_frame.color
    msg = rgb_to_image(rgb, HEADER)
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", 640, 480, 1920)
    assert bytes(msg.data[:3]) == bytes(rgb[0, 0])
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)

    bgr = rgb_to_image(rgb, HEADER, encoding="bgr8")
    assert bgr.encoding == "bgr8" and bytes(bgr.data[:3]) == bytes(rgb[0, 0, ::-1])
    np.testing.assert_array_equal(image_to_rgb(bgr), rgb)


def test_colour_reading_honours_step_padding_and_alpha():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = b"".join(bytes(row[:, ::-1]) + b"\xff" * 7 for row in rgb)  # bgr8 rows, 7 padding bytes
    np.testing.assert_array_equal(image_to_rgb(_raw_image("bgr8", 3, 2, 16, padded)), rgb)
    rgba = b"".join(bytes(np.concatenate([row, np.full((3, 1), 9, np.uint8)], axis=1)) for row in rgb)
    np.testing.assert_array_equal(image_to_rgb(_raw_image("rgba8", 3, 2, 12, rgba)), rgb)


def test_16uc1_depth_round_trip_preserves_millimetres_exactly():
    raw = read_depth_u16(data_path("7scenes", "frame-000000.depth.png"))
    raw = np.where(raw == 65535, 0, raw).astype(np.uint16)
    source = _raw_image("16UC1", raw.shape[1], raw.shape[0], raw.shape[1] * 2, raw.astype("<u2").tobytes())
    depth = image_to_depth(source)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, raw / 1000.0, rtol=1e-6)
    assert np.all(depth[raw == 0] == 0)

    written = depth_to_image(depth, HEADER)
    assert (written.encoding, written.step) == ("16UC1", raw.shape[1] * 2)
    assert bytes(written.data) == raw.astype("<u2").tobytes()


def test_32fc1_depth_round_trip_is_exact_and_invalid_values_become_zero(seven_scenes_frame):
    depth = seven_scenes_frame.depth
    msg = depth_to_image(depth, HEADER, encoding="32FC1")
    assert msg.encoding == "32FC1" and msg.step == depth.shape[1] * 4
    np.testing.assert_array_equal(image_to_depth(msg), depth)

    noisy = np.array([[1.5, np.nan], [np.inf, -2.0]], dtype="<f4")
    padded = b"".join(row.tobytes() + b"\x00" * 4 for row in noisy)
    np.testing.assert_array_equal(image_to_depth(_raw_image("32FC1", 2, 2, 12, padded)), [[1.5, 0], [0, 0]])


def test_class_id_images_round_trip():
    labels = np.array([[0, 1, 65535], [255, 19, 7]], dtype=np.int64)
    msg = labels_to_image(labels, HEADER)
    assert msg.encoding == "16UC1"
    np.testing.assert_array_equal(image_to_labels(msg), labels)
    mono8 = _raw_image("mono8", 3, 2, 4, bytes([1, 2, 3, 0, 4, 5, 6, 0]))
    np.testing.assert_array_equal(image_to_labels(mono8), [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(MessageConversionError, match=r"\[0, 65535\]"):
        labels_to_image(np.array([[70000]]), HEADER)


@pytest.mark.parametrize(
    ("reader", "msg", "message"),
    [
        (image_to_rgb, _raw_image("yuv422", 2, 2, 4, bytes(8)), "unsupported colour image encoding 'yuv422'"),
        (image_to_depth, _raw_image("rgb8", 2, 2, 6, bytes(12)), "unsupported depth image encoding 'rgb8'"),
        (image_to_rgb, _raw_image("rgb8", 4, 2, 10, bytes(20)), "step 10 is smaller than width 4"),
        (image_to_rgb, _raw_image("rgb8", 2, 2, 6, bytes(10)), "data holds 10 bytes but step 6 x height 2"),
        (image_to_depth, _raw_image("16UC1", 2, 2, 4, bytes(8), bigendian=1), "big-endian 16UC1"),
        (image_to_depth, _raw_image("32FC1", 2, 1, 9, bytes(9)), "not a multiple of 4"),
        (image_to_labels, _raw_image("16UC1", 0, 0, 0, b""), r"label image is empty \(0x0\)"),
        (image_to_labels, _raw_image("32FC1", 1, 1, 4, bytes(4)), "unsupported label image encoding"),
    ],
)
def test_malformed_images_raise_a_clear_error(reader, msg, message):
    with pytest.raises(MessageConversionError, match=message):
        reader(msg)


def test_big_endian_flag_is_irrelevant_for_8_bit_colour():
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(image_to_rgb(_raw_image("rgb8", 2, 2, 6, rgb.tobytes(), bigendian=1)), rgb)


@pytest.mark.parametrize(
    ("writer", "array_in", "kwargs", "message"),
    [
        (rgb_to_image, np.zeros((2, 2), np.uint8), {}, "HxWx3 uint8"),
        (rgb_to_image, np.zeros((2, 2, 3), np.uint8), {"encoding": "mono8"}, "rgb8 or bgr8"),
        (depth_to_image, np.zeros((2, 2), np.uint16), {}, "float array in metres"),
        (depth_to_image, np.zeros((2, 2), np.float32), {"encoding": "16SC1"}, "16UC1 or 32FC1"),
        (labels_to_image, np.zeros((2, 2), np.float32), {}, "integer array"),
    ],
)
def test_bad_image_arrays_raise(writer, array_in, kwargs, message):
    with pytest.raises(MessageConversionError, match=message):
        writer(array_in, HEADER, **kwargs)


# ---------------------------------------------------------------- CameraInfo, poses, stamps


def test_camera_info_round_trip_with_real_intrinsics():
    intrinsics = SevenScenes().intrinsics
    msg = intrinsics_to_camera_info(intrinsics, HEADER)
    assert (msg.width, msg.height) == (640, 480)
    assert list(msg.k) == [585.0, 0.0, 320.0, 0.0, 585.0, 240.0, 0.0, 0.0, 1.0]
    assert list(msg.p) == [585.0, 0.0, 320.0, 0.0, 0.0, 585.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert camera_info_to_intrinsics(msg) == intrinsics


@pytest.mark.parametrize(
    ("k", "width", "height", "message"),
    [
        ([0.0] * 9, 640, 480, "all zeros"),
        ([500.0, 0, 320, 0, 500, 240, 0, 0, 1], 0, 480, "image size must be positive"),
        ([np.nan, 0, 320, 0, 500, 240, 0, 0, 1], 640, 480, "finite"),
        ([-500.0, 0, 320, 0, 500, 240, 0, 0, 1], 640, 480, "focal lengths must be positive"),
    ],
)
def test_invalid_camera_info_raises(k, width, height, message):
    msg = CameraInfo(k=np.array(k, dtype=np.float64), width=width, height=height)
    with pytest.raises(MessageConversionError, match=message):
        camera_info_to_intrinsics(msg)


def test_pose_round_trip_with_a_real_7scenes_pose():
    pose = read_pose_txt(data_path("7scenes", "frame-000500.pose.txt"))
    # 7-Scenes rotations are orthonormal to ~1e-4 only; a quaternion carries the nearest rotation.
    u, _, vt = np.linalg.svd(pose[:3, :3])
    nearest = pose.copy()
    nearest[:3, :3] = u @ vt
    round_trip = pose_to_matrix(matrix_to_pose(pose))
    np.testing.assert_allclose(round_trip, nearest, atol=1e-9)
    np.testing.assert_allclose(round_trip, pose, atol=1e-3)
    np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(nearest)), nearest, atol=1e-12)


def test_pose_quaternion_convention_is_ros_xyzw():
    half = np.sqrt(0.5)
    pose = Pose(orientation=Quaternion(x=0.0, y=0.0, z=half, w=half))
    pose.position.x = 2.0
    expected = np.array([[0.0, -1, 0, 2], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(pose_to_matrix(pose), expected, atol=1e-12)


def test_invalid_poses_raise():
    with pytest.raises(MessageConversionError, match="unit quaternion"):
        pose_to_matrix(Pose(orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)))
    nan_pose = Pose()
    nan_pose.position.y = float("nan")
    with pytest.raises(MessageConversionError, match="NaN"):
        pose_to_matrix(nan_pose)
    with pytest.raises(MessageConversionError, match="non-rigid"):
        matrix_to_pose(np.diag([2.0, 1.0, 1.0, 1.0]))


def test_stamps_convert_exactly():
    stamp = seconds_to_stamp(1_700_000_000.25)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 250_000_000)
    assert stamp_to_seconds(stamp) == 1_700_000_000.25
    with pytest.raises(MessageConversionError, match="negative"):
        seconds_to_stamp(-1.0)
    with pytest.raises(MessageConversionError, match="finite"):
        seconds_to_stamp(float("inf"))
