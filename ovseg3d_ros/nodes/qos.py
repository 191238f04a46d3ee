"""QoS profiles of the ovseg3d topics (DESIGN §6).

- Inputs (images, depth, CameraInfo, poses, points): best effort, keep last few — a late sensor
  frame is worthless, and best-effort subscribers also accept reliable publishers (e.g. bag play).
- ``labeled_cloud`` and query clouds: reliable, keep last 2 — a 6 MB best-effort cloud is almost
  always lost between processes under default Fast DDS settings (ENVIRONMENT.md).
- ``legend``: reliable + transient local, depth 1 — latched, late joiners get the current legend.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_QUEUE_DEPTH = 5
CLOUD_QUEUE_DEPTH = 2


def sensor_input_qos(depth: int = SENSOR_QUEUE_DEPTH) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def cloud_output_qos(depth: int = CLOUD_QUEUE_DEPTH) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
