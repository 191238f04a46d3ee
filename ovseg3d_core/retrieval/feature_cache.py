"""Frozen-encoder features of a shape set, computed once and cached on disk.

The encoders are frozen, so their outputs never change during training: computing them once per
dataset turns an epoch on CPU from minutes of CNN inference into milliseconds of adapter maths.
A cache file records a key (encoder settings + the caller's dataset description); a cache whose
key differs is recomputed instead of silently reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.atomic_file import atomic_savez
from ovseg3d_core.retrieval.frozen_encoders import (
    FrozenEncoderConfig,
    PointTokenEncoder,
    make_encoders,
    make_view_encoder,
)

CACHE_FORMAT = "ovseg3d.retrieval_features"
CACHE_VERSION = 1


class FeatureCacheError(ValueError):
    """A feature file is malformed, of another version, or inconsistent with itself."""


@dataclass
class ShapeFeatures:
    """Frozen features of S shapes and their C captions (``caption_shape[c]`` indexes the shape)."""

    shape_ids: list[str]
    categories: list[str]
    point_tokens: np.ndarray
    token_geometry: np.ndarray
    views: np.ndarray
    captions: list[str]
    caption_shape: np.ndarray
    text: np.ndarray

    def __post_init__(self) -> None:
        s = len(self.shape_ids)
        checks = {
            "categories": len(self.categories) == s,
            "point_tokens": self.point_tokens.ndim == 3 and len(self.point_tokens) == s,
            "token_geometry": self.token_geometry.shape[:2] == self.point_tokens.shape[:2],
            "views": self.views.ndim == 3 and len(self.views) == s,
            "caption_shape": self.caption_shape.shape == (len(self.captions),),
            "text": self.text.ndim == 2 and len(self.text) == len(self.captions),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise FeatureCacheError(f"inconsistent shape features: {bad}")
        if len(self.caption_shape) and (self.caption_shape.min() < 0 or self.caption_shape.max() >= s):
            raise FeatureCacheError("caption_shape indexes a shape that does not exist")

    def __len__(self) -> int:
        return len(self.shape_ids)

    def subset(self, shapes: Sequence[int]) -> ShapeFeatures:
        """The given shapes (in that order) with their captions."""
        shapes = np.asarray(shapes, dtype=np.int64)
        remap = np.full(len(self), -1, dtype=np.int64)
        remap[shapes] = np.arange(len(shapes))
        keep = np.flatnonzero(remap[self.caption_shape] >= 0)
        return ShapeFeatures(
            [self.shape_ids[i] for i in shapes],
            [self.categories[i] for i in shapes],
            self.point_tokens[shapes],
            self.token_geometry[shapes],
            self.views[shapes],
            [self.captions[i] for i in keep],
            remap[self.caption_shape[keep]],
            self.text[keep],
        )

    def save(self, path: str | Path, key: str = "") -> Path:
        """Atomic ``.npz`` write (float16 for the big frozen features, halving the disk use)."""
        meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key}
        return atomic_savez(
            path,
            meta=np.array(json.dumps(meta)),
            shape_ids=np.array(self.shape_ids, dtype=str),
            categories=np.array(self.categories, dtype=str),
            point_tokens=self.point_tokens.astype(np.float16),
            token_geometry=self.token_geometry.astype(np.float32),
            views=self.views.astype(np.float16),
            captions=np.array(self.captions, dtype=str),
            caption_shape=self.caption_shape.astype(np.int64),
            text=self.text.astype(np.float32),
        )

    @classmethod
    def load(cls, path: str | Path, key: str | None = None) -> ShapeFeatures:
        """Read a cache; with ``key`` given, a different stored key raises :class:`FeatureCacheError`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature cache {path} does not exist")
        with np.load(path, allow_pickle=False) as data:
            try:
                meta = json.loads(str(data["meta"]))
            except (KeyError, ValueError) as exc:
                raise FeatureCacheError(f"{path} has no readable metadata") from exc
            if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
                raise FeatureCacheError(
                    f"{path} is {meta.get('format')} v{meta.get('version')}, expected v{CACHE_VERSION}"
                )
            if key is not None and meta.get("key") != key:
                raise FeatureCacheError(f"{path} was computed for other settings")
            return cls(
                data["shape_ids"].tolist(),
                data["categories"].tolist(),
                data["point_tokens"].astype(np.float32),
                data["token_geometry"],
                data["views"].astype(np.float32),
                data["captions"].tolist(),
                data["caption_shape"],
                data["text"],
            )


def cache_key(encoders: FrozenEncoderConfig, dataset: str) -> str:
    """Stable digest of the encoder settings and the caller's description of the dataset."""
    text = json.dumps({"encoders": encoders.to_dict(), "dataset": dataset}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_features(
    samples: Iterable,
    encoders: FrozenEncoderConfig | None = None,
    text_encoder=None,
    total: int | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> ShapeFeatures:
    """Run the frozen encoders over ``ShapeSample``s (streamed in chunks to bound memory).

    ``text_encoder`` may be passed to reuse a loaded one; it must be the one ``encoders`` names.
    """
    from tqdm import tqdm

    encoders = encoders or FrozenEncoderConfig()
    if text_encoder is None:
        view_encoder, text_encoder = make_encoders(encoders)
    else:
        view_encoder = make_view_encoder(encoders)
    point_encoder = PointTokenEncoder(encoders)
    ids, categories, tokens, geometry, views, captions, owner = [], [], [], [], [], [], []
    pending: list = []
    bar = tqdm(total=total, desc="frozen features", unit="shape", disable=not progress)

    def flush() -> None:
        t, g = point_encoder.encode([s.points for s in pending])
        tokens.append(t.astype(np.float16))
        geometry.append(g)
        views.append(view_encoder.encode(np.stack([s.views for s in pending])).astype(np.float16))
        bar.update(len(pending))
        pending.clear()

    for sample in samples:
        captions.extend(sample.captions)
        owner.extend([len(ids)] * len(sample.captions))
        ids.append(sample.shape_id)
        categories.append(sample.category)
        pending.append(sample)
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    bar.close()
    if not ids:
        raise FeatureCacheError("no shapes to encode")
    text = text_encoder.encode(captions) if captions else np.zeros((0, text_encoder.dim), np.float32)
    return ShapeFeatures(
        ids,
        categories,
        np.concatenate(tokens).astype(np.float32),
        np.concatenate(geometry),
        np.concatenate(views).astype(np.float32),
        captions,
        np.asarray(owner, dtype=np.int64),
        np.asarray(text, dtype=np.float32),
    )


def cached_features(
    path: str | Path,
    samples: Callable[[], Iterable],
    encoders: FrozenEncoderConfig,
    dataset: str,
    total: int | None = None,
    progress: bool = True,
) -> ShapeFeatures:
    """Load ``path`` if it was computed for these settings, else compute from ``samples()`` and save."""
    key = cache_key(encoders, dataset)
    path = Path(path)
    if path.is_file():
        try:
            return ShapeFeatures.load(path, key=key)
        except FeatureCacheError:
            pass
    features = compute_features(samples(), encoders, total=total, progress=progress)
    features.save(path, key=key)
    return features
