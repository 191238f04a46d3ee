"""On-disk cache of :class:`ShapeSample` collections, memory-mapped so 3,000+ shapes load instantly.

A dataset is a folder ``<cache>/shapes/<name>-<hash>/`` holding ``points.npy`` (S x N x 6 float32),
``views.npy`` (S x M x H x W x 3 uint8) and ``meta.json`` (ids, categories, captions, attributes,
split of each shape, and the parameters that produced it). The hash covers those parameters, so
changing the generator or sample settings builds a new folder instead of reusing a stale one.
The cache root is :func:`ovseg3d_core.paths.cache_dir` (``$OVSEG3D_CACHE`` or ``.cache/``). A build is
written to a temporary folder and renamed into place, so an interrupted build leaves no half
dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovseg3d_core.data.shapes.mesh import ShapeDataError
from ovseg3d_core.data.shapes.sample import ShapeSample
from ovseg3d_core.paths import cache_dir

CACHE_FORMAT_VERSION = 1


class ShapeCacheError(ValueError):
    """A cached shape dataset is incomplete or inconsistent."""


def shape_cache_dir() -> Path:
    """``shapes/`` in the ovseg3d cache."""
    return cache_dir() / "shapes"


def cache_key(name: str, params: Mapping[str, Any]) -> str:
    """Short stable hash of everything that determines a dataset's content."""
    payload = json.dumps({"name": name, "format": CACHE_FORMAT_VERSION, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


class ShapeDataset:
    """A cached shape collection; ``points`` and ``views`` are read-only memory maps."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            meta = json.loads((self.directory / "meta.json").read_text())
            self.points: np.ndarray = np.load(self.directory / "points.npy", mmap_mode="r")
            self.views: np.ndarray = np.load(self.directory / "views.npy", mmap_mode="r")
            self.name: str = meta["name"]
            self.params: dict[str, Any] = meta["params"]
            self.shape_ids: list[str] = meta["shape_ids"]
            self.categories: list[str] = meta["categories"]
            self.captions: list[list[str]] = meta["captions"]
            self.attributes: list[dict[str, str]] = meta["attributes"]
            self.splits: list[str] = meta["splits"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShapeCacheError(f"{self.directory} is not a complete shape dataset: {exc!r}") from exc
        sizes = {len(self.points), len(self.views), len(self.shape_ids), len(self.captions), len(self.splits)}
        if len(sizes) != 1:
            raise ShapeCacheError(f"{self.directory}: arrays and metadata disagree on the number of shapes {sizes}")

    def __len__(self) -> int:
        return len(self.shape_ids)

    def __getitem__(self, index: int) -> ShapeSample:
        return ShapeSample(
            self.shape_ids[index],
            self.categories[index],
            np.array(self.points[index]),
            np.array(self.views[index]),
            list(self.captions[index]),
            dict(self.attributes[index]),
        )

    @property
    def split_names(self) -> list[str]:
        return sorted(set(self.splits))

    def indices(self, split: str) -> np.ndarray:
        """Positions of the shapes in ``split`` (e.g. ``train``/``val``/``test``)."""
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in {self.directory.name}; available: {self.split_names}")
        return np.flatnonzero(np.asarray(self.splits) == split)

    def samples(self, split: str | None = None) -> list[ShapeSample]:
        """Materialise shapes (of one split) as :class:`ShapeSample` objects."""
        indices = range(len(self)) if split is None else self.indices(split)
        return [self[int(i)] for i in indices]

    @classmethod
    def build(
        cls,
        directory: str | Path,
        produce: Callable[[int], ShapeSample],
        splits: Sequence[str],
        name: str,
        params: Mapping[str, Any],
        progress: bool = True,
    ) -> ShapeDataset:
        """Write ``produce(0..len(splits)-1)`` to ``directory`` atomically and open it."""
        from tqdm import tqdm

        directory = Path(directory)
        if not splits:
            raise ShapeDataError(f"dataset {name!r} would be empty")
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        staging.chmod(0o755)
        try:
            points = views = None
            meta: dict[str, Any] = {"name": name, "params": dict(params), "splits": list(splits)}
            for key in ("shape_ids", "categories", "captions", "attributes"):
                meta[key] = []
            for index in tqdm(range(len(splits)), desc=f"building {name}", unit="shape", disable=not progress):
                sample = produce(index)
                if points is None or views is None:
                    points = np.lib.format.open_memmap(
                        staging / "points.npy", "w+", np.float32, (len(splits), *sample.points.shape)
                    )
                    views = np.lib.format.open_memmap(
                        staging / "views.npy", "w+", np.uint8, (len(splits), *sample.views.shape)
                    )
                if sample.points.shape != points.shape[1:] or sample.views.shape != views.shape[1:]:
                    raise ShapeDataError(
                        f"{sample.shape_id}: points {sample.points.shape} / views {sample.views.shape} differ from "
                        f"the dataset's {points.shape[1:]} / {views.shape[1:]}"
                    )
                points[index], views[index] = sample.points, sample.views
                meta["shape_ids"].append(sample.shape_id)
                meta["categories"].append(sample.category)
                meta["captions"].append(list(sample.captions))
                meta["attributes"].append(dict(sample.attributes))
            assert points is not None and views is not None
            points.flush()
            views.flush()
            del points, views
            (staging / "meta.json").write_text(json.dumps(meta))
            try:
                staging.rename(directory)
            except OSError:
                if not (directory / "meta.json").is_file():
                    raise
                shutil.rmtree(staging)  # another process finished the same dataset first
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(directory)


def cached_shape_dataset(
    name: str,
    params: Mapping[str, Any],
    produce: Callable[[int], ShapeSample],
    splits: Sequence[str],
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> ShapeDataset:
    """Open ``<cache>/shapes/<name>-<hash(params)>``, building it first when absent (or ``rebuild``)."""
    directory = shape_cache_dir() / f"{name}-{cache_key(name, params)}"
    if rebuild and directory.exists():
        shutil.rmtree(directory)
    if (directory / "meta.json").is_file():
        return ShapeDataset(directory)
    return ShapeDataset.build(directory, produce, splits, name, params, progress)
