"""Child process for test_shutdown: many bringups, each stopped by a SIGTERM at a random moment.

Two kinds of node meet rclpy's shutdown races (ros2/rclpy#1166): a busy one (fast timers keep the
executor rebuilding its wait set, where the signal can invalidate the context) and an idle one
(only a service: the executor sleeps in its wait set and must be woken by the signal). Prints one
exit status per bringup, or the error that escaped; a lost wake-up shows as a hang.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import sys
import threading

from rclpy.node import Node
from std_srvs.srv import Trigger

from ovseg3d_ros.nodes.shutdown import spin_nodes


def racing_node(busy: bool, delay_s: float) -> Node:
    """A busy or idle node, and a SIGTERM to this process ``delay_s`` later (rclpy's handler is in place)."""
    node = Node("shutdown_racer")
    if busy:
        for _ in range(5):
            node.create_timer(0.0005, lambda: None)
    else:
        node.create_service(Trigger, "~/noop", lambda _request, response: response)
    threading.Timer(delay_s, os.kill, (os.getpid(), signal.SIGTERM)).start()
    return node


def main(runs: int, busy: bool) -> None:
    rng = random.Random(0)
    for _ in range(runs):
        factory = functools.partial(racing_node, busy, rng.uniform(0.005, 0.05))
        print(spin_nodes([factory], ["shutdown_peer"]), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] == "busy")
