"""`make demo`: replay a real scene through the ovseg3d nodes and show what they see.

1. builds (once, cached) a bag of views rendered from the annotated ScanNet scan scene0000_00,
   with `semantic/image` for the noisy-oracle 2D source (real CLIP weights cannot be had here);
2. starts scene_node and retrieval_node through the bringup, in their own process;
3. plays the bag, sets a vocabulary (ScanNet20 + free text), waits for purification, queries the
   scene and retrieves shapes from a description, as a user would over ROS services;
4. writes demo_output/: the labeled cloud (PLY), PNG renders (ground truth / raw fusion /
   purified; top-down and perspective), the legend, the query render, the retrieval panel and
   summary.json, and prints a short summary.

    python -m ovseg3d_ros.tools.demo [--frames 60] [--out demo_output] [--backend openclip --checkpoint FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from scipy.spatial import cKDTree

from ovseg3d_core.atomic_file import atomic_folder
from ovseg3d_core.config import Config
from ovseg3d_core.data.scenes.rendering import RENDERER_VERSION
from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, SCANNET20_CLASSES, load_scannet_scan
from ovseg3d_core.encoders.registry import DENSE_EXTRACTORS, EncoderConfig
from ovseg3d_core.metrics.scan_points import scan_point_labels
from ovseg3d_core.metrics.segmentation import SINGLE_SCAN, confusion_matrix, scannet20_metrics
from ovseg3d_core.paths import cache_dir
from ovseg3d_core.retrieval.database import ShapeDatabase, ShapeDatabaseConfig
from ovseg3d_core.scene import SceneMap
from ovseg3d_core.segmenter import PURIFICATION_MODES, SceneSegmenter, SegmenterConfig
from ovseg3d_core.viz.cloud_render import label_palette, rasterize, render_label_panels
from ovseg3d_core.viz.retrieval_panel import save_retrieval_panel
from ovseg3d_ros.conversions import LabeledCloud, read_labeled_cloud, stamp_to_nanoseconds
from ovseg3d_ros.fastdds_profile import use_fastdds_profile
from ovseg3d_ros.nodes.retrieval_node import RetrievalNodeConfig
from ovseg3d_ros.nodes.scene_node import SceneNodeConfig
from ovseg3d_ros.tools.bag import dataset_frames, play_bag, write_bag
from ovseg3d_ros.tools.client import Ovseg3dClient

FREE_TEXT_LABELS = ["something to sit on", "a place to sleep", "a shelf full of books"]
QUERY_TEXT = "something to sit on"
RETRIEVAL_TEXT = "a round wooden table with one central leg"
PARAMS_HEADER = "# What the demo sets differently from the defaults (`ros2 param describe` shows every parameter).\n"


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record how long the block took under ``name`` (only when it succeeds: a failure ends the demo)."""
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


@dataclass
class Report:
    """What the steps produce: files in ``out`` and the summary.json entries, in the order they are made."""

    out: Path
    summary: dict[str, Any]
    timings: Timings = field(default_factory=Timings)

    def add_file(self, key: str, path: Path) -> None:
        self.summary["files"][key] = path.name


SOURCE_LABELS = {"noisy_oracle": "noisy oracle", "openclip": "openclip"}
source_label = SOURCE_LABELS["noisy_oracle"]  # every line names the 2D source; set by run()


def log(message: str) -> None:
    print(f"[demo | {source_label}] {message}", flush=True)


def demo_configs(args: argparse.Namespace) -> tuple[SceneNodeConfig, RetrievalNodeConfig]:
    """The nodes' settings for one pass over a short bag: every frame is a keyframe and none is dropped."""
    scene = SceneNodeConfig()
    segmenter = scene.segmenter
    scene = scene.replace(
        purify_period_s=15.0,
        queue_size=1000,
        keyframes=scene.keyframes.replace(translation_m=0.0, rotation_deg=0.0, interval_s=0.0),
        segmenter=segmenter.replace(
            purification=args.purification,
            encoders=segmenter.encoders.replace(dense=args.backend, checkpoint=args.checkpoint),
        ),
    )
    return scene, RetrievalNodeConfig(database=ShapeDatabaseConfig(procedural_shapes=args.database_shapes))


def changed_settings(config: Config) -> dict[str, Any]:
    """The settings of ``config`` that differ from its defaults, nested as a params file nests them."""

    def changes(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in values.items():
            if isinstance(value, dict) and isinstance(defaults[name], dict):
                value = changes(value, defaults[name])
                if value:
                    out[name] = value
            elif value != defaults[name]:
                out[name] = value
        return out

    return changes(config.to_dict(), type(config)().to_dict())


def write_params(path: Path, configs: dict[str, Config]) -> Path:
    """The bringup's params file: per node, only what the demo changes, so a reader sees just that."""
    changes = {node: changed_settings(config) for node, config in configs.items()}
    params = {node: {"ros__parameters": changed} for node, changed in changes.items() if changed}
    path.write_text(PARAMS_HEADER + yaml.safe_dump(params, sort_keys=False))
    return path


def describe_source(encoders: EncoderConfig) -> str:
    """The 2D source as the log and the summary name it; the noisy oracle with its error rates."""
    if encoders.dense == "openclip":
        return f"openclip ({encoders.checkpoint})"
    return (
        "noisy oracle (a benchmark instrument: simulated 2D VLM errors on ground-truth labels), "
        f"{encoders.noisy_oracle.describe()}"
    )


def demo_bag(frames: int, seed: int) -> Path:
    """The cached bag of rendered ScanNet views (built on first use, ~1 s per view)."""
    cache = cache_dir() / "demo"
    bag = cache / f"scannet0000-{frames}views-seed{seed}-r{RENDERER_VERSION}"
    if not (bag / "metadata.yaml").is_file():
        log(f"rendering {frames} views of ScanNet scene0000_00 into a bag (cached in {cache})")
        with atomic_folder(bag, create=False) as staging:  # the bag writer makes its own folder
            write_bag(
                dataset_frames("scannet", frames, seed=seed),
                staging,
                expected_frames=frames,
                description="ovseg3d demo",
            )
    return bag


def last_message_ns(bag: Path) -> int:
    from rosbags.rosbag2 import Reader  # heavy, and needed only here (play_bag imports it lazily too)

    with Reader(bag) as reader:
        return reader.end_time - 1  # rosbags reports the nanosecond after the last message


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
    command = [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--params", str(params)]
    return subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def running_nodes(params: Path, log_path: Path) -> Iterator[Ovseg3dClient]:
    """Both nodes (see :func:`start_nodes`) and a client to them; on leaving, the client closes and the nodes stop."""
    use_fastdds_profile()
    nodes = start_nodes(params, log_path)
    context = rclpy.Context()
    rclpy.init(context=context)
    client = Ovseg3dClient(context, name="ovseg3d_demo")
    try:
        yield client
    finally:
        client.close()
        rclpy.shutdown(context=context)
        nodes.send_signal(signal.SIGINT)
        try:
            nodes.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nodes.kill()


def wait_for_retrieval(client: Ovseg3dClient, timings: Timings) -> None:
    """Return once retrieval_node answers.

    On a first run it builds its shape database (about a minute of CPU); playing meanwhile starves
    scene_node, which then loses frames, so playback waits for it.
    """
    log("waiting for retrieval_node's shape database (built on the first run, then cached)")
    with timings.timed("retrieval_ready_s"):
        ready = client.retrieve(RETRIEVAL_TEXT, k=1, ready_timeout=1200)
        if not ready.success:
            raise RuntimeError(f"retrieval_node is not ready: {ready.message}")


def play(bag: Path, client: Ovseg3dClient, rate: float, node_log: Path, timings: Timings) -> None:
    log(f"playing {bag.name} into scene_node (node log: {node_log})")
    with timings.timed("playback_s"):
        played = play_bag(bag, context=client.context, rate=rate, wait_for_subscribers_s=180, progress=True)
    if played.interrupted:
        raise RuntimeError("playback was interrupted")


def wait_for_integration(client: Ovseg3dClient, bag: Path, purify_period_s: float, timings: Timings) -> None:
    log("waiting for scene_node to integrate every frame and purify")
    with timings.timed("integration_wait_s"):
        covered = wait_for_last_frame(
            lambda: stamp_to_nanoseconds(client.clouds[-1].header.stamp) if client.clouds else None,
            lambda seconds: client.wait_for(lambda: False, seconds),
            last_message_ns(bag),
            stall_s=max(60.0, 4 * purify_period_s),
            timeout_s=1800,
        )
        if not covered:
            log("scene_node's newest cloud does not include the last frame: some messages were lost in transport")


def label_scene(client: Ovseg3dClient, vocabulary: list[str], timings: Timings) -> LabeledCloud:
    """The cloud scene_node publishes for ``vocabulary`` (it purifies first when the map changed)."""
    with timings.timed("purify_and_label_s"):
        reply, cloud_msg = client.next_cloud(lambda: client.set_vocabulary(vocabulary), timeout=600)
        if not reply.success:
            raise RuntimeError(f"set_vocabulary failed: {reply.message}")
    return read_labeled_cloud(cloud_msg)


def write_legend(client: Ovseg3dClient, vocabulary: list[str], report: Report) -> None:
    """scene_node's latched legend for ``vocabulary`` (names, colours, voxel counts) as legend.json."""
    client.wait_for(lambda: list(client.legends[-1].labels[:-1]) == vocabulary, 30)
    legend = client.legends[-1]
    path = report.out / "legend.json"
    path.write_text(
        json.dumps(
            {
                "labels": list(legend.labels),
                "colors": [[c.r, c.g, c.b] for c in legend.colors],
                "point_counts": list(legend.point_counts),
            },
            indent=2,
        )
    )
    report.add_file("legend", path)


def query_scene(client: Ovseg3dClient, threshold: float, scene_points: np.ndarray, report: Report) -> None:
    with report.timings.timed("query_s"):
        query = client.query(QUERY_TEXT, threshold=threshold)
    if not query.success:
        raise RuntimeError(f"query failed: {query.message}")
    report.summary["query"] = {"text": QUERY_TEXT, "message": query.message, "max_score": round(query.max_score, 4)}
    report.add_file("query", write_query_render(query, scene_points, report.out))


def retrieve_shapes(client: Ovseg3dClient, database: ShapeDatabaseConfig, report: Report) -> None:
    with report.timings.timed("retrieve_s"):
        retrieved = client.retrieve(RETRIEVAL_TEXT, k=5, include_clouds=True, ready_timeout=600)
    if not retrieved.success:
        raise RuntimeError(f"retrieve failed: {retrieved.message}")
    report.summary["retrieval"] = {
        "text": RETRIEVAL_TEXT,
        "shape_ids": list(retrieved.shape_ids),
        "scores": [round(float(s), 4) for s in retrieved.scores],
    }
    report.add_file("retrieval", write_retrieval_panel(retrieved, database, report.out))


def save_scene(client: Ovseg3dClient, path: Path) -> Path:
    saved = client.save(str(path))
    if not saved.success:
        raise RuntimeError(f"save failed: {saved.message}")
    return path


def ground_truth(scan, positions: np.ndarray, max_distance: float = 0.05) -> np.ndarray:
    """ScanNet20 id of each voxel's nearest annotated vertex (ignored when farther than ``max_distance``).

    Only for the ground-truth panel, which is drawn on the voxels; the scores use the vertices.
    """
    distance, nearest = cKDTree(scan.vertices).query(positions)
    return np.where(distance <= max_distance, scan.scannet20_ids[nearest], IGNORE_INDEX)


def evaluate(scene_file: Path, config: SegmenterConfig, report: Report) -> None:
    """Raw fusion vs purification on the saved map, scored on the scan's vertices; writes the PNG panels.

    As the official evaluations do, every labelled vertex of the scan is scored, so a vertex the
    map never observed (no voxel, or a voxel no 2D feature reached) is a miss instead of dropping
    out; one scan, so ScanNet's single-scan rule averages the classes with a non-zero union.
    """
    with report.timings.timed("evaluation_s"):
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
    positions = segmenter.scene.positions()
    panels = [("ground truth (ScanNet20)", ground_truth(scan, positions)), ("raw multi-view fusion", labels["none"])]
    panels.append((f"purified ({config.purification})", labels[config.purification]))
    for view in ("top", "perspective"):
        path = report.out / f"labels_{view}.png"
        render_label_panels(path, positions, panels, SCANNET20_CLASSES, view=view)
        report.add_file(f"labels_{view}", path)
    report.summary["segmentation"] = {
        "raw": results["none"],
        "purified": results[config.purification],
        "rule": results["none"]["rule"],
        "scored": "every labelled vertex of the scan; vertices the map never observed count as misses",
        "labelled_vertices": int((vertex_gt != IGNORE_INDEX).sum()),
        "unobserved_vertices": points.unobserved_labelled(vertex_gt),
        "voxels": len(positions),
    }


def write_labeled_cloud(scene: SceneMap, cloud: LabeledCloud, vocabulary: list[str], report: Report) -> None:
    """The published labels on the saved map's voxels, as a PLY, when the two still describe the same voxels."""
    if len(scene) != len(cloud.points) or not np.allclose(scene.positions(), cloud.points, atol=1e-4):
        log("labeled_cloud.ply not written: the saved map no longer matches the labeled cloud")
        return
    palette = (label_palette(len(vocabulary)) * 255).astype(np.uint8)
    path = report.out / "labeled_cloud.ply"
    scene.to_ply(path, colors=palette[cloud.labels], fields={"label": cloud.labels, "score": cloud.scores})
    report.add_file("labeled_cloud", path)


def write_query_render(reply, scene_points: np.ndarray, out: Path) -> Path:
    """The query's matching voxels in their score colours over the whole scene in grey."""
    import matplotlib  # heavy, and only this figure needs it (cloud_render rasterizes without it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_retrieval_panel(reply, database: ShapeDatabaseConfig, out: Path) -> Path:
    """The retrieved shapes' thumbnails, read from the same cached database the node answered from."""
    shapes = ShapeDatabase.load_or_build(database, progress=False)
    renders = [shapes.thumbnails[shape_id] for shape_id in reply.shape_ids]
    return save_retrieval_panel([RETRIEVAL_TEXT], [renders], out / "retrieval.png", scores=[list(reply.scores)])


def run(args: argparse.Namespace) -> dict:
    """Render (or reuse) the bag, start the nodes, play it, ask them as a user would, evaluate, write the report."""
    scene_config, retrieval_config = demo_configs(args)
    global source_label
    source_label = SOURCE_LABELS[args.backend]
    source = describe_source(scene_config.segmenter.encoders)
    report = Report(Path(args.out).resolve(), {"backend": source, "frames": args.frames, "files": {}})
    report.out.mkdir(parents=True, exist_ok=True)
    with report.timings.timed("bag_s"):
        bag = demo_bag(args.frames, args.seed)
    params = write_params(report.out / "params.yaml", {"scene_node": scene_config, "retrieval_node": retrieval_config})
    log(f"2D feature source: {source}; purification: {args.purification}")
    vocabulary = [*SCANNET20_CLASSES, *FREE_TEXT_LABELS]
    node_log = report.out / "nodes.log"
    with running_nodes(params, node_log) as client:
        wait_for_retrieval(client, report.timings)
        play(bag, client, args.rate, node_log, report.timings)
        wait_for_integration(client, bag, scene_config.purify_period_s, report.timings)
        cloud = label_scene(client, vocabulary, report.timings)
        write_legend(client, vocabulary, report)
        query_scene(client, args.query_threshold, cloud.points, report)
        retrieve_shapes(client, retrieval_config.database, report)
        scene_file = save_scene(client, report.out / "scene.npz")

    log("evaluating raw fusion vs purified labels against the ScanNet annotation")
    evaluate(scene_file, scene_config.segmenter, report)
    scene = SceneMap.load(scene_file)
    report.summary["frames_integrated"] = scene.integrations
    write_labeled_cloud(scene, cloud, vocabulary, report)
    report.summary.update(labeled_voxels=len(cloud.points), timings_s=report.timings.seconds)
    (report.out / "summary.json").write_text(json.dumps(report.summary, indent=2))
    return report.summary


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
    parser = argparse.ArgumentParser(description="Replay a real scene through the ovseg3d nodes.")
    parser.add_argument("--frames", type=int, default=60, help="rendered ScanNet views to play (default 60)")
    parser.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    parser.add_argument("--backend", choices=DENSE_EXTRACTORS, default="noisy_oracle")
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
