"""Open-vocabulary segmentation on ScanNet scene0000_00 with NOISY-ORACLE 2D features (not a VLM).

Quality is measured by :func:`ovseg3d_core.evaluation.evaluate_scans`, the function behind
``ovseg3d-eval``: views rendered along a coverage walk feed the :class:`SceneSegmenter` the node
runs, every labelled point of the scan is scored (a point the map never observed is a miss) under
ScanNet's single-scan rule, and each purification mode is set on the segmenter exactly as a user
sets it. The noisy oracle (a benchmark instrument) errs per object, the same way in every view,
and per view on top. Sections:

1. the calibrated ``default`` preset (mean fusion about 50 mIoU, what real 2D fusion scores on
   ScanNet20) and the ``independent`` preset (per-view errors only, the earlier default): mean
   fusion, top-k agreement fusion and every purification mode, gains over mean fusion paired per
   seed, beside GeoPurify's published +4.9 (X-Decoder fusion 50.2 -> 55.1);
2. sensitivity to the kind of error at the same fused score: the ``per_object``, ``mixed`` and
   ``per_view`` error mixes, each at the severity where mean fusion scores about 50 (found by a
   short sweep of mean fusion, :func:`~ovseg3d_core.evaluation.severity_for`);
3. per-class IoU at the default preset;
4. timings on a 100k-voxel crop of the densely sampled mesh: student forward, operator build,
   pooling + labeling for 20 classes through the logit and the feature path, a vocabulary change,
   and the one-off compile (or cache load) of the pooling kernels.

Writes ``benchmarks/results/segmentation.{json,md,png}``; ``--quick`` writes
``segmentation_quick.*`` so a smoke run never overwrites the full results.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from ovseg3d_core.atomic_file import atomic_write_text
from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.scenes.labeled_scan import LabeledScan
from ovseg3d_core.data.scenes.scan_layouts import load_scan
from ovseg3d_core.data.scenes.scan_views import scan_views
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
from ovseg3d_core.encoders.minilm import MiniLMTextEncoder
from ovseg3d_core.encoders.noisy_oracle import DEFAULT_SEVERITY
from ovseg3d_core.evaluation import (
    MEAN_FUSION,
    TOPK_FUSION,
    EvaluationConfig,
    EvaluationResult,
    evaluate_scans,
    fused_miou,
    lift_frames,
    severity_for,
)
from ovseg3d_core.geometry import unpack_voxel_keys
from ovseg3d_core.labeling import Labeler, LabelingConfig
from ovseg3d_core.paths import shipped_checkpoints
from ovseg3d_core.purify.pooling import GeometryGuidedPooling, morton_order, warm_up
from ovseg3d_core.purify.student import build_student, embed_voxels, load_student, student_input_features
from ovseg3d_core.scene import SceneConfig, SceneMap
from ovseg3d_core.segmenter import PURIFICATION_MODES, SegmenterConfig
from ovseg3d_core.tools.evaluate import write_panel

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = "[2D source: noisy oracle, a benchmark instrument]"
MODES = [mode for mode in PURIFICATION_MODES if mode != "none"]
DEFAULT_MODE = SegmenterConfig().purification
PRESETS = ("default", "independent")
MIXES = ("per_object", "mixed", "per_view")  # mixed at the calibrated severity is the default preset
TARGET_FUSED = 0.50
GEOPURIFY = {"fusion": 50.2, "purified": 55.1, "gain": 4.9, "source": "GeoPurify, X-Decoder features on ScanNet20"}

# Other 20-class vocabularies (mostly new names) for the vocabulary-change timing: the all-new-names
# case is the median over the three, each new to the labeler and the text encoder when timed.
OTHER_VOCABULARY = (
    "lamp", "rug", "pillow", "monitor", "keyboard", "plant", "book", "mirror", "radiator", "stool",
    "shelf", "box", "bag", "clock", "fan", "towel", "trash can", "television", "sofa", "door",
)  # fmt: skip
NEW_VOCABULARIES = (
    OTHER_VOCABULARY,
    (
        "armchair", "bench", "blanket", "bottle", "bucket", "candle", "carpet", "ceiling lamp", "chest",
        "coat rack", "cushion", "dishwasher", "drawer", "dresser", "fireplace", "guitar", "heater", "ladder",
        "laptop", "microwave",
    ),
    (
        "nightstand", "oven", "painting", "piano", "printer", "projector", "rack", "shoe", "speaker", "stove",
        "suitcase", "tablet", "telephone", "toaster", "umbrella", "vase", "wardrobe", "washing machine",
        "whiteboard", "window blind",
    ),
)  # fmt: skip


def evaluate(scan: LabeledScan, render, seeds: int, views: int, topk: bool, **oracle) -> EvaluationResult:
    """Every purification mode against raw fusion at one noisy-oracle setting (a preset or a severity of a mix)."""
    config = EvaluationConfig(seeds=seeds, views=views, purifications=MODES, topk=topk, **oracle)
    return evaluate_scans([scan], config, render=render)


def per_seed(result: EvaluationResult, scan: str) -> dict[str, dict[int, float]]:
    """mIoU per method and seed of one scan."""
    table: dict[str, dict[int, float]] = {}
    for row in result.rows:
        if row.scan == scan:
            table.setdefault(row.method, {})[row.seed] = row.miou
    return table


def setting_summary(result: EvaluationResult, scan: str) -> dict[str, object]:
    """Per method: mIoU mean ± std over seeds, the paired gain over mean fusion, mIoU19 and mAcc (percent)."""
    scores = per_seed(result, scan)
    base = scores[MEAN_FUSION]
    methods = {}
    for method, values in scores.items():
        rows = [r for r in result.rows if r.scan == scan and r.method == method]
        miou = np.array([100 * values[s] for s in sorted(values)])
        gains = np.array([100 * (values[s] - base[s]) for s in sorted(values)])
        methods[method] = {
            "miou_per_seed": [round(float(v), 2) for v in miou],
            "miou_mean": float(miou.mean()),
            "miou_std": float(miou.std()),
            "gain_per_seed": [round(float(g), 2) for g in gains],
            "gain_mean": float(gains.mean()),
            "gain_std": float(gains.std()),
            "miou19_mean": float(np.mean([100 * r.miou19 for r in rows])),
            "macc_mean": float(np.mean([100 * r.macc for r in rows])),
            "fmiou_mean": float(np.mean([100 * r.fmiou for r in rows])),
        }
    oracle = result.config.oracle(0)
    return {
        "source": result.config.describe(),
        "preset": oracle.preset_name,
        "severity": result.config.severity,
        "error_mix": result.config.error_mix if result.config.severity is not None else None,
        "rates": oracle.rates(),
        "seeds": result.config.run_seeds(),
        "coverage": result.scans[0].coverage,
        "methods": methods,
    }


def per_class(result: EvaluationResult, scan: str, methods: list[str]) -> dict[str, dict[str, float | None]]:
    """Per-class IoU (percent, mean over seeds) of ``methods``; None for a class with no union in any seed."""
    table = {}
    for method in methods:
        rows = [r for r in result.rows if r.scan == scan and r.method == method]
        table[method] = {}
        for name in SCANNET20_CLASSES:
            values = [100 * r.per_class_iou[name] for r in rows if name in r.per_class_iou]
            table[method][name] = float(np.mean(values)) if values else None
    return table


def choose_default(summary: dict[str, object]) -> dict[str, object]:
    """The purification mode the calibrated preset favours.

    A mode replaces today's default only if its mean mIoU is higher and it is ahead in every seed
    but at most one: the seed spread of per-object errors is several points, so a mean alone can
    hinge on one lucky seed.
    """
    methods = summary["methods"]
    current = methods[DEFAULT_MODE]["miou_per_seed"]
    best = max(MODES, key=lambda mode: methods[mode]["miou_mean"])
    ahead = sum(b > c for b, c in zip(methods[best]["miou_per_seed"], current, strict=True))
    switch = best != DEFAULT_MODE and ahead >= len(current) - 1
    return {
        "current_default": DEFAULT_MODE,
        "best_mean": best,
        "seeds_ahead_of_default": ahead,
        "seeds": len(current),
        "switch": switch,
        "difference_mean": methods[best]["miou_mean"] - methods[DEFAULT_MODE]["miou_mean"],
    }


def sensitivity(scan: LabeledScan, render, args: argparse.Namespace, default: dict) -> list[dict[str, object]]:
    """Each error mix at the severity where mean fusion scores about TARGET_FUSED (the mixed one is the default row)."""
    rows = []
    for mix in MIXES:
        if mix == "mixed":
            rows.append({**default, "mix": mix, "severity": DEFAULT_SEVERITY, "sweep": "calibrated preset"})
            continue
        sweep = [
            fused_miou(scan, severity, mix, seeds=args.sweep_seeds, views=args.views, render=render)
            for severity in tqdm(args.sweep, desc=f"{mix}: severity sweep", leave=False)
        ]
        # Interpolation needs the target inside the sweep: halve the mildest severity until it is (at most 3 times).
        for _ in range(3):
            mildest = min(sweep, key=lambda point: point["severity"])
            if mildest["miou_mean"] >= TARGET_FUSED:
                break
            sweep.append(fused_miou(scan, mildest["severity"] / 2, mix, args.sweep_seeds, args.views, render))
        severity = severity_for(sweep, TARGET_FUSED)
        result = evaluate(scan, render, args.seeds, args.views, False, severity=severity, error_mix=mix)
        rows.append({**setting_summary(result, scan.name), "mix": mix, "severity": severity, "sweep": sweep})
    return rows


@dataclass
class VoxelScene:
    """A voxelised point set with the per-voxel inputs the student and pooling need (the timing scene)."""

    scene: SceneMap
    positions: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    coords: np.ndarray
    features: np.ndarray | None = None


def voxelise(points: np.ndarray, colors: np.ndarray, point_normals: np.ndarray) -> VoxelScene:
    """2 cm voxels of ``points``; PCA normals oriented like the mesh normals of their points."""
    scene = SceneMap(SceneConfig(voxel_size=0.02, feature_dtype="float32"))
    scene.integrate_points(points.astype(np.float32), colors)
    normals = scene.normals()
    slots = scene.slots_of_points(points)
    mesh_side = np.zeros((len(scene), 3))
    np.add.at(mesh_side, slots, point_normals)
    normals[np.einsum("ij,ij->i", normals, mesh_side) < 0] *= -1
    return VoxelScene(scene, scene.positions(), scene.colors(), normals, unpack_voxel_keys(scene.keys))


def timing_scene(scan: LabeledScan, positions: np.ndarray, features: np.ndarray, target: int) -> VoxelScene:
    """A ``target``-voxel contiguous crop of the densely sampled mesh, features from the nearest evaluated voxel."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(scan.points.astype(np.float64)), o3d.utility.Vector3iVector(scan.faces)
    )
    mesh.vertex_colors = o3d.utility.Vector3dVector(scan.colors.astype(np.float64) / 255.0)
    mesh.compute_vertex_normals()
    cloud = mesh.sample_points_uniformly(number_of_points=int(target * 6), use_triangle_normal=True)
    points = np.asarray(cloud.points)
    colors = np.clip(np.rint(np.asarray(cloud.colors) * 255), 0, 255).astype(np.uint8)
    dense = voxelise(points, colors, np.asarray(cloud.normals))
    keep = np.sort(morton_order(dense.positions)[:target])
    crop = dense.scene.subset(keep)
    crop_positions = crop.positions()
    _, nearest = cKDTree(positions).query(crop_positions, workers=-1)
    coords = unpack_voxel_keys(crop.keys)
    return VoxelScene(crop, crop_positions, crop.colors(), dense.normals[keep], coords, features[nearest])


def measure(function, repeats: int = 1) -> tuple[object, float, float]:
    """(last result, median wall ms, median process CPU ms) of ``repeats`` calls.

    CPU time counts this process's cycles over all its threads (torch's and numpy's BLAS); next to
    the wall time it shows how much of a slow run was waiting for the shared machine's cores.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(1000 * (time.perf_counter() - wall))
        cpus.append(1000 * (time.process_time() - cpu))
    return result, statistics.median(walls), statistics.median(cpus)


def timed(function) -> tuple[object, float]:
    """(result, wall seconds) of one call."""
    result, wall_ms, _ = measure(function)
    return result, wall_ms / 1000


def kernel_start_up_ms(fresh: bool) -> float:
    """ms a new process spends in the pooling kernels' :func:`warm_up`, measured in a subprocess.

    ``fresh``: numba's cache is an empty folder, so every kernel layout is compiled (what a new
    install pays once); otherwise they load from the on-disk cache (every later start).
    """
    code = "from ovseg3d_core.purify.pooling import warm_up; print(1000 * warm_up())"
    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "NUMBA_CACHE_DIR": empty} if fresh else None
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def bench_timings(
    scan: LabeledScan,
    positions: np.ndarray,
    features: np.ndarray,
    encoder: MiniLMTextEncoder,
    target: int,
    repeats: int,
    thread_counts: list[int],
    checkpoints: list[Path],
) -> dict[str, object]:
    """Student, pooling, labeling and vocabulary-change timings on a ``target``-voxel scene.

    Measured for each thread count of torch and of the numba pooling kernels (the benchmark
    machine's 2 cores are shared with other jobs, where one thread is often faster); the headline
    numbers come from the fastest logit path. The kernels are compiled before any timing (their
    start-up cost is reported on its own).
    """
    import torch

    crop = timing_scene(scan, positions, features, target)
    model = load_student(checkpoints[0]) if checkpoints else build_student()
    semantic = crop.features if model.config.variant == "official" else None
    inputs = student_input_features(model.config, crop.coords, crop.colors, crop.normals, semantic)
    embed_voxels(model, crop.coords[:2000], inputs[:2000])
    embeddings = embed_voxels(model, crop.coords, inputs)
    operator, build_s = timed(lambda: GeometryGuidedPooling().from_embeddings(crop.positions, embeddings))
    warm_up()  # a robot pays this at its first purify, never in a label request
    start_up = {"jit_compile_ms": kernel_start_up_ms(fresh=True), "jit_cache_load_ms": kernel_start_up_ms(fresh=False)}

    def pool_and_label(path: str) -> tuple[Labeler, np.ndarray]:
        labeler = Labeler(encoder, LabelingConfig(path=path), vocabulary=SCANNET20_CLASSES)
        labeler.set_scene(crop.features, operator)
        return labeler, labeler.label().labels

    def change(labeler: Labeler, vocabularies: tuple[tuple[str, ...], ...]) -> tuple[float, float]:
        """Median (wall ms, CPU ms) of switching to each vocabulary in turn."""
        walls, cpus = [], []
        for vocabulary in vocabularies:
            encoder.clear_cache()  # names the robot has never encoded
            _, wall, cpu = measure(lambda v=vocabulary: (labeler.set_vocabulary(v), labeler.label()))
            walls.append(wall)
            cpus.append(cpu)
        return statistics.median(walls), statistics.median(cpus)

    by_threads: dict[int, dict[str, float]] = {}
    default_threads = torch.get_num_threads(), numba.get_num_threads()
    for threads in tqdm(thread_counts, desc="timings per thread count", leave=False):
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        pool_and_label("logit")  # warm-up (first touch of the buffers)
        _, logit_ms, logit_cpu = measure(lambda: pool_and_label("logit"), repeats)
        (feature_labeler, feature_labels), feature_ms, feature_cpu = measure(lambda: pool_and_label("feature"))
        logit_labeler, logit_labels = pool_and_label("logit")
        _, forward_ms, forward_cpu = measure(lambda: embed_voxels(model, crop.coords, inputs), repeats)
        entry = {
            "student_forward_ms": forward_ms,
            "student_forward_ms_cpu": forward_cpu,
            "pool_ms_logit": logit_ms,
            "pool_ms_logit_cpu": logit_cpu,
            "pool_ms_feature": feature_ms,
            "pool_ms_feature_cpu": feature_cpu,
            "logit_speedup": feature_ms / logit_ms,
            "paths_label_agreement": float((logit_labels == feature_labels).mean()),
        }
        for key, labeler, vocabulary in (
            ("vocab_change_ms_logit_new_names", logit_labeler, NEW_VOCABULARIES),
            ("vocab_change_ms_logit_known_names", logit_labeler, (SCANNET20_CLASSES[::-1],) * 3),
            ("vocab_change_ms_feature_path", feature_labeler, NEW_VOCABULARIES),
        ):
            entry[key], entry[f"{key}_cpu"] = change(labeler, vocabulary)
        by_threads[threads] = entry
    torch.set_num_threads(default_threads[0])
    numba.set_num_threads(default_threads[1])
    best = min(by_threads, key=lambda t: by_threads[t]["pool_ms_logit"])
    return {
        "timing_voxels": len(crop.positions),
        "timing_torch_threads": best,
        **by_threads[best],
        "timings_by_threads": by_threads,
        "student_for_timing": checkpoints[0].name if checkpoints else "random-init student (timing only)",
        "operator_build_ms": 1000 * build_s,
        **start_up,
    }


def run_timings(scan: LabeledScan, render, args: argparse.Namespace) -> tuple[object, dict[str, object]]:
    """The lifted map of the default preset's seed 0 and the timings measured on a crop of it."""
    frames = render(scan, args.views, 0)
    lifted = lift_frames(EvaluationConfig().segmenter_config(0, "mean"), frames, what="timing scene features")
    timings = bench_timings(
        scan,
        lifted.scene.positions(),
        lifted.scene.features().astype(np.float32),
        MiniLMTextEncoder(),
        args.timing_voxels,
        args.repeats,
        args.threads,
        [shipped_checkpoints() / "student" / "geometry_fpfh_normals.pt"],
    )
    return lifted, timings


def rerun(args: argparse.Namespace) -> dict[str, object]:
    """The existing report with one part measured again: the timings (on a machine without other jobs)
    or the sensitivity (after a change to the sweep); the other sections are kept as they are."""
    run_start = time.perf_counter()
    result = json.loads((args.out / f"{args.stem}.json").read_text())
    scan = load_scan(data_path("scannet", "scene0000_00"))
    if args.only == "timings":
        result.update(run_timings(scan, scan_views, args)[1])
    else:
        result["sensitivity"] = sensitivity(scan, functools.cache(scan_views), args, result["presets"]["default"])
    platform_now = {"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
    return {**result, "platform": platform_now, f"{args.only}_rerun_seconds": time.perf_counter() - run_start}


def run(args: argparse.Namespace) -> dict[str, object]:
    run_start = time.perf_counter()
    scan = load_scan(data_path("scannet", "scene0000_00"))
    render = functools.cache(scan_views)  # one set of views for every setting
    results = {
        preset: evaluate(scan, render, args.seeds, args.views, True, noise=preset)
        for preset in tqdm(args.presets, desc="presets")
    }
    presets = {preset: setting_summary(result, scan.name) for preset, result in results.items()}
    default = results["default"]
    write_panel(default, scan, default.scans[0], args.out / f"{args.stem}.png")
    mixes = sensitivity(scan, render, args, presets["default"]) if args.sweep else []
    lifted, timings = run_timings(scan, render, args)
    return {
        "scene": scan.name,
        "feature_source": "noisy oracle",
        "feature_source_note": "a benchmark instrument: ground-truth labels with simulated 2D VLM errors over "
        "MiniLM text embeddings; not a VLM result",
        "metric": "ScanNet20 on every labelled point (unobserved points are misses), ScanNet's single-scan rule",
        "vocabulary": list(SCANNET20_CLASSES),
        "views": args.views,
        "points": scan.num_points,
        "labelled_points": int((scan.segment20 >= 0).sum()),
        "voxels": len(lifted.scene),
        "seeds": list(range(args.seeds)),
        "presets": presets,
        "sensitivity": mixes,
        "per_class_iou": per_class(default, scan.name, [MEAN_FUSION, TOPK_FUSION, *MODES]),
        "default_choice": choose_default(presets["default"]),
        "geopurify_published": GEOPURIFY,
        **timings,
        "quick": bool(args.quick),
        "platform": {"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
        "total_seconds": time.perf_counter() - run_start,
    }


def pm(entry: dict, key: str = "miou") -> str:
    return f"{entry[f'{key}_mean']:.1f} ± {entry[f'{key}_std']:.1f}"


def write_markdown(result: dict[str, object], path: Path) -> None:
    lines = [
        "# Segmentation benchmark (noisy oracle, ScanNet scene0000_00)",
        "",
        f"2D features come from the **{result['feature_source']}** ({result['feature_source_note']}). "
        f"Run through `ovseg3d_core.evaluation.evaluate_scans` (what `ovseg3d-eval` runs, the node's "
        f"`SceneSegmenter`): {result['views']} views along a coverage walk, {result['voxels']} voxels at 2 cm, "
        f"{result['labelled_points']} labelled points scored. Metric: {result['metric']}. Scores are "
        f"percentages; ± is the standard deviation over seeds {result['seeds']}; gains over mean fusion are "
        "paired per seed.",
        "",
        "## Presets",
        "",
        "| preset | method | mIoU | per seed | gain over mean fusion | mIoU (19 cls) | mAcc | f-mIoU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset, summary in result["presets"].items():
        for method, s in summary["methods"].items():
            gain = "" if method == MEAN_FUSION else f"{s['gain_mean']:+.1f} ± {s['gain_std']:.1f}"
            seeds = " / ".join(f"{v:.1f}" for v in s["miou_per_seed"])
            marker = " (default)" if method == DEFAULT_MODE else ""
            lines.append(
                f"| {preset} | {method}{marker} | {pm(s)} | {seeds} | {gain} | {s['miou19_mean']:.1f} | "
                f"{s['macc_mean']:.1f} | {s['fmiou_mean']:.1f} |"
            )
    g = result["geopurify_published"]
    lines += [
        f"| published | {g['source']} | {g['purified']} (fusion {g['fusion']}) | | {g['gain']:+.1f} | | | |",
        "",
    ]
    for preset, summary in result["presets"].items():
        lines.append(
            f"- `{preset}`: {summary['source']}; coverage {100 * summary['coverage']:.0f}% of labelled points."
        )
    choice = result["default_choice"]
    verdict = (
        f"`{choice['best_mean']}` wins ({choice['difference_mean']:+.1f} mIoU on the mean, ahead in "
        f"{choice['seeds_ahead_of_default']} of {choice['seeds']} seeds): it should be the default"
        if choice["switch"]
        else f"`{choice['current_default']}` stays the default (best mean: `{choice['best_mean']}`, "
        f"{choice['difference_mean']:+.1f} mIoU, ahead in {choice['seeds_ahead_of_default']} of "
        f"{choice['seeds']} seeds; a switch needs a higher mean and all seeds but one ahead)"
    )
    lines += ["", f"**Default purification at the calibrated preset:** {verdict}.", ""]
    if result["sensitivity"]:
        lines += [
            "## Sensitivity: the kind of error, at the same fused score",
            "",
            f"Each error mix at the severity where mean fusion scores about {100 * TARGET_FUSED:.0f} mIoU (a "
            "sweep of mean fusion on the same seeds, then every method at the chosen severity). `per_object`: "
            "object errors dominate; `mixed`: the calibrated default preset; `per_view`: no object errors.",
            "",
            "| error mix | severity | mean fusion | " + " | ".join(f"{m} (gain)" for m in MODES) + " |",
            "|---|---|---|" + "---|" * len(MODES),
        ]
        for row in result["sensitivity"]:
            cells = [
                f"{pm(row['methods'][m])} ({row['methods'][m]['gain_mean']:+.1f} ± {row['methods'][m]['gain_std']:.1f})"
                for m in MODES
            ]
            lines.append(
                f"| {row['mix']} | {row['severity']:g} | {pm(row['methods'][MEAN_FUSION])} | "
                + " | ".join(cells)
                + " |"
            )
        lines += [""]
        for row in result["sensitivity"]:
            lines.append(f"- `{row['mix']}`: {row['source']}")
        lines += [""]
    methods = list(result["per_class_iou"])
    lines += [
        "## Per-class IoU, `default` preset (mean over seeds)",
        "",
        "| class | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for name in SCANNET20_CLASSES:
        cells = [result["per_class_iou"][m][name] for m in methods]
        lines.append(f"| {name} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells) + " |")
    by_threads = result["timings_by_threads"]
    lines += [
        "",
        "## Timings",
        "",
        f"On a {result['timing_voxels']}-voxel crop of the densely sampled mesh, 20 classes, "
        f"{result['platform']['cpus']} CPUs (1-min load average {result['platform']['load_avg_1min']:.1f}: the "
        "machine is shared with other jobs, so wall times are pessimistic; rows ending in `_cpu` are this "
        "process's CPU time summed over all its threads, torch's, numpy's and numba's). Student forward with "
        f"{result['student_for_timing']}; operator build (K=96 kNN + affinities) {result['operator_build_ms']:.0f} ms. "
        "The pooling kernels (numba) were warmed up before any timing: a new process loads them from numba's "
        f"on-disk cache in {result['jit_cache_load_ms']:.0f} ms; compiling them from scratch (once per install) "
        f"takes {result['jit_compile_ms']:.0f} ms. A vocabulary change is the median over three 20-name "
        "vocabularies, each new to the labeler and the text encoder (MiniLM encoding included); the "
        "known-names case switches back to ScanNet20.",
        "",
        "| quantity (ms) | " + " | ".join(f"{t} thread(s)" for t in by_threads) + " |",
        "|---|" + "---|" * len(by_threads),
    ]
    for key in next(iter(by_threads.values())):
        cells = [f"{v[key]:.4f}" if key == "paths_label_agreement" else f"{v[key]:.1f}" for v in by_threads.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"The top-level JSON timings use {result['timing_torch_threads']} thread(s) (fastest logit path); the targets "
        "below take each quantity at its best thread count. The logit and feature paths give the same label on the "
        "fraction of voxels in `paths_label_agreement`.",
        "",
        "## Targets",
        "",
        *[f"- {line}" for line in result["targets"]],
        "",
        f"![ground truth, raw fusion and each purification mode, default preset, seed 0]({path.stem}.png)",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


def targets(result: dict[str, object]) -> list[str]:
    """The measured figures against the issue's targets and the published reference."""
    default = result["presets"]["default"]["methods"][DEFAULT_MODE]
    g = result["geopurify_published"]
    out = [
        f"default purification ({DEFAULT_MODE}) at the calibrated `default` preset: {default['gain_mean']:+.1f} ± "
        f"{default['gain_std']:.1f} mIoU over mean fusion, per seed {default['gain_per_seed']} (GeoPurify "
        f"published {g['gain']:+.1f}: {g['fusion']} -> {g['purified']})"
    ]
    size = f"{result['timing_voxels']} voxels" + (
        " (the targets are set for 100000)" if result["timing_voxels"] < 1e5 else ""
    )
    checks = (
        (f"pooling + labeling of {size} via the logit path <= 300 ms", "pool_ms_logit", 300),
        (f"student forward of {size} <= 1500 ms", "student_forward_ms", 1500),
        ("vocabulary change <= 300 ms (feature path keeps pooled features)", "vocab_change_ms_feature_path", 300),
        ("vocabulary change <= 300 ms (logit path, all-new names)", "vocab_change_ms_logit_new_names", 300),
        ("vocabulary change <= 300 ms (logit path, known names)", "vocab_change_ms_logit_known_names", 300),
    )
    speedup = result["logit_speedup"]
    out.append(
        f"logit path >= 10x faster than the feature path ({size}, {result['timing_torch_threads']} thread(s)): "
        f"{speedup:.1f}x: {'met' if speedup >= 10 else 'NOT met'}"
    )
    by_threads = {int(t): v for t, v in result["timings_by_threads"].items()}
    for text, key, limit in checks:
        threads = min(by_threads, key=lambda t, k=key: by_threads[t][k])  # a deployment picks its thread count
        wall, cpu = by_threads[threads][key], by_threads[threads][f"{key}_cpu"]
        verdict = "met" if wall <= limit else "NOT met"
        out.append(f"{text}: {wall:.0f} ms wall, {cpu:.0f} ms CPU (best of thread counts: {threads}): {verdict}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="default preset, one seed, 24 views, no sensitivity")
    parser.add_argument("--views", type=int, default=80, help="rendered views (default 80; quick 24)")
    parser.add_argument("--seeds", type=int, default=5, help="noisy-oracle seeds per setting (default 5)")
    parser.add_argument("--sweep", type=float, nargs="*", default=[0.25, 0.5, 1.0], help="severities of the mix sweep")
    parser.add_argument(
        "--sweep-seeds", type=int, help="seeds per sweep point (default: all): per-object errors vary by seed"
    )
    parser.add_argument("--timing-voxels", type=int, default=100_000, help="timing scene size (quick 20k)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--only", choices=("timings", "sensitivity"), help="measure only this part again and update the existing report"
    )
    args = parser.parse_args()
    args.presets, args.threads, args.repeats = PRESETS, [1, 2], 3
    if args.quick:
        args.presets, args.threads, args.repeats = ("default",), [1], 1
        args.views, args.seeds, args.sweep, args.timing_voxels = 24, 1, [], 20_000
    args.stem = "segmentation_quick" if args.quick else "segmentation"
    args.sweep_seeds = args.sweep_seeds or args.seeds
    args.out.mkdir(parents=True, exist_ok=True)
    result = rerun(args) if args.only else run(args)
    result["targets"] = targets(result)
    atomic_write_text(args.out / f"{args.stem}.json", json.dumps(result, indent=2))
    write_markdown(result, args.out / f"{args.stem}.md")
    print("\n".join(f"{SOURCE} {line}" for line in result["targets"]))
    print(f"{SOURCE} wrote {args.out / f'{args.stem}.json'} in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
