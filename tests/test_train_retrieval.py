"""Both trainers run data parallel under torchrun: two CPU processes on the gloo backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def torchrun(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(REPO / "training" / script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_student_distillation_on_two_processes(tmp_path):
    from ovseg3d_core.purify.student import load_student

    config = {
        "name": "ddp",
        "teacher": "fpfh",
        "student": {"hidden": 8, "blocks": 1},
        "distillation": {"anchors": 256},
        "optim": {"lr": 0.001, "epochs": 2, "warmup_epochs": 1},
        # two scenes, so each rank distils its own: a 7-Scenes chunk and the Redwood frames
        "data": {
            "sevenscenes_chunks": 1,
            "frames_per_chunk": 20,
            "frame_step": 5,
            "redwood": True,
            "voxel_size": 0.05,
            "cache_dir": str(tmp_path / "cache"),
        },
        "threads": 1,
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    export = tmp_path / "export"
    torchrun("train_student.py", "--config", str(path), "--out", str(tmp_path / "run"), "--export", str(export))
    student = load_student(export / "ddp.pt")
    assert student.meta["world_size"] == 2
    log = np.genfromtxt(export / "ddp_log.csv", delimiter=",", names=True)
    assert log["step"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    assert len(list((tmp_path / "cache").glob("*_fpfh.npz"))) == 2  # each rank fused and cached its scene


def test_retrieval_training_on_two_processes(tmp_path):
    from ovseg3d_core.retrieval.model import load_model

    config = yaml.safe_load((REPO / "training" / "configs" / "retrieval.yaml").read_text())
    config.update(max_train_shapes=16, max_eval_shapes=4, feature_cache_dir=str(tmp_path / "features"))
    config["data"]["n_shapes"] = 48
    config["train"].update(batch_size=8, eval_every_epochs=1)
    config["train"]["optim"].update(epochs=2, checkpoint_every_epochs=1)
    path = tmp_path / "retrieval.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    torchrun("train_retrieval.py", "--config", str(path), "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_shapes"] == 16
    log = np.genfromtxt(out / "log.csv", delimiter=",", names=True)
    assert len(log) >= 2 and np.isfinite(log["loss_total"]).all()
    model = load_model(out / "model.pt")
    assert model.config.dim == config["model"]["dim"]
