"""A shortened `make demo` runs end to end and writes every promised file with sensible contents."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_short_demo_writes_its_outputs(tmp_path):
    import open3d as o3d
    from PIL import Image

    out = tmp_path / "demo"
    command = [
        sys.executable,
        "-m",
        "ovseg3d_ros.tools.demo",
        "--frames",
        "6",
        "--database-shapes",
        "12",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ScanNet20 mIoU" in result.stdout and "noisy oracle" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"].startswith("noisy oracle") and summary["frames"] == 6
    assert 0 < summary["frames_integrated"] <= 6
    segmentation = summary["segmentation"]
    for name in ("raw", "purified"):
        scores = segmentation[name]
        assert 0.0 < scores["miou"] <= 1.0 and 0.0 < scores["macc"] <= 1.0
        assert scores["rule"] == segmentation["rule"]
    # One scan, every labelled vertex scored: 6 views leave part of the scan unseen, and those vertices are misses.
    assert segmentation["rule"].startswith("scannet-official: classes with non-zero union")
    assert 0 < segmentation["unobserved_vertices"] < segmentation["labelled_vertices"]
    assert summary["segmentation"]["voxels"] == summary["labeled_voxels"] > 1000
    assert len(summary["retrieval"]["shape_ids"]) == 5
    assert summary["retrieval"]["scores"] == sorted(summary["retrieval"]["scores"], reverse=True)

    cloud = o3d.t.io.read_point_cloud(str(out / summary["files"]["labeled_cloud"]))
    labels = cloud.point.label.numpy().ravel()
    assert len(labels) == summary["labeled_voxels"]
    assert labels.max() <= 23 and len(np.unique(labels)) >= 3  # 20 + 3 free-text labels + background
    assert np.all(np.isfinite(cloud.point.score.numpy()))

    legend = json.loads((out / "legend.json").read_text())
    assert legend["labels"][-1] == "background" and "something to sit on" in legend["labels"]
    assert sum(legend["point_counts"]) == summary["labeled_voxels"]

    for key in ("labels_top", "labels_perspective", "query", "retrieval"):
        image = np.asarray(Image.open(out / summary["files"][key]).convert("RGB"))
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 10, f"{key} looks blank"


class _Clock:
    """Simulated time: each wait advances it, so the test runs instantly and exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_for_the_last_frame_ends_when_the_node_stops_progressing():
    from ovseg3d_ros.tools.demo import wait_for_last_frame

    clock = _Clock()
    # The node publishes stamps 1, 2, 3 over time and then nothing newer: stamp 5 (the last frame) was lost.
    stamps = lambda: None if clock.now < 10 else min(3, int(clock.now // 10))  # noqa: E731
    assert not wait_for_last_frame(stamps, clock.wait, last_ns=5, stall_s=60, timeout_s=1800, clock=clock)
    assert 90 <= clock.now < 91  # stamp 3 first seen at 30 s, then 60 s without progress
    clock = _Clock()
    covered = lambda: None if clock.now < 20 else 5  # noqa: E731
    assert wait_for_last_frame(covered, clock.wait, last_ns=5, stall_s=60, timeout_s=1800, clock=clock)
    assert clock.now == 20
    clock = _Clock()
    with pytest.raises(RuntimeError, match="no cloud"):
        wait_for_last_frame(lambda: None, clock.wait, last_ns=5, stall_s=60, timeout_s=100, clock=clock)


def test_the_params_file_holds_only_what_the_demo_changes_and_gives_the_nodes_its_configs(tmp_path):
    from ovseg3d_ros.nodes.retrieval_node import RetrievalNodeConfig
    from ovseg3d_ros.nodes.scene_node import SceneNodeConfig
    from ovseg3d_ros.tools.demo import demo_configs, write_params

    args = argparse.Namespace(purification="geometric", backend="noisy_oracle", checkpoint="", database_shapes=12)
    scene, retrieval = demo_configs(args)
    written = write_params(tmp_path / "params.yaml", {"scene_node": scene, "retrieval_node": retrieval})
    params = {node: values["ros__parameters"] for node, values in yaml.safe_load(written.read_text()).items()}
    assert SceneNodeConfig.from_dict(params["scene_node"]) == scene
    assert RetrievalNodeConfig.from_dict(params["retrieval_node"]) == retrieval
    assert params["retrieval_node"] == {"database": {"procedural_shapes": 12}}
    assert params["scene_node"]["segmenter"] == {"encoders": {"dense": "noisy_oracle"}, "purification": "geometric"}
    assert "world_frame" not in params["scene_node"] and "text" not in params["scene_node"]["segmenter"]["encoders"]
    assert scene.segmenter.encoders.text_backend == "minilm"  # the text encoder follows the 2D source by itself
