"""The scene node's scheduling pieces: keyframe selection, the dropping queue and the pose buffer."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ovseg3d_core.keyframes import KeyframeConfig, KeyframeSelector
from ovseg3d_ros.nodes.frame_queue import DroppingQueue
from ovseg3d_ros.nodes.pose_buffer import PoseBuffer


def pose(x: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    matrix[0, 3] = x
    return matrix


def test_keyframes_follow_translation_rotation_and_time():
    selector = KeyframeSelector(KeyframeConfig(translation_m=0.1, rotation_deg=10, interval_s=5))
    assert selector.is_keyframe(pose(), 0.0)  # the first frame always is
    assert not selector.is_keyframe(pose(x=0.05), 1.0)
    assert selector.is_keyframe(pose(x=0.12), 1.1)
    assert not selector.is_keyframe(pose(x=0.12, yaw_deg=8), 1.2)
    assert selector.is_keyframe(pose(x=0.12, yaw_deg=11), 1.3)
    assert selector.is_keyframe(pose(x=0.12, yaw_deg=11), 6.4)  # interval elapsed
    selector.reset()
    assert selector.is_keyframe(pose(x=0.12, yaw_deg=11), 6.5)


def test_full_queue_drops_the_oldest_never_the_newest():
    queue: DroppingQueue[int] = DroppingQueue(3)
    for item in range(7):
        queue.put(item)
    assert queue.dropped == 4 and queue.accepted == 7
    assert [queue.get(0), queue.get(0), queue.get(0)] == [4, 5, 6]
    assert queue.get(timeout=0.01) is None
    with pytest.raises(ValueError):
        DroppingQueue(0)


def test_an_ordered_queue_hands_out_by_stamp_and_drops_the_oldest_stamp():
    """Sets converted in parallel can be queued out of order; the worker must still see stamp order."""
    queue: DroppingQueue[tuple[str, int]] = DroppingQueue(3, order=lambda item: item[1])
    for item in (("b", 20), ("a", 10), ("d", 40), ("c", 30)):
        queue.put(item)
    assert queue.dropped == 1 and len(queue) == 3  # "a" (stamp 10) was the oldest when the queue overflowed
    queue.put(("late", 5))  # older than everything queued: it is the one dropped
    assert queue.dropped == 2
    assert [queue.get(0) for _ in range(3)] == [("b", 20), ("c", 30), ("d", 40)]
    queue.put(("x", 50))
    queue.put(("x", 50))  # equal stamps keep arrival order
    assert queue.clear() == 2 and queue.get(timeout=0.01) is None


def test_queue_wakes_a_waiting_consumer():
    queue: DroppingQueue[str] = DroppingQueue(2)
    got: list = []
    consumer = threading.Thread(target=lambda: got.append(queue.get(timeout=5)))
    consumer.start()
    queue.put("frame")
    consumer.join(timeout=5)
    assert got == ["frame"]


def test_pose_buffer_matches_nearest_stamp_within_tolerance():
    buffer = PoseBuffer(capacity=3)
    for i in (3, 1, 2):  # out of order on purpose
        buffer.add(i * 100, pose(x=i))
    assert buffer.lookup(190, tolerance_ns=20)[0, 3] == 2
    assert buffer.lookup(140, tolerance_ns=50)[0, 3] == 1
    assert buffer.lookup(150 + 60, tolerance_ns=5) is None
    buffer.add(400, pose(x=4))  # capacity 3: the oldest (stamp 100) goes
    assert len(buffer) == 3 and buffer.lookup(100, tolerance_ns=10) is None
