"""The retrieval training entry point, run data parallel under torchrun: two CPU processes on gloo."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_data_parallel_run_on_two_processes(tmp_path):
    from ovseg3d_core.data.shapes.procedural_dataset import procedural_splits
    from ovseg3d_core.retrieval.frozen_encoders import FrozenEncoderConfig
    from ovseg3d_core.retrieval.model import load_checkpoint_info, load_model

    config = yaml.safe_load((REPO_ROOT / "training" / "configs" / "retrieval.yaml").read_text())
    config.update(max_train_shapes=16, max_eval_shapes=4, feature_cache_dir=str(tmp_path / "features"))
    config["data"]["n_shapes"] = 48
    config["train"].update(batch_size=8, eval_every_epochs=1)
    config["train"]["optim"].update(epochs=2, checkpoint_every_epochs=1)
    path = tmp_path / "retrieval.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "ovseg3d_core.training.retrieval"]
    result = subprocess.run(
        [*command, "--config", str(path), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_shapes"] == 16
    log = np.genfromtxt(out / "log.csv", delimiter=",", names=True)
    assert len(log) >= 2 and np.isfinite(log["loss_total"]).all()
    assert load_model(out / "model.pt").config.dim == config["model"]["dim"]
    # The checkpoint carries what a shape database needs: encoders, corpus and the held-out test split.
    info = load_checkpoint_info(out / "model.pt")
    assert info.corpus.n_shapes == 48 and info.encoders == FrozenEncoderConfig.from_dict(config["encoders"])
    splits = procedural_splits(info.corpus)
    assert info.held_out == [i for i, split in enumerate(splits) if split == "test"] and len(info.held_out) == 5
