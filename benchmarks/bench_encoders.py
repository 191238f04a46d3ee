"""Encoder timings: OpenCLIP dense features, MiniLM text, the noisy oracle, each beside a baseline.

- OpenCLIP ViT-B-16 MaskCLIP dense features per 640x480 7-Scenes frame. RANDOM weights: timing
  only (no CLIP weights exist here), never a vision-language result. Baseline: the standard
  OpenCLIP global image embedding (one 224x224 resize, ``encode_image``) on the same frames.
- MiniLM: ms per sentence and per 100-label prompted vocabulary, cold and cached. Baseline:
  sentence-transformers ``SentenceTransformer.encode`` on the same texts.
- The noisy oracle: ms per 640x480 rendered ScanNet view (scene0000_00 labels). Baseline: the
  noise-free lookup of each pixel's class embedding at the same stride (the least any feature
  source must do).

Writes ``benchmarks/results/encoders.json`` and ``encoders.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.scenes.image_io import read_color
from ovseg3d_core.data.scenes.rendering import generate_trajectory, render_views
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES, SCANNET200_CLASSES, load_scannet_scan
from ovseg3d_core.encoders.minilm import MiniLMConfig, MiniLMTextEncoder
from ovseg3d_core.encoders.noisy_oracle import NoisyOracle, NoisyOracleConfig
from ovseg3d_core.encoders.openclip import OpenCLIPConfig, OpenCLIPDenseExtractor, load_openclip_model
from ovseg3d_core.encoders.prompts import PromptedTextEncoder

RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(function: Callable[[], object], repeats: int, label: str) -> float:
    times = []
    for _ in tqdm(range(repeats), desc=label, leave=False):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench_openclip(frames: list[np.ndarray], repeats: int) -> dict:
    import open_clip

    config = OpenCLIPConfig(allow_random_weights=True)
    model = load_openclip_model(config)
    rows = {}
    for short_side in (448, 224):
        extractor = OpenCLIPDenseExtractor(config.replace(short_side=short_side), model)
        extractor.extract(frames[0])  # warm-up
        ms = median_ms(lambda e=extractor: [e.extract(f) for f in frames], repeats, f"openclip short {short_side}")
        rows[f"short_side_{short_side}"] = {
            "ms_per_frame": ms / len(frames),
            "windows_per_frame": len(extractor.window_offsets(480, 640)),
            "grid": list(extractor.grid_shape(480, 640)),
            "dim": extractor.dim,
        }
    preprocess = open_clip.get_model_preprocess_cfg(model)
    mean = torch.tensor(preprocess["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, 3, 1, 1)

    def global_embedding() -> None:
        with torch.inference_mode():
            for frame in frames:
                tensor = torch.tensor(frame).permute(2, 0, 1)[None].float() / 255
                tensor = torch.nn.functional.interpolate(tensor, size=(224, 224), mode="bilinear", antialias=True)
                model.encode_image((tensor - mean) / std)

    global_embedding()
    baseline = median_ms(global_embedding, repeats, "openclip global baseline") / len(frames)
    return {
        "architecture": config.architecture,
        "weights": "random (timing only, not a VLM result)",
        "dense": rows,
        "baseline_global_encode_image_ms_per_frame": baseline,
    }


def bench_minilm(repeats: int) -> dict:
    from sentence_transformers import SentenceTransformer

    sentences = [f"a {name} in a scene" for name in SCANNET200_CLASSES[:20]]
    vocabulary = list(SCANNET200_CLASSES[:100])
    uncached = MiniLMTextEncoder(MiniLMConfig(cache_size=0))
    cached = PromptedTextEncoder(MiniLMTextEncoder())
    reference = SentenceTransformer(str(uncached.model_dir), device="cpu")
    prompts = cached.prompts
    flat_vocabulary = [p for name in vocabulary for p in prompts(name)]
    uncached.encode(sentences[:2])
    reference.encode(sentences[:2])

    def cold_vocabulary() -> None:
        cached.encoder.clear_cache()
        cached.encode(vocabulary)

    cold_vocabulary()
    per_sentence = median_ms(lambda: [uncached.encode([s]) for s in sentences], repeats, "minilm sentences")
    per_sentence_st = median_ms(lambda: [reference.encode([s]) for s in sentences], repeats, "st sentences")
    cold = median_ms(cold_vocabulary, repeats, "minilm vocab cold")
    warm = median_ms(lambda: cached.encode(vocabulary), repeats * 5, "minilm vocab cached")
    st_vocab = median_ms(lambda: reference.encode(flat_vocabulary, batch_size=64), repeats, "st vocab")
    return {
        "ms_per_sentence": per_sentence / len(sentences),
        "vocabulary_100_cold_ms": cold,
        "vocabulary_100_cached_ms": warm,
        "baseline_sentence_transformers_ms_per_sentence": per_sentence_st / len(sentences),
        "baseline_sentence_transformers_vocabulary_100_ms": st_vocab,
        "dim": uncached.dim,
    }


def bench_oracle(n_views: int, repeats: int) -> dict:
    scan = load_scannet_scan()
    poses = generate_trajectory(scan, n_views, seed=0)
    frames = render_views(scan, scan.scannet20_ids, poses, progress=True, vertex_instances=scan.instance_ids)
    text = PromptedTextEncoder(MiniLMTextEncoder())
    rows = {}
    for stride in (4, 2):
        oracle = NoisyOracle(SCANNET20_CLASSES, text, NoisyOracleConfig.preset("default", stride=stride))
        oracle.extract_frame(frames[0])
        ms = median_ms(
            lambda o=oracle: [o.extract_frame(f, i) for i, f in enumerate(frames)], repeats, f"oracle stride {stride}"
        )
        segments = [len(oracle.extract_frame(f, i).segments) for i, f in enumerate(frames)]
        table = np.vstack([oracle.class_embeddings, np.zeros((1, oracle.dim), np.float32)])

        def lookup(s: int = stride, embeddings: np.ndarray = table) -> None:
            for frame in frames:
                labels = frame.labels[s // 2 :: s, s // 2 :: s]
                embeddings[np.where(labels < len(SCANNET20_CLASSES), labels, len(SCANNET20_CLASSES))]

        baseline = median_ms(lookup, repeats, f"lookup stride {stride}")
        rows[f"stride_{stride}"] = {
            "ms_per_frame": ms / len(frames),
            "baseline_noise_free_lookup_ms_per_frame": baseline / len(frames),
            "output_shape": list(oracle.output_shape(480, 640)),
            "mean_segments_per_view": float(np.mean(segments)),
        }
    return {"views": len(frames), "dim": text.dim, "preset": "default", **rows}


def write_markdown(results: dict, path: Path) -> None:
    clip, text, oracle = results["openclip"], results["minilm"], results["noisy_oracle"]
    lines = [
        "# Encoder timings",
        "",
        f"{results['machine']}, torch threads {results['torch_threads']}, "
        f"{'quick run' if results['quick'] else 'full run'}, {results['seconds']:.0f} s. "
        f"1-minute load average {results['load_average_at_start']:.1f} at start, "
        f"{results['load_average_at_end']:.1f} at end (other jobs on the machine inflate every figure alike).",
        "",
        f"## OpenCLIP {clip['architecture']} dense features per 640x480 frame",
        "",
        f"Weights: **{clip['weights']}**.",
        "",
        "| input short side | windows | patch grid | ms / frame |",
        "|---|---|---|---|",
    ]
    for name, row in clip["dense"].items():
        grid = "x".join(map(str, row["grid"]))
        short_side = name.rsplit("_", 1)[1]
        lines.append(f"| {short_side} | {row['windows_per_frame']} | {grid} | {row['ms_per_frame']:.0f} |")
    lines += [
        f"| baseline: global `encode_image` (224x224, one vector) | 1 | - | "
        f"{clip['baseline_global_encode_image_ms_per_frame']:.0f} |",
        "",
        "## MiniLM text encoder (all-MiniLM-L6-v2, real weights)",
        "",
        "| measure | ours (ms) | sentence-transformers (ms) |",
        "|---|---|---|",
        f"| one sentence | {text['ms_per_sentence']:.1f} | "
        f"{text['baseline_sentence_transformers_ms_per_sentence']:.1f} |",
        f"| 100-label prompted vocabulary, cold | {text['vocabulary_100_cold_ms']:.0f} | "
        f"{text['baseline_sentence_transformers_vocabulary_100_ms']:.0f} |",
        f"| 100-label prompted vocabulary, cached | {text['vocabulary_100_cached_ms']:.2f} | - |",
        "",
        f"## Noisy oracle (simulated 2D source, {oracle['preset']} preset) per 640x480 rendered ScanNet view",
        "",
        "| stride | output | segments / view | noisy oracle ms / frame | noise-free lookup ms / frame |",
        "|---|---|---|---|---|",
    ]
    for stride in (4, 2):
        row = oracle[f"stride_{stride}"]
        lines.append(
            f"| {stride} | {'x'.join(map(str, row['output_shape']))} x {oracle['dim']} | "
            f"{row['mean_segments_per_view']:.0f} | {row['ms_per_frame']:.0f} | "
            f"{row['baseline_noise_free_lookup_ms_per_frame']:.0f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (well under a minute)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for encoders.json / encoders.md")
    args = parser.parse_args()
    start = time.perf_counter()
    n_frames, repeats, n_views = (1, 1, 2) if args.quick else (4, 3, 8)
    frames = [read_color(data_path("7scenes", f"frame-{i * 100:06d}.color.jpg")) for i in range(n_frames)]
    results = {
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "openclip": bench_openclip(frames, repeats),
        "minilm": bench_minilm(repeats),
        "noisy_oracle": bench_oracle(n_views, repeats),
    }
    results["seconds"] = time.perf_counter() - start
    results["load_average_at_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoders.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.out / "encoders.md")
    print((args.out / "encoders.md").read_text())


if __name__ == "__main__":
    main()
