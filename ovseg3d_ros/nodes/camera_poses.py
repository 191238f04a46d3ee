"""A frame's camera pose from the camera_pose topic (which bags carry) or, failing that, from TF.

camera_pose is matched by stamp within a tolerance. One in another frame than the world frame
(say ``odom``) is carried into the world frame through TF (world <- its frame at its own stamp)
when the worker needs it; it is rejected, with the reason, only when TF has no such link. A frame
that camera_pose does not cover is looked up in TF (world <- the image's frame at the image's
stamp) when tf2_ros is importable. Poses and TF may lag the images, so :meth:`CameraPoses.wait_for`
waits (TF's own ``can_transform`` timeout, in short slices so that a late camera_pose and a
shutdown are noticed) until a deadline; a frame still without a pose is skipped rather than
integrated at a wrong place, and :class:`NoPose` names the transform that was missing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import Header

from ovseg3d_ros.conversions import pose_stamped_to_matrix, stamp_to_nanoseconds, transform_to_matrix
from ovseg3d_ros.nodes.pose_buffer import PoseBuffer

try:  # TF for frames without a camera_pose, when the ROS install has it (ENVIRONMENT.md)
    import tf2_ros
except ImportError:
    tf2_ros = None

WAIT_SLICE_S = 0.05  # longest single TF wait, so a camera_pose arriving meanwhile is seen soon after
FOREIGN_CAPACITY = 500  # camera_poses in other frames kept until a frame needs one


@dataclass(frozen=True)
class NoPose:
    """Why a frame has no pose: the transform that is missing (``map <- camera_optical``) and the details."""

    pair: str
    detail: str

    def __str__(self) -> str:
        return f"no pose {self.pair}: {self.detail}"


class CameraPoses:
    """camera_pose messages by stamp, and TF for the frames they do not cover or are not in the world frame."""

    def __init__(self, node: Node, world_frame: str, tolerance_s: float, use_tf: bool) -> None:
        self.world_frame = world_frame
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.buffer = PoseBuffer()
        self._foreign: deque[tuple[int, str, np.ndarray]] = deque(maxlen=FOREIGN_CAPACITY)
        self._lock = threading.Lock()
        self.tf_buffer = None
        if use_tf and tf2_ros is not None:
            self.tf_buffer = tf2_ros.Buffer()
            # Without a thread of its own: the node's executor spins /tf and /tf_static (a reentrant
            # group), so the worker's waits never block the callbacks that end them.
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)

    @property
    def sources(self) -> str:
        return "camera_pose + TF" if self.tf_buffer is not None else "camera_pose"

    def add(self, msg: PoseStamped) -> None:
        """Keep a camera_pose; raises ValueError for a malformed one, or one in another frame without TF."""
        pose, frame = pose_stamped_to_matrix(msg), msg.header.frame_id
        stamp_ns = stamp_to_nanoseconds(msg.header.stamp)
        if not frame or frame == self.world_frame:
            self.buffer.add(stamp_ns, pose)
        elif self.tf_buffer is None:
            raise ValueError(
                f"camera_pose in frame {frame!r}, expected {self.world_frame!r}, and no TF to transform it "
                "(use_tf is false or tf2_ros is not installed)"
            )
        else:  # resolved through TF when a frame needs it: TF may still lag this message
            with self._lock:
                self._foreign.append((stamp_ns, frame, pose))

    def lookup(self, header: Header, wait_s: float = 0.0) -> tuple[np.ndarray | None, NoPose | None]:
        """The pose of an image with ``header`` (each TF look-up waiting up to ``wait_s``), or None and why."""
        stamp_ns = stamp_to_nanoseconds(header.stamp)
        pose = self.buffer.lookup(stamp_ns, self.tolerance_ns)
        if pose is not None:
            return pose, None
        pair = f"{self.world_frame} <- {header.frame_id}"
        detail = "no camera_pose within pose_tolerance_s of its stamp"
        foreign = self._nearest_foreign(stamp_ns)
        if foreign is not None:
            pose_ns, frame, pose = foreign
            link, error = self._transform(frame, _ros_time(pose_ns), wait_s)
            if link is not None:
                pose = link @ pose
                self.buffer.add(pose_ns, pose)  # the next frame near this stamp finds it at once
                return pose, None
            pair = f"{self.world_frame} <- {frame}"
            detail = (
                f"camera_pose in frame {frame!r}, expected {self.world_frame!r}, rejected: "
                f"TF has no {pair} at its stamp ({error})"
            )
        if self.tf_buffer is None:
            return None, NoPose(pair, detail)
        link, error = self._transform(header.frame_id, Time.from_msg(header.stamp), wait_s)
        if link is not None:
            return link, None
        return None, NoPose(pair, f"{detail}; no TF {self.world_frame} <- {header.frame_id!r}: {error}")

    def wait_for(self, header: Header, wait_s: float, stop: threading.Event) -> tuple[np.ndarray | None, NoPose | None]:
        """:meth:`lookup` until a pose arrives, ``wait_s`` passes or ``stop`` is set."""
        deadline = time.monotonic() + wait_s
        while True:
            slice_s = min(max(deadline - time.monotonic(), 0.0), WAIT_SLICE_S)
            pose, missing = self.lookup(header, slice_s)
            if pose is not None or time.monotonic() >= deadline or stop.is_set():
                return pose, missing
            if self.tf_buffer is None:  # nothing waited inside lookup: poll for a late camera_pose
                stop.wait(0.01)

    def _nearest_foreign(self, stamp_ns: int) -> tuple[int, str, np.ndarray] | None:
        with self._lock:
            near = [item for item in self._foreign if abs(item[0] - stamp_ns) <= self.tolerance_ns]
        return min(near, key=lambda item: abs(item[0] - stamp_ns)) if near else None

    def _transform(self, frame: str, at: Time, wait_s: float) -> tuple[np.ndarray | None, str]:
        """world <- ``frame`` at ``at`` from TF, waiting up to ``wait_s`` for it; or None and TF's reason."""
        try:
            if wait_s > 0:  # tf2's own wait; the look-up below raises the reason if it still fails
                self.tf_buffer.can_transform(self.world_frame, frame, at, timeout=Duration(seconds=wait_s))
            transform = self.tf_buffer.lookup_transform(self.world_frame, frame, at)
            return transform_to_matrix(transform.transform), ""
        except Exception as error:  # tf2 raises several unrelated exception types
            return None, f"{type(error).__name__}: {error}"


def _ros_time(stamp_ns: int) -> Time:
    return Time(nanoseconds=stamp_ns, clock_type=ClockType.ROS_TIME)
