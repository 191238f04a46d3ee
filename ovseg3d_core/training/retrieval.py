"""Training and evaluation of the retrieval adapters on cached frozen features.

One epoch visits every training shape once, paired with one of its captions drawn at random, so
a batch never holds the same shape twice (no false negatives from duplicate pairs). Under torchrun
each process takes a disjoint share of the same shuffled shape order and DDP averages gradients;
the contrastive negatives are those of the local batch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.data.shapes.dataset import shape_cache_dir
from ovseg3d_core.data.shapes.procedural_dataset import (
    GENERATOR_VERSION,
    ProceduralDatasetConfig,
    procedural_dataset,
    procedural_splits,
)
from ovseg3d_core.metrics.retrieval import RetrievalScores, retrieval_scores
from ovseg3d_core.paths import SOURCE_ROOT
from ovseg3d_core.retrieval.feature_cache import ShapeFeatures, cache_key, cached_features
from ovseg3d_core.retrieval.frozen_encoders import FrozenEncoderConfig
from ovseg3d_core.retrieval.model import (
    CheckpointInfo,
    RetrievalConfig,
    RetrievalModelError,
    TriModalRetrievalModel,
    load_model,
    read_checkpoint,
    save_model,
)
from ovseg3d_core.training.run import (
    OptimConfig,
    TrainingRun,
    TrainingRunError,
    average_across_ranks,
    barrier,
    build_optimizer_and_schedule,
    init_distributed,
    seed_everything,
    shard,
    shutdown_distributed,
    unwrap_model,
    wrap_distributed,
)

CLI_USAGE = """Train the tri-modal retrieval adapters on the procedural corpus (cached frozen features).

    python -m ovseg3d_core.training.retrieval --config training/configs/retrieval.yaml --out .cache/runs/retrieval
    torchrun --nproc_per_node 2 -m ovseg3d_core.training.retrieval --config ... --out ...   # data parallel, gloo

The run folder gets ``log.csv``, resumable ``checkpoints/``, ``curves.png`` and the final
``model.pt`` (+ ``config.yaml``, ``metrics.json``); ``--ship DIR`` copies the small final files
(model, config, log, curves, metrics) to DIR, e.g. ``training/checkpoints/retrieval``.
"""


@dataclass
class RetrievalTrainConfig(Config):
    """Optimisation of the adapters (paper: AdamW, cosine schedule, 40 epochs, lr 5e-5 at batch 1024)."""

    optim: OptimConfig = setting(
        OptimConfig(lr=1e-3, weight_decay=0.01, epochs=30, warmup_epochs=1, min_lr_ratio=0.01, grad_clip_norm=5.0),
        "AdamW + warm-up/cosine settings",
    )
    batch_size: int = setting(128, "(shape, caption) pairs per step and process", low=2, high=65536)
    eval_every_epochs: int = setting(5, "evaluate on the validation split every this many epochs", low=1)


@dataclass
class RetrievalExperimentConfig(Config):
    """Everything a retrieval training run depends on: data, frozen encoders, model, optimisation."""

    data: ProceduralDatasetConfig = setting(ProceduralDatasetConfig(), "procedural corpus and its splits")
    encoders: FrozenEncoderConfig = setting(FrozenEncoderConfig(), "frozen encoders producing the cached features")
    model: RetrievalConfig = setting(RetrievalConfig(), "trainable model and loss")
    train: RetrievalTrainConfig = setting(RetrievalTrainConfig(), "optimisation")
    feature_cache_dir: str = setting("", "where frozen features are cached; empty = <cache>/retrieval_features")
    max_train_shapes: int = setting(0, "use only the first N train-split shapes (0 = all; CPU budget)", low=0)
    max_eval_shapes: int = setting(0, "use only the first N val/test-split shapes (0 = all)", low=0)


def feature_cache_path(config: RetrievalExperimentConfig, split: str) -> Path:
    root = (
        Path(config.feature_cache_dir) if config.feature_cache_dir else shape_cache_dir().parent / "retrieval_features"
    )
    return root / f"procedural-{split}-{cache_key(config.encoders, _dataset_description(config, split))}.npz"


def _split_limit(config: RetrievalExperimentConfig, split: str) -> int:
    return config.max_train_shapes if split == "train" else config.max_eval_shapes


def _dataset_description(config: RetrievalExperimentConfig, split: str) -> str:
    description = {
        "generator": GENERATOR_VERSION,
        "data": config.data.to_dict(),
        "split": split,
        "limit": _split_limit(config, split),
    }
    return json.dumps(description, sort_keys=True)


def checkpoint_info(config: RetrievalExperimentConfig) -> CheckpointInfo:
    """The inference settings this run's checkpoint carries; it holds out the test split, which no step saw."""
    test = [i for i, split in enumerate(procedural_splits(config.data)) if split == "test"]
    return CheckpointInfo(encoders=config.encoders, corpus=config.data, held_out=test)


def upgrade_checkpoint(checkpoint: Path, config_path: Path) -> Path:
    """Re-save a version-1 checkpoint with the inference settings of the run config that trained it.

    The model config, weights and extra are kept (the weights are checked tensor by tensor); this
    is how the shipped checkpoint got its settings.
    """
    old = read_checkpoint(checkpoint)
    info = checkpoint_info(RetrievalExperimentConfig.from_yaml(config_path))
    save_model(load_model(checkpoint), checkpoint, info=info, extra=old["extra"])
    new = read_checkpoint(checkpoint)["model"]
    if new.keys() != old["model"].keys() or not all(torch.equal(new[k], v) for k, v in old["model"].items()):
        raise RetrievalModelError(f"re-saving {checkpoint} changed its weights")
    return checkpoint


def split_features(config: RetrievalExperimentConfig, split: str, progress: bool = True) -> ShapeFeatures:
    """Frozen features of one procedural split, from the cache or computed (and cached) now."""
    dataset = procedural_dataset(config.data, progress=progress)
    indices = dataset.indices(split)
    if _split_limit(config, split):
        indices = indices[: _split_limit(config, split)]
    return cached_features(
        feature_cache_path(config, split),
        lambda: (dataset[int(i)] for i in indices),
        config.encoders,
        _dataset_description(config, split),
        total=len(indices),
        progress=progress,
    )


def _tensors(features: ShapeFeatures, shapes: np.ndarray, captions: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(features.point_tokens[shapes]).float(),
        torch.from_numpy(features.token_geometry[shapes]).float(),
        torch.from_numpy(features.views[shapes]).float(),
        torch.from_numpy(features.text[captions]).float(),
    )


def epoch_pairs(features: ShapeFeatures, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled shapes that have captions, each with one random caption index."""
    by_shape: dict[int, list[int]] = {}
    for c, s in enumerate(features.caption_shape.tolist()):
        by_shape.setdefault(s, []).append(c)
    shapes = rng.permutation(np.array(sorted(by_shape), dtype=np.int64))
    captions = np.array([by_shape[s][rng.integers(len(by_shape[s]))] for s in shapes], dtype=np.int64)
    return shapes, captions


def embed_features(
    model: TriModalRetrievalModel, features: ShapeFeatures, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Unit shape embeddings (S x D) and caption embeddings (C x D)."""
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    shapes, texts = [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            idx = np.arange(start, min(start + batch_size, len(features)))
            p, g, v, _ = _tensors(features, idx, np.zeros(0, dtype=np.int64))
            shapes.append(model.encode_shape(p, g, v).numpy())
        for start in range(0, len(features.captions), batch_size):
            texts.append(model.encode_text(torch.from_numpy(features.text[start : start + batch_size])).numpy())
    model.train(was_training)
    return np.concatenate(shapes), np.concatenate(texts)


def evaluate(model: TriModalRetrievalModel, features: ShapeFeatures) -> RetrievalScores:
    """RR@1/5 and NDCG@5 in both directions over all shapes and captions of ``features``."""
    shape_emb, text_emb = embed_features(model, features)
    return retrieval_scores(
        text_emb, [features.shape_ids[s] for s in features.caption_shape], shape_emb, features.shape_ids
    )


def fit(
    model_config: RetrievalConfig,
    train: ShapeFeatures,
    config: RetrievalTrainConfig,
    val: ShapeFeatures | None = None,
    run: TrainingRun | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> TriModalRetrievalModel:
    """Train a fresh model on ``train``; logs loss terms (and val metrics) to ``run`` when given.

    With a ``run`` holding checkpoints the latest one is resumed. Returns the unwrapped model.
    """
    from tqdm import tqdm

    seed_everything(config.optim.seed)
    model = TriModalRetrievalModel(model_config)
    n_pairs = len(set(train.caption_shape.tolist()))
    per_rank = -(-n_pairs // world_size)
    steps_per_epoch = max(1, per_rank // config.batch_size)
    optimizer, scheduler = build_optimizer_and_schedule(model, config.optim, steps_per_epoch)
    start_epoch, step = 0, 0
    if run is not None:
        resumed = run.resume(model, optimizer, scheduler)
        if resumed is not None:
            start_epoch, step = resumed.epoch, resumed.step
    ddp = wrap_distributed(model)
    ddp.train()
    epochs = range(start_epoch, config.optim.epochs)
    bar = tqdm(epochs, desc="retrieval training", unit="epoch", disable=not (progress and rank == 0))
    for epoch in bar:
        rng = np.random.default_rng(config.optim.seed * 100_003 + epoch)
        shapes, captions = epoch_pairs(train, rng)
        mine = np.asarray(shard(np.arange(len(shapes)), rank, world_size))
        sums: dict[str, float] = {}
        for b in range(steps_per_epoch):
            pick = mine[b * config.batch_size : (b + 1) * config.batch_size]
            losses = ddp(*_tensors(train, shapes[pick], captions[pick]))
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            if config.optim.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), config.optim.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        row = {f"loss_{k}": average_across_ranks(v / steps_per_epoch) for k, v in sums.items()}
        row["temperature"] = float(model.temperature.detach())
        row["lr"] = scheduler.get_last_lr()[0]
        row["epoch"] = epoch + 1
        last = epoch + 1 == config.optim.epochs
        if val is not None and ((epoch + 1) % config.eval_every_epochs == 0 or last):
            scores = evaluate(model, val).as_dict()
            row.update({f"val_{k}": v for k, v in scores.items()})
        else:
            row.update({f"val_{k}": float("nan") for k in RetrievalScores.__dataclass_fields__} if val else {})
        bar.set_postfix(loss=f"{row['loss_total']:.3f}")
        if run is not None:
            run.log(step, **row)
            if (epoch + 1) % config.optim.checkpoint_every_epochs == 0 or last:
                run.save_checkpoint(ddp, optimizer, scheduler, epoch + 1, step, keep=config.optim.keep_checkpoints)
    return model.eval()


CURVE_COLUMNS = ("loss_total", "loss_retrieval", "temperature", "val_t2s_rr1", "val_s2t_rr1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=CLI_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=SOURCE_ROOT / "training" / "configs" / "retrieval.yaml")
    parser.add_argument("--out", type=Path, required=True, help="run folder (log, checkpoints, final model)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--epochs", type=int, help="override train.optim.epochs")
    parser.add_argument("--n-shapes", type=int, help="override data.n_shapes (smaller corpus for smoke runs)")
    parser.add_argument("--features-only", action="store_true", help="build the feature caches and stop")
    parser.add_argument("--ship", type=Path, help="copy the final model, config, log and curves here")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> RetrievalExperimentConfig:
    raw = yaml.safe_load(args.config.read_text()) or {}
    if args.epochs is not None:
        raw.setdefault("train", {}).setdefault("optim", {})["epochs"] = args.epochs
    if args.n_shapes is not None:
        raw.setdefault("data", {})["n_shapes"] = args.n_shapes
    return RetrievalExperimentConfig.from_dict(raw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args)
    rank, world = init_distributed()
    main_rank = rank == 0
    # Rank 0 builds the caches; the others wait, then read them.
    if main_rank:
        train, val = split_features(config, "train"), split_features(config, "val")
    barrier()
    if not main_rank:
        train, val = split_features(config, "train", progress=False), split_features(config, "val", progress=False)
    if args.features_only:
        shutdown_distributed()
        return 0
    run = TrainingRun(args.out, resume=args.resume, is_main=main_rank)
    started = time.perf_counter()
    model = fit(config.model, train, config.train, val=val, run=run, rank=rank, world_size=world, progress=main_rank)
    seconds = time.perf_counter() - started
    if main_rank:
        scores = evaluate(model, val).as_dict()
        metrics = {"val": scores, "train_seconds": seconds, "world_size": world, "train_shapes": len(train)}
        save_model(model, args.out / "model.pt", info=checkpoint_info(config), extra={"val": scores})
        (args.out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.plot_curves(args.out / "curves.png", CURVE_COLUMNS, title="tri-modal retrieval training")
        print(json.dumps(metrics, indent=2))
        if args.ship:
            args.ship.mkdir(parents=True, exist_ok=True)
            for name in ("model.pt", "config.yaml", "log.csv", "curves.png", "metrics.json"):
                shutil.copy2(args.out / name, args.ship / name)
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (ConfigError, TrainingRunError) as exc:
        print(f"train_retrieval: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
