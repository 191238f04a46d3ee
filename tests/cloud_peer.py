"""A peer process for the transport tests: publishes or receives 300k-point labeled clouds.

``python tests/cloud_peer.py pub|sub reliable|best_effort COUNT``. Clouds are deterministic
(frame i has labels base + i), so the receiver checks every byte it gets and prints a JSON summary.
Both ends run in their own process because Fast DDS reads its XML profile once per process.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import rclpy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ovseg3d_ros.conversions import labeled_cloud_to_msg, read_labeled_cloud
from ovseg3d_ros.nodes.qos import cloud_output_qos, sensor_input_qos

N_POINTS = 300_000
TOPIC = "labeled_cloud"


def expected_cloud(frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(N_POINTS, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(N_POINTS, 3), dtype=np.uint8)
    labels = rng.integers(0, 20, size=N_POINTS).astype(np.uint32) + frame
    scores = rng.random(N_POINTS).astype(np.float32)
    return points, colors, labels, scores


def publish(node, qos, count: int) -> None:
    publisher = node.create_publisher(PointCloud2, TOPIC, qos)
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    base = expected_cloud(0)
    for frame in range(count):
        labels = base[2] + frame
        publisher.publish(labeled_cloud_to_msg(base[0], base[1], labels, base[3], Header(frame_id=str(frame))))
        time.sleep(0.1)
    time.sleep(1.0)  # let the last cloud drain before the participant goes away


def receive(node, qos, count: int) -> None:
    received: list[int] = []
    valid = 0
    base = expected_cloud(0)

    def on_cloud(msg: PointCloud2) -> None:
        nonlocal valid
        frame = int(msg.header.frame_id)
        cloud = read_labeled_cloud(msg)
        received.append(frame)
        valid += bool(
            np.array_equal(cloud.points, base[0])
            and np.array_equal(cloud.colors, base[1])
            and np.array_equal(cloud.labels, base[2] + frame)
            and np.array_equal(cloud.scores, base[3])
        )

    node.create_subscription(PointCloud2, TOPIC, on_cloud, qos)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while len(received) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"received": received, "valid": valid}), flush=True)


def main() -> None:
    role, reliability, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    qos = cloud_output_qos(depth=5) if reliability == "reliable" else sensor_input_qos(depth=5)
    rclpy.init()
    node = rclpy.create_node(f"cloud_{role}")
    try:
        (publish if role == "pub" else receive)(node, qos, count)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
