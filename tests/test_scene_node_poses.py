"""scene_node in-process over real DDS: its pose sources (camera_pose first, TF for frames it has no
pose for) and a shutdown that interrupts a purification.

TF is a stand-in bound where ``ovseg3d_ros.nodes.camera_poses`` imports tf2_ros: a Buffer answering one
fixed transform and a listener that does nothing.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

pytestmark = pytest.mark.ros

TF_POSE = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
TOPIC_POSE = np.array([[1.0, 0.0, 0.0, -4.0], [0.0, 0.0, -1.0, 5.0], [0.0, 1.0, 0.0, 6.0], [0.0, 0.0, 0.0, 1.0]])


class StandInBuffer:
    """tf2_ros.Buffer reduced to lookup_transform, answering ``transform`` for every query and recording them."""

    def __init__(self) -> None:
        self.transform = None
        self.lookups: list[tuple] = []

    def lookup_transform(self, target_frame, source_frame, time):
        self.lookups.append((target_frame, source_frame, time))
        return self.transform


def stand_in_tf2_ros() -> types.SimpleNamespace:
    return types.SimpleNamespace(Buffer=StandInBuffer, TransformListener=lambda buffer, node: None)


def transform_stamped(matrix: np.ndarray, stamp) -> object:
    from geometry_msgs.msg import TransformStamped

    from ovseg3d_ros.conversions import matrix_to_pose

    pose = matrix_to_pose(matrix)
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, "map", "camera_optical_frame"
    t = msg.transform.translation
    t.x, t.y, t.z = pose.position.x, pose.position.y, pose.position.z
    msg.transform.rotation = pose.orientation
    return msg


def test_frame_pose_comes_from_camera_pose_when_it_has_one_else_from_tf(ros_context, monkeypatch):
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.time import Time
    from std_msgs.msg import Header

    import ovseg3d_ros.nodes.camera_poses as camera_poses
    import ovseg3d_ros.nodes.scene_node as scene_node
    from ovseg3d_ros.conversions import matrix_to_pose_stamped, nanoseconds_to_stamp
    from ovseg3d_ros.nodes.qos import sensor_input_qos

    monkeypatch.setattr(camera_poses, "tf2_ros", stand_in_tf2_ros())
    node = scene_node.SceneNode(context=ros_context)
    stop = threading.Event()
    peer = rclpy.create_node("pose_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        stamp_ns = 1_700_000_000 * 10**9
        header = Header(stamp=nanoseconds_to_stamp(stamp_ns), frame_id="camera_optical_frame")
        node.poses.tf_buffer.transform = transform_stamped(TF_POSE, header.stamp)

        # No camera_pose yet: the pose is the transform world <- the image's frame at the image's stamp.
        tf_only, _ = node.poses.wait_for(header, 0.0, stop)
        np.testing.assert_allclose(tf_only, TF_POSE, atol=1e-9)
        assert node.poses.tf_buffer.lookups == [("map", "camera_optical_frame", Time.from_msg(header.stamp))]

        # A camera_pose published for that stamp wins over TF; a frame far from it still gets TF.
        publisher = peer.create_publisher(scene_node.PoseStamped, "camera_pose", sensor_input_qos(50))
        pose_msg = matrix_to_pose_stamped(TOPIC_POSE, Header(stamp=header.stamp, frame_id="map"))
        for _ in range(100):
            publisher.publish(pose_msg)
            executor.spin_once(timeout_sec=0.05)
            if len(node.poses.buffer):
                break
        assert len(node.poses.buffer), "camera_pose never reached the node although TF is in use"
        both, _ = node.poses.wait_for(header, 0.0, stop)
        np.testing.assert_allclose(both, TOPIC_POSE, atol=1e-9)
        later = Header(stamp=nanoseconds_to_stamp(stamp_ns + 10**9), frame_id="camera_optical_frame")
        far, _ = node.poses.wait_for(later, 0.0, stop)
        np.testing.assert_allclose(far, TF_POSE, atol=1e-9)
    finally:
        executor.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_a_shutdown_while_publishing_is_not_a_labeling_failure(ros_context):
    """SIGTERM shuts the context down under a running purification: its failure is not a counted error."""
    import threading
    import time

    import rclpy
    from rclpy.parameter import Parameter

    import ovseg3d_ros.nodes.scene_node as scene_node

    node = scene_node.SceneNode(
        context=ros_context,
        parameter_overrides=[Parameter("use_tf", value=False), Parameter("purify_period_s", value=0.05)],
    )
    started = threading.Event()

    def publish_during_shutdown() -> None:  # a purification still running when the context goes away
        started.set()
        while ros_context.ok():
            time.sleep(0.01)
        raise RuntimeError("publisher's context is invalid")  # what rclpy raises then

    node.publish_labels = publish_during_shutdown
    try:
        node.online.purify_due = lambda waiting=0: True  # purification is due
        assert started.wait(timeout=10), "the worker never purified"
        rclpy.shutdown(context=ros_context)
        node.worker.join(timeout=10)
        assert not node.worker.is_alive(), "the worker kept running after the context shut down"
        assert node.report.counters.errors == 0, "the interrupted purification was counted as a labeling failure"
    finally:
        node.destroy_node()
