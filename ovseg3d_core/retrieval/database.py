"""The shape database a robot retrieves from: shapes, their clouds and their :class:`ShapeIndex`, cached.

The spec is a retrieval checkpoint plus shape sources: the checkpoint carries the frozen-encoder
settings it was trained on and the procedural shapes its training held out
(:class:`~ovseg3d_core.retrieval.model.CheckpointInfo`), so nothing here depends on how it was trained.
Building runs the frozen encoders and the trained model over every shape once (about a minute
for a few hundred shapes on a CPU); the result is cached on disk under a key of the config and
the checkpoint's bytes, so later starts load it in well under two seconds.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ovseg3d_core.atomic_file import atomic_folder
from ovseg3d_core.config import Config, setting
from ovseg3d_core.data.shapes.procedural_dataset import procedural_sample
from ovseg3d_core.data.shapes.text2shape import MissingShapeWarning, load_text2shape
from ovseg3d_core.paths import cache_dir, shipped_checkpoints
from ovseg3d_core.retrieval.index import ShapeIndex, ShapeIndexConfig

DATABASE_VERSION = 2  # part of the cache key: bump when the cached files change layout


@dataclass
class ShapeDatabaseConfig(Config):
    """The database spec: a retrieval checkpoint and the shape sources to embed with it."""

    checkpoint: str = setting("", "retrieval model checkpoint; empty = the shipped one")
    procedural_shapes: int = setting(
        200, "procedural shapes in the database, from those the checkpoint's training held out", low=0, high=100_000
    )
    text2shape: bool = setting(True, "add the real Text2Shape sample shapes from the sample data")
    cloud_points: int = setting(2048, "points kept per shape for include_clouds replies", low=16, high=65536)
    cache_dir: str = setting("", "where the built database is cached; empty = shape_database/ in the ovseg3d cache")
    index: ShapeIndexConfig = setting(
        ShapeIndexConfig(), "query limits and exact / approximate search of the shape index (not part of the cache key)"
    )


class ShapeDatabase:
    """A :class:`ShapeIndex`, a coloured point cloud (N x 6, xyz + rgb in [0, 1]) and a thumbnail per shape."""

    def __init__(self, index, clouds: dict[str, np.ndarray], thumbnails: dict[str, np.ndarray]) -> None:
        self.index = index
        self.clouds = clouds
        self.thumbnails = thumbnails

    def __len__(self) -> int:
        return len(self.index)

    def retrieve(self, text: str | bytes, k: int) -> tuple[list[str], np.ndarray]:
        return self.index.query_text(text, k)

    def cloud(self, shape_id: str) -> np.ndarray:
        return self.clouds[shape_id]

    @classmethod
    def load_or_build(cls, config: ShapeDatabaseConfig | None = None, progress: bool = True) -> ShapeDatabase:
        config = config or ShapeDatabaseConfig()
        checkpoint = checkpoint_path(config)
        folder = _cache_folder(config, checkpoint)
        if not (folder / "index.npz").is_file():
            _build(config, checkpoint, folder, progress)
        with np.load(folder / "clouds.npz", allow_pickle=False) as data:
            ids = data["ids"].tolist()
            clouds = dict(zip(ids, data["points"].astype(np.float32), strict=True))
            thumbnails = dict(zip(ids, data["thumbnails"], strict=True))
        return cls(ShapeIndex.load(folder / "index.npz", config=config.index), clouds, thumbnails)


def checkpoint_path(config: ShapeDatabaseConfig) -> Path:
    """The retrieval checkpoint, the shipped one unless the config names another."""
    checkpoint = Path(config.checkpoint) if config.checkpoint else shipped_checkpoints() / "retrieval" / "model.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"retrieval model file {checkpoint} not found")
    return checkpoint


def _cache_folder(config: ShapeDatabaseConfig, checkpoint: Path) -> Path:
    # The index settings only change how the cached index is searched (an approximate index the
    # cache lacks is trained on first use), so they stay out of the key. The checkpoint's bytes hold
    # its weights and the settings it builds with; hashing them keeps a start from a cache torch-free.
    settings = {k: v for k, v in config.to_dict().items() if k != "index"}
    digest = hashlib.sha256(json.dumps([DATABASE_VERSION, settings], sort_keys=True).encode())
    digest.update(checkpoint.read_bytes())
    root = Path(config.cache_dir) if config.cache_dir else cache_dir() / "shape_database"
    return root / digest.hexdigest()[:16]


def _build(config: ShapeDatabaseConfig, checkpoint: Path, folder: Path, progress: bool) -> None:
    # Both import torch, which only a build needs: a start from the cache stays torch-free.
    from ovseg3d_core.retrieval.feature_cache import compute_features
    from ovseg3d_core.retrieval.model import load_checkpoint_info, load_model

    info = load_checkpoint_info(checkpoint)
    samples = [
        procedural_sample(i, info.corpus)
        for i in tqdm(
            info.held_out[: config.procedural_shapes], desc="database shapes", unit="shape", disable=not progress
        )
    ]
    if config.text2shape:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingShapeWarning)
            samples += load_text2shape(config=info.corpus.sample)
    if not samples:
        raise ValueError("the shape database is empty: set procedural_shapes > 0 or text2shape")
    features = compute_features(samples, info.encoders, total=len(samples), progress=progress)
    index = ShapeIndex.build(load_model(checkpoint), features, encoders=info.encoders, config=config.index)
    rng = np.random.default_rng(0)
    points = np.stack(
        [
            s.points[rng.choice(len(s.points), config.cloud_points, replace=len(s.points) < config.cloud_points)]
            for s in samples
        ]
    ).astype(np.float16)
    with atomic_folder(folder) as staging:
        index.save(staging / "index.npz")
        np.savez(
            staging / "clouds.npz",
            ids=np.array([s.shape_id for s in samples], dtype=str),
            points=points,
            thumbnails=np.stack([s.views[0] for s in samples]),  # the first rendered view, for result panels
        )
