"""scene_node in its own process over real DDS: bag in, labeled cloud out, services, bad input, failures, shutdown."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = """
scene_node:
  ros__parameters:
    purify_period_s: 0.5
    status_period_s: {status_period_s}
    load_path: "{load_path}"
    keyframes: {{translation_m: 0.0, rotation_deg: 0.0, interval_s: 0.0}}
    segmenter:
      purification: {purification}
      student_checkpoint: "{student_checkpoint}"
      scene: {{voxel_size: 0.05}}
      pooling: {{k: 16, iterations: 4}}
      encoders: {{dense: noisy_oracle}}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Four rendered ScanNet views as a bag (RGB, depth, CameraInfo, pose, semantic/image)."""
    from ovseg3d_core.data.scenes.scannet import load_scannet_scan
    from ovseg3d_ros.tools.bag import dataset_frames, write_bag

    frames = list(dataset_frames("scannet", 4, seed=1))
    bag = tmp_path_factory.mktemp("bags") / "scannet"
    write_bag(frames, bag, progress=False)
    return bag, frames, load_scannet_scan()


def start_node(tmp_path: Path, name: str = "scene_node", **settings: object) -> tuple[subprocess.Popen, Path]:
    """Start the node with PARAMS (``settings`` override its defaults); its output goes to the returned log file."""
    values = {"status_period_s": 2.0, "load_path": "", "purification": "geometric", "student_checkpoint": ""}
    params = tmp_path / f"{name}.yaml"
    params.write_text(PARAMS.format(**{**values, **settings}))
    log = tmp_path / f"{name}.log"
    command = [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--nodes", "scene", "--params", str(params)]
    with log.open("w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True), log


def stop(process: subprocess.Popen, log: Path) -> str:
    """SIGTERM the node (killing it if that fails) and return its output, printed for failing tests."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log.read_text()
    print(output[-4000:])
    return output


def test_scene_node_end_to_end(rendered, tmp_path, ros_context):
    from ovseg3d_ros.conversions import read_labeled_cloud
    from ovseg3d_ros.tools.bag import frame_messages, play_bag
    from ovseg3d_ros.tools.client import Ovseg3dClient

    bag, frames, scan = rendered
    process, log = start_node(tmp_path)
    client = Ovseg3dClient(ros_context, name="scene_node_test_client")
    try:
        # Frames from a bag become a labeled cloud lying on the scanned surface.
        summary = play_bag(bag, context=ros_context, rate=2.0, wait_for_subscribers_s=60, progress=False)
        assert summary.published > 0 and not summary.interrupted
        assert client.wait_for(lambda: len(client.clouds) > 0, 120), "no labeled cloud after playing the bag"
        client.wait_until_settled()
        cloud = read_labeled_cloud(client.clouds[-1])
        assert len(cloud.points) > 1000
        distances, _ = cKDTree(scan.vertices).query(cloud.points)
        assert np.percentile(distances, 95) < 0.05  # voxel means of 5 cm voxels sit on the mesh
        assert cloud.labels.max() <= 20 and np.all(np.isfinite(cloud.scores))
        assert [f.name for f in client.clouds[-1].fields] == ["x", "y", "z", "rgb", "label", "score"]
        assert client.legends and len(client.legends[-1].labels) == 21  # ScanNet20 + background

        # A new vocabulary relabels the next cloud and the latched legend.
        reply, cloud_msg = client.next_cloud(lambda: client.set_vocabulary(["couch", "floor", "wall"]))
        assert reply.success, reply.message
        voxels = cloud_msg.width
        relabeled = read_labeled_cloud(cloud_msg)
        assert set(np.unique(relabeled.labels)) <= {0, 1, 2, 3} and len(np.unique(relabeled.labels)) >= 2
        assert client.wait_for(lambda: list(client.legends[-1].labels) == ["couch", "floor", "wall", "background"])
        assert sum(client.legends[-1].point_counts) == voxels

        # A query returns scored points above the threshold.
        reply = client.query("sofa", threshold=0.3)
        assert reply.success, reply.message
        queried = read_labeled_cloud(reply.cloud)
        assert 0 < len(queried.points) < voxels and np.all(queried.scores >= 0.3)
        assert reply.max_score == pytest.approx(queried.scores.max(), abs=1e-6)

        # Every kind of bad input leaves the node answering and the map intact.
        from sensor_msgs.msg import PointCloud2, PointField

        stamp_ns = 1_800_000_000 * 10**9
        for corrupt in ("encoding", "size", "nan_depth", "intrinsics", "pose_frame"):
            stamp_ns += 10**8
            messages = {
                topic.lstrip("/"): msg
                for topic, msg in frame_messages(frames[0], stamp_ns, "camera_optical_frame", "map")
            }
            if corrupt == "encoding":
                messages["rgb/image"].encoding = "yuv422"
            elif corrupt == "size":
                messages["depth/image"].height //= 2
                messages["depth/image"].data = bytes(messages["depth/image"].data)[
                    : len(messages["depth/image"].data) // 2
                ]
            elif corrupt == "nan_depth":
                depth = messages["depth/image"]
                depth.encoding, depth.step = "32FC1", depth.width * 4
                depth.data = np.full((depth.height, depth.width), np.nan, np.float32).tobytes()
            elif corrupt == "intrinsics":
                messages["rgb/camera_info"].k = [0.0] * 9
            else:
                messages["camera_pose"].header.frame_id = "elsewhere"
            for topic in (
                "camera_pose",
                "rgb/camera_info",
                "rgb/image",
                "depth/image",
                "semantic/image",
                "instance/image",
            ):
                client.publish(topic, messages[topic])
        no_fields = PointCloud2(height=1, width=2, point_step=4, row_step=8, data=bytes(8))
        no_fields.header.frame_id = "map"
        no_fields.fields = [PointField(name="intensity", offset=0, datatype=PointField.FLOAT32, count=1)]
        client.publish("points", no_fields)
        client.wait_for(lambda: False, 2.0)  # let the node receive and reject them

        for labels in ([], [f"label {i}" for i in range(10_000)], ["chair", ""]):
            reply = client.set_vocabulary(labels)
            assert not reply.success and reply.message
        for text, threshold in (("", 0.1), ("chair", math.nan)):
            reply = client.query(text, threshold)
            assert not reply.success and reply.message
        not_a_directory = tmp_path / "a-file"
        not_a_directory.write_text("")
        for path in ("", str(not_a_directory / "scene.npz")):
            reply = client.save(path)
            assert not reply.success and reply.message
        assert process.poll() is None, "scene_node died on bad input"
        reply, cloud_msg = client.next_cloud(lambda: client.set_vocabulary(["couch", "floor", "wall"]))
        assert reply.success and cloud_msg.width == voxels, "bad input changed the map"

        # Save, reset, and a restarted node that loads the file restore the scene.
        saved = tmp_path / "scene.npz"
        reply = client.save(str(saved))
        assert reply.success and saved.is_file(), reply.message
        reply = client.reset()
        assert reply.success
        assert client.wait_for(lambda: sum(client.legends[-1].point_counts) == 0)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        output = log.read_text()
        for rejection in (
            r"rejected: rgb/image: unsupported colour image encoding 'yuv422'",
            r"rejected: depth shape \(\d+, \d+\) does not match intrinsics",
            r"not integrated: too few valid depth pixels \(NaN",
            r"rejected: rgb/camera_info: CameraInfo.k is all zeros",
            r"camera_pose in frame 'elsewhere', expected 'map'",
            r"points rejected: PointCloud2 lacks field\(s\) \['x', 'y', 'z'\]",
        ):
            assert re.search(rejection, output), f"no warning matching {rejection!r}"

        process, log = start_node(tmp_path, "restarted", load_path=str(saved))
        reply, cloud_msg = client.next_cloud(lambda: client.set_vocabulary(["couch", "floor", "wall"]))
        assert reply.success and cloud_msg.width == voxels
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        client.close()
        stop(process, log)


def test_a_missing_student_checkpoint_stops_the_node_at_start_up(tmp_path):
    """A mistyped checkpoint path fails the launch at once, like an out-of-range parameter, naming the path."""
    missing = tmp_path / "no-such-student.pt"
    process, log = start_node(tmp_path, purification="student", student_checkpoint=str(missing))
    try:
        assert process.wait(timeout=60) != 0
    finally:
        output = stop(process, log)
    last_line = output.strip().splitlines()[-1]  # the reason, not a traceback from the half-built node's shutdown
    assert last_line.startswith(f"ovseg3d_core.config.ConfigError: segmenter.student_checkpoint: {missing} not found")


def test_an_unusable_student_checkpoint_fails_labeling_but_not_the_node(rendered, tmp_path, ros_context):
    """A checkpoint that is not a student is only found out when purifying: the node keeps mapping and says why."""
    import torch

    from ovseg3d_ros.tools.bag import play_bag
    from ovseg3d_ros.tools.client import Ovseg3dClient

    not_a_student = tmp_path / "trainer-state.pt"
    torch.save({"model": {}, "epoch": 3}, not_a_student)
    process, log = start_node(
        tmp_path, status_period_s=1.0, purification="student", student_checkpoint=str(not_a_student)
    )
    client = Ovseg3dClient(ros_context, name="scene_node_failure_client")
    try:
        summary = play_bag(rendered[0], context=ros_context, rate=2.0, wait_for_subscribers_s=60, progress=False)
        assert summary.published > 0 and not summary.interrupted

        def status_counts() -> list[tuple[int, int]]:
            lines = re.findall(r"voxels (\d+), clouds published \d+, errors (\d+)", log.read_text())
            return [(int(voxels), int(errors)) for voxels, errors in lines]

        assert client.wait_for(lambda: any(v > 1000 and e > 0 for v, e in status_counts()), 120), (
            "the node stopped integrating or never counted the failed purification"
        )
        reply = client.set_vocabulary(["couch", "floor", "wall"])
        assert not reply.success and str(not_a_student) in reply.message, reply.message
        reply = client.query("sofa", threshold=0.3)
        assert not reply.success and "not an ovseg3d student checkpoint" in reply.message, reply.message
        assert process.poll() is None, "scene_node died on a failing purification"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        client.close()
        output = stop(process, log)
    assert f"labeling failed: StudentCheckpointError: {not_a_student} is not an ovseg3d student" in output
    assert not client.clouds


def test_a_silent_semantic_image_input_is_named(rendered, tmp_path, ros_context):
    """The noisy oracle fed RGB-D + CameraInfo but no semantic/image (a 7-Scenes bag) warns which input is missing."""
    from ovseg3d_ros.tools.bag import frame_messages
    from ovseg3d_ros.tools.client import Ovseg3dClient

    frames = rendered[1]
    process, log = start_node(tmp_path, status_period_s=1.0)
    client = Ovseg3dClient(ros_context, name="scene_node_silent_input_client")
    try:
        stamp_ns = 1_700_000_000 * 10**9

        def warned() -> bool:
            return "no messages on semantic/image" in log.read_text()

        while not warned() and process.poll() is None and stamp_ns < 1_700_000_060 * 10**9:
            stamp_ns += 2 * 10**8
            for topic, msg in frame_messages(frames[0], stamp_ns, "camera_optical_frame", "map"):
                if topic.lstrip("/") != "semantic/image":
                    client.publish(topic.lstrip("/"), msg)
            client.wait_for(lambda: False, 0.2)
        assert process.poll() is None
    finally:
        client.close()
        output = stop(process, log)
    assert re.search(r"no messages on semantic/image for 1 s .*16UC1 class ids", output), "no silent-input warning"
    assert re.search(r"inputs in the last 1 s: rgb/image [1-9]\d*, depth/image [1-9]\d*, ", output)
    assert re.search(r"rgb/camera_info [1-9]\d*, semantic/image 0, instance/image [1-9]\d*;", output)
