"""Train the tri-modal retrieval adapters on the procedural corpus (cached frozen features).

    python training/train_retrieval.py --config training/configs/retrieval.yaml --out .cache/runs/retrieval
    torchrun --nproc_per_node 2 training/train_retrieval.py --config ... --out ...   # data parallel, gloo

The run folder gets ``log.csv``, resumable ``checkpoints/``, ``curves.png`` and the final
``model.pt`` (+ ``config.yaml``, ``metrics.json``); ``--ship DIR`` copies the small final files
(model, config, log, curves, metrics) to DIR, e.g. ``training/checkpoints/retrieval``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovseg3d_core.config import ConfigError
from ovseg3d_core.retrieval.model import save_model
from ovseg3d_core.retrieval.training import RetrievalExperimentConfig, evaluate, fit, split_features
from ovseg3d_core.trainer import TrainingRun, TrainingRunError, barrier, init_distributed, shutdown_distributed

CURVE_COLUMNS = ("loss_total", "loss_retrieval", "temperature", "val_t2s_rr1", "val_s2t_rr1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "retrieval.yaml")
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
        save_model(model, args.out / "model.pt", extra={"val": scores})
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
