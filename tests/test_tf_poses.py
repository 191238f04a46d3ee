"""TF as a pose source (#15): scene_node in its own process over real DDS, fed real 7-Scenes frames, with
the real tf2_ros on both sides (StaticTransformBroadcaster, TransformBroadcaster, the node's listener).

The tree is map -> odom -> base_link -> camera_optical: base_link -> camera_optical is static
(/tf_static, transient local), map -> odom drifts slowly and odom -> base_link moves so that the
chain composes back to the 7-Scenes camera pose (world <- camera). Each map built another way is
compared, voxel for voxel, with the map the node builds from camera_pose in map.

One node serves the module; each test resets its map and plays its frames in a time window of
its own, later than the previous one (the node's TF buffer keeps 10 s of history), and reads the
node's counters from the deltas of its status lines.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES, STRIDE = 24, 20  # 7-Scenes frames 0, 20, ..., 460: about 16 s of the trajectory
FRAME_PERIOD_S = 0.25  # wall time between published frames
POSE_WAIT_S = 1.0
TF_LAG_S = 0.3  # TF published this long after the images it belongs to, within POSE_WAIT_S
VOXEL_SIZE = 0.03
CAMERA_FRAME = "camera_optical"
PARAMS = f"""
scene_node:
  ros__parameters:
    purify_period_s: 0.3
    status_period_s: 0.5
    queue_size: 64
    pose_wait_s: {POSE_WAIT_S}
    segmenter:
      purification: geometric
      scene: {{voxel_size: {VOXEL_SIZE}}}
"""
STATUS = re.compile(
    r"frames (\d+) \(keyframes \d+, dropped (\d+), rejected (\d+), no pose (\d+)(?: \[missing ([^\]]*)\])?\)"
)
_windows = itertools.count(1)


def rigid(rotation: Rotation, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation.as_matrix(), translation
    return matrix


# base_link <- camera_optical: the usual optical axes (z forward, x right) on a mast, a little tilted.
BASE_LINK_CAMERA = rigid(Rotation.from_euler("xyz", [-97.0, 2.0, -85.0], degrees=True), [0.12, -0.03, 0.45])


def map_odom(t: float) -> np.ndarray:
    """map <- odom at ``t`` s into a window: an odometry drift that grows slowly."""
    return rigid(Rotation.from_euler("z", 8.0 + 1.5 * t, degrees=True), [0.4 + 0.02 * t, -0.25, 0.03 + 0.001 * t])


def transform_msg(matrix: np.ndarray, stamp, parent: str, child: str):
    from geometry_msgs.msg import TransformStamped

    from ovseg3d_ros.conversions import matrix_to_pose

    pose = matrix_to_pose(matrix)
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, parent, child
    t = msg.transform.translation
    t.x, t.y, t.z = pose.position.x, pose.position.y, pose.position.z
    msg.transform.rotation = pose.orientation
    return msg


@dataclass
class Status:
    frames: int
    dropped: int
    rejected: int
    no_pose: int
    missing: dict[str, int]

    def minus(self, before: Status) -> Status:
        missing = {pair: n - before.missing.get(pair, 0) for pair, n in self.missing.items()}
        return Status(
            self.frames - before.frames,
            self.dropped - before.dropped,
            self.rejected - before.rejected,
            self.no_pose - before.no_pose,
            {pair: n for pair, n in missing.items() if n},
        )


class Rig:
    """The node's process and log, and a client node that publishes frames, camera_pose and TF."""

    def __init__(self, context, tmp_path: Path) -> None:
        import tf2_ros

        from ovseg3d_ros.conversions import nanoseconds_to_stamp
        from ovseg3d_ros.tools.bag import dataset_frames
        from ovseg3d_ros.tools.client import Ovseg3dClient

        self.tmp_path = tmp_path
        self.frames = list(dataset_frames("7scenes", FRAMES, stride=STRIDE))
        params = tmp_path / "params.yaml"
        params.write_text(PARAMS)
        self.log = tmp_path / "scene_node.log"
        command = [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--nodes", "scene", "--params", str(params)]
        with self.log.open("w") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        self.client = Ovseg3dClient(context, name="tf_poses_client")
        self.tf = tf2_ros.TransformBroadcaster(self.client.node)
        static = tf2_ros.StaticTransformBroadcaster(self.client.node)
        static.sendTransform(transform_msg(BASE_LINK_CAMERA, nanoseconds_to_stamp(0), "base_link", CAMERA_FRAME))
        self.static = static  # kept: transient local, the node gets it whenever it subscribes
        self.publishers: dict[str, object] = {}

    def close(self) -> str:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        output = self.log.read_text()
        print(output[-3000:])
        return output

    def pause(self, seconds: float) -> None:
        self.client.wait_for(lambda: False, seconds)

    def status(self) -> Status:
        matches = STATUS.findall(self.log.read_text())
        if not matches:
            return Status(0, 0, 0, 0, {})
        frames, dropped, rejected, no_pose, missing = matches[-1]
        pairs = dict(item.rsplit(": ", 1) for item in missing.split("; ")) if missing else {}
        return Status(int(frames), int(dropped), int(rejected), int(no_pose), {k: int(v) for k, v in pairs.items()})

    def wait_ready(self) -> None:
        from ovseg3d_ros.nodes.qos import sensor_input_qos
        from ovseg3d_ros.tools.bag import frame_messages

        assert self.client.wait_for(lambda: "scene_node ready" in self.log.read_text(), 120), "node never ready"
        for topic, msg in frame_messages(self.frames[0], 0, CAMERA_FRAME, "map"):
            self.publishers[topic] = self.client.node.create_publisher(type(msg), topic, sensor_input_qos())
        everyone = [*self.publishers.values(), self.tf.pub_tf, self.static.pub_tf]
        assert self.client.wait_for(lambda: all(p.get_subscription_count() for p in everyone), 60), (
            "scene_node never subscribed to the inputs"
        )
        assert self.client.wait_for(lambda: self.status().frames == 0 and STATUS.search(self.log.read_text()), 30)

    def window(self, index: int, pose_frame: str | None, tf: str | None = None) -> list[tuple[int, list, list]]:
        """Per frame: its stamp (ns), its (topic, message) pairs and its TF, in time window ``index``.

        ``pose_frame``: None (no camera_pose), ``map`` or the frame camera_pose is given in (via map <- odom);
        ``tf``: None, ``chain`` (map -> odom -> base_link) or ``map_odom`` (map -> odom only).
        """
        from std_msgs.msg import Header

        from ovseg3d_ros.conversions import matrix_to_pose_stamped, pose_stamped_to_matrix
        from ovseg3d_ros.tools.bag import TOPIC_POSE, frame_messages

        start_ns = (1_700_000_000 + 1000 * index) * 10**9
        played = []
        for frame in self.frames:
            t = frame.stamp
            stamp_ns = start_ns + round(t * 1e9)
            messages = frame_messages(frame, stamp_ns, CAMERA_FRAME, "map")
            pose_msg = dict(messages)[TOPIC_POSE]
            camera = pose_stamped_to_matrix(pose_msg)  # world <- camera exactly as the node reads it
            messages = [(topic, msg) for topic, msg in messages if topic != TOPIC_POSE]
            stamp = pose_msg.header.stamp
            if pose_frame == "map":
                messages.append((TOPIC_POSE, pose_msg))
            elif pose_frame is not None:
                header = Header(stamp=stamp, frame_id=pose_frame)
                messages.append((TOPIC_POSE, matrix_to_pose_stamped(np.linalg.inv(map_odom(t)) @ camera, header)))
            transforms = []
            if tf is not None:
                transforms.append(transform_msg(map_odom(t), stamp, "map", "odom"))
            if tf == "chain":
                odom_base = np.linalg.inv(map_odom(t)) @ camera @ np.linalg.inv(BASE_LINK_CAMERA)
                transforms.append(transform_msg(odom_base, stamp, "odom", "base_link"))
            played.append((stamp_ns, messages, transforms))
        return played

    def play(self, played: list[tuple[int, list, list]], tf_lag_s: float = 0.0) -> None:
        """Publish each frame FRAME_PERIOD_S apart, its TF just before it or ``tf_lag_s`` after it."""
        events = []
        for i, (_, messages, transforms) in enumerate(played):
            due = i * FRAME_PERIOD_S
            events.append((due, 1, messages))
            if transforms:
                events.append((due + tf_lag_s, 0, transforms))  # at the same time: TF first
        start = time.monotonic()
        for due, kind, payload in sorted(events, key=lambda event: event[:2]):
            self.pause(start + due - time.monotonic())
            if kind == 0:
                self.tf.sendTransform(payload)
            else:
                for topic, msg in payload:
                    self.publishers[topic].publish(msg)

    def reset(self) -> Status:
        reply = self.client.reset()
        assert reply.success, reply.message
        self.client.clouds.clear()
        return self.status()

    def map_from(self, pose_frame: str | None, tf: str | None = None, tf_lag_s: float = 0.0) -> np.ndarray:
        """Play the frames into an empty map; once every one is integrated, the saved map's voxel keys."""
        from ovseg3d_core.scene import SceneMap
        from ovseg3d_ros.conversions import stamp_to_nanoseconds

        before = self.reset()
        played = self.window(next(_windows), pose_frame, tf)
        self.play(played, tf_lag_s)
        last_ns = played[-1][0]

        def covered() -> bool:  # clouds carry the stamp of the newest frame in them
            return any(stamp_to_nanoseconds(c.header.stamp) == last_ns for c in self.client.clouds)

        def lost() -> bool:
            delta = self.status().minus(before)
            return delta.dropped + delta.rejected + delta.no_pose > 0

        self.client.wait_for(lambda: covered() or lost(), 60)
        self.client.wait_for(lambda: self.status().frames - before.frames >= len(played), 10)
        delta = self.status().minus(before)
        assert delta == Status(len(played), 0, 0, 0, {}), f"not every frame was integrated: {delta}"
        assert covered(), "no labeled cloud covering the last frame"
        path = self.tmp_path / f"map-{pose_frame}-{tf}-{tf_lag_s}.npz"
        reply = self.client.save(str(path))
        assert reply.success, reply.message
        return SceneMap.load(path).keys

    def drops(self, pose_frame: str | None, frames: int) -> Status:
        """Play ``frames`` frames without any TF for their window; the status delta once each was dropped."""
        before = self.reset()
        self.play(self.window(next(_windows), pose_frame)[:frames])
        assert self.client.wait_for(lambda: self.status().no_pose - before.no_pose >= frames, frames * POSE_WAIT_S + 30)
        return self.status().minus(before)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """|A n B| / |A| and |A n B| / |B| of two sets of voxel keys."""
    common = len(np.intersect1d(a, b))
    return common / len(a), common / len(b)


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Rig]:
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    rig = Rig(context, tmp_path_factory.mktemp("tf_poses"))
    try:
        rig.wait_ready()
        yield rig
        assert rig.process.poll() is None, "scene_node died"
    finally:
        rig.close()
        rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def camera_pose_map(rig) -> np.ndarray:
    keys = rig.map_from("map")
    assert len(keys) > 10_000
    return keys


def assert_same_map(keys: np.ndarray, reference: np.ndarray, what: str) -> None:
    of_this, of_reference = agreement(keys, reference)
    print(
        f"{what}: {len(keys)} voxels vs {len(reference)} from camera_pose; shared {of_this:.4f} of its voxels, "
        f"{of_reference:.4f} of camera_pose's"
    )
    assert of_this >= 0.99 and of_reference >= 0.99


def test_tf_alone_gives_the_map_camera_pose_gives(rig, camera_pose_map):
    """No camera_pose: every pose is map <- camera_optical through /tf and /tf_static."""
    assert_same_map(rig.map_from(None, tf="chain"), camera_pose_map, "TF chain")


def test_tf_lagging_the_images_within_pose_wait_s_still_gives_every_pose(rig, camera_pose_map):
    keys = rig.map_from(None, tf="chain", tf_lag_s=TF_LAG_S)  # asserts that no frame went without a pose
    assert_same_map(keys, camera_pose_map, f"TF {TF_LAG_S} s behind the images")


def test_a_camera_pose_in_odom_is_carried_into_map_through_tf(rig, camera_pose_map):
    """camera_pose in odom and only map -> odom in TF (no odom -> base_link): the poses must come from it."""
    assert_same_map(rig.map_from("odom", tf="map_odom"), camera_pose_map, "camera_pose in odom + TF map <- odom")


def test_a_transform_that_never_arrives_drops_the_frame_and_names_the_pair(rig):
    delta = rig.drops(None, frames=4)
    assert delta == Status(4, 0, 0, 4, {f"map <- {CAMERA_FRAME}": 4}), delta
    log = rig.log.read_text()
    assert re.search(rf"no pose \d+ \[missing [^\]]*map <- {CAMERA_FRAME}: \d+", log), "status line lacks the pair"
    assert re.search(rf"skipped: no pose map <- {CAMERA_FRAME}: no camera_pose .*; no TF map <- '{CAMERA_FRAME}'", log)
    assert rig.process.poll() is None, "scene_node died"
    reply = rig.client.save(str(rig.tmp_path / "after-drops.npz"))
    assert reply.success and reply.message.startswith("saved 0 voxels"), reply.message


def test_a_camera_pose_in_odom_without_map_odom_in_tf_is_rejected_with_the_reason(rig):
    delta = rig.drops("odom", frames=4)
    assert delta == Status(4, 0, 0, 4, {"map <- odom": 4}), delta
    log = rig.log.read_text()
    assert "camera_pose in frame 'odom', expected 'map', rejected: TF has no map <- odom at its stamp" in log
    assert rig.process.poll() is None, "scene_node died"
