"""Shared training support: optimiser config, warm-up + cosine schedule, layer-wise learning rates,
run folders (CSV log, atomic checkpoints, resume, loss curves) and torchrun/gloo distributed helpers.

Both training entry points (student distillation, retrieval adapters) use this so that resuming,
logging and multi-process behaviour are the same everywhere. torch is imported inside functions
so that importing the module (e.g. for ``OptimConfig.parameters()``) stays cheap.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovseg3d_core.atomic_file import atomic_torch_save
from ovseg3d_core.config import Config, setting

if TYPE_CHECKING:
    import torch


class TrainingRunError(ValueError):
    """The run folder, its log or its checkpoints are inconsistent with what was asked."""


@dataclass
class OptimConfig(Config):
    """AdamW with linear warm-up then cosine decay, as GeoPurify trains its student."""

    lr: float = setting(1e-4, "base learning rate of AdamW", low=0.0, high=1.0)
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay", low=0.0, high=1.0)
    epochs: int = setting(20, "passes over the training scenes", low=1, high=100000)
    warmup_epochs: int = setting(2, "epochs of linear learning-rate warm-up before the cosine decay", low=0, high=1000)
    min_lr_ratio: float = setting(0.0, "final learning rate as a fraction of the base rate", low=0.0, high=1.0)
    grad_clip_norm: float = setting(0.0, "clip the gradient norm to this value (0 disables clipping)", low=0.0)
    seed: int = setting(0, "seed for torch, numpy and python RNGs", low=0)
    checkpoint_every_epochs: int = setting(1, "save a resumable checkpoint every this many epochs", low=1)
    keep_checkpoints: int = setting(2, "how many resumable checkpoints to keep in the run folder", low=1)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier: linear ramp to 1 over ``warmup_steps``, then cosine down to ``min_ratio``.

    The ramp starts at ``1/warmup_steps`` (not 0) so the first optimiser step already moves the model.
    """
    if total_steps < 1 or warmup_steps < 0 or step < 0:
        raise ValueError(f"invalid schedule: step={step}, total_steps={total_steps}, warmup_steps={warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups_with_lr_scale(
    model: torch.nn.Module, base_lr: float, scales: Mapping[str, float], weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Split parameters into optimiser groups by module-name prefix, each with ``base_lr * scale``.

    ``scales`` maps a parameter-name prefix (e.g. ``"input."``) to its multiplier; the first
    matching prefix wins and unmatched parameters keep the base rate. A prefix that matches no
    parameter is an error, because a renamed layer would otherwise silently lose its scaling.
    """
    named = [(n, p) for n, p in unwrap_model(model).named_parameters() if p.requires_grad]
    groups: dict[str, list] = {prefix: [] for prefix in scales}
    rest = []
    for name, param in named:
        prefix = next((p for p in scales if name.startswith(p)), None)
        (groups[prefix] if prefix is not None else rest).append(param)
    missing = [p for p, params in groups.items() if not params]
    if missing:
        raise TrainingRunError(f"learning-rate prefixes {missing} match no parameter of {type(model).__name__}")
    out = [
        {"params": params, "lr": base_lr * scales[p], "lr_scale": scales[p], "weight_decay": weight_decay, "name": p}
        for p, params in groups.items()
    ]
    if rest:
        out.append({"params": rest, "lr": base_lr, "lr_scale": 1.0, "weight_decay": weight_decay, "name": "base"})
    return out


def build_optimizer_and_schedule(
    model: torch.nn.Module, cfg: OptimConfig, steps_per_epoch: int, lr_scales: Mapping[str, float] | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over layer-wise groups plus a per-step warm-up/cosine ``LambdaLR``."""
    import torch

    if steps_per_epoch < 1:
        raise TrainingRunError("steps_per_epoch must be at least 1 (is the training set empty?)")
    groups = param_groups_with_lr_scale(model, cfg.lr, lr_scales or {}, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total, warmup, cfg.min_lr_ratio)
    )
    return optimizer, scheduler


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (checkpoints store this one)."""
    return getattr(model, "module", model)


def _rng_state() -> dict[str, Any]:
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the next epoch to train and the global optimiser step."""

    epoch: int
    step: int
    extra: dict[str, Any]


class TrainingRun:
    """One training output folder: ``log.csv`` (append-only), ``checkpoints/`` and curve PNGs.

    Only the main process (rank 0) writes; other ranks may construct it and call the same methods,
    which then do nothing, so training scripts need no rank checks around logging.
    """

    LOG_NAME = "log.csv"
    CHECKPOINT_DIR = "checkpoints"

    def __init__(self, out_dir: str | Path, resume: bool = False, is_main: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.is_main = is_main
        self.log_path = self.out_dir / self.LOG_NAME
        self.checkpoint_dir = self.out_dir / self.CHECKPOINT_DIR
        if not resume and (self.log_path.exists() or self.checkpoints()):
            raise TrainingRunError(f"{self.out_dir} already holds a run; pass resume=True or choose another folder")
        if is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] | None = self._read_header()

    def _read_header(self) -> list[str] | None:
        if not self.log_path.exists():
            return None
        with self.log_path.open(newline="") as fh:
            return next(csv.reader(fh), None)

    def log(self, step: int, **metrics: float) -> None:
        """Append one row; the first row fixes the columns, later rows may leave some empty."""
        if not self.is_main:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        if self._columns is None:
            self._columns = list(row)
            with self.log_path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self._columns)
        unknown = set(row) - set(self._columns)
        if unknown:
            raise TrainingRunError(f"log columns {sorted(unknown)} are not in {self.log_path} ({self._columns})")
        with self.log_path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._columns).writerow(row)

    def read_log(self) -> dict[str, np.ndarray]:
        """Columns of the log as float arrays (NaN where a row left a value empty).

        A step logged twice (a crash after logging, before the checkpoint, then resume) keeps its
        last row, so curves show what the resumed run actually did.
        """
        if not self.log_path.exists():
            return {}
        with self.log_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        by_step = {int(float(r["step"])): r for r in rows}
        steps = sorted(by_step)
        columns = self._columns or []
        return {
            c: np.array([float(by_step[s][c]) if by_step[s].get(c) not in (None, "") else np.nan for s in steps])
            for c in columns
        }

    def checkpoints(self) -> list[Path]:
        """Resumable checkpoints, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(self.checkpoint_dir.glob("step_*.pt"))

    def save_checkpoint(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        epoch: int,
        step: int,
        keep: int = 2,
        extra: Mapping[str, Any] | None = None,
    ) -> Path | None:
        """Atomically write ``checkpoints/step_XXXXXXXX.pt`` (write to a temp file, then rename).

        ``epoch`` is the number of completed epochs, i.e. the epoch a resumed run starts with.
        """
        if not self.is_main:
            return None
        state = {
            "model": unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": int(epoch),
            "step": int(step),
            "rng": _rng_state(),
            "extra": dict(extra or {}),
        }
        path = self.checkpoint_dir / f"step_{int(step):08d}.pt"
        atomic_torch_save(state, path)
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def resume(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None
    ) -> ResumePoint | None:
        """Restore the latest checkpoint into the given objects; ``None`` when there is none."""
        import torch

        found = self.checkpoints()
        if not found:
            return None
        state = torch.load(found[-1], map_location="cpu", weights_only=True)
        unwrap_model(model).load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        return ResumePoint(epoch=state["epoch"], step=state["step"], extra=state["extra"])

    def plot_curves(self, png_path: str | Path, columns: Sequence[str], title: str = "") -> Path | None:
        """Plot the given log columns against step into a PNG (one panel per column)."""
        if not self.is_main:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self.read_log()
        missing = [c for c in columns if c not in data]
        if missing:
            raise TrainingRunError(f"columns {missing} are not in {self.log_path}")
        fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.5), squeeze=False)
        for ax, column in zip(axes[0], columns, strict=True):
            ok = np.isfinite(data[column])
            ax.plot(data["step"][ok], data[column][ok], lw=1.2)
            ax.set_xlabel("step")
            ax.set_title(column)
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        png_path = Path(png_path)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=110)
        plt.close(fig)
        return png_path


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group on gloo (CPU); a plain single process returns ``(0, 1)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def wrap_distributed(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when a process group is up, else return the model unchanged."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def average_across_ranks(value: float) -> float:
    """Mean of a scalar over all processes (identity without a process group), for logging."""
    if not is_distributed():
        return float(value)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def shard(items: Iterable[Any], rank: int, world_size: int) -> list[Any]:
    """This rank's share of a list (round robin), so each process trains on different scenes.

    Every rank gets the same count (short ranks repeat their first items): DDP needs all processes
    to take the same number of steps or the gradient all-reduce deadlocks.
    """
    items = list(items)
    if not items:
        raise TrainingRunError("nothing to shard: the item list is empty")
    per_rank = math.ceil(len(items) / world_size)
    mine = items[rank::world_size] or items[:1]
    return [mine[i % len(mine)] for i in range(per_rank)]


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def shutdown_distributed() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.destroy_process_group()
