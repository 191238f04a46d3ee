"""The shape database a robot retrieves from: shapes, their clouds and their :class:`ShapeIndex`, cached.

Building it runs the frozen encoders and the trained model over every shape once (about a minute
for a few hundred shapes on a CPU); the result is cached on disk under a key of the config and
the checkpoint's bytes, so later starts load it in well under two seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.paths import cache_dir, shipped_checkpoints
from ovseg3d_core.retrieval.index import ShapeIndexConfig

DATABASE_VERSION = 2  # part of the cache key: bump when the cached files change layout


@dataclass
class ShapeDatabaseConfig(Config):
    checkpoint: str = setting("", "retrieval model checkpoint; empty = the shipped one")
    experiment: str = setting("", "the checkpoint's training config YAML; empty = the shipped one")
    procedural_shapes: int = setting(200, "procedural test-split shapes in the database", low=0, high=100_000)
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
        from ovseg3d_core.retrieval.index import ShapeIndex

        config = config or ShapeDatabaseConfig()
        checkpoint, experiment = model_files(config)
        folder = _cache_folder(config, checkpoint, experiment)
        if not (folder / "index.npz").is_file():
            _build(config, checkpoint, experiment, folder, progress)
        with np.load(folder / "clouds.npz", allow_pickle=False) as data:
            ids = data["ids"].tolist()
            clouds = dict(zip(ids, data["points"].astype(np.float32), strict=True))
            thumbnails = dict(zip(ids, data["thumbnails"], strict=True))
        return cls(ShapeIndex.load(folder / "index.npz", config=config.index), clouds, thumbnails)


def model_files(config: ShapeDatabaseConfig) -> tuple[Path, Path]:
    """The retrieval checkpoint and its training config, the shipped ones unless the config names others."""
    shipped = shipped_checkpoints() / "retrieval"
    checkpoint = Path(config.checkpoint) if config.checkpoint else shipped / "model.pt"
    experiment = Path(config.experiment) if config.experiment else shipped / "config.yaml"
    for path in (checkpoint, experiment):
        if not path.is_file():
            raise FileNotFoundError(f"retrieval model file {path} not found")
    return checkpoint, experiment


def _cache_folder(config: ShapeDatabaseConfig, checkpoint: Path, experiment: Path) -> Path:
    # The index settings only change how the cached index is searched (an approximate index the
    # cache lacks is trained on first use), so they stay out of the key.
    settings = {k: v for k, v in config.to_dict().items() if k != "index"}
    digest = hashlib.sha256(json.dumps([DATABASE_VERSION, settings], sort_keys=True).encode())
    digest.update(checkpoint.read_bytes())
    digest.update(experiment.read_bytes())
    root = Path(config.cache_dir) if config.cache_dir else cache_dir() / "shape_database"
    return root / digest.hexdigest()[:16]


def _build(config: ShapeDatabaseConfig, checkpoint: Path, experiment_path: Path, folder: Path, progress: bool) -> None:
    from tqdm import tqdm

    from ovseg3d_core.data.procedural_dataset import procedural_sample, procedural_splits
    from ovseg3d_core.data.shape_sample import ShapeSampleConfig
    from ovseg3d_core.data.text2shape import MissingShapeWarning, load_text2shape
    from ovseg3d_core.retrieval.feature_cache import compute_features
    from ovseg3d_core.retrieval.index import ShapeIndex
    from ovseg3d_core.retrieval.model import load_model
    from ovseg3d_core.retrieval.training import RetrievalExperimentConfig

    experiment = RetrievalExperimentConfig.from_yaml(experiment_path)
    test = [i for i, split in enumerate(procedural_splits(experiment.data)) if split == "test"]
    samples = [
        procedural_sample(i, experiment.data)
        for i in tqdm(test[: config.procedural_shapes], desc="database shapes", unit="shape", disable=not progress)
    ]
    if config.text2shape:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingShapeWarning)
            samples += load_text2shape(config=ShapeSampleConfig.from_dict(experiment.data.sample.to_dict()))
    if not samples:
        raise ValueError("the shape database is empty: set procedural_shapes > 0 or text2shape")
    features = compute_features(samples, experiment.encoders, total=len(samples), progress=progress)
    index = ShapeIndex.build(load_model(checkpoint), features, encoders=experiment.encoders, config=config.index)
    rng = np.random.default_rng(0)
    points = np.stack(
        [
            s.points[rng.choice(len(s.points), config.cloud_points, replace=len(s.points) < config.cloud_points)]
            for s in samples
        ]
    ).astype(np.float16)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    index.save(tmp / "index.npz")
    np.savez(
        tmp / "clouds.npz",
        ids=np.array([s.shape_id for s in samples], dtype=str),
        points=points,
        thumbnails=np.stack([s.views[0] for s in samples]),  # the first rendered view, for result panels
    )
    os.replace(tmp, folder)
