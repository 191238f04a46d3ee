"""scene_node: RGB-D (+ poses, points) in, labeled cloud + legend out, vocabulary/query/reset/save services.

The executor thread only converts messages and hands frames to a worker through a queue that
drops the oldest frame when full. The worker integrates every frame, lifts 2D features at
keyframes and purifies + publishes on a period. Services share the segmenter under one lock; any
bad input is logged (or answered with success=false) and the map built so far is kept. Any other
failure (a torch error, an unusable student checkpoint) is logged as an error and counted, and
neither the worker nor a service ends with it: the next frame or request may succeed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from std_srvs.srv import Trigger

from ovseg3d_core.config import Config, setting
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.keyframes import KeyframeConfig, KeyframeSelector
from ovseg3d_core.labeling import Labeling
from ovseg3d_core.segmenter import DEFAULT_VOCABULARY, SceneSegmenter, SegmenterConfig
from ovseg3d_core.viz.cloud_render import label_palette
from ovseg3d_ros.approximate_sync import ApproximateTimeSynchronizer, subscribe_synchronized
from ovseg3d_ros.conversions import (
    camera_info_to_intrinsics,
    cloud_to_xyz_rgb,
    image_to_depth,
    image_to_labels,
    image_to_rgb,
    labeled_cloud_to_msg,
    nanoseconds_to_stamp,
    pose_stamped_to_matrix,
    stamp_to_nanoseconds,
    transform_to_matrix,
)
from ovseg3d_ros.input_monitor import silent_topics
from ovseg3d_ros.msg import Legend
from ovseg3d_ros.pose_buffer import PoseBuffer
from ovseg3d_ros.qos import cloud_output_qos, latched_qos, sensor_input_qos
from ovseg3d_ros.srv import QueryScene, SaveScene, SetVocabulary

try:  # TF for frames without a camera_pose, when the ROS install has it (ENVIRONMENT.md)
    import tf2_ros
except ImportError:
    tf2_ros = None

BACKGROUND_NAME = "background"
INPUT_ERRORS = (ValueError, ArithmeticError)  # malformed input or request; anything else is a failure of the node
SILENT_INPUT_HINTS = {
    "semantic/image": "only the noisy_oracle backend needs it: 16UC1 class ids aligned with depth "
    "(set segmenter.encoders.dense: openclip for real images)",
    "rgb/camera_info": "sensor_msgs/CameraInfo with the intrinsics of the colour and depth images",
}


def score_colors(scores: np.ndarray) -> np.ndarray:
    """N x 3 uint8 inferno colours of query scores scaled over their own range (dark = weakest match)."""
    import matplotlib

    if len(scores) == 0:
        return np.zeros((0, 3), np.uint8)
    scaled = (scores - scores.min()) / max(float(scores.max() - scores.min()), 1e-6)
    return (matplotlib.colormaps["inferno"](scaled)[:, :3] * 255).astype(np.uint8)


@dataclass
class SceneNodeConfig(Config):
    """Scheduling and topic settings of scene_node; ``segmenter`` holds the library's own config."""

    world_frame: str = setting("map", "fixed frame of the map, the poses and the published clouds")
    use_tf: bool = setting(
        True, "take a frame's pose from TF (when tf2_ros is importable) if camera_pose has none within tolerance"
    )
    keyframes: KeyframeConfig = setting(KeyframeConfig(), "when to run the 2D model on a frame")
    purify_period_s: float = setting(5.0, "purify + publish the labeled cloud this often (0 = on demand)", low=0.0)
    queue_size: int = setting(4, "frames waiting for the worker; the oldest is dropped when full", low=1, high=1000)
    sync_slop_s: float = setting(0.05, "largest stamp difference between synchronised images (s)", low=0.0)
    sync_queue_size: int = setting(10, "messages per input kept by the synchroniser", low=1, high=1000)
    pose_tolerance_s: float = setting(0.05, "largest gap between a frame and its camera_pose (s)", low=0.0)
    pose_wait_s: float = setting(0.5, "how long the worker waits for a frame's pose to arrive (s)", low=0.0)
    load_path: str = setting("", "scene file to load at start-up (empty = start empty)")
    status_period_s: float = setting(10.0, "seconds between status log lines", low=0.5)
    oracle_class_names: list[str] = setting(
        DEFAULT_VOCABULARY, "class names indexed by semantic/image ids (noisy oracle backend only)"
    )
    segmenter: SegmenterConfig = setting(SegmenterConfig(), "segmentation pipeline")


@dataclass
class NodeCounters:
    frames: int = 0
    keyframes: int = 0
    rejected: int = 0
    no_pose: int = 0
    points: int = 0
    clouds: int = 0
    errors: int = 0


def legend_message(labeling: Labeling, colors: np.ndarray, header: Header) -> Legend:
    counts = labeling.counts()
    return Legend(
        header=header,
        labels=[*labeling.vocabulary, BACKGROUND_NAME],
        colors=[ColorRGBA(r=float(r), g=float(g), b=float(b), a=1.0) for r, g, b in colors],
        point_counts=[int(c) for c in counts],
    )


class SceneNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scene_node", **kwargs)
        # Set first: rclpy destroys a node whose start-up failed (a bad parameter) at shutdown.
        self._stop = threading.Event()
        self.worker: threading.Thread | None = None
        from ovseg3d_ros.parameters import declare_config

        self.config = declare_config(self, SceneNodeConfig)
        cfg = self.config
        self.segmenter = SceneSegmenter(cfg.segmenter, class_names=cfg.oracle_class_names)
        self.backend = self.segmenter.source_name
        self.counters = NodeCounters()
        self.lock = threading.RLock()
        from ovseg3d_ros.frame_queue import DroppingQueue

        self.queue: DroppingQueue[tuple[RGBDFrame, Header]] = DroppingQueue(
            cfg.queue_size, order=lambda item: stamp_to_nanoseconds(item[1].stamp)
        )
        self.keyframe_selector = KeyframeSelector(cfg.keyframes)
        self.poses = PoseBuffer()
        self._dirty = False
        self._latest_stamp_ns: int | None = None  # newest observation in the map: the stamp of its clouds
        self._last_publish = time.monotonic()
        self._warned: dict[str, float] = {}

        self.cloud_pub = self.create_publisher(PointCloud2, "labeled_cloud", cloud_output_qos())
        self.legend_pub = self.create_publisher(Legend, "legend", latched_qos())

        sensors = ReentrantCallbackGroup()
        self.create_subscription(
            PoseStamped, "camera_pose", self._on_pose, sensor_input_qos(50), callback_group=sensors
        )
        self.tf_buffer = None
        if cfg.use_tf and tf2_ros is not None:
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
        inputs = [(Image, "rgb/image"), (Image, "depth/image"), (CameraInfo, "rgb/camera_info")]
        if cfg.segmenter.encoders.dense == "noisy_oracle":
            inputs.append((Image, "semantic/image"))
        self.sync = subscribe_synchronized(
            self, inputs, self._on_frame, sensor_input_qos(), cfg.sync_queue_size, cfg.sync_slop_s, sensors
        )
        self.create_subscription(PointCloud2, "points", self._on_points, sensor_input_qos(), callback_group=sensors)

        services = MutuallyExclusiveCallbackGroup()
        for service_type, name, handler in (
            (SetVocabulary, "set_vocabulary", self._set_vocabulary),
            (QueryScene, "query", self._query),
            (Trigger, "reset", self._reset),
            (SaveScene, "save", self._save),
        ):
            self.create_service(service_type, f"~/{name}", self._answering(name, handler), callback_group=services)
        self.create_timer(cfg.status_period_s, self._log_status)

        if cfg.load_path:
            self._load(cfg.load_path)
        self._publish_legend_only()
        self.worker = threading.Thread(target=self._work, name="scene_worker", daemon=True)
        self.worker.start()
        self.get_logger().info(
            f"[{self.backend}] scene_node ready: world_frame={cfg.world_frame}, purification="
            f"{cfg.segmenter.purification}, poses from {'camera_pose + TF' if self.tf_buffer else 'camera_pose'}, "
            f"vocabulary of {len(self.segmenter.vocabulary)}"
        )

    # ----------------------------------------------------------------- inputs
    def _warn(self, key: str, message: str, period_s: float = 5.0, error: bool = False) -> None:
        """Log a warning (or error) at most once per ``period_s`` per kind, so a bad stream cannot flood the log."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= period_s:
            self._warned[key] = now
            logger = self.get_logger()
            (logger.error if error else logger.warning)(message)

    def _report(self, key: str, what: str, error: Exception) -> str:
        """Log ``what`` failed and why (rate-limited); bad input is a warning, anything else a counted error."""
        if isinstance(error, INPUT_ERRORS):
            message = f"{what}: {error}"
            self._warn(key, message)
        else:
            self.counters.errors += 1
            message = f"{what}: {type(error).__name__}: {error}"
            self._warn(key, message, error=True)
        return message

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.config.world_frame:
            self._warn(
                "pose_frame", f"camera_pose in frame {msg.header.frame_id!r}, expected {self.config.world_frame!r}"
            )
            return
        try:
            self.poses.add(stamp_to_nanoseconds(msg.header.stamp), pose_stamped_to_matrix(msg))
        except Exception as error:
            self._report("pose_bad", "ignored camera_pose", error)

    def _camera_pose(self, header: Header) -> tuple[np.ndarray | None, str]:
        """The pose of a frame from camera_pose if it holds one within tolerance, else from TF; or None and why."""
        tolerance = int(self.config.pose_tolerance_s * 1e9)
        pose = self.poses.lookup(stamp_to_nanoseconds(header.stamp), tolerance)
        reason = "no camera_pose within pose_tolerance_s of its stamp"
        if pose is not None or self.tf_buffer is None:
            return pose, reason
        world = self.config.world_frame
        try:
            transform = self.tf_buffer.lookup_transform(world, header.frame_id, Time.from_msg(header.stamp))
            return transform_to_matrix(transform.transform), ""
        except Exception as error:  # tf2 raises several unrelated exception types
            return None, f"{reason} and no TF {world} <- {header.frame_id!r}: {error}"

    def _on_frame(
        self, rgb_msg: Image, depth_msg: Image, info_msg: CameraInfo, semantic_msg: Image | None = None
    ) -> None:
        """Convert a synchronised set to a frame (pose filled in by the worker) and queue it."""
        self.counters.frames += 1
        name = f"frame-{self.counters.frames}"
        parts = []
        for topic, convert, msg in (
            ("rgb/image", image_to_rgb, rgb_msg),
            ("depth/image", image_to_depth, depth_msg),
            ("rgb/camera_info", camera_info_to_intrinsics, info_msg),
            ("semantic/image", image_to_labels, semantic_msg),
        ):
            try:
                parts.append(convert(msg) if msg is not None else None)
            except Exception as error:
                self._reject(topic, f"{name} rejected: {topic}", error)
                return
        color, depth, intrinsics, labels = parts
        try:
            frame = RGBDFrame(
                color=color,
                depth=depth,
                intrinsics=intrinsics,
                pose=np.eye(4),
                stamp=stamp_to_nanoseconds(depth_msg.header.stamp) * 1e-9,
                labels=labels.astype(np.int64) if labels is not None else None,
                name=name,
            ).validate()
        except Exception as error:
            self._reject("frame", f"{name} rejected", error)
            return
        self.queue.put((frame, depth_msg.header))

    def _reject(self, key: str, what: str, error: Exception) -> None:
        """Report a frame that could not be built; malformed input counts as rejected, anything else as an error."""
        if isinstance(error, INPUT_ERRORS):
            self.counters.rejected += 1
        self._report(f"reject:{key}", what, error)

    def _resolve_pose(self, frame: RGBDFrame, header: Header) -> bool:
        """Fill in the frame's camera pose, waiting up to ``pose_wait_s`` for one that arrives late."""
        deadline = time.monotonic() + self.config.pose_wait_s
        while True:
            pose, reason = self._camera_pose(header)
            if pose is not None or time.monotonic() >= deadline or self._stop.is_set():
                break
            time.sleep(0.01)
        if pose is None:
            self.counters.no_pose += 1
            self._warn("no_pose", f"{frame.name} skipped: {reason}")
            return False
        frame.pose = pose
        return True

    def _on_points(self, msg: PointCloud2) -> None:
        if msg.header.frame_id != self.config.world_frame:
            self._warn(
                "points_frame", f"points in frame {msg.header.frame_id!r} ignored; expected {self.config.world_frame!r}"
            )
            return
        try:
            xyz, rgb = cloud_to_xyz_rgb(msg)
            with self.lock:
                self.segmenter.add_points(xyz, rgb, stamp_to_nanoseconds(msg.header.stamp) * 1e-9)
            self.counters.points += 1
            self._observed(stamp_to_nanoseconds(msg.header.stamp))
        except Exception as error:
            self._report("points_bad", "points rejected", error)

    # ----------------------------------------------------------------- worker
    def _work(self) -> None:
        """Integrate queued frames and purify on schedule; no failure ends the loop (the next one may succeed)."""
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.2)
            if item is not None:
                try:
                    if self._resolve_pose(*item):
                        self._process(*item)
                except Exception as error:
                    self._report("integrate", f"{item[0].name} not integrated", error)
            if self._purify_due():
                try:
                    self.publish_labels()
                except Exception as error:
                    if not self.context.ok():  # shut down mid-publish (SIGTERM): not a labeling failure
                        break
                    self._report("label", "labeling failed", error)

    def _purify_due(self) -> bool:
        """Purify once per period when frames are not waiting, and at the latest after four periods."""
        period = self.config.purify_period_s
        if period <= 0 or not self._dirty:
            return False
        waited = time.monotonic() - self._last_publish
        return waited >= 4 * period or (waited >= period and len(self.queue) == 0)

    def _observed(self, stamp_ns: int) -> None:
        self._latest_stamp_ns = max(stamp_ns, self._latest_stamp_ns or stamp_ns)
        self._dirty = True

    def _process(self, frame: RGBDFrame, header: Header) -> None:
        """Integrate a posed frame and lift features at keyframes; malformed frames are counted as rejected."""
        try:
            frame.validate()
            with self.lock:
                touched = self.segmenter.integrate(frame)
                if touched:
                    self._observed(stamp_to_nanoseconds(header.stamp))
                    if self.keyframe_selector.is_keyframe(frame.pose, frame.stamp):
                        self.segmenter.lift(frame)
                        self.counters.keyframes += 1
        except INPUT_ERRORS as error:
            self.counters.rejected += 1
            self._report("integrate", f"{frame.name} not integrated", error)
            return
        if not touched:
            self.counters.rejected += 1
            self._warn(
                "no_depth",
                f"{frame.name} not integrated: too few valid depth pixels (NaN, inf, zero and out-of-range depth "
                "are invalid; see segmenter.scene.min_valid_pixels)",
            )

    def _header(self) -> Header:
        """Clouds carry the stamp of the newest observation they contain (now, for a loaded or empty map)."""
        if self._latest_stamp_ns is None:
            return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.config.world_frame)
        return Header(stamp=nanoseconds_to_stamp(self._latest_stamp_ns), frame_id=self.config.world_frame)

    def publish_labels(self) -> Labeling | None:
        """Purify (if the map changed), label and publish the cloud and legend; None if nothing to label.

        Raises whatever purification or labeling raises; the caller reports it.
        """
        self._last_publish = time.monotonic()
        with self.lock:
            if self.segmenter.scene.feature_dim == 0:
                return None
            labeling = self.segmenter.label()
            positions = self.segmenter.scene.positions()
            report = self.segmenter.last_purify
            self._dirty = False
        palette = label_palette(len(labeling.vocabulary))
        header = self._header()
        colors = (palette[labeling.labels] * 255).astype(np.uint8)
        self.cloud_pub.publish(
            labeled_cloud_to_msg(positions, colors, labeling.labels.astype(np.uint32), labeling.scores, header)
        )
        self.legend_pub.publish(legend_message(labeling, palette, header))
        self.counters.clouds += 1
        self.get_logger().info(
            f"[{self.backend}] published {len(positions)} labeled voxels "
            f"(purification {report.mode}: student {report.student_ms:.0f} ms, pooling {report.pooling_ms:.0f} ms)"
        )
        return labeling

    def _publish_legend_only(self) -> None:
        vocabulary = self.segmenter.vocabulary
        labeling = Labeling(np.empty(0, np.int64), np.empty(0, np.float32), vocabulary)
        self.legend_pub.publish(legend_message(labeling, label_palette(len(vocabulary)), self._header()))

    # --------------------------------------------------------------- services
    def _answering(self, name: str, handler):
        """``handler`` as a service callback that always answers: a failure becomes success=false naming its cause."""

        def answer(request, response):
            try:
                return handler(request, response)
            except INPUT_ERRORS as error:  # a bad request: the caller gets the reason, the log stays quiet
                response.success, response.message = False, str(error)
            except Exception as error:
                response.success, response.message = False, self._report(name, f"{name} failed", error)
            return response

        return answer

    def _set_vocabulary(self, request: SetVocabulary.Request, response: SetVocabulary.Response):
        with self.lock:
            previous = list(self.segmenter.vocabulary)
            self.segmenter.set_vocabulary(list(request.labels))
            try:
                labeling = self.publish_labels()
            except Exception:
                self.segmenter.set_vocabulary(previous)  # success=false leaves the vocabulary as it was
                raise
        if labeling is None:
            self._publish_legend_only()
        response.success = True
        response.message = f"vocabulary of {len(request.labels)} labels set"
        return response

    def _query(self, request: QueryScene.Request, response: QueryScene.Response):
        if not np.isfinite(request.threshold):
            raise ValueError(f"threshold must be finite, got {request.threshold}")
        with self.lock:
            scores = self.segmenter.query(request.text)
            positions = self.segmenter.scene.positions()
            labels = self.segmenter.labeler.label().labels
        keep = scores >= request.threshold
        response.cloud = labeled_cloud_to_msg(
            positions[keep],
            score_colors(scores[keep]),
            labels[keep].astype(np.uint32),
            scores[keep].astype(np.float32),
            self._header(),
        )
        response.max_score = float(scores.max()) if len(scores) else 0.0
        response.success = True
        response.message = f"{int(keep.sum())} of {len(scores)} voxels score >= {request.threshold:.3f}"
        return response

    def _reset(self, _request: Trigger.Request, response: Trigger.Response):
        with self.lock:
            dropped = self.queue.clear()
            self.segmenter.reset()
            self.keyframe_selector.reset()
            self._dirty = False
            self._latest_stamp_ns = None
        self._publish_legend_only()
        response.success, response.message = True, f"scene cleared ({dropped} queued frames discarded)"
        return response

    def _save(self, request: SaveScene.Request, response: SaveScene.Response):
        try:
            if not request.path.strip():
                raise ValueError("the save path is empty")
            with self.lock:
                path = self.segmenter.save(request.path)
                voxels = len(self.segmenter.scene)
            response.success, response.message = True, f"saved {voxels} voxels to {path}"
        except (OSError, ValueError) as error:
            response.success, response.message = False, f"save failed: {error}"
        return response

    def _load(self, path: str) -> None:
        try:
            with self.lock:
                self.segmenter.load(path)
            self._dirty = True
            self.get_logger().info(f"loaded {len(self.segmenter.scene)} voxels from {path}")
        except (OSError, ValueError) as error:
            self.get_logger().error(f"could not load {path!r}: {error}; starting with an empty scene")

    def _log_status(self) -> None:
        c = self.counters
        counts = self.sync.monitor.take_counts()
        inputs = ", ".join(f"{topic} {count}" for topic, count in counts.items())
        if isinstance(self.sync, ApproximateTimeSynchronizer):  # message_filters' keeps no counts
            inputs += f"; synchroniser matched {self.sync.matched}, dropped {self.sync.dropped}"
        self.get_logger().info(
            f"[{self.backend}] inputs in the last {self.config.status_period_s:g} s: {inputs}; "
            f"frames {c.frames} (keyframes {c.keyframes}, dropped {self.queue.dropped}, "
            f"rejected {c.rejected}, no pose {c.no_pose}), point clouds {c.points}, "
            f"voxels {len(self.segmenter.scene)}, clouds published {c.clouds}, errors {c.errors}"
        )
        silent = silent_topics(counts)
        if silent:
            hints = "".join(
                f"; {topic}: {SILENT_INPUT_HINTS[topic]}" for topic in silent if topic in SILENT_INPUT_HINTS
            )
            self._warn(
                "silent",
                f"no messages on {', '.join(silent)} for {self.config.status_period_s:g} s while the other "
                f"synchronised inputs arrive: no frame can be assembled{hints}",
            )

    def destroy_node(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.join(timeout=5)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    from ovseg3d_ros.bringup import spin_nodes

    return spin_nodes([SceneNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
