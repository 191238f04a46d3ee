"""A 7-Scenes bag played into scene_node (own process, real DDS) gives a cloud on the reconstructed surface."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial import cKDTree

pytestmark = [pytest.mark.ros, pytest.mark.slow]

VOXEL_SIZE = 0.03
# 7-Scenes has no labels, so the node runs the openclip backend with RANDOM weights (a small
# built-in architecture): this checks geometry and plumbing only, never segmentation quality.
PARAMS = f"""
scene_node:
  ros__parameters:
    purify_period_s: 0.5
    status_period_s: 2.0
    keyframes: {{translation_m: 0.0, rotation_deg: 0.0, interval_s: 0.0}}
    segmenter:
      purification: geometric
      scene: {{voxel_size: {VOXEL_SIZE}}}
      pooling: {{k: 16, iterations: 4}}
      encoders:
        dense: openclip
        openclip: {{architecture: ViT-S-32, allow_random_weights: true, short_side: 224, window_stride: 224}}
"""


def test_7scenes_bag_gives_a_cloud_on_the_reconstructed_surface(tmp_path, ros_context):
    """Random-weight OpenCLIP: the test is about poses, depth and transport, not about label quality."""
    from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
    from ovseg3d_core.scene import SceneConfig, SceneMap
    from ovseg3d_ros.conversions import read_labeled_cloud, stamp_to_nanoseconds
    from ovseg3d_ros.tools.bag import DEFAULT_START_TIME_S, dataset_frames, play_bag, write_bag
    from ovseg3d_ros.tools.client import Ovseg3dClient

    frames = list(dataset_frames("7scenes", 5, stride=20))
    bag = tmp_path / "7scenes"
    write_bag(frames, bag, progress=False)
    last_stamp_ns = round(DEFAULT_START_TIME_S * 1e9) + round(frames[-1].stamp * 1e9)  # as write_bag stamps

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    command = [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--nodes", "scene", "--params", str(params)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = Ovseg3dClient(ros_context, name="scene_node_7scenes_client")
    try:
        summary = play_bag(bag, context=ros_context, rate=2.0, wait_for_subscribers_s=60, progress=False)
        assert summary.published > 0 and not summary.interrupted

        def covering() -> list:
            return [c for c in client.clouds if stamp_to_nanoseconds(c.header.stamp) >= last_stamp_ns]

        assert client.wait_for(lambda: bool(covering()), 90), "no labeled cloud covering the last frame of the bag"
        message = covering()[0]
        cloud = read_labeled_cloud(message)
        assert process.poll() is None, "scene_node died"
    finally:
        client.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        print(process.communicate()[0][-4000:])

    reference = SceneMap(SceneConfig(voxel_size=VOXEL_SIZE))
    for frame in frames:
        reference.integrate(frame)
    surface = reference.positions()
    assert len(cloud.points) > 0.9 * len(surface)
    distances, _ = cKDTree(surface).query(cloud.points)
    assert np.percentile(distances, 95) < 0.02
    assert np.all(cloud.labels <= len(SCANNET20_CLASSES))  # vocabulary ids plus the background id
    assert np.all(np.isfinite(cloud.scores))
