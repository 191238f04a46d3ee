"""Child process for test_shutdown: many bringups, each stopped by a SIGTERM at a random moment.

Fast timers keep the executor rebuilding its wait set, which is where rclpy's shutdown race
(ros2/rclpy#1166) strikes. Prints one exit status per bringup, or the error that escaped.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import sys
import threading

from rclpy.node import Node

from ovseg3d_ros.bringup import spin_nodes


def busy_node(delay_s: float) -> Node:
    """A node with fast timers, and a SIGTERM to this process ``delay_s`` later (rclpy's handler is in place)."""
    node = Node("shutdown_racer")
    for _ in range(5):
        node.create_timer(0.0005, lambda: None)
    threading.Timer(delay_s, os.kill, (os.getpid(), signal.SIGTERM)).start()
    return node


def main(runs: int) -> None:
    rng = random.Random(0)
    for _ in range(runs):
        print(spin_nodes([functools.partial(busy_node, rng.uniform(0.005, 0.05))], ["shutdown_peer"]), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
