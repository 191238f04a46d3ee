"""retrieval_node: `~/retrieve` answers a text description with the k best shapes of the database.

The database (index + clouds) is loaded, or built once and cached, at start-up; a request never
kills the node: empty or non-UTF-8 text, k = 0 or k beyond the database come back as
``success=false`` with the reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from std_msgs.msg import Header

from ovseg3d_core.config import Config, setting
from ovseg3d_core.retrieval.database import ShapeDatabase, ShapeDatabaseConfig
from ovseg3d_ros.conversions import xyz_rgb_to_cloud
from ovseg3d_ros.nodes.parameters import declare_config
from ovseg3d_ros.nodes.shutdown import spin_nodes
from ovseg3d_ros.srv import RetrieveShapes

LOADING = "the shape database is still loading; try again shortly"


@dataclass
class RetrievalNodeConfig(Config):
    frame_id: str = setting("shape", "frame_id of the returned shape clouds (unit-sphere shape coordinates)")
    database: ShapeDatabaseConfig = setting(ShapeDatabaseConfig(), "shape database")


class RetrievalNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("retrieval_node", **kwargs)

        self.config = declare_config(self, RetrievalNodeConfig)
        self.database: ShapeDatabase | None = None
        self._load_error: str | None = None
        self.create_service(RetrieveShapes, "~/retrieve", self._retrieve)
        # Building the database can take a minute; loading off the executor keeps this process's
        # other nodes (the bringup runs scene_node beside it) receiving their sensor data.
        threading.Thread(target=self._load_database, name="shape_database", daemon=True).start()

    def _load_database(self) -> None:
        start = time.perf_counter()
        try:
            self.database = ShapeDatabase.load_or_build(self.config.database)
        except (OSError, ValueError) as error:
            self._load_error = str(error)
            self.get_logger().error(f"could not load the shape database: {error}")
            return
        self.get_logger().info(
            f"retrieval_node ready: {len(self.database)} shapes ({time.perf_counter() - start:.1f} s to load)"
        )

    def _retrieve(self, request: RetrieveShapes.Request, response: RetrieveShapes.Response):
        if self.database is None:
            response.success = False
            response.message = f"shape database unavailable: {self._load_error}" if self._load_error else LOADING
            return response
        try:
            start = time.perf_counter()
            ids, scores = self.database.retrieve(request.text, int(request.k))
            response.shape_ids = ids
            response.scores = [float(s) for s in scores]
            if request.include_clouds:
                header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.config.frame_id)
                response.clouds = [self._cloud(shape_id, header) for shape_id in ids]
            response.success = True
            response.message = f"{len(ids)} shapes in {(time.perf_counter() - start) * 1e3:.1f} ms"
        except (ValueError, KeyError) as error:
            response.success, response.message = False, str(error)
        return response

    def _cloud(self, shape_id: str, header: Header):
        points = self.database.cloud(shape_id)
        colors = (np.clip(points[:, 3:6], 0, 1) * 255).astype(np.uint8)
        return xyz_rgb_to_cloud(points[:, :3], colors, header)


def main(args: list[str] | None = None) -> int:
    return spin_nodes([RetrievalNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
