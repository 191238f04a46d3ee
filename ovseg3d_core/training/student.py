"""Distil a teacher's point affinities into the GeoPurify student (label-free).

Training scenes are only label-free data that no benchmark evaluates: the 7-Scenes sequence split
into consecutive chunks (each fused into its own SceneMap) and the Redwood frames. Each step takes
one scene (a random crop when it is large), samples anchors/positives/negatives from the cached
teacher embeddings and applies InfoNCE to the student's embeddings.

    python -m ovseg3d_core.training.student --config training/configs/student_geometry_fpfh_normals.yaml
    torchrun --nproc_per_node 2 -m ovseg3d_core.training.student --config ... --out /tmp/run   # DDP on gloo

Resuming: rerun the same command with ``--resume``; it continues from the latest checkpoint in
the run folder. At the end the student, its config, the CSV log and a loss PNG are exported.
"""

from __future__ import annotations

import argparse
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.atomic_file import atomic_savez
from ovseg3d_core.config import Config, setting
from ovseg3d_core.data.scenes.redwood import RedwoodSequence
from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
from ovseg3d_core.geometry import unpack_voxel_keys
from ovseg3d_core.paths import SOURCE_ROOT
from ovseg3d_core.purify.student import StudentConfig, build_student, save_student, student_input_features
from ovseg3d_core.scene import SceneConfig, SceneMap
from ovseg3d_core.training.distillation import (
    DistillationConfig,
    DistillationError,
    info_nce_loss,
    sample_contrastive,
    teacher_agreement,
)
from ovseg3d_core.training.run import (
    OptimConfig,
    TrainingRun,
    average_across_ranks,
    barrier,
    build_optimizer_and_schedule,
    init_distributed,
    seed_everything,
    shard,
    shutdown_distributed,
    wrap_distributed,
)
from ovseg3d_core.training.teachers import TEACHERS, build_teacher, run_teacher

LR_SCALES = {"input.": 0.1, "output.": 5.0}
"""GeoPurify's layer-wise learning rates: x0.1 for the input layer, x5 for the output layer."""
CURVES = ["loss", "agreement", "lr"]
"""Logged columns drawn in the loss PNG (agreement: anchors whose positive beats all 63 negatives)."""


@dataclass
class StudentDataConfig(Config):
    """Which label-free scenes are fused for training, and how each step crops them."""

    sevenscenes_chunks: int = setting(10, "consecutive 7-Scenes chunks, each fused into one scene", low=0, high=100)
    frames_per_chunk: int = setting(100, "7-Scenes frames per chunk", low=1)
    frame_step: int = setting(5, "integrate every n-th frame of a chunk", low=1)
    redwood: bool = setting(True, "add the fused Redwood frames as one more scene")
    voxel_size: float = setting(0.02, "voxel edge in metres (GeoPurify: 2 cm)", low=0.005, high=0.2)
    max_voxels: int = setting(40000, "larger scenes are randomly cropped to about this many voxels per step", low=200)
    cache_dir: str = setting(".cache/student_scenes", "fused scenes + teacher embeddings are cached here")


@dataclass
class StudentTrainingConfig(Config):
    """Everything one student training run needs; stored beside the shipped checkpoint."""

    name: str = setting("geometry_fpfh", "run name; the exported files are <name>.pt/.yaml/_log.csv/_loss.png")
    teacher: str = setting("fpfh", "teacher name", choices=tuple(TEACHERS))
    student: StudentConfig = setting(StudentConfig(), "student architecture")
    distillation: DistillationConfig = setting(DistillationConfig(), "sampler and InfoNCE constants")
    optim: OptimConfig = setting(OptimConfig(), "AdamW + warm-up/cosine schedule")
    data: StudentDataConfig = setting(StudentDataConfig(), "training scenes")
    threads: int = setting(0, "torch CPU threads per process (0 = torch default)", low=0)


@dataclass
class TrainingScene:
    """One fused scene with everything a step needs, in voxel order."""

    name: str
    coords: np.ndarray
    positions: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    teacher: np.ndarray


def scene_sources(cfg: StudentDataConfig) -> list[tuple[str, object, list[int]]]:
    """(name, sequence, frame indices) of every training scene: 7-Scenes chunks, then Redwood."""

    sources: list[tuple[str, object, list[int]]] = []
    if cfg.sevenscenes_chunks:
        seven = SevenScenes()
        for chunk in range(cfg.sevenscenes_chunks):
            start = chunk * cfg.frames_per_chunk
            frames = list(range(start, min(start + cfg.frames_per_chunk, len(seven)), cfg.frame_step))
            if frames:
                sources.append((f"7scenes_{start:04d}", seven, frames))
    if cfg.redwood:
        redwood = RedwoodSequence()
        sources.append(("redwood", redwood, list(range(len(redwood)))))
    return sources


def fuse_scene(sequence, frames: list[int], voxel_size: float):
    """Integrate the frames into a fresh SceneMap (the same map the product builds online)."""

    scene = SceneMap(SceneConfig(voxel_size=voxel_size))
    for index in frames:
        scene.integrate(sequence[index])
    return scene


def load_scene(name: str, sequence, frames: list[int], cfg: StudentTrainingConfig, teacher) -> TrainingScene:
    """Fuse a scene and run the teacher on it, cached as .npz (teacher runs are the slow part)."""

    data = cfg.data
    cache = SOURCE_ROOT / data.cache_dir / f"{name}_v{data.voxel_size:g}_s{data.frame_step}_{cfg.teacher}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return TrainingScene(name=name, **{k: z[k] for k in z.files})
    scene = fuse_scene(sequence, frames, data.voxel_size)
    positions, colors, normals = scene.positions(), scene.colors(), scene.normals()
    arrays = {
        "coords": unpack_voxel_keys(scene.keys),
        "positions": positions,
        "colors": colors,
        "normals": normals,
        "teacher": run_teacher(teacher, positions, colors=colors, normals=normals),
    }
    atomic_savez(cache, **arrays)
    return TrainingScene(name=name, **arrays)


def crop_indices(scene: TrainingScene, max_voxels: int, rng: np.random.Generator) -> np.ndarray:
    """A random axis-aligned box around a random voxel holding about ``max_voxels`` voxels (all when smaller)."""
    n = len(scene.coords)
    if n <= max_voxels:
        return np.arange(n)
    centre = scene.positions[rng.integers(n)]
    extent = scene.positions.max(0) - scene.positions.min(0)
    # Start from the box whose volume share equals the voxel share, then shrink/grow to fit.
    half = 0.5 * extent * (max_voxels / n) ** (1 / 3)
    for _ in range(20):
        inside = np.flatnonzero(np.all(np.abs(scene.positions - centre) <= half, axis=1))
        if 0.6 * max_voxels <= len(inside) <= max_voxels:
            break
        half *= (max_voxels * 0.8 / max(len(inside), 1)) ** 0.5
    return inside[:max_voxels]


def train(cfg: StudentTrainingConfig, out_dir: Path, resume: bool, export_dir: Path | None) -> None:
    import torch
    from tqdm import tqdm

    rank, world = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.optim.seed + rank)
    main = rank == 0
    sources = scene_sources(cfg.data)
    mine = shard(sources, rank, world)
    teacher = build_teacher(cfg.teacher)
    scenes = [load_scene(n, s, f, cfg, teacher) for n, s, f in tqdm(mine, desc=f"scenes r{rank}", disable=not main)]
    barrier()

    model = build_student(cfg.student)
    optimizer, scheduler = build_optimizer_and_schedule(model, cfg.optim, len(scenes), LR_SCALES)
    run = TrainingRun(out_dir, resume=resume, is_main=main)
    start_epoch, step = 0, 0
    point = run.resume(model, optimizer, scheduler) if resume else None
    if point is not None:
        start_epoch, step = point.epoch, point.step
    model = wrap_distributed(model)
    if main:
        run.out_dir.joinpath("config.yaml").write_text(_to_yaml(cfg))

    for epoch in range(start_epoch, cfg.optim.epochs):
        model.train()
        # A per-(epoch, rank) generator makes resumed runs draw the same crops and anchors.
        rng = np.random.default_rng([cfg.optim.seed, epoch, rank])
        order = rng.permutation(len(scenes))
        losses = []
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not main, leave=False)
        for index in bar:
            scene = scenes[index]
            keep = crop_indices(scene, cfg.data.max_voxels, rng)
            try:
                sample = sample_contrastive(scene.teacher[keep], scene.positions[keep], cfg.distillation, rng)
            except DistillationError as exc:
                # Every rank must still join the gradient all-reduce, so the step runs with a zero loss.
                warnings.warn(f"{scene.name}: {exc}; step contributes no gradient", stacklevel=1)
                sample = None
            feats = student_input_features(cfg.student, scene.coords[keep], scene.colors[keep], scene.normals[keep])
            emb = model(torch.from_numpy(scene.coords[keep]), torch.from_numpy(feats))
            loss = info_nce_loss(emb, sample, cfg.distillation.temperature) if sample is not None else emb.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = average_across_ranks(loss.item())
            agreement = teacher_agreement(emb.detach().numpy(), sample) if sample is not None else np.nan
            agreement = average_across_ranks(agreement)
            losses.append(loss_value)
            base_lr = next(g["lr"] for g in optimizer.param_groups if g["name"] == "base")
            run.log(step, epoch=epoch, loss=loss_value, agreement=agreement, lr=base_lr, voxels=len(keep))
            bar.set_postfix(loss=f"{loss_value:.3f}")
        if main:
            tqdm.write(f"epoch {epoch + 1}: mean loss {np.mean(losses):.4f}")
        if (epoch + 1) % cfg.optim.checkpoint_every_epochs == 0 or epoch + 1 == cfg.optim.epochs:
            run.save_checkpoint(model, optimizer, scheduler, epoch + 1, step, keep=cfg.optim.keep_checkpoints)
            run.plot_curves(run.out_dir / "loss.png", CURVES, title=f"student distillation: {cfg.name}")
        barrier()

    if main and export_dir is not None:
        export(cfg, run, model, export_dir, save_student, world_size=world)
    shutdown_distributed()


def export(cfg: StudentTrainingConfig, run, model, export_dir: Path, save_student, world_size: int = 1) -> None:
    """Write the shippable artefacts: weights + config + CSV log + loss curve."""
    export_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "teacher": cfg.teacher,
        "name": cfg.name,
        "config": _to_yaml(cfg),
        "finished": time.time(),
        "world_size": world_size,
    }
    path = save_student(model, export_dir / f"{cfg.name}.pt", meta=meta)
    (export_dir / f"{cfg.name}.yaml").write_text(_to_yaml(cfg))
    shutil.copyfile(run.log_path, export_dir / f"{cfg.name}_log.csv")
    run.plot_curves(export_dir / f"{cfg.name}_loss.png", CURVES, title=f"student distillation: {cfg.name}")
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="YAML file with a StudentTrainingConfig")
    parser.add_argument("--out", type=Path, help="run folder (default .cache/student_runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--epochs", type=int, help="override optim.epochs (e.g. a short DDP demonstration)")
    parser.add_argument(
        "--export",
        type=Path,
        default=SOURCE_ROOT / "training" / "checkpoints" / "student",
        help="where to ship the result",
    )
    parser.add_argument("--no-export", action="store_true", help="do not write the shippable artefacts")
    args = parser.parse_args(argv)
    cfg = StudentTrainingConfig.from_yaml(args.config)
    if args.epochs is not None:
        cfg = cfg.replace(optim=cfg.optim.replace(epochs=args.epochs))
    out = args.out or SOURCE_ROOT / ".cache" / "student_runs" / cfg.name
    train(cfg, out, args.resume, None if args.no_export else args.export)


if __name__ == "__main__":
    main()
