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

Features may be float16 (the map's storage): they are read row by row by compiled kernels, never
copied whole to float32. Cosines are computed row by row in a fixed order, so a voxel's value does not
depend on which other rows are computed with it; that is what lets :meth:`Labeler.update_scene`
recompute only a changed region of a map and match a full :meth:`Labeler.set_scene` bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.encoders.base import EncoderError, TextEncoder
from ovseg3d_core.encoders.prompts import PromptConfig, PromptedTextEncoder
from ovseg3d_core.jit import lanes, load_float, parallel_launch
from ovseg3d_core.purify.pooling import PoolingOperator, RegionPlan


@numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _squared_norms(features):
    """float32 squared norm of each row (float16 rows arrive as uint16 bits)."""
    n, d = features.shape
    out = np.empty(n, dtype=np.float32)
    for i in numba.prange(n):
        total = np.float32(0.0)
        for j in range(d):
            value = load_float(features[i, j])
            total += value * value
        out[i] = total
    return out


@numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _cosine_rows(features, rows, embeddings, inverse_norm):
    """Cosine of rows ``rows`` of ``features`` with each embedding (0 for unobserved rows), one row at a time."""
    count, d = len(rows), features.shape[1]
    out = np.empty((count, embeddings.shape[0]), dtype=np.float32)
    for r in numba.prange(count):
        i = rows[r]
        row = np.empty(d, dtype=np.float32)
        for j in range(d):
            row[j] = load_float(features[i, j])
        for c in range(embeddings.shape[0]):
            total = np.float32(0.0)
            for j in range(d):
                total += row[j] * embeddings[c, j]
            out[r, c] = total * inverse_norm[i]
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _unit_feature_rows(features, rows, inverse_norm):
    """Rows ``rows`` of ``features`` times their inverse norms (unit rows; zero rows stay zero), float32."""
    count, d = len(rows), features.shape[1]
    out = np.empty((count, d), dtype=np.float32)
    for r in numba.prange(count):
        i = rows[r]
        for j in range(d):
            out[r, j] = load_float(features[i, j]) * inverse_norm[i]
    return out


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
    ``coverage_pooled`` says whether ``coverage`` went through A (else it is the observed mask
    itself: every voxel observed, or no operator). ``embeddings`` holds each cached column's text
    embedding, for a region update. ``block`` is the N x C array whose columns are ``columns`` (in
    their order) when they all come from one (None otherwise): an update then carries it as it is.
    """

    features: np.ndarray
    inverse_norm: np.ndarray
    operator: PoolingOperator | None
    coverage: np.ndarray | None
    pooled_features: np.ndarray | None
    columns: dict[str, np.ndarray]
    coverage_pooled: bool = False
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    block: np.ndarray | None = None

    def cosines(self, embeddings: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine of each (unpooled) voxel feature, or of ``rows``, with each embedding; 0 for unobserved voxels."""
        rows = np.arange(len(self.features)) if rows is None else np.asarray(rows, dtype=np.int64)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        with parallel_launch():
            return _cosine_rows(lanes(self.features), rows, embeddings, self.inverse_norm)

    def unit_features(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The unit features (float32) of all voxels or of ``rows``."""
        rows = np.arange(len(self.features)) if rows is None else np.asarray(rows, dtype=np.int64)
        with parallel_launch():
            return _unit_feature_rows(lanes(self.features), rows, self.inverse_norm)


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


def checked_features(features: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validated N x D features (float16 kept as is, anything else as float32) and the inverse row
    norms (0 for all-zero, unobserved rows) of all rows or of ``rows``."""
    features = np.asarray(features)
    if features.dtype != np.float16:
        features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise LabelingError(f"features must be a non-empty N x D array, got shape {features.shape}")
    features = features if features.flags.c_contiguous else np.ascontiguousarray(features)
    picked = features if rows is None else features[np.asarray(rows, dtype=np.int64)]
    with parallel_launch():
        norms = np.sqrt(_squared_norms(lanes(picked)))
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

    def _checked_scene(self, features: np.ndarray, operator: PoolingOperator | None) -> None:
        if features.shape[1] != self.encoder.dim:
            raise LabelingError(f"features are {features.shape[1]}-d but the text encoder gives {self.encoder.dim}-d")
        if operator is not None and operator.num_voxels != len(features):
            raise LabelingError(f"the pooling operator has {operator.num_voxels} voxels, features have {len(features)}")

    def set_scene(self, features: np.ndarray, operator: PoolingOperator | None = None) -> None:
        """Make ``features`` (N x D, zero rows = unobserved) the scene to label, pooled by ``operator``.

        float16 and float32 features are kept by reference (no copy of a map's features): do not
        modify them in place while this scene is in use.
        """
        features, inverse_norm = checked_features(features)
        self._checked_scene(features, operator)
        observed = inverse_norm > 0
        coverage = observed.astype(np.float32)
        scene = _Scene(features, inverse_norm, operator, coverage, None, {})
        if operator is not None and self.config.path == "feature":
            scene.pooled_features = operator.propagate(scene.unit_features())
            if not observed.all():  # otherwise A^T 1 = 1: every row of A sums to one
                scene.coverage, scene.coverage_pooled = operator.propagate(coverage), True
        elif operator is not None and not observed.all():
            scene.coverage = None  # pooled with the first class columns (see _Scene)
        self._scene = scene

    def update_scene(
        self,
        features: np.ndarray,
        operator: PoolingOperator,
        plan: RegionPlan,
        previous: np.ndarray,
        changed: np.ndarray,
    ) -> None:
        """The scene after a local change of the map: what :meth:`set_scene` (features, operator) and
        the pooled columns cached so far would give, recomputed only inside ``plan``.

        ``previous[i]`` is voxel i's index in the current scene (-1: new voxel); ``changed`` lists the
        voxels whose feature changed (new voxels need not be listed). ``plan`` (a region of
        ``operator``) must cover every voxel whose pooled value can differ from the current scene's:
        the others keep theirs. A cut-short plan holds its boundary at the current pooled values.
        """
        old = self._require_scene()
        previous = np.asarray(previous, dtype=np.int64)
        kept = previous >= 0
        fresh = np.union1d(np.flatnonzero(~kept), np.asarray(changed, dtype=np.int64))
        features, inverse_fresh = checked_features(features, fresh)
        self._checked_scene(features, operator)
        if len(previous) != len(features):
            raise LabelingError(f"previous has {len(previous)} entries for {len(features)} voxels")
        count, old_count = len(features), len(old.features)
        # The voxel order is unchanged when every old voxel keeps its index (new voxels come after them).
        in_order = (
            count >= old_count
            and np.array_equal(previous[:old_count], np.arange(old_count))
            and not kept[old_count:].any()
        )
        inverse_norm = np.zeros(count, dtype=np.float32)
        if in_order:
            inverse_norm[:old_count] = old.inverse_norm
        else:
            inverse_norm[kept] = old.inverse_norm[previous[kept]]
        inverse_norm[fresh] = inverse_fresh
        observed = inverse_norm > 0
        scene = _Scene(features, inverse_norm, operator, observed.astype(np.float32), None, {})
        pool_coverage = not observed.all()
        feature_path = self.config.path == "feature"
        if (
            old.operator is None
            or (feature_path and old.pooled_features is None)
            or (pool_coverage and not old.coverage_pooled and (feature_path or old.columns))
        ):
            # Nothing pooled to carry over (e.g. the current coverage is the exact all-ones shortcut).
            self.set_scene(features, operator)
            return

        def carried(values: np.ndarray) -> np.ndarray:
            """``values`` in the new voxel order: the array itself when the order and size are unchanged
            (its region rows are overwritten once everything is computed), else a copy."""
            if in_order and count == old_count:
                return values
            if in_order:
                out = np.empty((count, *values.shape[1:]), dtype=np.float32)
                out[:old_count], out[old_count:] = values, 0.0
            else:
                out = np.zeros((count, *values.shape[1:]), dtype=np.float32)
                out[kept] = values[previous[kept]]
            return out

        # The pooled arrays of the new scene: carried over, then their rows in the region overwritten.
        # Each is (N x width): pooled features, cached class columns, pooled coverage.
        pooled: list[tuple[np.ndarray, np.ndarray]] = []  # (carried array, its inputs on the support)
        support = plan.support
        if feature_path:
            scene.pooled_features = carried(old.pooled_features)
            pooled.append((scene.pooled_features, scene.unit_features(support)))
        elif old.columns:
            names = list(old.columns)
            embeddings = np.stack([old.embeddings[name] for name in names])
            block = old.block if old.block is not None else np.stack([old.columns[name] for name in names], axis=1)
            scene.block = columns = carried(block)
            scene.columns = {name: columns[:, j] for j, name in enumerate(names)}
            scene.embeddings = dict(zip(names, embeddings, strict=True))
            pooled.append((columns, scene.cosines(embeddings, support)))
        elif pool_coverage:
            scene.coverage = None  # nothing pooled yet: it rides along with the first class columns
            self._scene = scene
            return
        if pool_coverage:
            scene.coverage, scene.coverage_pooled = carried(old.coverage), True
            pooled.append((scene.coverage[:, None], observed[support].astype(np.float32)[:, None]))
        if pooled:
            values = plan.propagate(
                np.concatenate([inputs for _, inputs in pooled], axis=1),
                np.concatenate([array[plan.boundary] for array, _ in pooled], axis=1),
            )
            start, rows = 0, plan.rows
            for array, inputs in pooled:
                array[rows] = values[:, start : start + inputs.shape[1]]
                start += inputs.shape[1]
        self._scene = scene

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
                    scene.embeddings = {name: scene.embeddings[name] for name in scene.columns}
                fresh = scene.cosines(embeddings[missing])
                if scene.coverage is None:
                    fresh = np.column_stack([fresh, scene.inverse_norm > 0])
                fresh = scene.operator.propagate(fresh)
                if scene.coverage is None:
                    scene.coverage, scene.coverage_pooled, fresh = fresh[:, -1], True, fresh[:, :-1]
                scene.block = None if scene.columns else fresh
                scene.columns.update({names[i]: fresh[:, j] for j, i in enumerate(missing)})
                scene.embeddings.update({names[i]: embeddings[i] for i in missing})
            if scene.block is not None and tuple(scene.columns) == names:
                raw = scene.block  # the cache in this order: no restacking (copied below, never handed out)
            else:
                raw = np.stack([scene.columns[name] for name in names], axis=1)
        if (scene.coverage == 1).all():
            return raw.copy() if raw is scene.block else raw.astype(np.float32, copy=False)
        scores = np.zeros(raw.shape, dtype=np.float32)
        coverage = scene.coverage[:, None]
        return np.divide(raw, coverage, out=scores, where=coverage > 0)

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
