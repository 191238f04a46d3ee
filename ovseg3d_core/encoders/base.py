"""The two encoder protocols every backend implements, their error type and shared input checks.

Downstream code (lifting, labeling, retrieval) depends only on these protocols, so a robot can
swap OpenCLIP for the noisy oracle or MiniLM for another text model by changing a config name.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ovseg3d_core.frame import RGBDFrame


class EncoderError(ValueError):
    """An encoder got input it cannot encode or was configured inconsistently."""


class WeightsNotFoundError(EncoderError, FileNotFoundError):
    """A model checkpoint path is missing or does not hold usable weights."""


@runtime_checkable
class DenseFeatureExtractor(Protocol):
    """RGB image -> H'xW'xD float32 feature map whose vectors live in a paired text space."""

    dim: int

    def extract(self, rgb: np.ndarray, output_size: tuple[int, int] | None = None) -> np.ndarray:
        """``rgb`` is HxWx3 uint8; ``output_size`` (height, width) resamples the map when given."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """Strings -> NxD float32 rows of unit L2 norm."""

    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Return ``rgb`` if it is a non-empty HxWx3 uint8 image, else raise :class:`EncoderError`."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise EncoderError(f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise EncoderError(f"empty image of shape {rgb.shape}")
    return rgb


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list of non-empty strings, else raise :class:`EncoderError`."""
    if isinstance(texts, str):
        raise EncoderError("encode() takes a sequence of strings, got a single string; wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise EncoderError(f"text {i} is {text!r}; every text must be a non-empty string")
    return texts


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit-normalise rows (last axis) in float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


class CachedTextEncoder(abc.ABC):
    """Text encoder base that memoises embeddings per string in an LRU cache.

    Vocabularies are re-encoded on every set-vocabulary call and every query; the cache makes a
    repeated vocabulary cost a dictionary look-up instead of a transformer forward.
    """

    dim: int

    def __init__(self, cache_size: int) -> None:
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    @abc.abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Encode distinct strings to NxD float32 unit rows (no caching)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.cache_hits += len(texts) - sum(t not in self._cache for t in texts)
        self.cache_misses += len(missing)
        fresh = dict(zip(missing, self._encode_batch(missing), strict=True)) if missing else {}
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[text]
                self._cache.move_to_end(text)
            rows.append(row)
        for text, row in fresh.items():
            self._remember(text, row)
        return np.stack(rows).astype(np.float32, copy=False)

    def _remember(self, text: str, row: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = row
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()
        self.cache_hits = self.cache_misses = 0


@dataclass
class FrameFeatures:
    """A keyframe's feature map (H'xW'xD float32) and which of its pixels carry a feature.

    ``valid`` is False where the source emitted nothing (e.g. a segment the noisy oracle missed);
    the lifter skips those pixels instead of averaging in zero vectors.
    """

    features: np.ndarray
    valid: np.ndarray

    def masked(self) -> np.ndarray:
        """The features with NaN where ``valid`` is False."""
        return np.where(self.valid[..., None], self.features, np.float32(np.nan)).astype(np.float32, copy=False)


@runtime_checkable
class FrameFeatureSource(Protocol):
    """What lifting consumes: one posed frame -> its :class:`FrameFeatures` (OpenCLIP or the noisy oracle)."""

    dim: int
    description: str  # names the source in every log line and report (the noisy oracle says it is one)

    def extract_frame(self, frame: RGBDFrame, view_index: int = 0) -> FrameFeatures: ...
