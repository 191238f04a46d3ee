"""The segmenter a live host drives: frames in as they come, a labeled snapshot out on a schedule.

    online = OnlineSegmenter(OnlineSegmenterConfig.from_yaml("ovseg3d.yaml", "online"))
    for frame in camera: online.observe(frame); snapshot = online.snapshot() if online.purify_due() else None

A ROS node, a script replaying a bag or any other host uses it the same way: it decides
keyframes, schedules purification, keeps the vocabulary transactional and turns the map into
what a viewer shows (positions, labels, scores, colours, legend, the newest observation's
stamp). Every public method takes one lock, so a host may call from several threads.

Without 2D model weights a snapshot is the geometry in the camera's colours with every voxel
labeled background; :meth:`set_checkpoint` attaches the model later without losing the map.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.keyframes import KeyframeConfig, KeyframeSelector
from ovseg3d_core.labeling import Labeling
from ovseg3d_core.segmenter import PurifyReport, SceneSegmenter, SegmenterConfig
from ovseg3d_core.viz.cloud_render import label_palette, score_colors

BACKGROUND_NAME = "background"


@dataclass
class OnlineSegmenterConfig(Config):
    """When to run the 2D model and when to purify; ``segmenter`` holds the pipeline's own config."""

    keyframes: KeyframeConfig = setting(KeyframeConfig(), "when to run the 2D model on a frame")
    purify_period_s: float = setting(5.0, "purify + publish the labeled cloud this often (0 = on demand)", low=0.0)
    segmenter: SegmenterConfig = setting(SegmenterConfig(), "segmentation pipeline")


@dataclass(frozen=True)
class Observation:
    """What one frame did: voxels it touched (0 = not integrated) and whether features were lifted."""

    touched: int
    keyframe: bool


@dataclass(frozen=True)
class Legend:
    """Names (background last), their display colours (RGB in [0, 1]) and voxel counts."""

    labels: tuple[str, ...]
    colors: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class SceneSnapshot:
    """The map as a viewer shows it; ``labels`` index ``legend.labels`` (background last).

    ``stamp_ns`` is the newest observation's stamp (None for an empty or loaded map), ``source``
    what produced the labels (the 2D source's description, or why there are none).
    """

    positions: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    colors: np.ndarray
    legend: Legend
    stamp_ns: int | None
    source: str
    report: PurifyReport | None

    @property
    def labeled(self) -> bool:
        """Whether the labels come from a 2D model (False: geometry only, every voxel background)."""
        return self.report is not None


@dataclass(frozen=True)
class QueryResult:
    """Voxels scoring at least the threshold for a text, in score colours, with the map's labels."""

    positions: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    colors: np.ndarray
    max_score: float
    voxels: int


class OnlineSegmenter:
    """Keyframes, purify schedule, transactional vocabulary and snapshots around a :class:`SceneSegmenter`."""

    def __init__(self, config: OnlineSegmenterConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or OnlineSegmenterConfig()
        self.segmenter = SceneSegmenter(self.config.segmenter)
        self.keyframe_selector = KeyframeSelector(self.config.keyframes)
        self._clock = clock
        self._lock = threading.RLock()
        self._dirty = False
        self._stamp_ns: int | None = None
        self._last_snapshot = clock()

    # ------------------------------------------------------------------ inputs
    def observe(self, frame: RGBDFrame, stamp_ns: int | None = None) -> Observation:
        """Integrate a posed frame and lift its features if it is a keyframe and a 2D model is attached.

        ``stamp_ns`` (default: the frame's stamp) becomes the snapshot stamp, exact to the nanosecond.
        """
        with self._lock:
            segmenter = self.segmenter
            touched = segmenter.integrate(frame)
            keyframe = False
            if touched:
                self._observed(round(frame.stamp * 1e9) if stamp_ns is None else stamp_ns)
                if segmenter.has_model and self.keyframe_selector.is_keyframe(frame.pose, frame.stamp):
                    segmenter.lift(frame)
                    keyframe = True
            return Observation(touched, keyframe)

    def add_points(self, xyz: np.ndarray, rgb: np.ndarray | None, stamp_ns: int) -> int:
        """Fuse world-frame points (x, y, z and optional colours) into the geometry."""
        with self._lock:
            touched = self.segmenter.add_points(xyz, rgb, stamp_ns * 1e-9)
            if touched:
                self._observed(stamp_ns)
            return touched

    def _observed(self, stamp_ns: int) -> None:
        self._stamp_ns = max(stamp_ns, self._stamp_ns or stamp_ns)
        self._dirty = True

    # ---------------------------------------------------------------- schedule
    def purify_due(self, waiting: int = 0) -> bool:
        """Whether a snapshot is due: once per period when no frames are ``waiting``, at the latest after four."""
        period = self.config.purify_period_s
        if period <= 0 or not self._dirty:
            return False
        waited = self._clock() - self._last_snapshot
        return waited >= 4 * period or (waited >= period and waiting == 0)

    @property
    def changed(self) -> bool:
        """Whether the map changed since the last snapshot."""
        return self._dirty

    # ---------------------------------------------------------------- outputs
    def snapshot(self) -> SceneSnapshot:
        """Purify if the map changed and label it; geometry in camera colours while no labels can be made.

        The period counts from the end of this call, so clouds leave at least a period apart however long
        purification took (an incremental one after a full rebuild is much shorter), and integration gets a
        period of CPU between purifications. Raises what purification or labeling raises (the schedule still
        counts the attempt).
        """
        with self._lock:
            try:
                return self._snapshot()
            finally:
                self._last_snapshot = self._clock()

    def _snapshot(self) -> SceneSnapshot:
        segmenter = self.segmenter
        positions = segmenter.scene.positions()
        if segmenter.has_model and segmenter.scene.feature_dim:
            labeling = segmenter.label()
            palette = label_palette(len(labeling.vocabulary))
            colors = (palette[labeling.labels] * 255).astype(np.uint8)
            report, source = segmenter.last_purify, segmenter.source_name
        else:
            labeling = self._unlabeled(len(positions))
            palette = label_palette(len(labeling.vocabulary))
            colors = segmenter.scene.colors()
            report, source = None, self.labels_unavailable()
        self._dirty = False
        legend = Legend((*labeling.vocabulary, BACKGROUND_NAME), palette, labeling.counts())
        return SceneSnapshot(
            positions, labeling.labels, labeling.scores, colors, legend, self._stamp_ns, source, report
        )

    def legend(self) -> Legend:
        """The current vocabulary's legend with no voxels counted (before anything was mapped)."""
        with self._lock:
            labeling = self._unlabeled(0)
            return Legend(
                (*labeling.vocabulary, BACKGROUND_NAME), label_palette(len(labeling.vocabulary)), labeling.counts()
            )

    def _unlabeled(self, voxels: int) -> Labeling:
        vocabulary = self.segmenter.vocabulary
        return Labeling(np.full(voxels, len(vocabulary), np.int64), np.zeros(voxels, np.float32), vocabulary)

    def labels_unavailable(self) -> str:
        """Why a snapshot has no labels yet: no 2D model (and how to attach one), or no keyframe lifted."""
        segmenter = self.segmenter
        if not segmenter.has_model:
            return segmenter.missing_model or "no 2D model is attached"
        return f"{segmenter.source_name}: no keyframe lifted yet"

    def set_vocabulary(self, labels: Sequence[str]) -> SceneSnapshot | None:
        """Replace the vocabulary and relabel; on any failure the previous vocabulary and scores stay.

        Returns the new snapshot, or None when there is nothing labeled to show yet.
        """
        with self._lock:
            previous = self.segmenter.vocabulary
            self.segmenter.set_vocabulary(labels)
            if not (self.segmenter.has_model and self.segmenter.scene.feature_dim):
                return None
            try:
                return self.snapshot()
            except BaseException:
                self.segmenter.set_vocabulary(previous)
                raise

    def query(self, text: str, threshold: float) -> QueryResult:
        """Voxels whose pooled score for ``text`` is at least ``threshold``, coloured by score."""
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        with self._lock:
            scores = self.segmenter.query(text)
            positions = self.segmenter.scene.positions()
            labels = self.segmenter.labeler.label().labels
        keep = scores >= threshold
        return QueryResult(
            positions[keep],
            labels[keep],
            scores[keep].astype(np.float32),
            score_colors(scores[keep]),
            float(scores.max()) if len(scores) else 0.0,
            len(scores),
        )

    # ------------------------------------------------------------------- state
    def set_checkpoint(self, checkpoint: str) -> str:
        """Load the 2D model from ``checkpoint`` (empty: detach it); on failure the current model stays.

        Features lifted by a previous model are dropped (another space), the geometry stays, and
        keyframes from now on carry the new model's features. Returns what now produces features.
        """
        with self._lock:
            encoders = self.segmenter.config.encoders.replace(checkpoint=checkpoint)
            self.segmenter.set_encoders(encoders)
            self.keyframe_selector.reset()  # the next frame is a keyframe for the new model
            self._dirty = True
            return self.segmenter.source_name if self.segmenter.has_model else self.labels_unavailable()

    def reset(self) -> None:
        """Forget the map; the vocabulary and the model stay."""
        with self._lock:
            self.segmenter.reset()
            self.keyframe_selector.reset()
            self._dirty = False
            self._stamp_ns = None

    def save(self, path: str | Path) -> Path:
        with self._lock:
            return self.segmenter.save(path)

    def load(self, path: str | Path) -> int:
        """Replace the map with a saved one (on error the current one stays); returns its voxels."""
        with self._lock:
            self.segmenter.load(path)
            self._dirty = True
            self._stamp_ns = None
            return len(self.segmenter.scene)

    @property
    def voxels(self) -> int:
        return len(self.segmenter.scene)
