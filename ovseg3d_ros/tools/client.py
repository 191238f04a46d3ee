"""A Python client of the ovseg3d nodes: service calls and the latest labeled cloud and legend.

    client = Ovseg3dClient(context)
    client.set_vocabulary(["chair", "something to sit on"])
    reply = client.query("a soft chair", threshold=0.4)

It owns one rclpy node and a single-threaded executor it spins itself, so scripts (the demo,
tests, notebooks) need no executor of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import Trigger

from ovseg3d_ros.msg import Legend
from ovseg3d_ros.nodes.qos import cloud_output_qos, latched_qos, sensor_input_qos
from ovseg3d_ros.nodes.retrieval_node import LOADING
from ovseg3d_ros.srv import QueryScene, RetrieveShapes, SaveScene, SetVocabulary


class Ovseg3dClient:
    def __init__(
        self,
        context: Context | None = None,
        scene_node: str = "/scene_node",
        retrieval_node: str = "/retrieval_node",
        name: str = "ovseg3d_client",
    ) -> None:
        import rclpy

        self.context = context or rclpy.get_default_context()
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.scene_node, self.retrieval_node = scene_node, retrieval_node
        self.clouds: list[PointCloud2] = []
        self.legends: list[Legend] = []
        self.node.create_subscription(PointCloud2, "labeled_cloud", self.clouds.append, cloud_output_qos())
        self.node.create_subscription(Legend, "legend", self.legends.append, latched_qos())
        self._publishers: dict[str, Any] = {}

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()

    # --------------------------------------------------------------- waiting
    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Spin until ``condition()`` holds or ``timeout`` seconds pass; returns the condition."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
        return condition()

    def wait_until_settled(self, quiet_s: float = 2.0, timeout: float = 300.0) -> None:
        """Wait until no new labeled cloud arrived for ``quiet_s`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = len(self.clouds)
            self.wait_for(lambda seen=seen: len(self.clouds) > seen, quiet_s)
            if len(self.clouds) == seen:
                return
        raise TimeoutError(f"labeled clouds kept arriving for {timeout:.0f} s")

    def next_cloud(self, action: Callable[[], Any], timeout: float = 120.0) -> tuple[Any, PointCloud2]:
        """Run ``action`` and return its result with the first labeled cloud published after it."""
        seen = len(self.clouds)
        result = action()
        if not self.wait_for(lambda: len(self.clouds) > seen, timeout):
            raise TimeoutError("no labeled cloud arrived")
        return result, self.clouds[-1]

    # -------------------------------------------------------------- services
    def call(self, service_type: type, name: str, timeout: float = 120.0, **fields: Any) -> Any:
        """Call ``name`` (a full service name) with a request built from ``fields``; returns the response."""
        client = self.node.create_client(service_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} is not available")
            future = client.call_async(service_type.Request(**fields))
            if not self.wait_for(future.done, timeout):
                raise TimeoutError(f"service {name} did not answer within {timeout:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_vocabulary(self, labels: list[str], **kwargs: Any) -> SetVocabulary.Response:
        return self.call(SetVocabulary, f"{self.scene_node}/set_vocabulary", labels=labels, **kwargs)

    def query(self, text: str, threshold: float = 0.0, **kwargs: Any) -> QueryScene.Response:
        return self.call(QueryScene, f"{self.scene_node}/query", text=text, threshold=threshold, **kwargs)

    def save(self, path: str, **kwargs: Any) -> SaveScene.Response:
        return self.call(SaveScene, f"{self.scene_node}/save", path=path, **kwargs)

    def reset(self, **kwargs: Any) -> Trigger.Response:
        return self.call(Trigger, f"{self.scene_node}/reset", **kwargs)

    def retrieve(
        self, text: str, k: int = 5, include_clouds: bool = False, ready_timeout: float = 0.0, **kwargs: Any
    ) -> RetrieveShapes.Response:
        """Call ``~/retrieve``; with ``ready_timeout`` > 0, retry while the node is still loading its database."""

        deadline = time.monotonic() + ready_timeout
        while True:
            reply = self.call(
                RetrieveShapes,
                f"{self.retrieval_node}/retrieve",
                text=text,
                k=k,
                include_clouds=include_clouds,
                **kwargs,
            )
            if reply.success or reply.message != LOADING or time.monotonic() >= deadline:
                return reply
            self.wait_for(lambda: False, 1.0)

    # ------------------------------------------------------------ publishing
    def publish(self, topic: str, msg: Any, discovery_s: float = 0.5) -> None:
        """Publish on an input topic with the nodes' sensor QoS (first use waits for discovery)."""
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(type(msg), topic, sensor_input_qos())
            self.wait_for(lambda: False, discovery_s)
        self._publishers[topic].publish(msg)
