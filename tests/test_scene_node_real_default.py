"""The shipped configuration on real camera input: geometry without weights, a checkpoint set at runtime.

The bringup runs in its own process with ``config/ovseg3d.yaml`` as shipped (OpenCLIP ViT-B-16, no
checkpoint) while this test publishes 7-Scenes RGB-D + CameraInfo + camera_pose over DDS, as a
camera driver and a localiser would. No semantic/image exists here. The checkpoint is a
RANDOM-weight ViT-B-16 saved to a real file: it exercises loading and labeling, never quality.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CHECKPOINT = "segmenter.encoders.checkpoint"


@pytest.fixture(scope="module")
def vit_b16_checkpoint(tmp_path_factory):
    """Random ViT-B-16 weights (float16 halves the file) in the layout of a released checkpoint."""
    from ovseg3d_core.encoders.openclip import OpenCLIPConfig, load_openclip_model

    model = load_openclip_model(OpenCLIPConfig(allow_random_weights=True, random_seed=5))
    path = tmp_path_factory.mktemp("weights") / "ViT-B-16-random.pt"
    torch.save({name: value.half() for name, value in model.state_dict().items()}, path)
    return path


def set_parameter(client, name: str, value: str | float):
    """One parameter set through scene_node's own parameter service, as ``ros2 param set`` does."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    if isinstance(value, str):
        typed = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    else:
        typed = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    parameter = Parameter(name=name, value=typed)
    return client.call(SetParameters, "/scene_node/set_parameters", parameters=[parameter]).results[0]


def test_shipped_config_maps_geometry_then_labels_with_a_checkpoint_set_at_runtime(
    vit_b16_checkpoint, tmp_path, ros_context
):
    from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
    from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
    from ovseg3d_ros.conversions import read_labeled_cloud
    from ovseg3d_ros.tools.bag import frame_messages
    from ovseg3d_ros.tools.client import Ovseg3dClient

    sequence = SevenScenes()
    frames = [sequence[i] for i in range(0, 200, 10)]
    log = tmp_path / "bringup.log"
    command = [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--nodes", "scene"]
    command += ["--params", str(REPO_ROOT / "config" / "ovseg3d.yaml")]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    client = Ovseg3dClient(ros_context, name="real_default_client")
    sent = [0]

    def stream_until(condition, timeout: float) -> bool:
        """Publish one frame every 0.4 s (as a camera at a low rate would) until ``condition`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = frames[sent[0] % len(frames)]
            for topic, msg in frame_messages(frame, time.time_ns(), "camera_optical_frame", "map"):
                client.publish(topic, msg)
            sent[0] += 1
            if client.wait_for(condition, 0.4):
                return True
        return False

    background = len(SCANNET20_CLASSES)
    try:
        assert stream_until(lambda: bool(client.clouds), 120), "no cloud from camera input without a checkpoint"
        geometry = read_labeled_cloud(client.clouds[-1])
        assert len(geometry.points) > 1000 and (geometry.labels == background).all()
        assert len(np.unique(geometry.colors, axis=0)) > 100  # the camera's colours, not one label colour
        assert client.legends[-1].labels[-1] == "background"
        assert client.node.count_subscribers("semantic/image") == 0  # no ground-truth input is asked for
        assert client.node.count_subscribers("rgb/image") == 1
        started = log.read_text()
        assert CHECKPOINT in started and "Model weights" in started and "publishing geometry" in started

        reply = set_parameter(client, CHECKPOINT, str(vit_b16_checkpoint))
        assert reply.successful, reply.reason
        seen = len(client.clouds)

        def labeled() -> bool:
            return any((read_labeled_cloud(c).labels != background).any() for c in client.clouds[seen:])

        assert stream_until(labeled, 240), "no labeled cloud after the checkpoint was set"
        cloud = read_labeled_cloud(client.clouds[-1])
        assert cloud.labels.max() <= background and len(np.unique(cloud.labels)) > 1
        assert "ViT-B-16-random.pt" in log.read_text()

        corrupt = tmp_path / "corrupt.pt"
        corrupt.write_bytes(b"\x00" * 1024)
        reply = set_parameter(client, CHECKPOINT, str(corrupt))
        assert not reply.successful and str(corrupt) in reply.reason
        reply = set_parameter(client, "purify_period_s", 1.0)
        assert not reply.successful and "start-up" in reply.reason
        seen = len(client.clouds)
        assert stream_until(labeled, 120), "the node stopped publishing labels after a corrupt checkpoint"
        assert process.poll() is None, "the node died"
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        print(log.read_text()[-4000:])
