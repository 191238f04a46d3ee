"""Approximate-time synchronisation of the RGB-D inputs with ``message_filters``, with arrivals counted per input.

``message_filters`` is an exec_depend of the package (package.xml): rosdep installs it on a robot
and the development set-up builds it from the real sources (scripts/setup_env.sh), so no install
this project supports lacks it and no second synchroniser is kept in step with it. It keeps no
counts; the :class:`~ovseg3d_ros.nodes.input_monitor.InputMonitor` here lets the status line name an
input that stays silent (a synchroniser emits nothing while any input is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import message_filters

from ovseg3d_ros.nodes.input_monitor import InputMonitor


class SynchronizedInputs:
    """Subscribe ``node`` to ``inputs`` ((message type, topic) pairs); ``callback`` gets sets within ``slop`` s.

    One ``message_filters.Subscriber`` per input feeds an ``ApproximateTimeSynchronizer``; keep a reference.
    """

    def __init__(
        self,
        node: Any,
        inputs: Sequence[tuple[type, str]],
        callback: Callable[..., None],
        qos_profile: Any,
        queue_size: int = 10,
        slop: float = 0.05,
        callback_group: Any = None,
    ) -> None:
        self.monitor = InputMonitor([topic for _, topic in inputs])
        self.subscribers = [
            message_filters.Subscriber(node, msg_type, topic, qos_profile=qos_profile, callback_group=callback_group)
            for msg_type, topic in inputs
        ]
        for index, subscriber in enumerate(self.subscribers):
            subscriber.registerCallback(self.monitor.counting(index))
        self.synchronizer = message_filters.ApproximateTimeSynchronizer(self.subscribers, queue_size, slop)
        self.synchronizer.registerCallback(callback)
