"""Approximate-time synchronisation of several stamped streams (RGB + depth + CameraInfo).

``message_filters.ApproximateTimeSynchronizer`` is used when importable (real ROS installs);
otherwise :class:`ApproximateTimeSynchronizer` below, which needs nothing from rclpy but the
``header.stamp`` of each message, so it is tested without DDS.

Matching rule: when a message arrives, every other queue offers its message nearest in time; if the
spread of the resulting set is within ``slop`` seconds the set is emitted, and the matched messages
plus everything older in each queue are discarded (older messages can only produce out-of-order
sets). Queues keep at most ``queue_size`` messages; the oldest are dropped first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ovseg3d_ros.conversions.stamps import stamp_to_seconds
from ovseg3d_ros.input_monitor import InputMonitor

try:
    import message_filters
except ImportError:
    message_filters = None


class ApproximateTimeSynchronizer:
    """Calls ``callback(*messages)`` with one message per input whose stamps lie within ``slop`` seconds."""

    def __init__(
        self, num_inputs: int, callback: Callable[..., None], queue_size: int = 10, slop: float = 0.05
    ) -> None:
        if num_inputs < 1:
            raise ValueError(f"need at least one input, got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop < 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        self.callback = callback
        self.queue_size = queue_size
        self.slop = slop
        self._queues: list[deque[tuple[float, Any]]] = [deque() for _ in range(num_inputs)]
        self._lock = threading.Lock()
        self.dropped = 0
        self.matched = 0

    def input(self, index: int) -> Callable[[Any], None]:
        """A subscription callback feeding input ``index``."""
        if not 0 <= index < len(self._queues):
            raise IndexError(f"input {index} out of range for {len(self._queues)} inputs")
        return lambda msg: self.add(index, msg)

    def add(self, index: int, msg: Any, stamp: float | None = None) -> None:
        """Queue ``msg`` on input ``index`` (stamp in seconds, default ``msg.header.stamp``) and try to match."""
        stamp = stamp_to_seconds(msg.header.stamp) if stamp is None else stamp
        with self._lock:
            queue = self._queues[index]
            queue.append((stamp, msg))
            if len(queue) > 1 and queue[-2][0] > stamp:
                queue_sorted = sorted(queue, key=lambda entry: entry[0])
                queue.clear()
                queue.extend(queue_sorted)
            while len(queue) > self.queue_size:
                queue.popleft()
                self.dropped += 1
            matched = self._match(index, msg, stamp)
        if matched is not None:
            self.callback(*matched)

    def _match(self, index: int, msg: Any, stamp: float) -> list[Any] | None:
        chosen: list[int] = []
        for other, queue in enumerate(self._queues):
            if other == index:
                position = next((i for i, entry in enumerate(queue) if entry[1] is msg), None)
                if position is None:  # arrived older than a full queue: already dropped
                    return None
                chosen.append(position)
                continue
            if not queue:
                return None
            chosen.append(min(range(len(queue)), key=lambda i, q=queue: abs(q[i][0] - stamp)))
        stamps = [queue[i][0] for queue, i in zip(self._queues, chosen, strict=True)]
        if max(stamps) - min(stamps) > self.slop:
            return None
        messages = []
        for queue, position in zip(self._queues, chosen, strict=True):
            messages.append(queue[position][1])
            for _ in range(position):
                queue.popleft()
                self.dropped += 1
            queue.popleft()
        self.matched += 1
        return messages


def subscribe_synchronized(
    node: Any,
    inputs: Sequence[tuple[type, str]],
    callback: Callable[..., None],
    qos_profile: Any,
    queue_size: int = 10,
    slop: float = 0.05,
    callback_group: Any = None,
) -> Any:
    """Subscribe ``node`` to ``inputs`` ((message type, topic) pairs) and call ``callback`` with matched sets.

    Returns the synchroniser (keep a reference): message_filters' when importable, else ours. Its
    ``monitor`` (an :class:`InputMonitor`) counts the messages arriving on each input.
    """
    monitor = InputMonitor([topic for _, topic in inputs])
    if message_filters is not None:
        subscribers = [
            message_filters.Subscriber(node, msg_type, topic, qos_profile=qos_profile, callback_group=callback_group)
            for msg_type, topic in inputs
        ]
        for index, subscriber in enumerate(subscribers):
            subscriber.registerCallback(monitor.counting(index))
        sync = message_filters.ApproximateTimeSynchronizer(subscribers, queue_size, slop)
        sync.registerCallback(callback)
        sync.subscribers = subscribers
        sync.monitor = monitor
        return sync
    sync = ApproximateTimeSynchronizer(len(inputs), callback, queue_size=queue_size, slop=slop)
    sync.subscriptions = [
        node.create_subscription(
            msg_type, topic, monitor.counting(index, sync.input(index)), qos_profile, callback_group=callback_group
        )
        for index, (msg_type, topic) in enumerate(inputs)
    ]
    sync.monitor = monitor
    return sync
