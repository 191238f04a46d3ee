"""The student training entry point: shipped configs parse, crops are bounded, and a tiny real run
(Redwood frames, FPFH teacher) trains, exports a loadable student and resumes from its step."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def train_student():
    return importlib.import_module("ovseg3d_core.training.student")


def test_shipped_configs_parse(train_student):
    configs = sorted((REPO_ROOT / "training" / "configs").glob("student_*.yaml"))
    assert configs
    for path in configs:
        cfg = train_student.StudentTrainingConfig.from_yaml(path)
        assert cfg.distillation.negatives == 63 and cfg.distillation.temperature == pytest.approx(0.07)
        assert cfg.name == path.stem.removeprefix("student_")  # exported files are named after it


def test_crops_are_bounded_and_local(train_student):
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(100), np.arange(100), np.arange(3), indexing="ij"), -1).reshape(-1, 3)
    scene = train_student.TrainingScene(
        name="grid",
        coords=grid,
        positions=grid * 0.02,
        colors=np.zeros((len(grid), 3), np.uint8),
        normals=np.zeros((len(grid), 3), np.float32),
        teacher=np.zeros((len(grid), 4), np.float32),
    )
    for _ in range(5):
        keep = train_student.crop_indices(scene, 5000, rng)
        assert 0.6 * 5000 <= len(keep) <= 5000 and len(np.unique(keep)) == len(keep)
        extent = np.ptp(scene.positions[keep][:, :2], axis=0)
        assert extent.max() < 2.0  # a box, not a random subset of the 2 m scene
    assert len(train_student.crop_indices(scene, 10**6, rng)) == len(grid)


def tiny_config(tmp_path, name: str, **data) -> Path:
    """A seconds-long run: an 8-wide one-block student, 256 anchors, two epochs on 5 cm scenes."""
    config = {
        "name": name,
        "teacher": "fpfh",
        "student": {"hidden": 8, "blocks": 1},
        "distillation": {"anchors": 256},
        "optim": {"lr": 0.001, "epochs": 2, "warmup_epochs": 1},
        "data": {"sevenscenes_chunks": 0, "redwood": True, "voxel_size": 0.05, "cache_dir": str(tmp_path / "cache")},
        "threads": 1,
    }
    config["data"].update(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_tiny_training_run_exports_and_resumes(tmp_path, train_student):
    from ovseg3d_core.purify.student import load_student

    path = tiny_config(tmp_path, "tiny")
    out, export = tmp_path / "run", tmp_path / "export"
    train_student.main(["--config", str(path), "--out", str(out), "--export", str(export)])
    assert {p.name for p in export.iterdir()} == {"tiny.pt", "tiny.yaml", "tiny_log.csv", "tiny_loss.png"}
    student = load_student(export / "tiny.pt")
    assert student.config.hidden == 8 and student.meta["teacher"] == "fpfh"
    log = np.genfromtxt(export / "tiny_log.csv", delimiter=",", names=True)
    assert log["step"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    assert list(tmp_path.joinpath("cache").glob("redwood_*_fpfh.npz"))

    train_student.main(["--config", str(path), "--out", str(out), "--resume", "--epochs", "3", "--no-export"])
    resumed = np.genfromtxt(out / "log.csv", delimiter=",", names=True)
    assert resumed["step"].tolist() == [1, 2, 3] and resumed["epoch"].tolist() == [0, 1, 2]


@pytest.mark.slow
def test_data_parallel_run_on_two_processes(tmp_path):
    """torchrun with two CPU processes on gloo: each rank distils its own scene (a 7-Scenes chunk, Redwood)."""
    from ovseg3d_core.purify.student import load_student

    path = tiny_config(tmp_path, "ddp", sevenscenes_chunks=1, frames_per_chunk=20, frame_step=5)
    export = tmp_path / "export"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "ovseg3d_core.training.student"]
    command += ["--config", str(path), "--out", str(tmp_path / "run"), "--export", str(export)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert load_student(export / "ddp.pt").meta["world_size"] == 2
    log = np.genfromtxt(export / "ddp_log.csv", delimiter=",", names=True)
    assert log["step"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    assert len(list((tmp_path / "cache").glob("*_fpfh.npz"))) == 2  # each rank fused and cached its scene
