"""Shared training support: schedule values, layer-wise learning rates, run folders and resume."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ovseg3d_core.config import ConfigError
from ovseg3d_core.training.run import (
    OptimConfig,
    TrainingRun,
    TrainingRunError,
    average_across_ranks,
    build_optimizer_and_schedule,
    init_distributed,
    param_groups_with_lr_scale,
    shard,
    warmup_cosine,
)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_warmup_is_linear_then_cosine_decays_to_the_floor():
    total, warmup = 100, 10
    ramp = [warmup_cosine(s, total, warmup) for s in range(warmup)]
    assert ramp == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert warmup_cosine(warmup, total, warmup) == pytest.approx(1.0)
    midway = warmup + (total - warmup) // 2
    assert warmup_cosine(midway, total, warmup) == pytest.approx(0.5)
    assert warmup_cosine(total, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(total + 50, total, warmup, min_ratio=0.1) == pytest.approx(0.1)
    decay = [warmup_cosine(s, total, warmup) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    expected = 0.5 * (1 + math.cos(math.pi * 30 / 90))
    assert warmup_cosine(40, total, warmup) == pytest.approx(expected)
    with pytest.raises(ValueError):
        warmup_cosine(0, 0, 0)


def test_layerwise_learning_rates_and_unknown_prefix():
    groups = param_groups_with_lr_scale(_model(), 1e-4, {"0.": 0.1, "2.": 5.0})
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"0.": 1e-5, "2.": 5e-4})
    assert sum(len(g["params"]) for g in groups) == 4
    with pytest.raises(TrainingRunError, match="match no parameter"):
        param_groups_with_lr_scale(_model(), 1e-4, {"encoder.": 0.1})


def test_scheduler_follows_warmup_cosine_per_group():
    cfg = OptimConfig(lr=1e-3, epochs=4, warmup_epochs=1)
    optimizer, scheduler = build_optimizer_and_schedule(_model(), cfg, steps_per_epoch=5, lr_scales={"0.": 0.1})
    seen = []
    for _ in range(20):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, (scaled, base) in enumerate(seen):
        factor = warmup_cosine(step, 20, 5)
        assert base == pytest.approx(1e-3 * factor)
        assert scaled == pytest.approx(1e-4 * factor)
    with pytest.raises(ConfigError):
        OptimConfig(lr=-1.0)


def _train(model, optimizer, scheduler, steps: int) -> list[float]:
    losses = []
    data = torch.randn(16, 3)
    for _ in range(steps):
        loss = model(data).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_resume_continues_from_the_saved_step(tmp_path):
    cfg = OptimConfig(lr=1e-2, epochs=3, warmup_epochs=1)
    model = _model()
    optimizer, scheduler = build_optimizer_and_schedule(model, cfg, steps_per_epoch=4)
    run = TrainingRun(tmp_path / "run")
    _train(model, optimizer, scheduler, 4)
    for step in range(1, 5):
        run.log(step, loss=1.0 / step, lr=scheduler.get_last_lr()[0])
    run.save_checkpoint(model, optimizer, scheduler, epoch=1, step=4)
    expected_next = torch.rand(3)  # RNG draw right after the checkpoint
    reference = _train(model, optimizer, scheduler, 4)

    with pytest.raises(TrainingRunError, match="already holds a run"):
        TrainingRun(tmp_path / "run")
    resumed_model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt2, sched2 = build_optimizer_and_schedule(resumed_model, cfg, steps_per_epoch=4)
    run2 = TrainingRun(tmp_path / "run", resume=True)
    point = run2.resume(resumed_model, opt2, sched2)
    assert (point.epoch, point.step) == (1, 4)
    assert sched2.last_epoch == 4
    assert torch.equal(torch.rand(3), expected_next)
    # Same weights, optimiser moments, schedule and RNG: the continuation matches the uninterrupted run.
    assert _train(resumed_model, opt2, sched2, 4) == pytest.approx(reference, rel=1e-6)
    run2.log(5, loss=0.1)
    log = run2.read_log()
    assert log["step"].tolist() == [1, 2, 3, 4, 5]
    assert np.isnan(log["lr"][-1]) and log["loss"][-1] == pytest.approx(0.1)
    with pytest.raises(TrainingRunError, match="not in"):
        run2.log(6, accuracy=1.0)
    png = run2.plot_curves(tmp_path / "curves.png", ["loss", "lr"])
    assert png.stat().st_size > 1000


def test_checkpoints_are_pruned_and_empty_run_resumes_nothing(tmp_path):
    model = _model()
    optimizer, scheduler = build_optimizer_and_schedule(model, OptimConfig(epochs=5), steps_per_epoch=1)
    run = TrainingRun(tmp_path)
    assert run.resume(model, optimizer, scheduler) is None
    for step in range(1, 5):
        run.save_checkpoint(model, optimizer, scheduler, epoch=step, step=step, keep=2)
    assert [p.name for p in run.checkpoints()] == ["step_00000003.pt", "step_00000004.pt"]
    assert not list(tmp_path.rglob("*.tmp*"))


def test_single_process_distributed_helpers_are_no_ops():
    assert init_distributed() == (0, 1)
    assert average_across_ranks(2.5) == 2.5
    parts = [shard(range(5), r, 2) for r in range(2)]
    assert parts == [[0, 2, 4], [1, 3, 1]]
    with pytest.raises(TrainingRunError):
        shard([], 0, 2)
