"""The generated ovseg3d_ros interfaces work across processes over real DDS."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

PEER = Path(__file__).with_name("interface_peer.py")


@pytest.fixture
def peer_process():
    process = subprocess.Popen([sys.executable, str(PEER)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:  # a peer left running would answer the next tests' services on this domain
        first_line = process.stdout.readline().strip()
        assert first_line == "ready", f"the peer printed {first_line!r} before it was ready"
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


def _call(node, service_type, name, request, context):
    import rclpy

    client = node.create_client(service_type, name)
    assert client.wait_for_service(timeout_sec=20), f"{name} not available"
    future = client.call_async(request)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.spin_until_future_complete(future, timeout_sec=20)
    executor.remove_node(node)
    assert future.done(), f"{name} did not answer"
    return future.result()


def test_every_service_and_the_latched_legend_cross_processes(peer_process, ros_context):
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from ovseg3d_ros.msg import Legend
    from ovseg3d_ros.srv import QueryScene, RetrieveShapes, SaveScene, SetVocabulary

    node = rclpy.create_node("interface_client", context=ros_context)
    try:
        reply = _call(
            node,
            SetVocabulary,
            "/interface_peer/set_vocabulary",
            SetVocabulary.Request(labels=["a", "b c"]),
            ros_context,
        )
        assert reply.success and reply.message == "b c|a"

        reply = _call(
            node, QueryScene, "/interface_peer/query", QueryScene.Request(text="chair", threshold=0.25), ros_context
        )
        assert reply.message == "CHAIR" and reply.max_score == pytest.approx(0.5)
        assert reply.cloud.width == 5 and bytes(reply.cloud.data) == bytes(range(60))
        assert [f.name for f in reply.cloud.fields] == ["x", "y", "z"]

        reply = _call(node, SaveScene, "/interface_peer/save", SaveScene.Request(path="/tmp/x.npz"), ros_context)
        assert reply.success and reply.message == "saved /tmp/x.npz"

        request = RetrieveShapes.Request(text="round table", k=3, include_clouds=True)
        reply = _call(node, RetrieveShapes, "/interface_peer/retrieve", request, ros_context)
        assert list(reply.shape_ids) == ["round table-0", "round table-1", "round table-2"]
        assert list(reply.scores) == pytest.approx([1.0, 0.5, 1 / 3])
        assert [c.width for c in reply.clouds] == [1, 2, 3]

        received: list = []
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_subscription(Legend, "/legend", received.append, latched)
        executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
        assert received, "late subscriber did not get the latched legend"
        assert list(received[0].labels) == ["chair", "table"] and list(received[0].point_counts) == [3, 4]
        assert received[0].colors[1].g == 1.0
    finally:
        node.destroy_node()
