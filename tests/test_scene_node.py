"""scene_node in its own process over real DDS: bag in, labeled cloud out, services, bad input, shutdown."""

from __future__ import annotations

import math
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
    status_period_s: 2.0
    load_path: "{load_path}"
    keyframes: {{translation_m: 0.0, rotation_deg: 0.0, interval_s: 0.0}}
    segmenter:
      purification: geometric
      scene: {{voxel_size: 0.05}}
      pooling: {{k: 16, iterations: 4}}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Four rendered ScanNet views as a bag (RGB, depth, CameraInfo, pose, semantic/image)."""
    from ovseg3d_core.data.scannet import load_scannet_scan
    from ovseg3d_ros.bag_tools import dataset_frames, write_bag

    frames = list(dataset_frames("scannet", 4, seed=1))
    bag = tmp_path_factory.mktemp("bags") / "scannet"
    write_bag(frames, bag, progress=False)
    return bag, frames, load_scannet_scan()


def start_node(tmp_path: Path, load_path: str = "") -> subprocess.Popen:
    params = tmp_path / f"params{len(load_path)}.yaml"
    params.write_text(PARAMS.format(load_path=load_path))
    command = [sys.executable, "-m", "ovseg3d_ros.bringup", "--nodes", "scene", "--params", str(params)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_scene_node_end_to_end(rendered, tmp_path, ros_context):
    from ovseg3d_ros.bag_tools import frame_messages, play_bag
    from ovseg3d_ros.client import Ovseg3dClient
    from ovseg3d_ros.conversions import read_labeled_cloud

    bag, frames, scan = rendered
    process = start_node(tmp_path)
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
            for topic in ("camera_pose", "rgb/camera_info", "rgb/image", "depth/image", "semantic/image"):
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
        process = start_node(tmp_path, load_path=str(saved))
        reply, cloud_msg = client.next_cloud(lambda: client.set_vocabulary(["couch", "floor", "wall"]))
        assert reply.success and cloud_msg.width == voxels
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
        print(output[-4000:])
