"""scene_node: RGB-D (+ poses, points) in, labeled cloud + legend out, vocabulary/query/reset/save services.

The node only converts, schedules and publishes; :class:`~ovseg3d_core.online.OnlineSegmenter`
does the rest. The executor thread converts messages and queues them; a worker resolves each
frame's pose, builds the frame (the one place it is validated), hands it to the segmenter and
publishes a snapshot when one is due. Bad input is logged (or answered with success=false) and
the map built so far is kept; any other failure is logged as an error and counted, and neither
the worker nor a service ends with it. ``segmenter.encoders.checkpoint`` can be set at runtime.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ovseg3d_core.config import setting
from ovseg3d_core.encoders.registry import frame_inputs
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.online import OnlineSegmenter, OnlineSegmenterConfig
from ovseg3d_ros.conversions import (
    cloud_to_xyz_rgb,
    labeled_cloud_to_msg,
    legend_to_msg,
    nanoseconds_to_stamp,
    stamp_to_nanoseconds,
)
from ovseg3d_ros.msg import Legend
from ovseg3d_ros.nodes.approximate_sync import SynchronizedInputs
from ovseg3d_ros.nodes.camera_poses import CameraPoses
from ovseg3d_ros.nodes.frame_inputs import FrameInputError, convert_frame_messages
from ovseg3d_ros.nodes.frame_inputs import frame_inputs as topics_of
from ovseg3d_ros.nodes.frame_queue import DroppingQueue
from ovseg3d_ros.nodes.node_reporting import NodeReporter
from ovseg3d_ros.nodes.parameters import declare_config
from ovseg3d_ros.nodes.qos import cloud_output_qos, latched_qos, sensor_input_qos
from ovseg3d_ros.nodes.shutdown import spin_nodes
from ovseg3d_ros.srv import QueryScene, SaveScene, SetVocabulary

CHECKPOINT_PARAMETER = "segmenter.encoders.checkpoint"


@dataclass
class SceneNodeConfig(OnlineSegmenterConfig):
    """Topics, poses and queues of scene_node, on top of the online segmenter's own settings."""

    world_frame: str = setting("map", "fixed frame of the map, the poses and the published clouds")
    use_tf: bool = setting(
        True,
        "take a frame's pose from TF (when tf2_ros is importable) if camera_pose has none within tolerance, "
        "and carry a camera_pose in another frame into world_frame through TF",
    )
    queue_size: int = setting(4, "frames waiting for the worker; the oldest is dropped when full", low=1, high=1000)
    sync_slop_s: float = setting(0.05, "largest stamp difference between synchronised images (s)", low=0.0)
    sync_queue_size: int = setting(10, "messages per input kept by the synchroniser", low=1, high=1000)
    pose_tolerance_s: float = setting(0.05, "largest gap between a frame and its camera_pose (s)", low=0.0)
    pose_wait_s: float = setting(0.5, "how long the worker waits for a frame's pose (camera_pose or TF) (s)", low=0.0)
    load_path: str = setting("", "scene file to load at start-up (empty = start empty)")
    status_period_s: float = setting(10.0, "seconds between status log lines", low=0.5)


class SceneNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scene_node", **kwargs)
        self._stop = threading.Event()  # first: rclpy destroys a node whose start-up failed at shutdown
        self.worker: threading.Thread | None = None
        self.config = cfg = declare_config(self, SceneNodeConfig)
        self.config_parameters = {spec.name for spec in SceneNodeConfig.parameters()}
        # The checkpoint loads after start-up so that an unusable file leaves a mapping node, as at runtime.
        checkpoint = cfg.segmenter.encoders.checkpoint
        encoders = cfg.segmenter.encoders.replace(checkpoint="")
        self.online = OnlineSegmenter(cfg.replace(segmenter=cfg.segmenter.replace(encoders=encoders)))
        self.report = NodeReporter(self.get_logger(), lambda: self.online.segmenter.source_name)
        if checkpoint:
            self._load_checkpoint(checkpoint)
        self.queue: DroppingQueue[tuple[dict, Header]] = DroppingQueue(
            cfg.queue_size, order=lambda item: stamp_to_nanoseconds(item[1].stamp)
        )
        self.poses = CameraPoses(self, cfg.world_frame, cfg.pose_tolerance_s, cfg.use_tf)
        self.cloud_pub = self.create_publisher(PointCloud2, "labeled_cloud", cloud_output_qos())
        self.legend_pub = self.create_publisher(Legend, "legend", latched_qos())
        # One sensor callback at a time: with a reentrant group, rclpy's MultiThreadedExecutor re-submits a
        # subscription while its queued callback has not yet taken the message, and its spin thread then
        # holds the GIL scanning the growing future list (ros2/rclpy#1452, fixed upstream only after Jazzy,
        # #1547). On 2 cores a 30 Hz stream of six topics reached the worker at 282 of 1,801 frames.
        sensors = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            PoseStamped, "camera_pose", self._on_pose, sensor_input_qos(50), callback_group=sensors
        )
        self.inputs = topics_of(frame_inputs(cfg.segmenter.encoders))
        topics = [(spec.msg_type, spec.topic) for spec in self.inputs]
        self.sync = SynchronizedInputs(
            self, topics, self._on_frame, sensor_input_qos(), cfg.sync_queue_size, cfg.sync_slop_s, sensors
        )
        self.create_subscription(PointCloud2, "points", self._on_points, sensor_input_qos(), callback_group=sensors)
        services = MutuallyExclusiveCallbackGroup()
        for service_type, name, handler in (
            (SetVocabulary, "set_vocabulary", self._set_vocabulary),
            (QueryScene, "query", self._query),
            (Trigger, "reset", self._reset),
            (SaveScene, "save", self._save),
        ):
            self.create_service(
                service_type, f"~/{name}", self.report.answering(name, handler), callback_group=services
            )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(cfg.status_period_s, self._log_status)
        if cfg.load_path:
            self._load(cfg.load_path)
        self.legend_pub.publish(legend_to_msg(self.online.legend(), self._header(None)))
        self.worker = threading.Thread(target=self._work, name="scene_worker", daemon=True)
        self.worker.start()
        self.report.info(
            f"scene_node ready: world_frame={cfg.world_frame}, purification={cfg.segmenter.purification}, "
            f"poses from {self.poses.sources}, vocabulary of {len(self.online.segmenter.vocabulary)}"
        )
        if not self.online.segmenter.has_model:
            self.report.error(f"{self.online.labels_unavailable()}; publishing geometry in camera colours")

    def _load_checkpoint(self, path: str) -> str | None:
        """Attach the 2D model in ``path``; None on success, else the logged reason (the node keeps mapping)."""
        try:
            source = self.online.set_checkpoint(path)
        except Exception as error:
            return self.report.failure(
                "checkpoint", f"{CHECKPOINT_PARAMETER} {path!r} not loaded", error, error_level=True
            )
        self.report.info(f"{CHECKPOINT_PARAMETER} = {path!r}: features now from {source}")
        return None

    # ----------------------------------------------------------------- inputs
    def _on_pose(self, msg: PoseStamped) -> None:
        try:
            self.poses.add(msg)
        except Exception as error:
            self.report.failure("pose_bad", "ignored camera_pose", error)

    def _on_frame(self, *messages) -> None:
        """Convert a synchronised set and queue it; the worker adds the pose and builds the frame."""
        self.report.counters.frames += 1
        name, header = f"frame-{self.report.counters.frames}", messages[1].header  # the depth image's
        try:
            fields = convert_frame_messages(self.inputs, messages)
        except FrameInputError as error:
            self.report.rejected(error.topic, f"{name} rejected: {error.topic}", error.error)
            return
        self.queue.put(({**fields, "name": name, "stamp": stamp_to_nanoseconds(header.stamp) * 1e-9}, header))

    def _on_points(self, msg: PointCloud2) -> None:
        try:
            if msg.header.frame_id != self.config.world_frame:
                raise ValueError(f"points in frame {msg.header.frame_id!r}; expected {self.config.world_frame!r}")
            self.online.add_points(*cloud_to_xyz_rgb(msg), stamp_to_nanoseconds(msg.header.stamp))
            self.report.counters.points += 1
        except Exception as error:
            self.report.failure("points_bad", "points rejected", error)

    # ----------------------------------------------------------------- worker
    def _work(self) -> None:
        """Integrate queued frames and publish on schedule; no failure ends the loop (the next one may succeed)."""
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.2)
            if item is not None:
                self._process(*item)
            if self.online.purify_due(len(self.queue)):
                try:
                    self.publish_labels()
                except Exception as error:
                    if not self.context.ok():  # shut down mid-publish (SIGTERM): not a labeling failure
                        break
                    self.report.failure("label", "labeling failed", error)

    def _process(self, parts: dict, header: Header) -> None:
        pose, missing = self.poses.wait_for(header, self.config.pose_wait_s, self._stop)
        if pose is None:
            self.report.no_pose(parts["name"], missing)
            return
        try:
            frame = RGBDFrame(pose=pose, **parts)  # validated here, once
        except Exception as error:
            self.report.rejected("frame", f"{parts['name']} rejected", error)
            return
        try:
            observation = self.online.observe(frame, stamp_to_nanoseconds(header.stamp))
        except Exception as error:
            self.report.rejected("integrate", f"{parts['name']} not integrated", error)
            return
        self.report.counters.keyframes += observation.keyframe
        if not observation.touched:
            self.report.counters.rejected += 1
            self.report.warn(
                "no_depth",
                f"{parts['name']} not integrated: too few valid depth pixels (NaN, inf, zero and out-of-range "
                "depth are invalid; see segmenter.scene.min_valid_pixels)",
            )

    def _header(self, stamp_ns: int | None) -> Header:
        """Clouds carry the stamp of the newest observation they contain (now, for a loaded or empty map)."""
        stamp = self.get_clock().now().to_msg() if stamp_ns is None else nanoseconds_to_stamp(stamp_ns)
        return Header(stamp=stamp, frame_id=self.config.world_frame)

    def publish_labels(self, snapshot=None) -> None:
        """Publish the cloud and legend of ``snapshot`` (default: a new one); raises what labeling raises."""
        snapshot = snapshot or self.online.snapshot()
        header = self._header(snapshot.stamp_ns)
        cloud = labeled_cloud_to_msg(
            snapshot.positions, snapshot.colors, snapshot.labels.astype(np.uint32), snapshot.scores, header
        )
        self.cloud_pub.publish(cloud)
        self.legend_pub.publish(legend_to_msg(snapshot.legend, header))
        self.report.counters.clouds += 1
        if snapshot.labeled:
            r = snapshot.report
            kind = f"incremental, {r.region_voxels} voxels re-pooled" if r.kind == "incremental" else r.kind
            done = f"purification {r.mode} ({kind}): student {r.student_ms:.0f} ms, pooling {r.pooling_ms:.0f} ms"
        else:
            done = f"geometry only, in camera colours: {snapshot.source}"
        self.report.info(f"published {len(snapshot.positions)} voxels ({done})")

    # --------------------------------------------------------------- services
    def _set_vocabulary(self, request: SetVocabulary.Request, response: SetVocabulary.Response):
        snapshot = self.online.set_vocabulary(list(request.labels))
        if snapshot is not None:
            self.publish_labels(snapshot)
        else:
            self.legend_pub.publish(legend_to_msg(self.online.legend(), self._header(None)))
        response.success, response.message = True, f"vocabulary of {len(request.labels)} labels set"
        return response

    def _query(self, request: QueryScene.Request, response: QueryScene.Response):
        result = self.online.query(request.text, request.threshold)
        response.cloud = labeled_cloud_to_msg(
            result.positions, result.colors, result.labels.astype(np.uint32), result.scores, self._header(None)
        )
        response.max_score, response.success = result.max_score, True
        response.message = f"{len(result.positions)} of {result.voxels} voxels score >= {request.threshold:.3f}"
        return response

    def _reset(self, _request: Trigger.Request, response: Trigger.Response):
        dropped = self.queue.clear()
        self.online.reset()
        self.legend_pub.publish(legend_to_msg(self.online.legend(), self._header(None)))
        response.success, response.message = True, f"scene cleared ({dropped} queued frames discarded)"
        return response

    def _save(self, request: SaveScene.Request, response: SaveScene.Response):
        if not request.path.strip():
            raise ValueError("save failed: the save path is empty")
        try:
            path = self.online.save(request.path)
        except OSError as error:
            raise ValueError(f"save failed: {error}") from error
        response.success, response.message = True, f"saved {self.online.voxels} voxels to {path}"
        return response

    def _load(self, path: str) -> None:
        try:
            self.report.info(f"loaded {self.online.load(path)} voxels from {path}")
        except (OSError, ValueError) as error:
            self.report.error(f"could not load {path!r}: {error}; starting with an empty scene")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """The 2D model's checkpoint loads at runtime; the config's other parameters are read at start-up only.

        Parameters rclpy owns (``use_sim_time``) pass through to its own handling.
        """
        fixed = [p.name for p in parameters if p.name in self.config_parameters and p.name != CHECKPOINT_PARAMETER]
        if fixed:
            reason = f"{', '.join(fixed)}: read at start-up only; restart the node to change it"
            return SetParametersResult(successful=False, reason=reason)
        for parameter in parameters:
            if parameter.name == CHECKPOINT_PARAMETER:
                reason = self._load_checkpoint(str(parameter.value))
                if reason is not None:
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _log_status(self) -> None:
        labels = "" if self.online.segmenter.has_model else f"; no labels: {self.online.labels_unavailable()}"
        self.report.status(
            self.config.status_period_s, self.sync, self.inputs, self.queue.dropped, self.online.voxels, labels
        )

    def destroy_node(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.join(timeout=5)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return spin_nodes([SceneNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
