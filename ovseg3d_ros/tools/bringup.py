"""Start ovseg3d's nodes in one process with a multi-threaded executor (for machines without ros2 launch).

    python -m ovseg3d_ros.tools.bringup --params config/ovseg3d.yaml [--nodes scene retrieval] [--ros-args ...]

The Fast DDS shared-memory profile is applied before rclpy starts (unless the user set one), so
the large labeled clouds reach other processes; SIGINT and SIGTERM shut everything down cleanly.
"""

from __future__ import annotations

import argparse
import sys

from ovseg3d_ros.nodes.retrieval_node import RetrievalNode
from ovseg3d_ros.nodes.scene_node import SceneNode
from ovseg3d_ros.nodes.shutdown import spin_nodes

NODE_FACTORIES = {"scene": SceneNode, "retrieval": RetrievalNode}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ros_args: list[str] = []
    if "--ros-args" in argv:
        split = argv.index("--ros-args")
        argv, ros_args = argv[:split], argv[split:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="ROS 2 parameter YAML (node names as top-level keys)")
    parser.add_argument("--nodes", nargs="+", choices=NODE_FACTORIES, default=list(NODE_FACTORIES))
    options = parser.parse_args(argv)
    args = ["bringup", *ros_args]
    if options.params:
        args += ([] if ros_args else ["--ros-args"]) + ["--params-file", options.params]
    return spin_nodes([NODE_FACTORIES[name] for name in options.nodes], args)


if __name__ == "__main__":
    raise SystemExit(main())
