"""The approximate-time synchroniser: matching within slop, bounded queues, stale drops, threads, DDS."""

from __future__ import annotations

import threading
import time

import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ovseg3d_ros.approximate_sync import ApproximateTimeSynchronizer, subscribe_synchronized
from ovseg3d_ros.conversions import seconds_to_stamp, stamp_to_seconds


class Stamped:
    """A minimal stamped message: the synchroniser needs nothing but ``header.stamp``."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.header = Header(stamp=seconds_to_stamp(seconds))

    def __repr__(self) -> str:
        return f"{self.name}@{stamp_to_seconds(self.header.stamp):.3f}"


def _collector():
    sets: list[tuple] = []
    return sets, lambda *messages: sets.append(messages)


def test_identical_stamps_are_matched_in_order():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(3, callback, queue_size=5, slop=0.01)
    for frame in range(4):
        t = 10.0 + frame / 30
        for index, name in ((1, "depth"), (0, "rgb"), (2, "info")):
            sync.add(index, Stamped(name, t))
    assert [[m.name for m in s] for s in sets] == [["rgb", "depth", "info"]] * 4
    assert [stamp_to_seconds(s[0].header.stamp) for s in sets] == pytest.approx([10 + f / 30 for f in range(4)])
    assert sync.matched == 4 and sync.dropped == 0


def test_jitter_within_slop_matches_nearest_and_beyond_slop_does_not():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(2, callback, queue_size=10, slop=0.02)
    rgb_a, rgb_b = Stamped("rgb", 1.000), Stamped("rgb", 1.033)
    sync.add(0, rgb_a)
    sync.add(0, rgb_b)
    depth = Stamped("depth", 1.030)  # 3 ms from rgb_b, 30 ms from rgb_a
    sync.add(1, depth)
    assert sets == [(rgb_b, depth)]
    assert sync.dropped == 1  # rgb_a is older than the emitted set: it can never be matched in order

    sync.add(0, Stamped("rgb", 2.0))
    sync.add(1, Stamped("depth", 2.05))  # 50 ms apart > slop
    assert len(sets) == 1


def test_a_lost_message_drops_only_its_partners():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(2, callback, queue_size=10, slop=0.005)
    for frame in range(5):
        t = frame * 0.1
        sync.add(0, Stamped(f"rgb{frame}", t))
        if frame != 2:  # depth of frame 2 is lost
            sync.add(1, Stamped(f"depth{frame}", t))
    assert [(a.name, b.name) for a, b in sets] == [(f"rgb{f}", f"depth{f}") for f in (0, 1, 3, 4)]
    assert sync.dropped == 1  # rgb2, discarded when frame 3 matched


def test_out_of_order_arrival_is_sorted_into_the_queue():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(2, callback, queue_size=10, slop=0.005)
    late, early = Stamped("rgb-late", 0.2), Stamped("rgb-early", 0.1)
    sync.add(0, late)
    sync.add(0, early)
    depth_early, depth_late = Stamped("depth-early", 0.1), Stamped("depth-late", 0.2)
    sync.add(1, depth_early)
    sync.add(1, depth_late)
    assert sets == [(early, depth_early), (late, depth_late)]


def test_queues_stay_bounded_when_one_input_is_silent():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(2, callback, queue_size=4, slop=0.01)
    for frame in range(100):
        sync.add(0, Stamped("rgb", frame / 30))
    assert sets == [] and sync.dropped == 96
    sync.add(1, Stamped("depth", 99 / 30))  # only the newest frames are still there
    assert len(sets) == 1 and stamp_to_seconds(sets[0][0].header.stamp) == pytest.approx(99 / 30)


def test_explicit_stamps_serve_headerless_messages():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(2, callback, slop=0.01)
    sync.add(0, "a", stamp=5.0)
    sync.add(1, "b", stamp=5.005)
    assert sets == [("a", "b")]


def test_concurrent_producers_get_every_set_exactly_once():
    sets, callback = _collector()
    sync = ApproximateTimeSynchronizer(3, callback, queue_size=400, slop=0.001)
    n = 300

    def produce(index: int) -> None:
        for frame in range(n):
            sync.add(index, Stamped(str(index), frame * 0.1))

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Queues outlast the run and stamps are exact, so whatever the interleaving every frame matches.
    stamps = [[stamp_to_seconds(m.header.stamp) for m in s] for s in sets]
    assert all(max(s) - min(s) <= 0.001 for s in stamps)
    assert sorted(round(s[0] * 10) for s in stamps) == list(range(n))
    assert [[m.name for m in s] for s in sets] == [["0", "1", "2"]] * n
    assert sync.dropped == 0


def test_invalid_configuration_raises():
    with pytest.raises(ValueError, match="at least one input"):
        ApproximateTimeSynchronizer(0, print)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(2, print, queue_size=0)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(2, print, slop=-1.0)
    with pytest.raises(IndexError):
        ApproximateTimeSynchronizer(2, print).input(2)


def test_subscriptions_over_dds_deliver_matched_sets(ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    listener = rclpy.create_node("sync_listener", context=ros_context)
    talker = rclpy.create_node("sync_talker", context=ros_context)
    sets, callback = _collector()
    sync = subscribe_synchronized(
        listener, [(Image, "rgb/image"), (Image, "depth/image"), (CameraInfo, "rgb/camera_info")], callback, qos
    )
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
    try:
        deadline = time.monotonic() + 10
        while any(p.get_subscription_count() == 0 for p in publishers) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        for frame in range(5):
            stamp = seconds_to_stamp(100 + frame / 10)
            jittered = seconds_to_stamp(100 + frame / 10 + 0.004)
            publishers[2].publish(CameraInfo(header=Header(stamp=stamp, frame_id="cam")))
            publishers[1].publish(Image(header=Header(stamp=jittered, frame_id="cam"), encoding="16UC1"))
            publishers[0].publish(Image(header=Header(stamp=stamp, frame_id="cam"), encoding="rgb8"))
            time.sleep(0.05)
        while len(sets) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
    assert len(sets) == 5 and sync.matched == 5
    assert [(rgb.encoding, depth.encoding) for rgb, depth, _ in sets] == [("rgb8", "16UC1")] * 5
    info_stamps = [stamp_to_seconds(info.header.stamp) for _, _, info in sets]
    assert info_stamps == pytest.approx([100 + f / 10 for f in range(5)])
