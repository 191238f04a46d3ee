"""The procedural Text2Shape-style corpus: seeded chairs/tables, five captions each, shape-level splits.

Shape ``i`` of seed ``s`` depends only on ``(s, i)`` (geometry from ``default_rng([s, i])``,
captions from ``default_rng([s, i, 1])``), so any subset can be regenerated alone and growing
``n_shapes`` keeps earlier shapes. The split is a seeded permutation of shape indices, so all
captions of a shape stay in one split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.data.shapes.dataset import ShapeDataset, cached_shape_dataset
from ovseg3d_core.data.shapes.procedural_captions import write_captions
from ovseg3d_core.data.shapes.procedural_shapes import ProceduralShape, make_shape
from ovseg3d_core.data.shapes.sample import ShapeSample, ShapeSampleConfig, make_shape_sample

GENERATOR_VERSION = 2
"""Bump when shapes or the caption grammar change, so cached datasets are rebuilt."""

SPLITS = ("train", "val", "test")


@dataclass
class ProceduralDatasetConfig(Config):
    """Size, seed, category mix and split of the procedural corpus (Text2Shape: ~5 captions/shape)."""

    n_shapes: int = setting(3000, "number of generated shapes", low=1, high=1_000_000)
    seed: int = setting(0, "generator seed (same seed, same shapes and captions)", low=0)
    chair_fraction: float = setting(0.5, "probability that a shape is a chair (else a table)", low=0.0, high=1.0)
    captions_per_shape: int = setting(5, "captions written per shape", low=1, high=20)
    val_fraction: float = setting(0.1, "fraction of shapes in the validation split", low=0.0, high=0.5)
    test_fraction: float = setting(0.1, "fraction of shapes in the test split", low=0.0, high=0.5)
    sample: ShapeSampleConfig = setting(ShapeSampleConfig(), "points and views per shape")


def procedural_shape(index: int, config: ProceduralDatasetConfig) -> ProceduralShape:
    rng = np.random.default_rng([config.seed, index])
    return make_shape("chair" if rng.random() < config.chair_fraction else "table", rng)


def procedural_sample(index: int, config: ProceduralDatasetConfig) -> ShapeSample:
    """Shape ``index`` of the corpus with its captions, points and views."""
    shape = procedural_shape(index, config)
    captions = write_captions(shape, np.random.default_rng([config.seed, index, 1]), config.captions_per_shape)
    return make_shape_sample(
        f"proc-{config.seed}-{index:06d}",
        shape.category,
        shape.mesh,
        captions,
        config.sample,
        seed=int(np.random.default_rng([config.seed, index, 2]).integers(2**31)),
        attributes=shape.attributes,
    )


def procedural_splits(config: ProceduralDatasetConfig) -> list[str]:
    """Split name of every shape index (seeded permutation; rounded fractions, the rest is train)."""
    n = config.n_shapes
    n_test, n_val = round(n * config.test_fraction), round(n * config.val_fraction)
    order = np.random.default_rng([config.seed, 2**32 - 1]).permutation(n)
    splits = np.full(n, "train", dtype=object)
    splits[order[:n_test]] = "test"
    splits[order[n_test : n_test + n_val]] = "val"
    return [str(s) for s in splits]


def generate_procedural_dataset(
    n_shapes: int = 3000, seed: int = 0, config: ProceduralDatasetConfig | None = None
) -> dict[str, list[ShapeSample]]:
    """In-memory corpus keyed by split; for large corpora prefer :func:`procedural_dataset` (cached)."""
    config = (config or ProceduralDatasetConfig()).replace(n_shapes=n_shapes, seed=seed)
    result: dict[str, list[ShapeSample]] = {name: [] for name in SPLITS}
    for index, split in enumerate(procedural_splits(config)):
        result[split].append(procedural_sample(index, config))
    return result


def procedural_dataset(
    config: ProceduralDatasetConfig | None = None, *, rebuild: bool = False, progress: bool = True
) -> ShapeDataset:
    """The corpus as a cached, memory-mapped :class:`ShapeDataset` (built on first use, ~30 ms/shape)."""
    config = config or ProceduralDatasetConfig()
    params = {"generator_version": GENERATOR_VERSION, **config.to_dict()}
    return cached_shape_dataset(
        "procedural",
        params,
        lambda index: procedural_sample(index, config),
        procedural_splits(config),
        rebuild=rebuild,
        progress=progress,
    )
