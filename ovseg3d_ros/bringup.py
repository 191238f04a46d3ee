"""Start ovseg3d's nodes in one process with a multi-threaded executor (for machines without ros2 launch).

    python -m ovseg3d_ros.bringup --params config/ovseg3d.yaml [--nodes scene retrieval] [--ros-args ...]

The Fast DDS shared-memory profile is applied before rclpy starts (unless the user set one), so
the large labeled clouds reach other processes; SIGINT and SIGTERM shut everything down cleanly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rclpy.node import Node

NODE_FACTORIES = ("scene", "retrieval")


def _factory(name: str) -> Callable[..., Node]:
    if name == "scene":
        from ovseg3d_ros.scene_node import SceneNode

        return SceneNode
    from ovseg3d_ros.retrieval_node import RetrievalNode

    return RetrievalNode


def spin_nodes(factories: Sequence[Callable[..., Node]], args: list[str] | None = None) -> int:
    """Create the nodes and spin them until SIGINT/SIGTERM; returns the process exit code."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from ovseg3d_ros.fastdds_profile import use_fastdds_profile
    from ovseg3d_ros.shutdown import ended_by_shutdown, spin_until_shutdown

    use_fastdds_profile()
    rclpy.init(args=args)  # installs rclpy's SIGINT/SIGTERM handlers, which wake and stop the executor
    nodes: list[Node] = []
    try:
        nodes = [factory() for factory in factories]
        executor = MultiThreadedExecutor(num_threads=4)
        for node in nodes:
            executor.add_node(node)
        spin_until_shutdown(executor)
    except BaseException as error:  # SIGINT/SIGTERM while the nodes are being created
        if not ended_by_shutdown(error, rclpy.get_default_context()):
            raise
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


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
    return spin_nodes([_factory(name) for name in options.nodes], args)


if __name__ == "__main__":
    raise SystemExit(main())
