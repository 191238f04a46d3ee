"""ROS time stamps <-> float seconds (the core keeps time as float seconds)."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time

from ovseg3d_ros.conversions.errors import MessageConversionError

NANOSECONDS_PER_SECOND = 1_000_000_000


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_to_nanoseconds(stamp: Time) -> int:
    return stamp.sec * NANOSECONDS_PER_SECOND + stamp.nanosec


def nanoseconds_to_stamp(nanoseconds: int) -> Time:
    if nanoseconds < 0:
        raise MessageConversionError(f"time stamps cannot be negative, got {nanoseconds} ns")
    sec, nanosec = divmod(int(nanoseconds), NANOSECONDS_PER_SECOND)
    return Time(sec=sec, nanosec=nanosec)


def seconds_to_stamp(seconds: float) -> Time:
    if not math.isfinite(seconds):
        raise MessageConversionError(f"time stamp must be finite, got {seconds}")
    whole = math.floor(seconds)  # split first: seconds * 1e9 would lose precision beyond 2**53 ns
    return nanoseconds_to_stamp(whole * NANOSECONDS_PER_SECOND + round((seconds - whole) * NANOSECONDS_PER_SECOND))
