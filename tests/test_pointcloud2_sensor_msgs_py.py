"""Our PointCloud2 output reads back identically through the real sensor_msgs_py, which reads every plain cloud.

The module's own view is kept only for what ``read_points`` cannot read (padded rows, ``count > 1``
fields, rosbags messages); each of those cases is shown here, so the view goes when upstream reads them.
"""

from __future__ import annotations

import array
import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from sensor_msgs_py import point_cloud2
from std_msgs.msg import Header

from ovseg3d_ros.conversions import (
    cloud_to_structured,
    cloud_to_xyz_rgb,
    labeled_cloud_to_msg,
    read_labeled_cloud,
    structured_to_cloud,
    xyz_rgb_to_cloud,
)
from ovseg3d_ros.conversions import pointcloud2 as ours

HEADER = Header(frame_id="map")


def _labeled(n: int):
    rng = np.random.default_rng(7)
    points = rng.normal(scale=3.0, size=(n, 3)).astype(np.float32)
    points[3] = (np.nan, 1.0, np.inf)  # invalid points must travel bit for bit too
    colors = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    labels = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    labels[0] = 2**32 - 1
    scores = rng.random(n).astype(np.float32)
    return points, colors, labels, scores


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype.names == b.dtype.names
    for name in a.dtype.names:
        np.testing.assert_array_equal(
            np.ascontiguousarray(a[name]).view(np.uint8), np.ascontiguousarray(b[name]).view(np.uint8)
        )


@pytest.fixture
def read_points_calls(monkeypatch) -> list[PointCloud2]:
    """Records the clouds our readers hand to sensor_msgs_py's ``read_points``."""
    calls: list[PointCloud2] = []
    real = point_cloud2.read_points

    def spy(cloud, *args, **kwargs):
        calls.append(cloud)
        return real(cloud, *args, **kwargs)

    monkeypatch.setattr(ours.sensor_msgs_py_cloud, "read_points", spy)
    return calls


def test_labeled_cloud_reads_back_identically_with_read_points():
    points, colors, labels, scores = _labeled(5000)
    msg = labeled_cloud_to_msg(points, colors, labels, scores, HEADER)
    theirs = point_cloud2.read_points(msg)
    assert theirs.dtype.names == ("x", "y", "z", "rgb", "label", "score")
    expected = np.empty(len(points), dtype=ours.LABELED_CLOUD_DTYPE)
    expected["x"], expected["y"], expected["z"] = points.T
    expected["rgb"], expected["label"], expected["score"] = ours.pack_rgb(colors), labels, scores
    _same_bits(theirs, expected)
    assert not msg.is_dense  # one point is NaN/inf; read_points drops it only when asked
    assert len(point_cloud2.read_points(msg, skip_nans=True)) == len(points) - 1
    xyz = point_cloud2.read_points_numpy(msg, field_names=["x", "y", "z"])
    np.testing.assert_array_equal(xyz, points)


def test_xyz_rgb_and_general_structured_clouds_read_back_identically():
    points, colors, _, _ = _labeled(100)
    _same_bits(point_cloud2.read_points(xyz_rgb_to_cloud(points, colors, HEADER)), _xyz_rgb(points, colors))
    mixed = np.zeros(7, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i8", "<i1"), ("u16", "<u2"), ("f64", "<f8")])
    mixed["x"], mixed["i8"], mixed["u16"], mixed["f64"] = np.arange(7), -np.arange(7), 60000, np.pi
    msg = structured_to_cloud(mixed, HEADER)
    assert [f.datatype for f in msg.fields][3:] == [PointField.INT8, PointField.UINT16, PointField.FLOAT64]
    _same_bits(point_cloud2.read_points(msg), mixed)
    empty = labeled_cloud_to_msg(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), [], [], HEADER)
    assert point_cloud2.read_points(empty).shape == (0,)


def _xyz_rgb(points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    cloud = np.empty(len(points), dtype=ours.XYZ_RGB_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = points.T
    cloud["rgb"] = ours.pack_rgb(colors)
    return cloud


def test_plain_rclpy_clouds_are_read_by_sensor_msgs_py(read_points_calls):
    points, colors, labels, scores = _labeled(200)
    msg = labeled_cloud_to_msg(points, colors, labels, scores, HEADER)
    cloud = read_labeled_cloud(msg)
    assert read_points_calls == [msg]
    np.testing.assert_array_equal(cloud.points, points)
    np.testing.assert_array_equal(cloud.colors, colors)
    np.testing.assert_array_equal(cloud.labels, labels)
    np.testing.assert_array_equal(cloud.scores, scores)
    view = cloud_to_structured(msg)
    assert not view.flags.writeable and not view.flags.owndata  # a view of the message, never a copy


def _padded_rows_cloud() -> tuple[PointCloud2, np.ndarray, np.ndarray]:
    """An organised 2x3 x, y, z, rgb cloud with 8 bytes after each row, as some drivers send."""
    width, height, point_step = 3, 2, 16
    row_step = width * point_step + 8
    rng = np.random.default_rng(1)
    points = rng.normal(size=(width * height, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(width * height, 3), dtype=np.uint8)
    payload = bytearray(b"\xee" * (row_step * height))
    for i, (p, c) in enumerate(zip(points, colors, strict=True)):
        base = (i // width) * row_step + (i % width) * point_step
        struct.pack_into("<fffI", payload, base, *p, (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]))
    fields = [PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32, count=1) for k, n in enumerate("xyz")]
    fields.append(PointField(name="rgb", offset=12, datatype=PointField.UINT32, count=1))
    data = array.array("B", payload)
    msg = PointCloud2(header=HEADER, height=height, width=width, fields=fields, point_step=point_step)
    msg.row_step, msg.data, msg.is_dense = row_step, data, True
    return msg, points, colors


def test_padded_rows_are_read_by_our_view_because_read_points_ignores_row_step(read_points_calls):
    msg, points, colors = _padded_rows_cloud()
    read_points, read_colors = cloud_to_xyz_rgb(msg)
    assert read_points_calls == []
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)
    theirs = point_cloud2.read_points_numpy(msg, field_names=["x", "y", "z"])
    assert not np.array_equal(theirs, points)  # the second row is read 8 bytes early


def test_count_fields_keep_their_name_where_read_points_splits_them(read_points_calls):
    msg = PointCloud2(header=HEADER, height=1, width=2, point_step=16, row_step=32, is_dense=True)
    msg.fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="ring", offset=12, datatype=PointField.UINT16, count=2),
    ]
    msg.data = array.array("B", struct.pack("<fffHH", 1, 2, 3, 4, 5) + struct.pack("<fffHH", 6, 7, 8, 9, 10))
    structured = cloud_to_structured(msg)
    assert read_points_calls == []
    np.testing.assert_array_equal(structured["ring"], [[4, 5], [9, 10]])
    assert point_cloud2.read_points(msg).dtype.names[3:] == ("ring_0", "ring_1")


def test_rosbags_deserialised_clouds_are_read_by_our_view(read_points_calls):
    """Bags are read with rosbags (no rosbag2 here); read_points refuses anything but an rclpy message."""
    from rosbags.typesys import Stores, get_typestore

    points, colors, labels, scores = _labeled(50)
    msg = labeled_cloud_to_msg(points, colors, labels, scores, HEADER)
    from_bag = get_typestore(Stores.ROS2_KILTED).deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/PointCloud2")
    cloud = read_labeled_cloud(from_bag)
    assert read_points_calls == []
    np.testing.assert_array_equal(cloud.points, points)
    np.testing.assert_array_equal(cloud.labels, labels)
    with pytest.raises(AssertionError, match=r"not a sensor_msgs\.msg\.PointCloud2"):
        point_cloud2.read_points(from_bag)
