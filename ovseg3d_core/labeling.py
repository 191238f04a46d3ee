"""Open-vocabulary labeling: class names -> prompt embeddings -> per-voxel label, score and background.

A voxel's score for a class is the cosine between its unit feature and the class's prompt embedding
("a X in a scene"); after geometry-guided pooling it is the pooled cosine, normalised by the pooled
share of neighbours that had a feature at all (``coverage``), so voxels no camera saw are filled in
from their neighbours while a region with no observation stays background. Background is the last
index, ``len(vocabulary)`` (the ROS contract), given to voxels without coverage or whose best
score is below ``min_score``.

A vocabulary change on an already purified scene must be quick. Two equivalent ways keep it so:
the ``logit`` path caches each class's pooled score column by name, so only classes never seen on
this scene are propagated (C columns instead of D); the ``feature`` path pools the D-dim features
once when the scene is set, after which any vocabulary is one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.encoders.base import EncoderError, TextEncoder
from ovseg3d_core.encoders.prompts import PromptConfig, PromptedTextEncoder
from ovseg3d_core.purify.pooling import PoolingOperator


class LabelingError(ValueError):
    """A vocabulary or a feature set cannot be labeled (empty, oversize, duplicate, mis-shaped, NaN)."""


@dataclass
class LabelingConfig(Config):
    min_score: float = setting(0.0, "voxels whose best class cosine is below this are background", low=-1.0, high=1.0)
    min_coverage: float = setting(
        1e-6, "voxels whose pooled share of observed neighbours is below this are background", low=0.0, high=1.0
    )
    max_vocabulary: int = setting(512, "largest vocabulary accepted (label ids are uint32)", low=1, high=100000)
    path: str = setting(
        "logit",
        "how pooling meets the text: logit (pool C class columns) or feature (pool D-dim features once)",
        choices=("logit", "feature"),
    )


@dataclass(frozen=True)
class Labeling:
    """Per-voxel result: ``labels`` index ``vocabulary`` or equal ``background_index``; ``scores`` in [-1, 1]."""

    labels: np.ndarray
    scores: np.ndarray
    vocabulary: tuple[str, ...]

    @property
    def background_index(self) -> int:
        return len(self.vocabulary)

    def counts(self) -> np.ndarray:
        """Voxels per label, background last (the legend's ``point_counts``)."""
        return np.bincount(self.labels, minlength=len(self.vocabulary) + 1)


@dataclass
class _Scene:
    """The features and operator labels are computed for, plus what a vocabulary change can reuse.

    Features stay as given; ``inverse_norm`` (0 for unobserved voxels) turns their dot products into
    cosines, so the logit path never normalises the N x D matrix itself. On the logit path a
    ``coverage`` still to be pooled is None: it rides along with the first class columns, one
    pass over A instead of two (a propagation costs about as much for 1 column as for 20).
    """

    features: np.ndarray
    inverse_norm: np.ndarray
    operator: PoolingOperator | None
    coverage: np.ndarray | None
    pooled_features: np.ndarray | None
    columns: dict[str, np.ndarray]

    def cosines(self, embeddings: np.ndarray) -> np.ndarray:
        """N x C cosine of each (unpooled) voxel feature with each embedding; 0 for unobserved voxels."""
        return (self.features @ embeddings.T) * self.inverse_norm[:, None]


def check_vocabulary(labels: Sequence[str], max_vocabulary: int) -> tuple[str, ...]:
    """``labels`` as unique, stripped, non-empty names, at most ``max_vocabulary``; else :class:`LabelingError`."""
    if isinstance(labels, str):
        raise LabelingError("the vocabulary is a list of class names, got a single string")
    names = tuple(labels)
    if not names:
        raise LabelingError("the vocabulary is empty; give at least one class name")
    if len(names) > max_vocabulary:
        raise LabelingError(f"the vocabulary has {len(names)} names, more than max_vocabulary={max_vocabulary}")
    bad = [name for name in names if not isinstance(name, str) or not name.strip()]
    if bad:
        raise LabelingError(f"class names must be non-empty strings, got {bad[:3]!r}")
    names = tuple(name.strip() for name in names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LabelingError(f"the vocabulary repeats {duplicates}; every class name must be unique")
    return names


def checked_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated N x D float32 features and their inverse row norms (0 for all-zero, unobserved rows)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise LabelingError(f"features must be a non-empty N x D array, got shape {features.shape}")
    norms = np.sqrt(np.einsum("ij,ij->i", features, features))
    if not np.isfinite(norms).all():  # NaN and inf reach the norm, so one pass checks every entry
        raise LabelingError("features contain NaN or inf (or overflow float32)")
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return features, inverse


class Labeler:
    """Holds a vocabulary's embeddings and the current scene; labels it by argmax of cosine.

    ``text_encoder`` is a raw :class:`TextEncoder` (e.g. MiniLM); ``prompts`` (the encoder config's
    templates, so 2D features and labels share one prompt space) are added here.
    """

    def __init__(
        self,
        text_encoder: TextEncoder,
        config: LabelingConfig | None = None,
        vocabulary: Sequence[str] = (),
        prompts: PromptConfig | None = None,
    ) -> None:
        self.config = config or LabelingConfig()
        self.encoder = PromptedTextEncoder(text_encoder, prompts)
        self.vocabulary: tuple[str, ...] = ()
        self.text_embeddings = np.zeros((0, self.encoder.dim), dtype=np.float32)
        self._scene: _Scene | None = None
        if vocabulary:
            self.set_vocabulary(vocabulary)

    @property
    def background_index(self) -> int:
        return len(self.vocabulary)

    def set_vocabulary(self, labels: Sequence[str]) -> None:
        """Validate and encode ``labels``; the previous vocabulary stays if anything is wrong."""
        names = check_vocabulary(labels, self.config.max_vocabulary)
        try:
            embeddings = self.encoder.encode(names)
        except EncoderError as error:
            raise LabelingError(f"could not encode the vocabulary: {error}") from error
        self.vocabulary, self.text_embeddings = names, np.asarray(embeddings, dtype=np.float32)

    def set_scene(self, features: np.ndarray, operator: PoolingOperator | None = None) -> None:
        """Make ``features`` (N x D, zero rows = unobserved) the scene to label, pooled by ``operator``.

        float32 features are kept by reference (no 150 MB copy for 100k x 384): do not modify them in place.
        """
        features, inverse_norm = checked_features(features)
        if features.shape[1] != self.encoder.dim:
            raise LabelingError(f"features are {features.shape[1]}-d but the text encoder gives {self.encoder.dim}-d")
        if operator is not None and operator.num_voxels != len(features):
            raise LabelingError(f"the pooling operator has {operator.num_voxels} voxels, features have {len(features)}")
        observed = inverse_norm > 0
        coverage = observed.astype(np.float32)
        pooled = None
        if operator is not None and self.config.path == "feature":
            pooled = operator.propagate(features * inverse_norm[:, None])
            if not observed.all():  # otherwise A^T 1 = 1: every row of A sums to one
                coverage = operator.propagate(coverage)
        elif operator is not None and not observed.all():
            coverage = None  # pooled with the first class columns (see _Scene)
        self._scene = _Scene(features, inverse_norm, operator, coverage, pooled, {})

    def class_scores(self, names: Sequence[str] | None = None) -> np.ndarray:
        """N x C pooled cosine scores of the current scene for ``names`` (default: the vocabulary)."""
        scene = self._require_scene()
        names = self.vocabulary if names is None else tuple(names)
        try:
            embeddings = self.text_embeddings if names == self.vocabulary else self.encoder.encode(list(names))
        except EncoderError as error:
            raise LabelingError(f"could not encode {list(names)!r}: {error}") from error
        if scene.operator is None:
            raw = scene.cosines(embeddings)
        elif scene.pooled_features is not None:
            raw = scene.pooled_features @ embeddings.T
        else:
            missing = [i for i, name in enumerate(names) if name not in scene.columns]
            if missing:
                if len(scene.columns) + len(missing) > self.config.max_vocabulary:  # bound the cache's memory
                    scene.columns = {name: scene.columns[name] for name in names if name in scene.columns}
                fresh = scene.cosines(embeddings[missing])
                if scene.coverage is None:
                    fresh = np.column_stack([fresh, scene.inverse_norm > 0])
                fresh = scene.operator.propagate(fresh)
                if scene.coverage is None:
                    scene.coverage, fresh = fresh[:, -1], fresh[:, :-1]
                scene.columns.update({names[i]: fresh[:, j] for j, i in enumerate(missing)})
            raw = np.stack([scene.columns[name] for name in names], axis=1)
        if (scene.coverage == 1).all():
            return raw.astype(np.float32, copy=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(scene.coverage[:, None] > 0, raw / scene.coverage[:, None], 0.0).astype(np.float32)

    def label(self) -> Labeling:
        """Label the current scene with the current vocabulary."""
        if not self.vocabulary:
            raise LabelingError("no vocabulary set; call set_vocabulary first")
        scene = self._require_scene()
        scores = self.class_scores()
        best = scores.argmax(axis=1)
        best_score = scores[np.arange(len(scores)), best]
        background = (scene.coverage < max(self.config.min_coverage, np.finfo(np.float32).tiny)) | (
            best_score < self.config.min_score
        )
        labels = np.where(background, self.background_index, best).astype(np.int64)
        return Labeling(labels, best_score.astype(np.float32), self.vocabulary)

    def _require_scene(self) -> _Scene:
        if self._scene is None:
            raise LabelingError("no scene set; call set_scene(features, operator) first")
        return self._scene
