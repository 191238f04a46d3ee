"""A signal stops the bringup cleanly however rclpy reports it (ros2/rclpy#1166 races included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize(
    ("kind", "runs"),
    [
        ("busy", 120),  # before the fix about one run in six raised RCLError "context is not valid"
        ("idle", 200),  # before the fix about one run in forty waited forever for a lost wake-up
    ],
)
def test_sigterm_always_ends_the_bringup_cleanly(kind, runs):
    peer = Path(__file__).with_name("shutdown_peer.py")
    result = subprocess.run([sys.executable, str(peer), str(runs), kind], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0"] * runs


def test_real_errors_still_propagate():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ovseg3d_ros.nodes.shutdown import ended_by_shutdown, spin_until_shutdown

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("shutdown_error", context=context)
    try:
        node.create_timer(0.001, lambda: 1 / 0)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        with pytest.raises(ZeroDivisionError):
            spin_until_shutdown(executor)
        assert not ended_by_shutdown(RuntimeError("boom"), context)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert ended_by_shutdown(KeyboardInterrupt(), context)
