"""Spinning until a signal or an external ``rclpy.shutdown``, robust to rclpy's shutdown races.

rclpy reports an external shutdown in three ways: ``KeyboardInterrupt`` (SIGINT),
``ExternalShutdownException``, and, when the signal lands while the executor is building its wait
set, an ``RCLError`` "the given context is not valid" (a known race, ros2/rclpy#1166). Treating only
the first two as a clean stop made SIGTERM exit with status 1 about one time in six. In the same
window the executor can also drop its (now invalid) wake-up guard condition from the wait set and
then wait forever: an idle node hung on SIGTERM about once in 40 runs. Spinning in bounded waits
and re-checking the context closes that hole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from ovseg3d_ros.fastdds_profile import use_fastdds_profile


def ended_by_shutdown(error: BaseException, context: Context) -> bool:
    """Whether ``error`` is rclpy reporting that ``context`` was shut down (a signal, another thread)."""
    if isinstance(error, (KeyboardInterrupt, ExternalShutdownException)):
        return True
    return isinstance(error, _rclpy.RCLError) and not context.ok()


WAKE_PERIOD_S = 0.5
"""Longest a lost wake-up can delay the executor noticing a shutdown."""


def spin_until_shutdown(executor: Executor) -> None:
    """Spin ``executor`` until its context is shut down; real errors still propagate."""
    try:
        while executor.context.ok():
            executor.spin_once(timeout_sec=WAKE_PERIOD_S)
    except BaseException as error:
        if not ended_by_shutdown(error, executor.context):
            raise


def spin_nodes(factories: Sequence[Callable[..., Node]], args: list[str] | None = None) -> int:
    """Create the nodes and spin them until SIGINT/SIGTERM; returns the process exit code."""
    use_fastdds_profile()
    rclpy.init(args=args)  # installs rclpy's SIGINT/SIGTERM handlers, which wake and stop the executor
    nodes: list[Node] = []
    try:
        nodes = [factory() for factory in factories]
        executor = MultiThreadedExecutor(num_threads=4)
        for node in nodes:
            executor.add_node(node)
        spin_until_shutdown(executor)
    except BaseException as error:  # SIGINT/SIGTERM while the nodes are being created
        if not ended_by_shutdown(error, rclpy.get_default_context()):
            raise
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
