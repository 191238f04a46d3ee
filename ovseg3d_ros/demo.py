"""`make demo`: replay a real scene through the ovseg3d nodes and show what they see.

1. builds (once, cached) a bag of views rendered from the annotated ScanNet scan scene0000_00,
   with `semantic/image` for the noisy-oracle 2D source (real CLIP weights cannot be had here);
2. starts scene_node and retrieval_node through the bringup, in their own process;
3. plays the bag, sets a vocabulary (ScanNet20 + free text), waits for purification, queries the
   scene and retrieves shapes from a description, as a user would over ROS services;
4. writes demo_output/: the labeled cloud (PLY), PNG renders (ground truth / raw fusion /
   purified; top-down and perspective), the legend, the query render, the retrieval panel and
   summary.json, and prints a short summary.

    python -m ovseg3d_ros.demo [--frames 60] [--out demo_output] [--backend openclip --checkpoint FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovseg3d_core.paths import cache_dir

FREE_TEXT_LABELS = ["something to sit on", "a place to sleep", "a shelf full of books"]
QUERY_TEXT = "something to sit on"
RETRIEVAL_TEXT = "a round wooden table with one central leg"
DEMO_PARAMS = """
scene_node:
  ros__parameters:
    purify_period_s: 15.0
    queue_size: 1000
    status_period_s: 10.0
    keyframes: {{translation_m: 0.0, rotation_deg: 0.0, interval_s: 0.0}}
    segmenter:
      purification: {purification}
      student_checkpoint: "{student}"
      encoders:
        dense: {backend}
        checkpoint: "{checkpoint}"
retrieval_node:
  ros__parameters:
    database: {{procedural_shapes: {shapes}}}
"""


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str, start: float) -> None:
        self.seconds[name] = round(time.perf_counter() - start, 3)


SOURCE_LABELS = {"noisy_oracle": "noisy oracle", "openclip": "openclip"}
source_label = SOURCE_LABELS["noisy_oracle"]  # every line names the 2D source; set by run()


def log(message: str) -> None:
    print(f"[demo | {source_label}] {message}", flush=True)


def demo_bag(frames: int, seed: int) -> Path:
    """The cached bag of rendered ScanNet views (built on first use, ~1 s per view)."""
    from ovseg3d_core.data.rendering import RENDERER_VERSION
    from ovseg3d_ros.bag_tools import dataset_frames, write_bag

    cache = cache_dir() / "demo"
    bag = cache / f"scannet0000-{frames}views-seed{seed}-r{RENDERER_VERSION}"
    if not (bag / "metadata.yaml").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{bag.name}.tmp{os.getpid()}"
        log(f"rendering {frames} views of ScanNet scene0000_00 into a bag (cached in {cache})")
        write_bag(dataset_frames("scannet", frames, seed=seed), tmp, expected_frames=frames, description="ovseg3d demo")
        tmp.rename(bag)
    return bag


def last_message_ns(bag: Path) -> int:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return reader.end_time - 1  # rosbags reports the nanosecond after the last message


def cloud_stamp_ns(cloud) -> int:
    from ovseg3d_ros.conversions import stamp_to_nanoseconds

    return stamp_to_nanoseconds(cloud.header.stamp)


def wait_for_last_frame(
    newest_stamp_ns: Callable[[], int | None],
    wait: Callable[[float], object],
    last_ns: int,
    stall_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Wait until the newest cloud includes the bag's last frame (True) or the node stopped progressing (False).

    Frames travel best-effort: when one of the last frame's messages is lost, no cloud ever carries
    its stamp, so the wait also ends once the newest cloud's stamp has not advanced for
    ``stall_s`` (the node has integrated everything it received). ``wait(seconds)`` spins the
    client; a node that never publishes within ``timeout_s`` is an error.
    """
    deadline = clock() + timeout_s
    newest, since = None, clock()
    while clock() < deadline:
        stamp = newest_stamp_ns()
        if stamp is not None and stamp >= last_ns:
            return True
        if stamp != newest:
            newest, since = stamp, clock()
        elif stamp is not None and clock() - since >= stall_s:
            return False
        wait(0.5)
    raise RuntimeError(f"scene_node published no cloud that settled within {timeout_s:.0f} s")


def start_nodes(params: Path, log_path: Path) -> subprocess.Popen:
    """The bringup in its own process; Linux stops it with SIGTERM if the demo itself is killed."""
    command = [sys.executable, "-m", "ovseg3d_ros.bringup", "--params", str(params)]
    return subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ground_truth(scan, positions: np.ndarray, max_distance: float = 0.05) -> np.ndarray:
    """ScanNet20 id of each voxel's nearest annotated vertex (ignored when farther than ``max_distance``).

    Only for the ground-truth panel, which is drawn on the voxels; the scores use the vertices.
    """
    from scipy.spatial import cKDTree

    from ovseg3d_core.data.scannet import IGNORE_INDEX

    distance, nearest = cKDTree(scan.vertices).query(positions)
    return np.where(distance <= max_distance, scan.scannet20_ids[nearest], IGNORE_INDEX)


def evaluate(scene_file: Path, config, out: Path, timings: Timings) -> dict:
    """Raw fusion vs purification on the saved map, scored on the scan's vertices; writes the PNG panels.

    As the official evaluations do, every labelled vertex of the scan is scored, so a vertex the
    map never observed (no voxel, or a voxel no 2D feature reached) is a miss instead of dropping
    out; one scan, so ScanNet's single-scan rule averages the classes with a non-zero union.
    """
    from ovseg3d_core.data.scannet import IGNORE_INDEX, SCANNET20_CLASSES, load_scannet_scan
    from ovseg3d_core.metrics.scan_points import scan_point_labels
    from ovseg3d_core.metrics.segmentation import SINGLE_SCAN, confusion_matrix, scannet20_metrics
    from ovseg3d_core.segmenter import SceneSegmenter
    from ovseg3d_core.viz.cloud_render import render_label_panels

    start = time.perf_counter()
    scan = load_scannet_scan()
    vertex_gt = scan.scannet20_ids
    results, labels = {}, {}
    for mode in ("none", config.purification):
        segmenter = SceneSegmenter(config.replace(purification=mode))
        segmenter.load(scene_file)
        labeling = segmenter.label(list(SCANNET20_CLASSES))
        points = scan_point_labels(segmenter.scene, scan.vertices, labeling.labels)
        confusion = confusion_matrix(vertex_gt, points.labels, len(SCANNET20_CLASSES))
        results[mode] = scannet20_metrics(confusion, rule=SINGLE_SCAN).to_dict()
        labels[mode] = labeling.labels
    timings.measure("evaluation_s", start)
    positions = segmenter.scene.positions()
    panels = [("ground truth (ScanNet20)", ground_truth(scan, positions)), ("raw multi-view fusion", labels["none"])]
    panels.append((f"purified ({config.purification})", labels[config.purification]))
    for view in ("top", "perspective"):
        render_label_panels(out / f"labels_{view}.png", positions, panels, SCANNET20_CLASSES, view=view)
    return {
        "raw": results["none"],
        "purified": results[config.purification],
        "rule": results["none"]["rule"],
        "scored": "every labelled vertex of the scan; vertices the map never observed count as misses",
        "labelled_vertices": int((vertex_gt != IGNORE_INDEX).sum()),
        "unobserved_vertices": points.unobserved_labelled(vertex_gt),
        "voxels": len(positions),
    }


def write_query_render(reply, scene_points: np.ndarray, out: Path) -> Path:
    """The query's matching voxels in their score colours over the whole scene in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ovseg3d_core.viz.cloud_render import rasterize
    from ovseg3d_ros.conversions import read_labeled_cloud

    cloud = read_labeled_cloud(reply.cloud)
    points = np.concatenate([scene_points, cloud.points])
    colors = np.concatenate([np.full((len(scene_points), 3), 0.85), cloud.colors / 255.0])
    path = out / "query.png"
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(rasterize(points, colors, view="perspective"))
    ax.set_title(
        f'"{QUERY_TEXT}": {len(cloud.points)} voxels above the threshold (max score {reply.max_score:.2f})',
        fontsize=9,
    )
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_retrieval_panel(reply, database_shapes: int, out: Path) -> Path:
    """The retrieved shapes' thumbnails, read from the same cached database the node answered from."""
    from ovseg3d_core.retrieval.database import ShapeDatabase, ShapeDatabaseConfig
    from ovseg3d_core.viz.retrieval_panel import save_retrieval_panel

    database = ShapeDatabase.load_or_build(ShapeDatabaseConfig(procedural_shapes=database_shapes), progress=False)
    renders = [database.thumbnails[shape_id] for shape_id in reply.shape_ids]
    return save_retrieval_panel([RETRIEVAL_TEXT], [renders], out / "retrieval.png", scores=[list(reply.scores)])


def run(args: argparse.Namespace) -> dict:
    import rclpy
    import yaml

    from ovseg3d_core.data.scannet import SCANNET20_CLASSES
    from ovseg3d_core.viz.cloud_render import label_palette
    from ovseg3d_ros.bag_tools import play_bag
    from ovseg3d_ros.client import Ovseg3dClient
    from ovseg3d_ros.conversions import read_labeled_cloud
    from ovseg3d_ros.fastdds_profile import use_fastdds_profile
    from ovseg3d_ros.scene_node import SceneNodeConfig

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings()
    start = time.perf_counter()
    bag = demo_bag(args.frames, args.seed)
    timings.measure("bag_s", start)

    backend = args.backend
    params = out / "params.yaml"
    params.write_text(
        DEMO_PARAMS.format(
            purification=args.purification,
            student="",
            backend=backend,
            checkpoint=args.checkpoint or "",
            shapes=args.database_shapes,
        )
    )
    node_params = yaml.safe_load(params.read_text())["scene_node"]["ros__parameters"]
    node_config = SceneNodeConfig.from_dict(node_params).segmenter
    global source_label
    source_label = SOURCE_LABELS[backend]
    oracle = node_config.encoders.noisy_oracle
    source = (
        f"noisy oracle (a benchmark instrument: simulated 2D VLM errors on ground-truth labels), {oracle.describe()}"
    )
    source = source if backend == "noisy_oracle" else f"openclip ({args.checkpoint})"
    log(f"2D feature source: {source}; purification: {args.purification}")
    use_fastdds_profile()
    nodes = start_nodes(params, out / "nodes.log")
    context = rclpy.Context()
    rclpy.init(context=context)
    client = Ovseg3dClient(context, name="ovseg3d_demo")
    summary: dict = {"backend": source, "frames": args.frames, "files": {}}
    try:
        # On a first run retrieval_node builds its shape database (about a minute of CPU); playing
        # meanwhile starves scene_node, which then loses frames, so playback waits for it.
        log("waiting for retrieval_node's shape database (built on the first run, then cached)")
        start = time.perf_counter()
        ready = client.retrieve(RETRIEVAL_TEXT, k=1, ready_timeout=1200)
        if not ready.success:
            raise RuntimeError(f"retrieval_node is not ready: {ready.message}")
        timings.measure("retrieval_ready_s", start)
        log(f"playing {bag.name} into scene_node (node log: {out / 'nodes.log'})")
        start = time.perf_counter()
        played = play_bag(bag, context=context, rate=args.rate, wait_for_subscribers_s=180, progress=True)
        timings.measure("playback_s", start)
        if played.interrupted:
            raise RuntimeError("playback was interrupted")
        log("waiting for scene_node to integrate every frame and purify")
        start = time.perf_counter()
        covered = wait_for_last_frame(
            lambda: cloud_stamp_ns(client.clouds[-1]) if client.clouds else None,
            lambda seconds: client.wait_for(lambda: False, seconds),
            last_message_ns(bag),
            stall_s=max(60.0, 4 * node_params["purify_period_s"]),
            timeout_s=1800,
        )
        if not covered:
            log("scene_node's newest cloud does not include the last frame: some messages were lost in transport")
        timings.measure("integration_wait_s", start)
        start = time.perf_counter()
        vocabulary = [*SCANNET20_CLASSES, *FREE_TEXT_LABELS]
        reply, cloud_msg = client.next_cloud(lambda: client.set_vocabulary(vocabulary), timeout=600)
        if not reply.success:
            raise RuntimeError(f"set_vocabulary failed: {reply.message}")
        timings.measure("purify_and_label_s", start)
        cloud = read_labeled_cloud(cloud_msg)
        client.wait_for(lambda: list(client.legends[-1].labels[:-1]) == vocabulary, 30)
        legend = client.legends[-1]
        (out / "legend.json").write_text(
            json.dumps(
                {
                    "labels": list(legend.labels),
                    "colors": [[c.r, c.g, c.b] for c in legend.colors],
                    "point_counts": list(legend.point_counts),
                },
                indent=2,
            )
        )
        summary["files"]["legend"] = "legend.json"

        start = time.perf_counter()
        query = client.query(QUERY_TEXT, threshold=args.query_threshold)
        timings.measure("query_s", start)
        if not query.success:
            raise RuntimeError(f"query failed: {query.message}")
        summary["query"] = {"text": QUERY_TEXT, "message": query.message, "max_score": round(query.max_score, 4)}
        summary["files"]["query"] = write_query_render(query, cloud.points, out).name

        start = time.perf_counter()
        retrieved = client.retrieve(RETRIEVAL_TEXT, k=5, include_clouds=True, ready_timeout=600)
        timings.measure("retrieve_s", start)
        if not retrieved.success:
            raise RuntimeError(f"retrieve failed: {retrieved.message}")
        summary["retrieval"] = {
            "text": RETRIEVAL_TEXT,
            "shape_ids": list(retrieved.shape_ids),
            "scores": [round(float(s), 4) for s in retrieved.scores],
        }
        summary["files"]["retrieval"] = write_retrieval_panel(retrieved, args.database_shapes, out).name

        scene_file = out / "scene.npz"
        saved = client.save(str(scene_file))
        if not saved.success:
            raise RuntimeError(f"save failed: {saved.message}")
    finally:
        client.close()
        rclpy.shutdown(context=context)
        nodes.send_signal(signal.SIGINT)
        try:
            nodes.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nodes.kill()

    log("evaluating raw fusion vs purified labels against the ScanNet annotation")
    summary["segmentation"] = evaluate(scene_file, node_config, out, timings)
    summary["files"].update({"labels_top": "labels_top.png", "labels_perspective": "labels_perspective.png"})

    from ovseg3d_core.scene import SceneMap

    scene = SceneMap.load(scene_file)
    summary["frames_integrated"] = scene.integrations
    if len(scene) != len(cloud.points) or not np.allclose(scene.positions(), cloud.points, atol=1e-4):
        log("labeled_cloud.ply not written: the saved map no longer matches the labeled cloud")
    else:
        palette = (label_palette(len(vocabulary)) * 255).astype(np.uint8)
        scene.to_ply(
            out / "labeled_cloud.ply",
            colors=palette[cloud.labels],
            fields={"label": cloud.labels, "score": cloud.scores},
        )
        summary["files"]["labeled_cloud"] = "labeled_cloud.ply"
    summary["labeled_voxels"] = len(cloud.points)
    summary["timings_s"] = timings.seconds
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict, out: Path) -> None:
    seg = summary["segmentation"]
    raw, pur = seg["raw"], seg["purified"]
    print()
    print(f"ovseg3d demo — {summary['frames']} views of ScanNet scene0000_00, 2D source: {summary['backend']}")
    print(f"  frames integrated         {summary['frames_integrated']} of {summary['frames']} played")
    print(f"  voxels labeled            {seg['voxels']}")
    print(
        f"  scored vertices           {seg['labelled_vertices']} labelled, "
        f"{seg['unobserved_vertices']} never observed (misses)"
    )
    print(f"  averaging rule            {seg['rule']}")
    print(
        f"  ScanNet20 mIoU / mAcc     raw fusion {raw['miou']:.3f} / {raw['macc']:.3f}"
        f"   purified {pur['miou']:.3f} / {pur['macc']:.3f}"
    )
    print(f'  query "{summary["query"]["text"]}": {summary["query"]["message"]}')
    ids = ", ".join(
        f"{i} ({s:.2f})" for i, s in zip(summary["retrieval"]["shape_ids"], summary["retrieval"]["scores"], strict=True)
    )
    print(f'  retrieve "{summary["retrieval"]["text"]}": {ids}')
    print("  timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    print(f"  files in {out}: " + ", ".join(sorted(summary["files"].values())) + ", summary.json")


def main(argv: list[str] | None = None) -> int:
    from ovseg3d_core.segmenter import PURIFICATION_MODES, SegmenterConfig

    parser = argparse.ArgumentParser(description="Replay a real scene through the ovseg3d nodes.")
    parser.add_argument("--frames", type=int, default=60, help="rendered ScanNet views to play (default 60)")
    parser.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    parser.add_argument("--backend", choices=("noisy_oracle", "openclip"), default="noisy_oracle")
    parser.add_argument("--checkpoint", default="", help="local OpenCLIP weights for --backend openclip")
    parser.add_argument("--purification", choices=PURIFICATION_MODES, default=SegmenterConfig.purification)
    parser.add_argument("--rate", type=float, default=1.0, help="bag playback speed factor")
    parser.add_argument("--query-threshold", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0, help="camera trajectory seed")
    parser.add_argument("--database-shapes", type=int, default=200, help="procedural shapes in the retrieval database")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.backend == "openclip" and not args.checkpoint:
        parser.error("--backend openclip needs --checkpoint PATH (local OpenCLIP weights; no hub access here)")
    start = time.perf_counter()
    summary = run(args)
    print_summary(summary, Path(args.out).resolve())
    log(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
