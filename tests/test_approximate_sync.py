"""The RGB-D inputs are synchronised by the real message_filters over DDS, with arrivals counted per input."""

from __future__ import annotations

import threading
import time

import message_filters
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ovseg3d_ros.conversions import seconds_to_stamp, stamp_to_seconds
from ovseg3d_ros.nodes.approximate_sync import SynchronizedInputs

pytestmark = pytest.mark.ros


def test_subscriptions_over_dds_deliver_sets_within_slop_and_count_every_input(ros_context):
    """Jittered stamps match, a lost depth image and a depth image beyond the slop lose only their frames."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    listener = rclpy.create_node("sync_listener", context=ros_context)
    talker = rclpy.create_node("sync_talker", context=ros_context)
    sets: list[tuple] = []
    sync = SynchronizedInputs(
        listener,
        [(Image, "rgb/image"), (Image, "depth/image"), (CameraInfo, "rgb/camera_info")],
        lambda *messages: sets.append(messages),
        qos,
        queue_size=10,
        slop=0.05,
    )
    assert isinstance(sync.synchronizer, message_filters.ApproximateTimeSynchronizer)
    publishers = [
        talker.create_publisher(Image, "rgb/image", qos),
        talker.create_publisher(Image, "depth/image", qos),
        talker.create_publisher(CameraInfo, "rgb/camera_info", qos),
    ]
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    executor.add_node(talker)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    depth_offsets = {0: 0.004, 1: -0.004, 2: None, 3: 0.3, 4: 0.02, 5: 0.0}  # None: lost; 0.3 s: beyond the slop
    try:
        deadline = time.monotonic() + 10
        while any(p.get_subscription_count() == 0 for p in publishers) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        for frame, offset in depth_offsets.items():
            stamp = seconds_to_stamp(100 + frame)
            publishers[2].publish(CameraInfo(header=Header(stamp=stamp, frame_id="cam")))
            if offset is not None:
                depth_stamp = seconds_to_stamp(100 + frame + offset)
                publishers[1].publish(Image(header=Header(stamp=depth_stamp, frame_id="cam"), encoding="16UC1"))
            publishers[0].publish(Image(header=Header(stamp=stamp, frame_id="cam"), encoding="rgb8"))
            time.sleep(0.05)
        while len(sets) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more may arrive
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
    assert [round(stamp_to_seconds(info.header.stamp)) - 100 for _, _, info in sets] == [0, 1, 4, 5]
    assert [(rgb.encoding, depth.encoding) for rgb, depth, _ in sets] == [("rgb8", "16UC1")] * 4
    assert all(
        abs(stamp_to_seconds(rgb.header.stamp) - stamp_to_seconds(depth.header.stamp)) < 0.05 for rgb, depth, _ in sets
    )
    assert sync.monitor.take_counts() == {"rgb/image": 6, "depth/image": 5, "rgb/camera_info": 6}
    assert sync.monitor.take_counts() == {"rgb/image": 0, "depth/image": 0, "rgb/camera_info": 0}
