"""A peer process for the interface tests: serves every ovseg3d_ros service and publishes a Legend.

Each response is derived from its request, so the test can tell that the request crossed the
process boundary intact and the response came back.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA

from ovseg3d_ros.msg import Legend
from ovseg3d_ros.nodes.shutdown import spin_until_shutdown
from ovseg3d_ros.srv import QueryScene, RetrieveShapes, SaveScene, SetVocabulary


def _cloud(n: int) -> PointCloud2:
    msg = PointCloud2()
    msg.header.frame_id = "map"
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, c in enumerate("xyz")]
    msg.point_step, msg.row_step = 12, 12 * n
    msg.data = bytes(range(12 * n))
    return msg


class InterfacePeer(Node):
    def __init__(self) -> None:
        super().__init__("interface_peer")
        self.create_service(SetVocabulary, "~/set_vocabulary", self.set_vocabulary)
        self.create_service(QueryScene, "~/query", self.query)
        self.create_service(SaveScene, "~/save", self.save)
        self.create_service(RetrieveShapes, "~/retrieve", self.retrieve)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.legend_pub = self.create_publisher(Legend, "legend", latched)
        self.legend_pub.publish(
            Legend(
                labels=["chair", "table"],
                colors=[ColorRGBA(r=1.0, a=1.0), ColorRGBA(g=1.0, a=1.0)],
                point_counts=[3, 4],
            )
        )

    def set_vocabulary(self, request, response):
        response.success = len(request.labels) > 0
        response.message = "|".join(reversed(request.labels))
        return response

    def query(self, request, response):
        response.success = True
        response.message = request.text.upper()
        response.max_score = request.threshold * 2
        response.cloud = _cloud(len(request.text))
        return response

    def save(self, request, response):
        response.success = request.path.endswith(".npz")
        response.message = f"saved {request.path}"
        return response

    def retrieve(self, request, response):
        response.success = True
        response.shape_ids = [f"{request.text}-{i}" for i in range(request.k)]
        response.scores = [1.0 / (i + 1) for i in range(request.k)]
        response.clouds = [_cloud(i + 1) for i in range(request.k)] if request.include_clouds else []
        response.message = "ok"
        return response


def main() -> None:
    rclpy.init(args=sys.argv)
    node = InterfacePeer()
    print("ready", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_shutdown(executor)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
