"""A frame's camera pose from the camera_pose topic (which bags carry) or, failing that, from TF.

camera_pose is matched by stamp within a tolerance; a frame it has no pose for is looked up in
TF (world <- the image's frame at the image's stamp) when tf2_ros is importable. Poses may lag
the images, so :meth:`CameraPoses.wait_for` retries until a deadline before giving up with the
reason, and a frame without a pose is skipped rather than integrated at a wrong place.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import Header

from ovseg3d_ros.conversions import pose_stamped_to_matrix, stamp_to_nanoseconds, transform_to_matrix
from ovseg3d_ros.pose_buffer import PoseBuffer

try:  # TF for frames without a camera_pose, when the ROS install has it (ENVIRONMENT.md)
    import tf2_ros
except ImportError:
    tf2_ros = None


class CameraPoses:
    """camera_pose messages by stamp, and TF for the frames they do not cover."""

    def __init__(self, node: Node, world_frame: str, tolerance_s: float, use_tf: bool) -> None:
        self.world_frame = world_frame
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.buffer = PoseBuffer()
        self.tf_buffer = None
        if use_tf and tf2_ros is not None:
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)

    @property
    def sources(self) -> str:
        return "camera_pose + TF" if self.tf_buffer is not None else "camera_pose"

    def add(self, msg: PoseStamped) -> None:
        """Keep a camera_pose; raises ValueError for one in another frame or a malformed one."""
        if msg.header.frame_id and msg.header.frame_id != self.world_frame:
            raise ValueError(f"camera_pose in frame {msg.header.frame_id!r}, expected {self.world_frame!r}")
        self.buffer.add(stamp_to_nanoseconds(msg.header.stamp), pose_stamped_to_matrix(msg))

    def lookup(self, header: Header) -> tuple[np.ndarray | None, str]:
        """The pose of an image with ``header``, or None and why there is none."""
        pose = self.buffer.lookup(stamp_to_nanoseconds(header.stamp), self.tolerance_ns)
        reason = "no camera_pose within pose_tolerance_s of its stamp"
        if pose is not None or self.tf_buffer is None:
            return pose, reason
        try:
            transform = self.tf_buffer.lookup_transform(self.world_frame, header.frame_id, Time.from_msg(header.stamp))
            return transform_to_matrix(transform.transform), ""
        except Exception as error:  # tf2 raises several unrelated exception types
            return None, f"{reason} and no TF {self.world_frame} <- {header.frame_id!r}: {error}"

    def wait_for(self, header: Header, wait_s: float, stop: threading.Event) -> tuple[np.ndarray | None, str]:
        """:meth:`lookup`, retried for up to ``wait_s`` for a pose that arrives late (or until ``stop``)."""
        deadline = time.monotonic() + wait_s
        while True:
            pose, reason = self.lookup(header)
            if pose is not None or time.monotonic() >= deadline or stop.is_set():
                return pose, reason
            time.sleep(0.01)
