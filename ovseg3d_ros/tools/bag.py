"""``ovseg3d-bag``: write ROS 2 bags from the sample datasets and play bags back, without rosbag2.

``write`` turns posed RGB-D frames (7-Scenes, Redwood, or views rendered from the labeled ScanNet
mesh) into the topics scene_node subscribes to; messages are built with :mod:`ovseg3d_ros.conversions`
and serialised by rclpy, so a bag holds exactly the bytes a live camera driver would publish.
Storage is the pure-Python ``rosbags`` package (mcap or sqlite3). ``play`` publishes the stored CDR
bytes unchanged with the original timing, a rate factor, optional looping and topic remaps.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ovseg3d_core.data.scenes.redwood import RedwoodSequence
from ovseg3d_core.data.scenes.rendering import MeshRaycaster, generate_coverage_trajectory
from ovseg3d_core.data.scenes.scannet import load_scannet_scan
from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_ros.conversions import (
    depth_to_image,
    instances_to_image,
    intrinsics_to_camera_info,
    labels_to_image,
    matrix_to_pose_stamped,
    nanoseconds_to_stamp,
    rgb_to_image,
)
from ovseg3d_ros.fastdds_profile import use_fastdds_profile
from ovseg3d_ros.nodes.shutdown import ended_by_shutdown

if TYPE_CHECKING:
    from rclpy.context import Context

TOPIC_RGB = "/rgb/image"
TOPIC_DEPTH = "/depth/image"
TOPIC_CAMERA_INFO = "/rgb/camera_info"
TOPIC_POSE = "/camera_pose"
TOPIC_SEMANTIC = "/semantic/image"
TOPIC_INSTANCE = "/instance/image"
TOPIC_TYPES = {
    TOPIC_CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    TOPIC_RGB: "sensor_msgs/msg/Image",
    TOPIC_DEPTH: "sensor_msgs/msg/Image",
    TOPIC_POSE: "geometry_msgs/msg/PoseStamped",
    TOPIC_SEMANTIC: "sensor_msgs/msg/Image",
    TOPIC_INSTANCE: "sensor_msgs/msg/Image",
}
DATASETS = ("7scenes", "redwood", "scannet")
STORAGE_FORMATS = ("mcap", "sqlite3")
BAG_VERSION = 9  # the rosbag2 metadata version written by Jazzy and Kilted
DEFAULT_START_TIME_S = 1_700_000_000.0  # fixed, so the same command writes the same bag
RENDERED_VIEW_HZ = 5.0  # rendered ScanNet views are keyframe-like, not a 30 Hz stream
NANOSECONDS_PER_SECOND = 1_000_000_000


class BagToolError(ValueError):
    """A bag cannot be written or played as asked (bad options, existing output, unknown types)."""


@dataclass
class BagWriteSummary:
    path: Path
    frames: int
    messages: int
    topics: tuple[str, ...]
    duration_s: float


def dataset_frames(
    dataset: str, frames: int, stride: int = 1, start: int = 0, root: Path | None = None, seed: int = 0
) -> Iterator[RGBDFrame]:
    """Up to ``frames`` frames of ``dataset``: every ``stride``-th from ``start`` (scannet: rendered views)."""
    if frames < 1 or stride < 1 or start < 0:
        raise BagToolError(f"need frames >= 1, stride >= 1 and start >= 0, got {frames}, {stride}, {start}")
    if dataset == "scannet":
        yield from _scannet_views(frames, root, seed)
        return
    if dataset == "7scenes":
        sequence = SevenScenes(root)
    elif dataset == "redwood":
        sequence = RedwoodSequence(root)
    else:
        raise BagToolError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    indices = range(start, len(sequence), stride)[:frames]
    if not indices:
        raise BagToolError(f"{dataset} has {len(sequence)} frames; start {start} selects none")
    for index in indices:
        yield sequence[index]


def _scannet_views(frames: int, root: Path | None, seed: int) -> Iterator[RGBDFrame]:
    """Views that cover the labeled ScanNet mesh, with ScanNet20 class-id and instance-id images."""

    scan = load_scannet_scan(root)
    raycaster = MeshRaycaster(scan, scan.scannet20_ids, scan.instance_ids)
    for index, pose in enumerate(generate_coverage_trajectory(raycaster, frames, seed=seed)):
        yield raycaster.render(pose, name=f"{scan.name}-view-{index:04d}", stamp=index / RENDERED_VIEW_HZ)


def frame_messages(frame: RGBDFrame, stamp_ns: int, camera_frame: str, world_frame: str) -> list[tuple[str, object]]:
    """The (topic, rclpy message) pairs scene_node expects for one posed frame, all with one stamp."""
    from std_msgs.msg import Header

    stamp = nanoseconds_to_stamp(stamp_ns)
    camera = Header(stamp=stamp, frame_id=camera_frame)
    messages = [
        (TOPIC_CAMERA_INFO, intrinsics_to_camera_info(frame.intrinsics, camera)),
        (TOPIC_RGB, rgb_to_image(frame.color, camera)),
        (TOPIC_DEPTH, depth_to_image(frame.depth, camera, encoding="16UC1")),
        (TOPIC_POSE, matrix_to_pose_stamped(frame.pose, Header(stamp=stamp, frame_id=world_frame))),
    ]
    if frame.labels is not None:
        messages.append((TOPIC_SEMANTIC, labels_to_image(frame.labels, camera)))
    if frame.instances is not None:
        messages.append((TOPIC_INSTANCE, instances_to_image(frame.instances, camera)))
    return messages


def write_bag(
    frames: Iterator[RGBDFrame] | Sequence[RGBDFrame],
    output: Path,
    storage: str = "mcap",
    start_time_s: float = DEFAULT_START_TIME_S,
    camera_frame: str = "camera_optical_frame",
    world_frame: str = "map",
    progress: bool = True,
    description: str = "",
    expected_frames: int | None = None,
) -> BagWriteSummary:
    """Write ``frames`` (stamped at ``start_time_s + frame.stamp``) as a new bag folder ``output``."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    if storage not in STORAGE_FORMATS:
        raise BagToolError(f"unknown storage format {storage!r}; expected one of {STORAGE_FORMATS}")
    output = Path(output)
    if output.exists():
        raise BagToolError(f"{output} already exists; rosbag2 bags are written to a new folder")
    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    connections = {}
    n_frames = n_messages = 0
    first_ns = last_ns = None
    start_ns = round(start_time_s * NANOSECONDS_PER_SECOND)
    with Writer(output, version=BAG_VERSION, storage_plugin=plugin) as writer:
        if description:
            writer.set_custom_data("ovseg3d.source", description)
        for frame in tqdm(
            frames, desc=f"write {output.name}", unit="frame", total=expected_frames, disable=not progress
        ):
            stamp_ns = start_ns + round(frame.stamp * NANOSECONDS_PER_SECOND)
            if last_ns is not None and stamp_ns <= last_ns:
                raise BagToolError(f"frame {frame.name!r} is not later than the previous frame")
            for topic, msg in frame_messages(frame, stamp_ns, camera_frame, world_frame):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, TOPIC_TYPES[topic], typestore=typestore)
                writer.write(connections[topic], stamp_ns, serialize_message(msg))
                n_messages += 1
            first_ns = stamp_ns if first_ns is None else first_ns
            last_ns = stamp_ns
            n_frames += 1
    if n_frames == 0:
        raise BagToolError("no frames to write")
    return BagWriteSummary(
        output, n_frames, n_messages, tuple(connections), (last_ns - first_ns) / NANOSECONDS_PER_SECOND
    )


def message_class(msgtype: str) -> type:
    """The rclpy message class of a ``pkg/msg/Type`` name."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise BagToolError(f"message type {msgtype} is not importable here: {error}") from error


def parse_remaps(remaps: Sequence[str]) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}`` (names without a leading slash get one)."""
    mapping = {}
    for remap in remaps:
        source, separator, target = remap.partition(":=")
        if not separator or not source or not target:
            raise BagToolError(f"remap {remap!r} must look like FROM:=TO")
        mapping["/" + source.lstrip("/")] = "/" + target.lstrip("/")
    return mapping


@dataclass
class PlaySummary:
    published: int
    loops: int
    interrupted: bool


def play_bag(
    path: Path,
    context: Context | None = None,
    rate: float = 1.0,
    loops: int = 1,
    remaps: dict[str, str] | None = None,
    topics: Sequence[str] | None = None,
    wait_for_subscribers_s: float = 0.0,
    qos_depth: int = 10,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> PlaySummary:
    """Publish the bag's raw CDR messages with the recorded timing divided by ``rate``.

    ``loops`` = 0 repeats until stopped: ``stop`` set (e.g. from another thread) or the context shut
    down (rclpy's SIGINT/SIGTERM handlers do that).
    ``wait_for_subscribers_s`` waits up to that long until every topic has a subscriber before playing.
    ``context`` is an initialised ``rclpy.Context`` (the default context when None).
    """
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Reader
    from tqdm import tqdm

    if not rate > 0:
        raise BagToolError(f"rate must be positive, got {rate}")
    if loops < 0:
        raise BagToolError(f"loops must be >= 0 (0 = forever), got {loops}")
    remaps = remaps or {}
    stop = stop or threading.Event()
    context = context or rclpy.get_default_context()
    published = completed = 0
    with Reader(Path(path)) as reader:
        wanted = {"/" + topic.lstrip("/") for topic in topics} if topics else None
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            raise BagToolError(f"{path} has no messages on the requested topics {sorted(wanted or [])}")
        node = rclpy.create_node("ovseg3d_bag_player", context=context)
        try:
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
            publishers = {}
            for connection in connections:
                if connection.topic not in publishers:
                    topic = remaps.get(connection.topic, connection.topic)
                    publishers[connection.topic] = node.create_publisher(message_class(connection.msgtype), topic, qos)
            _wait_for_subscribers(list(publishers.values()), wait_for_subscribers_s, stop, context)
            total = sum(c.msgcount for c in connections)
            bar = tqdm(total=total * loops if loops else None, desc="play", unit="msg", disable=not progress)
            # A loop restarts one mean frame interval after the last message, as a camera would continue.
            frames = max(c.msgcount for c in connections)
            loop_period_ns = reader.duration + (reader.duration // (frames - 1) if frames > 1 else 0)
            start_wall = time.monotonic()
            while (loops == 0 or completed < loops) and not stop.is_set() and context.ok():
                first_ns = None
                for connection, timestamp, raw in reader.messages(connections=connections):
                    first_ns = timestamp if first_ns is None else first_ns
                    due = start_wall + (timestamp - first_ns) / NANOSECONDS_PER_SECOND / rate
                    if not _sleep_until(due, stop, context):
                        break
                    try:
                        publishers[connection.topic].publish(bytes(raw))
                    except Exception:
                        if context.ok():
                            raise
                        break  # shut down (SIGINT/SIGTERM) between the check and the publish
                    published += 1
                    bar.update()
                else:
                    completed += 1
                    start_wall += loop_period_ns / NANOSECONDS_PER_SECOND / rate
            bar.close()
        finally:
            node.destroy_node()
    return PlaySummary(published, completed, interrupted=stop.is_set() or not context.ok())


def _sleep_until(due: float, stop: threading.Event, context: Context) -> bool:
    """Wait for the monotonic time ``due``; False if asked to stop meanwhile."""
    while True:
        if stop.is_set() or not context.ok():
            return False
        remaining = due - time.monotonic()
        if remaining <= 0:
            return True
        stop.wait(min(remaining, 0.05))


def _wait_for_subscribers(publishers: list, timeout_s: float, stop: threading.Event, context: Context) -> None:
    deadline = time.monotonic() + timeout_s
    while any(p.get_subscription_count() == 0 for p in publishers):
        if time.monotonic() >= deadline or stop.is_set() or not context.ok():
            missing = [p.topic_name for p in publishers if p.get_subscription_count() == 0]
            if timeout_s > 0 and missing:
                print(f"ovseg3d-bag: no subscriber yet on {missing}; playing anyway", file=sys.stderr)
            return
        stop.wait(0.05)
    if timeout_s > 0:
        stop.wait(0.2)  # let the subscribers' side of discovery finish as well


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovseg3d-bag", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    write = commands.add_parser("write", help="write a bag from a sample dataset")
    write.add_argument("output", type=Path, help="bag folder to create (must not exist)")
    write.add_argument("--dataset", choices=DATASETS, default="7scenes")
    write.add_argument("--root", type=Path, default=None, help="dataset folder (default: the sample data)")
    write.add_argument("--frames", type=int, default=50, help="number of frames (views for scannet)")
    write.add_argument("--stride", type=int, default=10, help="take every N-th frame (7scenes, redwood)")
    write.add_argument("--start", type=int, default=0, help="first frame index (7scenes, redwood)")
    write.add_argument("--seed", type=int, default=0, help="trajectory seed (scannet)")
    write.add_argument("--format", choices=STORAGE_FORMATS, default="mcap", dest="storage")
    write.add_argument("--start-time", type=float, default=DEFAULT_START_TIME_S, help="stamp of frame 0 (s)")
    write.add_argument("--camera-frame", default="camera_optical_frame")
    write.add_argument("--world-frame", default="map")

    play = commands.add_parser("play", help="publish a bag with its original timing")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    play.add_argument("--loop", action="store_true", help="repeat until interrupted")
    play.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="rename a topic")
    play.add_argument("--topics", nargs="+", default=None, help="play only these topics")
    play.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS")
    play.add_argument("--qos-depth", type=int, default=10)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args") :] if "--ros-args" in argv else []
    args = _build_parser().parse_args(argv[: len(argv) - len(ros_args)])
    try:
        if args.command == "write":
            frames = dataset_frames(args.dataset, args.frames, args.stride, args.start, args.root, args.seed)
            summary = write_bag(
                frames,
                args.output,
                storage=args.storage,
                start_time_s=args.start_time,
                camera_frame=args.camera_frame,
                world_frame=args.world_frame,
                description=f"{args.dataset} frames={args.frames} stride={args.stride} start={args.start}",
                expected_frames=args.frames,
            )
            print(
                f"wrote {summary.path}: {summary.frames} frames, {summary.messages} messages on "
                f"{', '.join(summary.topics)} over {summary.duration_s:.2f} s"
            )
            return 0
        return _play_main(args, ros_args)
    except (BagToolError, FileNotFoundError) as error:
        print(f"ovseg3d-bag: {error}", file=sys.stderr)
        return 2


def _play_main(args: argparse.Namespace, ros_args: list[str]) -> int:
    import rclpy

    use_fastdds_profile()
    rclpy.init(args=["ovseg3d-bag", *ros_args])
    try:
        summary = play_bag(
            args.bag,
            rate=args.rate,
            loops=0 if args.loop else 1,
            remaps=parse_remaps(args.remap),
            topics=args.topics,
            wait_for_subscribers_s=args.wait_for_subscribers,
            qos_depth=args.qos_depth,
        )
        print(f"published {summary.published} messages ({summary.loops} complete passes)")
    except BaseException as error:
        if not ended_by_shutdown(error, rclpy.get_default_context()):
            raise
        print("ovseg3d-bag: interrupted", file=sys.stderr)
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
