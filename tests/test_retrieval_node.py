"""retrieval_node in its own process over real DDS: ranked shapes with clouds, bad requests, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = """
retrieval_node:
  ros__parameters:
    database: {{procedural_shapes: 12, text2shape: false, cloud_points: 256, cache_dir: "{cache}"}}
"""


def test_retrieve_returns_k_ranked_shapes_and_refuses_bad_requests(tmp_path, ros_context):
    from ovseg3d_ros.conversions import cloud_to_xyz_rgb
    from ovseg3d_ros.nodes.retrieval_node import LOADING
    from ovseg3d_ros.tools.client import Ovseg3dClient

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.format(cache=tmp_path / "database"))
    command = [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--nodes", "retrieval", "--params", str(params)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = Ovseg3dClient(ros_context, name="retrieval_test_client")
    try:
        first = client.retrieve("a chair", k=1)
        assert first.success or first.message == LOADING  # the node answers at once, even while loading
        reply = client.retrieve(
            "a round wooden table with one central leg", k=3, include_clouds=True, ready_timeout=300
        )
        assert reply.success, reply.message
        assert len(reply.shape_ids) == 3 and len(set(reply.shape_ids)) == 3
        assert list(reply.scores) == sorted(reply.scores, reverse=True)
        assert len(reply.clouds) == 3
        xyz, rgb = cloud_to_xyz_rgb(reply.clouds[0])
        assert xyz.shape == (256, 3) and np.abs(xyz).max() <= 1.01  # unit-sphere shape coordinates
        assert rgb is not None and rgb.shape == (256, 3)

        without = client.retrieve("a round wooden table with one central leg", k=3)
        assert list(without.shape_ids) == list(reply.shape_ids) and len(without.clouds) == 0

        everything = client.retrieve("a chair", k=12)
        assert everything.success and len(everything.shape_ids) == 12

        for text, k in (("", 3), ("   ", 3), ("a chair", 0), ("a chair", 13), ("x" * 100_000, 3)):
            bad = client.retrieve(text, k=k)
            assert not bad.success and bad.message, (text[:10], k)
        assert process.poll() is None, "retrieval_node died on a bad request"
        assert client.retrieve("a tall chair", k=1).success

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        print(process.communicate()[0][-3000:])
