"""``ovseg3d-bag``: bags written from the sample data read back exactly; play publishes them over DDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from transforms3d.quaternions import quat2mat

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.scenes.image_io import read_color, read_depth_u16
from ovseg3d_core.data.scenes.sevenscenes import read_pose_txt
from ovseg3d_ros.tools.bag import (
    TOPIC_CAMERA_INFO,
    TOPIC_DEPTH,
    TOPIC_POSE,
    TOPIC_RGB,
    TOPIC_SEMANTIC,
    BagToolError,
    dataset_frames,
    main,
    parse_remaps,
    play_bag,
    write_bag,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
FRAMES, STRIDE = 5, 10


def _read_bag(path: Path) -> dict[str, list[tuple[int, object, bytes]]]:
    """topic -> [(bag timestamp, rosbags message, raw CDR)] in bag order, decoded by rosbags alone."""
    messages: dict[str, list] = {}
    with Reader(path) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            messages.setdefault(connection.topic, []).append((timestamp, msg, bytes(raw)))
    return messages


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def sevenscenes_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "sevenscenes_mcap"
    assert main(["write", str(path), "--frames", str(FRAMES), "--stride", str(STRIDE)]) == 0
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_written_7scenes_bag_reads_back_exactly(tmp_path, storage):
    path = tmp_path / f"seven_{storage}"
    summary = write_bag(dataset_frames("7scenes", FRAMES, STRIDE), path, storage=storage, progress=False)
    assert summary.frames == FRAMES and summary.messages == 4 * FRAMES
    assert summary.duration_s == pytest.approx((FRAMES - 1) * STRIDE / 30)
    metadata = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == storage and metadata["message_count"] == 4 * FRAMES
    assert [p.suffix for p in path.iterdir() if p.name != "metadata.yaml"] == [".mcap" if storage == "mcap" else ".db3"]

    bag = _read_bag(path)
    assert sorted(bag) == sorted([TOPIC_RGB, TOPIC_DEPTH, TOPIC_CAMERA_INFO, TOPIC_POSE])
    root = data_path("7scenes")
    for i in range(FRAMES):
        name = f"frame-{i * STRIDE:06d}"
        expected_ns = 1_700_000_000 * 10**9 + round(i * STRIDE / 30 * 1e9)

        timestamp, rgb, _ = bag[TOPIC_RGB][i]
        assert timestamp == expected_ns == _stamp_ns(rgb)
        assert (rgb.encoding, rgb.width, rgb.height, rgb.step) == ("rgb8", 640, 480, 1920)
        assert rgb.header.frame_id == "camera_optical_frame"
        np.testing.assert_array_equal(rgb.data.reshape(480, 640, 3), read_color(root / f"{name}.color.jpg"))

        timestamp, depth, _ = bag[TOPIC_DEPTH][i]
        assert timestamp == expected_ns and (depth.encoding, depth.step, depth.is_bigendian) == ("16UC1", 1280, 0)
        raw_mm = read_depth_u16(root / f"{name}.depth.png")
        np.testing.assert_array_equal(depth.data.view("<u2").reshape(480, 640), np.where(raw_mm == 65535, 0, raw_mm))

        timestamp, pose, _ = bag[TOPIC_POSE][i]
        assert timestamp == expected_ns and pose.header.frame_id == "map"
        q = pose.pose.orientation
        matrix = np.eye(4)
        matrix[:3, :3] = quat2mat([q.w, q.x, q.y, q.z])
        matrix[:3, 3] = [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]
        np.testing.assert_allclose(matrix, read_pose_txt(root / f"{name}.pose.txt"), atol=1e-3)
        np.testing.assert_array_equal(matrix[:3, 3], read_pose_txt(root / f"{name}.pose.txt")[:3, 3])

        timestamp, info, _ = bag[TOPIC_CAMERA_INFO][i]
        assert timestamp == expected_ns and (info.width, info.height) == (640, 480)
        np.testing.assert_array_equal(info.k, [585, 0, 320, 0, 585, 240, 0, 0, 1])


def test_redwood_bag_has_its_own_intrinsics_and_trajectory(tmp_path):
    path = tmp_path / "redwood"
    write_bag(dataset_frames("redwood", 2, stride=2), path, storage="sqlite3", progress=False)
    bag = _read_bag(path)
    assert len(bag[TOPIC_RGB]) == 2 and TOPIC_SEMANTIC not in bag
    np.testing.assert_array_equal(bag[TOPIC_CAMERA_INFO][0][1].k, [525, 0, 319.5, 0, 525, 239.5, 0, 0, 1])
    log = (data_path("open3d_rgbd") / "trajectory.log").read_text().split("\n")
    third_pose = np.array([row.split() for row in log[11:15]], dtype=float)  # entry 2: header line 10, rows 11-14
    position = bag[TOPIC_POSE][1][1].pose.position
    np.testing.assert_array_equal([position.x, position.y, position.z], third_pose[:3, 3])


def test_rendered_scannet_bag_has_class_ids_aligned_with_depth(tmp_path):
    path = tmp_path / "scannet"
    assert main(["write", str(path), "--dataset", "scannet", "--frames", "2", "--format", "sqlite3"]) == 0
    bag = _read_bag(path)
    assert len(bag[TOPIC_SEMANTIC]) == 2
    for (_, semantic, _), (_, depth, _) in zip(bag[TOPIC_SEMANTIC], bag[TOPIC_DEPTH], strict=True):
        assert semantic.encoding == "16UC1" and _stamp_ns(semantic) == _stamp_ns(depth)
        labels = semantic.data.view("<u2").reshape(semantic.height, semantic.width)
        depth_mm = depth.data.view("<u2").reshape(depth.height, depth.width)
        assert set(np.unique(labels)) <= set(range(20)) | {255}
        assert np.all(labels[depth_mm == 0] == 255)  # no surface hit: no class
        assert (labels < 20).mean() > 0.5  # most of the view sees labeled surfaces


def test_write_refuses_bad_requests(tmp_path, sevenscenes_bag):
    with pytest.raises(BagToolError, match="already exists"):
        write_bag(dataset_frames("7scenes", 1), sevenscenes_bag, progress=False)
    with pytest.raises(BagToolError, match="unknown storage format"):
        write_bag(dataset_frames("7scenes", 1), tmp_path / "x", storage="rosbag1", progress=False)
    with pytest.raises(BagToolError, match="unknown dataset"):
        next(dataset_frames("kitti", 1))
    with pytest.raises(BagToolError, match="frames >= 1"):
        next(dataset_frames("7scenes", 0))
    with pytest.raises(BagToolError, match="selects none"):
        next(dataset_frames("7scenes", 1, start=5000))
    assert main(["write", str(sevenscenes_bag)]) == 2


def test_parse_remaps():
    assert parse_remaps(["rgb/image:=/cam/rgb", "/a:=b"]) == {"/rgb/image": "/cam/rgb", "/a": "/b"}
    with pytest.raises(BagToolError, match="FROM:=TO"):
        parse_remaps(["/a=/b"])


def test_play_publishes_every_message_in_order_with_timing_and_remaps(ros_context, sevenscenes_bag):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    bag = _read_bag(sevenscenes_bag)
    listener = rclpy.create_node("bag_listener", context=ros_context)
    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[str, list[bytes]] = {}
    subscribed = {"/camera/color": Image, TOPIC_DEPTH: Image, TOPIC_CAMERA_INFO: CameraInfo, TOPIC_POSE: PoseStamped}
    for topic, msg_type in subscribed.items():
        listener.create_subscription(
            msg_type, topic, lambda raw, t=topic: received.setdefault(t, []).append(bytes(raw)), qos, raw=True
        )
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rate, loops = 4.0, 2
    try:
        started = time.monotonic()
        summary = play_bag(
            sevenscenes_bag,
            context=ros_context,
            rate=rate,
            loops=loops,
            remaps={TOPIC_RGB: "/camera/color"},
            wait_for_subscribers_s=10.0,
            progress=False,
        )
        played_s = time.monotonic() - started
        deadline = time.monotonic() + 10
        while sum(map(len, received.values())) < loops * 4 * FRAMES and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
    assert summary.published == loops * 4 * FRAMES and summary.loops == loops and not summary.interrupted
    for topic in subscribed:
        source = TOPIC_RGB if topic == "/camera/color" else topic
        assert received[topic] == [raw for _, _, raw in bag[source]] * loops, topic
    bag_duration_s = (FRAMES - 1) * STRIDE / 30
    # Two passes, one frame interval apart, at 4x speed: never faster than the recorded timing allows.
    assert played_s >= (loops * bag_duration_s + bag_duration_s / (FRAMES - 1)) / rate * 0.95


def test_endless_play_stops_when_asked(ros_context, sevenscenes_bag):
    stop = threading.Event()
    result = []
    player = threading.Thread(
        target=lambda: result.append(play_bag(sevenscenes_bag, context=ros_context, rate=8.0, loops=0, stop=stop))
    )
    player.start()
    time.sleep(1.5)  # > one pass at 8x (0.17 s) plus node start-up
    stop.set()
    player.join(timeout=10)
    assert not player.is_alive()
    summary = result[0]
    assert summary.interrupted and summary.loops >= 1 and summary.published >= 4 * FRAMES


def test_play_command_stops_cleanly_on_sigterm(sevenscenes_bag):
    process = subprocess.Popen(
        [sys.executable, "-m", "ovseg3d_ros.tools.bag", "play", str(sevenscenes_bag), "--loop"],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stderr_chunks.extend(iter(lambda: process.stderr.read(1), "")))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while "msg/s" not in "".join(stderr_chunks) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)  # wait until it is publishing (tqdm reports a rate)
        time.sleep(1.0)
        assert process.poll() is None, "".join(stderr_chunks)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=5)
    stdout, stderr = process.stdout.read(), "".join(stderr_chunks)
    assert process.returncode == 0, stderr
    assert "published" in stdout and "Traceback" not in stderr
