"""Text<->shape retrieval benchmark: full model, Table V ablations, zero-shot baseline, OOD, latency.

    python benchmarks/bench_retrieval.py            # full: trains each ablation (~minutes on 2 cores)
    python benchmarks/bench_retrieval.py --quick    # < 60 s smoke run: shipped model + baselines only

Rows (procedural test split unless noted):
- ``full (shipped)``: the shipped checkpoint (CQA fusion, HN-NCE, tri-modal reconstruction).
- ``ablation: ...``: the same training config with one switch changed, trained here.
- ``zero-shot class-name bridge``: frozen encoders only (see ovseg3d_core.retrieval.zero_shot).
- ``untrained adapters``: the full architecture with random initial weights (chance reference).
- split ``text2shape-real``: the 11 real Text2Shape shapes with their captions (out of distribution).
Latency: text query -> top-5 over a 10,000-entry index, MiniLM encoding included (cache off),
ShapeIndex vs a plain numpy brute force (unnormalised cosine + full argsort) in the same run.
The full run writes ``benchmarks/results/retrieval.{json,md,png}``; ``--quick`` writes
``retrieval_quick.*`` so a smoke run never overwrites the full results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ovseg3d_core.data.shapes.procedural_dataset import procedural_dataset, procedural_sample, procedural_splits
from ovseg3d_core.data.shapes.sample import ShapeSampleConfig
from ovseg3d_core.data.shapes.text2shape import MissingShapeWarning, load_text2shape
from ovseg3d_core.encoders.minilm import MiniLMConfig, MiniLMTextEncoder
from ovseg3d_core.metrics.retrieval import retrieval_scores
from ovseg3d_core.retrieval.feature_cache import ShapeFeatures, compute_features
from ovseg3d_core.retrieval.frozen_encoders import ViewEncoder
from ovseg3d_core.retrieval.index import ShapeIndex, top_k
from ovseg3d_core.retrieval.model import TriModalRetrievalModel, load_model
from ovseg3d_core.retrieval.zero_shot import ClassNameBridge
from ovseg3d_core.training.retrieval import (
    RetrievalExperimentConfig,
    embed_features,
    evaluate,
    fit,
    split_features,
)
from ovseg3d_core.training.run import seed_everything
from ovseg3d_core.viz.retrieval_panel import save_retrieval_panel

ROOT = Path(__file__).resolve().parents[1]

CHECKPOINT_DIR = ROOT / "training" / "checkpoints" / "retrieval"
ABLATIONS = {
    "ablation: MLP fusion (Table V row 1)": {"fusion": "mlp"},
    "ablation: InfoNCE (Table V row 3)": {"loss": "infonce"},
    "ablation: bi-reconstruction (Table V row 5)": {"reconstruction": "bi"},
    "ablation: no reconstruction (Table IV row 1)": {"reconstruction": "none"},
}
METRIC_KEYS = ("s2t_rr1", "s2t_rr5", "s2t_ndcg5", "t2s_rr1", "t2s_rr5", "t2s_ndcg5")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (< 60 s): no ablation training")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT_DIR / "model.pt")
    parser.add_argument("--config", type=Path, default=CHECKPOINT_DIR / "config.yaml")
    parser.add_argument("--index-size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300, help="timed text queries")
    parser.add_argument("--quick-shapes", type=int, default=24, help="test shapes generated in --quick mode")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per ablation in full mode")
    parser.add_argument("--query-threads", type=int, default=1, help="torch threads while timing queries")
    parser.add_argument(
        "--latency-only", action="store_true", help="keep the accuracy rows of the existing JSON; re-time queries"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return parser.parse_args()


def row(method: str, split: str, scores: dict[str, float], **extra) -> dict:
    return {"method": method, "split": split, **{k: round(float(scores[k]), 4) for k in METRIC_KEYS}, **extra}


def quick_test_features(config: RetrievalExperimentConfig, count: int, text_encoder) -> tuple[ShapeFeatures, list]:
    """The first ``count`` shapes of the full corpus's test split, generated directly (no corpus build)."""
    splits = procedural_splits(config.data)
    indices = [i for i, s in enumerate(splits) if s == "test"][:count]
    samples = [procedural_sample(i, config.data) for i in tqdm(indices, desc="test shapes", unit="shape")]
    return compute_features(samples, config.encoders, text_encoder=text_encoder, total=len(samples)), samples


def text2shape_features(config: RetrievalExperimentConfig, text_encoder) -> tuple[ShapeFeatures, list]:
    sample_config = ShapeSampleConfig.from_dict(config.data.sample.to_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingShapeWarning)
        samples = load_text2shape(config=sample_config)
    return compute_features(samples, config.encoders, text_encoder=text_encoder, progress=False), samples


def zero_shot_scores(bridge: ClassNameBridge, features: ShapeFeatures, n_views: int) -> dict[str, float]:
    shapes = bridge.embed_shapes(features, n_views)
    owners = [features.shape_ids[s] for s in features.caption_shape]
    return retrieval_scores(features.text, owners, shapes, features.shape_ids).as_dict()


def latency(index: ShapeIndex, queries: list[str], text_encoder: MiniLMTextEncoder) -> dict[str, float]:
    """p50/p95 ms of ShapeIndex.query_text vs a plain numpy brute force, interleaved per query."""
    raw = index.shape_embeddings * np.linspace(0.5, 2.0, len(index), dtype=np.float32)[:, None]  # unnormalised copy
    ours, base, encode = [], [], []
    for text in tqdm(queries, desc="latency", unit="query"):
        text_encoder.clear_cache()
        t0 = time.perf_counter()
        index.query_text(text, k=5)
        ours.append(time.perf_counter() - t0)
        text_encoder.clear_cache()
        t0 = time.perf_counter()
        q = index.adapt_text(text_encoder.encode([text]))[0]
        t1 = time.perf_counter()
        scores = (raw @ q) / (np.linalg.norm(raw, axis=1) * np.linalg.norm(q))
        np.argsort(-scores)[:5]
        base.append(time.perf_counter() - t0)
        encode.append(t1 - t0)
    ms = lambda xs, p: float(np.percentile(np.asarray(xs) * 1e3, p))  # noqa: E731
    return {
        "query_ms_p50": ms(ours, 50),
        "query_ms_p95": ms(ours, 95),
        "baseline_query_ms_p50": ms(base, 50),
        "baseline_query_ms_p95": ms(base, 95),
        "text_encode_ms_p50": ms(encode, 50),
    }


def large_index(index: ShapeIndex, size: int, seed: int = 0) -> ShapeIndex:
    """Grow an index to ``size`` entries by repeating its embeddings with small noise (latency is content-free)."""
    rng = np.random.default_rng(seed)
    reps = rng.integers(0, len(index), size)
    emb = index.shape_embeddings[reps] + 0.05 * rng.standard_normal((size, index.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"{index.shape_ids[r]}#{i}" for i, r in enumerate(reps)]
    return ShapeIndex(
        ids,
        emb,
        index.captions,
        index.caption_embeddings,
        index.caption_shape,
        index.text_adapter,
        text_encoder=index._text_encoder,
    )


def panel(model: TriModalRetrievalModel, features: ShapeFeatures, views: list[np.ndarray], path: Path, n: int = 5):
    shape_emb, text_emb = embed_features(model, features)
    picks = np.linspace(0, len(features.captions) - 1, n).astype(int)
    queries, renders, scores, hits = [], [], [], []
    for c in picks:
        sim = shape_emb @ text_emb[c]
        best = top_k(sim, 5)
        queries.append(features.captions[c])
        renders.append([views[b] for b in best])
        scores.append(sim[best].tolist())
        hits.append([b == features.caption_shape[c] for b in best])
    save_retrieval_panel(queries, renders, path, scores, hits, title="full model: text query -> top-5 shapes")


def comparison_lines(rows: list[dict], full_name: str = "full (shipped)") -> list[str]:
    """For each other row on the same split: on how many of the six metrics the full model is better."""
    lines = []
    for full in (r for r in rows if r["method"] == full_name):
        for other in (r for r in rows if r["split"] == full["split"] and r is not full):
            wins = [k for k in METRIC_KEYS if full[k] > other[k]]
            lines.append(f"full beats {other['method']} on {full['split']}: {len(wins)}/6 metrics")
    return lines


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Text <-> shape retrieval",
        "",
        f"Machine: {result['machine']}; mode: {'quick' if result['quick'] else 'full'}; "
        f"run time {result['seconds']:.0f} s. Procedural test gallery: {result['test_shapes']} shapes, "
        f"{result['test_captions']} captions.",
        "",
        "| method | split | S2T RR@1 | S2T RR@5 | S2T NDCG@5 | T2S RR@1 | T2S RR@5 | T2S NDCG@5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = " | ".join(f"{100 * r[k]:.1f}" for k in METRIC_KEYS)
        lines.append(f"| {r['method']} | {r['split']} | {cells} |")
    lines += [
        "",
        f"Query latency over a {result['index_size']:,}-entry index, MiniLM text encoding included: "
        f"ShapeIndex p50 {result['query_ms_p50']:.1f} ms / p95 {result['query_ms_p95']:.1f} ms; "
        f"numpy brute-force baseline p50 {result['baseline_query_ms_p50']:.1f} ms "
        f"(text encoding alone p50 {result['text_encode_ms_p50']:.1f} ms). Loading the saved index "
        f"({result['index_file_mb']:.1f} MB) takes {result['index_load_s']:.2f} s (text encoder excluded).",
        "",
        *[f"- {note}" for note in result["notes"]],
        "",
        "Full model vs each other row (count of the six metrics where the full model is higher):",
        "",
        *[f"- {line}" for line in comparison_lines(result["rows"])],
        "",
        *seed_summary_lines(result.get("seed_summary", [])),
    ]
    path.write_text("\n".join(lines))


def seed_summary_lines(summary: list[dict]) -> list[str]:
    """Mean ± std table over training seeds, and the full-vs-ablation counts on the means."""
    if not summary:
        return []
    lines = [
        f"## Mean ± std over {summary[0]['seeds']} training seeds (procedural test)",
        "",
        "| method | S2T RR@1 | S2T RR@5 | S2T NDCG@5 | T2S RR@1 | T2S RR@5 | T2S NDCG@5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        cells = " | ".join(f"{100 * r[k]:.1f} ± {100 * r[k + '_std']:.1f}" for k in METRIC_KEYS)
        lines.append(f"| {r['method']} | {cells} |")
    lines += ["", *[f"- {line} (means)" for line in comparison_lines(summary, full_name="full")], ""]
    return lines


def seed_study(
    args: argparse.Namespace,
    config: RetrievalExperimentConfig,
    full_scores: dict[str, float],
    test: ShapeFeatures,
    split_name: str,
) -> tuple[list[dict], list[dict]]:
    """Train every ablation (and the full model) with ``--seeds`` seeds from the shipped config.

    Returns the ablation rows of the shipped seed and one mean/std summary per variant; the
    shipped checkpoint stands in for the full model's shipped seed (same config and seed).
    """
    train = split_features(config, "train")
    base = config.train.optim.seed
    rows, summary = [], []
    for name, change in {"full (shipped)": {}, **ABLATIONS}.items():
        per_seed = []
        for seed in range(base, base + args.seeds):
            if not change and seed == base:
                per_seed.append(full_scores)
                continue
            train_config = config.train.replace(optim=config.train.optim.replace(seed=seed))
            t0 = time.perf_counter()
            scores = evaluate(fit(config.model.replace(**change), train, train_config, progress=True), test).as_dict()
            per_seed.append(scores)
            if seed == base:
                rows.append(row(name, split_name, scores, train_s=round(time.perf_counter() - t0)))
        stats = {k: float(np.mean([s[k] for s in per_seed])) for k in METRIC_KEYS}
        spread = {f"{k}_std": round(float(np.std([s[k] for s in per_seed])), 4) for k in METRIC_KEYS}
        label = "full" if not change else name
        summary.append(row(label, split_name, stats, seeds=len(per_seed), **spread))
    return rows, summary


def accuracy_rows(
    args: argparse.Namespace,
    config: RetrievalExperimentConfig,
    model: TriModalRetrievalModel,
    test: ShapeFeatures,
    split_name: str,
    text_encoder: MiniLMTextEncoder,
) -> tuple[list[dict], list[dict]]:
    """Full model, ablations (full mode), zero-shot and untrained references, and the real OOD shapes."""
    full_scores = evaluate(model, test).as_dict()
    rows = [row("full (shipped)", split_name, full_scores)]
    summary: list[dict] = []
    if not args.quick:
        ablation_rows, summary = seed_study(args, config, full_scores, test, split_name)
        rows += ablation_rows
    bridge = ClassNameBridge(text_encoder, ViewEncoder(config.encoders), config.encoders.pointnet_weights or None)
    n_views = config.model.n_views
    rows.append(row("zero-shot class-name bridge", split_name, zero_shot_scores(bridge, test, n_views)))
    seed_everything(config.train.optim.seed)
    untrained = TriModalRetrievalModel(config.model)
    rows.append(row("untrained adapters", split_name, evaluate(untrained, test).as_dict()))
    real, _ = text2shape_features(config, text_encoder)
    ood = "text2shape-real (OOD)"
    rows.append(row("full (shipped)", ood, evaluate(model, real).as_dict()))
    rows.append(row("zero-shot class-name bridge", ood, zero_shot_scores(bridge, real, n_views)))
    return rows, summary


def timing_fields(
    args: argparse.Namespace, model: TriModalRetrievalModel, test: ShapeFeatures, config, text_encoder
) -> dict:
    """Query latency (ShapeIndex vs numpy brute force) and index load time, on ``--query-threads`` threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.query_threads)
    try:
        index = ShapeIndex.build(model, test, encoders=config.encoders, text_encoder=text_encoder)
        big = large_index(index, args.index_size)
        n_queries = 30 if args.quick else args.queries
        queries = [test.captions[i] for i in np.linspace(0, len(test.captions) - 1, n_queries).astype(int)]
        timing = latency(big, queries, text_encoder)
    finally:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        saved = big.save(Path(tmp) / "index.npz")
        t0 = time.perf_counter()
        ShapeIndex.load(saved, text_encoder=text_encoder)
        timing["index_load_s"] = time.perf_counter() - t0
        timing["index_file_mb"] = saved.stat().st_size / 2**20
    return {**timing, "index_size": len(big), "n_timed_queries": n_queries, "query_threads": args.query_threads}


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    config = RetrievalExperimentConfig.from_yaml(args.config)
    model = load_model(args.checkpoint)
    text_encoder = MiniLMTextEncoder(MiniLMConfig())
    suffix = "_quick" if args.quick else ""
    json_path = args.out / f"retrieval{suffix}.json"
    notes = [
        "Metrics in percent, computed as DESIGN §4 (binary relevance, gallery de-duplicated).",
        "Zero-shot class-name bridge: shape -> probability-weighted MiniLM embedding of its predicted "
        "ImageNet (views) and ModelNet40 (points) class names; no shape-text training.",
        "Untrained adapters: the full architecture at its random initialisation (chance reference).",
        f"The {args.index_size:,}-entry latency index repeats the embedded test shapes with small noise; "
        f"latency does not depend on embedding content. Queries run on {args.query_threads} torch thread(s) "
        "on a machine shared with other jobs.",
    ]
    if not args.quick:
        notes.insert(
            1, "Ablations: the shipped training config with one switch changed, same seed and epochs, trained here."
        )
    if args.quick:
        test, test_samples = quick_test_features(config, args.quick_shapes, text_encoder)
        test_views = [s.views[0] for s in test_samples]
        split_name = f"procedural-test (first {len(test)} shapes)"
        notes.append("--quick: no ablation training; test subset only.")
    else:
        test = split_features(config, "test")
        dataset = procedural_dataset(config.data, progress=False)
        test_views = [np.array(dataset.views[i][0]) for i in dataset.indices("test")[: len(test)]]
        split_name = "procedural-test"
    if args.latency_only:
        if not json_path.is_file():
            raise SystemExit(f"--latency-only needs accuracy rows from a previous run in {json_path}")
        previous = json.loads(json_path.read_text())
        previous.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(json_path.stat().st_mtime)))
        rows, summary = previous["rows"], previous.get("seed_summary", [])
        notes.append(f"Accuracy rows from the run of {previous['date']}; latency re-measured with --latency-only.")
    else:
        rows, summary = accuracy_rows(args, config, model, test, split_name, text_encoder)
    timing = timing_fields(args, model, test, config, text_encoder)
    args.out.mkdir(parents=True, exist_ok=True)
    panel(model, test, test_views, args.out / f"retrieval{suffix}.png")
    result = {
        "rows": rows,
        "seed_summary": summary,
        **timing,
        "quick": args.quick,
        "date": previous["date"] if args.latency_only else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores",
        "checkpoint": str(
            args.checkpoint.relative_to(ROOT) if args.checkpoint.is_relative_to(ROOT) else args.checkpoint
        ),
        "test_shapes": len(test),
        "test_captions": len(test.captions),
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }
    json_path.write_text(json.dumps(result, indent=2))
    write_markdown(result, args.out / f"retrieval{suffix}.md")
    print(json.dumps({k: v for k, v in result.items() if k != "notes"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
