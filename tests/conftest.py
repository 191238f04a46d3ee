"""Shared fixtures: every test run gets its own ROS 2 domain, so runs never hear each other."""

from __future__ import annotations

import fcntl
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovseg3d_ros.fastdds_profile import use_fastdds_profile

REPO_ROOT = Path(__file__).resolve().parents[1]


def _claim_ros_domain() -> int:
    """Pick a free ROS_DOMAIN_ID in 1..101, held by an exclusive file lock for this process's life.

    IDs above 101 can collide with ephemeral ports (ENVIRONMENT.md); the lock keeps concurrent
    test runs on one machine (developers, CI) on different domains.
    """
    candidates = list(range(1, 102))
    random.Random(os.getpid()).shuffle(candidates)
    for domain in candidates:
        fd = os.open(f"/tmp/ovseg3d-ros-domain-{domain}.lock", os.O_CREAT | os.O_WRONLY, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return domain  # the descriptor stays open (and locked) until the process exits
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..101")


# Set before any test module imports rclpy; child processes inherit it.
os.environ["ROS_DOMAIN_ID"] = str(_claim_ros_domain())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# Large best-effort images are lost between processes without the shared-memory profile; every
# test process (players, clients) needs it, as the nodes' bringup applies it for theirs.
use_fastdds_profile()


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A private, initialised rclpy context, shut down after the test."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
