"""Open-vocabulary segmentation of a growing scene: the library's three-line entry point.

    segmenter = SceneSegmenter(SegmenterConfig.from_yaml("segmenter.yaml"))  # names the 2D model's checkpoint
    for i, frame in enumerate(frames): segmenter.add_frame(frame, keyframe=i % 10 == 0)
    labeling = segmenter.label(["chair", "something to sit on"])

It owns the voxel map, the 2D feature source, the lifter, the purification (GeoPurify student,
plain geometric affinity, or their product) and the labeler, and keeps them consistent: geometry can grow every
frame, features are lifted at keyframes, and :meth:`purify` brings the purification up to date when
the map changed since the last one: by default only where it changed (the kNN graph, student
embeddings, operator rows and pooled scores a change can reach; :mod:`ovseg3d_core.incremental_purification`),
with a full rebuild on ``purify(force=True)``, for large changes, or after a reset or load (a
vocabulary change on a purified map reuses it).

Without 2D model weights (no ``encoders.checkpoint``) it still maps geometry; :attr:`missing_model`
says why nothing can be labeled, and :meth:`set_encoders` attaches a model later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
from ovseg3d_core.encoders.base import FrameFeatureSource
from ovseg3d_core.encoders.registry import (
    EncoderConfig,
    build_dense_extractor,
    build_text_encoder,
    load_shared_model,
)
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.geometry import unpack_voxel_keys
from ovseg3d_core.incremental_purification import IncrementalConfig, IncrementalPurifier
from ovseg3d_core.labeling import Labeler, Labeling, LabelingConfig, check_vocabulary
from ovseg3d_core.lifting import FeatureLifter, LiftingConfig
from ovseg3d_core.paths import student_checkpoint
from ovseg3d_core.purify.pooling import PoolingConfig, PoolingOperator, warm_up
from ovseg3d_core.scene import SceneConfig, SceneMap

PURIFICATION_MODES = ("student_geometric", "student", "geometric", "none")


@dataclass
class SegmenterConfig(Config):
    """Everything the segmentation pipeline needs; the scene node declares it as its parameters."""

    scene: SceneConfig = setting(SceneConfig(), "voxel map")
    lifting: LiftingConfig = setting(LiftingConfig(), "2D -> 3D feature lifting")
    encoders: EncoderConfig = setting(EncoderConfig(), "2D feature source and text encoder")
    purification: str = setting(
        "student_geometric",
        "student_geometric (the student's affinity times the bilateral kernel; best measured, "
        "benchmarks/results/segmentation.md), student (GeoPurify's learned affinity alone), "
        "geometric (bilateral kNN affinity, no student) or none (raw fusion)",
        choices=PURIFICATION_MODES,
    )
    student_checkpoint: str = setting("", "student weights file; empty = the shipped geometry-only student")
    pooling: PoolingConfig = setting(PoolingConfig(), "geometry-guided pooling")
    incremental: IncrementalConfig = setting(
        IncrementalConfig(), "incremental purification: update only what a change of the map can reach"
    )
    labeling: LabelingConfig = setting(LabelingConfig(), "vocabulary labeling")
    vocabulary: list[str] = setting(list(SCANNET20_CLASSES), "initial vocabulary (ScanNet20 names)")

    def validate(self) -> None:
        """A missing student file fails here, not at the first purification minutes later."""
        super().validate()
        if self.purification.startswith("student") and not student_checkpoint(self.student_checkpoint).is_file():
            raise ConfigError(
                f"segmenter.student_checkpoint: {student_checkpoint(self.student_checkpoint)} not found "
                f"(purification: {self.purification} needs it; empty = the shipped geometry-only student)"
            )


@dataclass
class PurifyReport:
    """What the last purification did, for logs and status lines."""

    voxels: int
    mode: str
    student_ms: float = 0.0
    pooling_ms: float = 0.0
    observed_voxels: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    kind: str = "full"  # "full" (rebuilt) or "incremental" (updated where the map changed)
    changed_voxels: int = 0  # voxels that appeared, were evicted, moved, changed colour/normal or were lifted
    region_voxels: int = 0  # voxels whose pooled scores were recomputed


class SegmenterError(ValueError):
    """The segmenter cannot do what was asked in its current state (e.g. label an empty map)."""


@dataclass
class _Models:
    """What a 2D model brings: the labeler in its text space, the feature source, the agreement classes."""

    labeler: Labeler
    source: FrameFeatureSource
    agreement: np.ndarray | None


class SceneSegmenter:
    """Voxel map + lifted VLM features + GeoPurify purification + open-vocabulary labels."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        self.scene = SceneMap(self.config.scene)
        self.lifter = FeatureLifter(self.config.lifting)
        self.vocabulary: tuple[str, ...] = check_vocabulary(self.config.vocabulary, self.config.labeling.max_vocabulary)
        self._models: _Models | None = None
        self.missing_model: str | None = None
        self._student = None
        self._student_failure: tuple[tuple, Exception] | None = None
        self._purified_version: int | None = None
        self._kernels_warm = False
        self._purifier = self._new_purifier()
        self.last_purify: PurifyReport | None = None
        self.keyframes = 0
        self.set_encoders(self.config.encoders)

    @property
    def purifier(self) -> IncrementalPurifier:
        """What the last purification kept (graph, embeddings, operator) for the next one to update."""
        return self._purifier

    def _new_purifier(self) -> IncrementalPurifier:
        config = self.config
        return IncrementalPurifier(config.purification, config.pooling, config.incremental, self._load_student)

    # ------------------------------------------------------------------ models
    def set_encoders(self, encoders: EncoderConfig) -> None:
        """Attach the 2D model ``encoders`` names (e.g. a checkpoint set at runtime); on failure nothing changes.

        Raises the encoder's error (a missing, corrupt or mismatched file names itself). Features
        lifted by a previous model live in another space, so they are dropped; the geometry stays.
        With no checkpoint the segmenter maps geometry only and :attr:`missing_model` says why.
        """
        missing = encoders.missing_weights_reason()
        models = None if missing else self._build_models(encoders)
        if self._models is not None and self.scene.feature_dim:
            self.scene.clear_features()
        self._models, self.missing_model = models, missing
        self.config = self.config.replace(encoders=encoders)
        if models is not None and models.agreement is not None:
            self.lifter.set_agreement_classes(models.agreement)
        self._purifier.invalidate()
        self._purified_version = None
        self.last_purify = None

    def _build_models(self, encoders: EncoderConfig) -> _Models:
        model = load_shared_model(encoders)
        labeler = Labeler(
            build_text_encoder(encoders, prompted=False, model=model),
            self.config.labeling,
            self.vocabulary,
            prompts=encoders.prompts,
        )
        source = build_dense_extractor(encoders, labeler.encoder, model)
        agreement = None
        if self.config.lifting.fusion == "topk_agreement":
            agreement = labeler.encoder.encode(self.config.lifting.agreement_classes)
        return _Models(labeler, source, agreement)

    @property
    def has_model(self) -> bool:
        """Whether a 2D model is attached (features can be lifted and the map labeled)."""
        return self._models is not None

    @property
    def labeler(self) -> Labeler:
        return self._require_models().labeler

    @property
    def feature_source(self):
        """The configured 2D source (OpenCLIP dense features, or a benchmark's noisy oracle)."""
        return self._require_models().source

    @property
    def source_name(self) -> str:
        """What produces the features, for logs and status lines (the source's own description)."""
        if self._models is None:
            return "no 2D model"
        return self._models.source.description

    def _require_models(self) -> _Models:
        if self._models is None:
            raise SegmenterError(self.missing_model or "no 2D model is attached")
        return self._models

    # ------------------------------------------------------------------ inputs
    def integrate(self, frame: RGBDFrame) -> int:
        """Fuse a frame's geometry and colour; returns voxels touched (0 if it was skipped)."""
        return self.scene.integrate(frame)

    def lift(self, frame: RGBDFrame) -> int:
        """Run the 2D source on a keyframe and lift its features into the map."""
        features = self.feature_source.extract_frame(frame, view_index=self.keyframes)
        lifted = self.lifter.lift(
            self.scene, features.features, frame.depth, frame.intrinsics, frame.pose, valid=features.valid
        )
        self.keyframes += 1
        return lifted

    def add_frame(self, frame: RGBDFrame, keyframe: bool = True) -> int:
        """Integrate a frame and, at keyframes with a 2D model attached, lift its features; returns voxels touched."""
        touched = self.integrate(frame)
        if keyframe and touched and self.has_model:
            self.lift(frame)
        return touched

    def add_points(self, xyz: np.ndarray, rgb: np.ndarray | None = None, stamp: float = 0.0) -> int:
        """Fuse world-frame points (e.g. a PointCloud2 or mesh vertices) into the map's geometry."""
        return self.scene.integrate_points(xyz, rgb, stamp)

    # ------------------------------------------------------------ purification
    def _load_student(self):
        """The student, loaded once; a file that failed to load is not re-read until it changes."""
        if self._student is None:
            from ovseg3d_core.purify.student import load_student  # torch, spconv: loaded with the first student

            path = student_checkpoint(self.config.student_checkpoint or None)
            try:
                stat = path.stat()
                identity = (str(path), stat.st_mtime_ns, stat.st_size)
            except OSError:
                identity = (str(path), None, None)
            if self._student_failure is not None and self._student_failure[0] == identity:
                raise self._student_failure[1]
            try:
                self._student = load_student(path)
            except Exception as error:
                self._student_failure = (identity, error)
                raise
            self._student_failure = None
        return self._student

    def student_embeddings(self) -> np.ndarray:
        """N x 128 unit embeddings of the current map's voxels from the student affinity network."""
        from ovseg3d_core.purify.student import embed_voxels, student_input_features  # torch, spconv: lazy

        student = self._load_student()
        # The map's own voxel grid: the student aligns its coarse grid to these absolute coordinates,
        # so a voxel's embedding does not change when the map grows in another corner.
        coords = unpack_voxel_keys(self.scene.keys)
        semantic = self.scene.features() if student.config.variant == "official" else None
        feats = student_input_features(student.config, coords, self.scene.colors(), self.scene.normals(), semantic)
        return embed_voxels(student, coords, feats)

    def _warm_kernels(self, timings: dict[str, float]) -> None:
        if not self._kernels_warm:  # compiled (or loaded from numba's cache) here, not in a label request
            timings["jit_ms"] = warm_up(self.config.pooling.threads) * 1e3
            self._kernels_warm = True

    def pooling_operator(self) -> tuple[PoolingOperator | None, dict[str, float]]:
        """The propagation operator of the configured purification for the current map, built from scratch."""
        timings: dict[str, float] = {}
        if self.config.purification != "none":
            self._warm_kernels(timings)
        operator, built, _ = self._purifier.build_operator(self.scene)
        return operator, {**timings, **built}

    def set_purification(self, mode: str) -> None:
        """Switch the purification mode; the lifted features stay, the next :meth:`purify` rebuilds the operator.

        An evaluation compares modes on one lifted map this way instead of lifting it once per mode.
        """
        self.config = self.config.replace(purification=mode)  # validated: an unknown mode raises ConfigError
        self._purifier = self._new_purifier()
        self._purified_version = None

    def purify(self, force: bool = False) -> PurifyReport:
        """Bring the labeler's scene (features + pooling operator + pooled scores) up to date with the map.

        Updates only what changed since the last purification (``incremental`` settings), or
        rebuilds everything with ``force`` (the reference an update is compared against). A map whose
        version moved without any voxel changing keeps the previous result.
        """
        if len(self.scene) == 0:
            raise SegmenterError("the scene map is empty: integrate frames before purifying")
        self._require_models()
        if self.scene.feature_dim == 0:
            raise SegmenterError("no features have been lifted yet: add a keyframe first")
        if not force and self._purified_version == self.scene.version and self.last_purify is not None:
            return self.last_purify
        timings: dict[str, float] = {}
        if self.config.purification != "none":
            self._warm_kernels(timings)
        update = self._purifier.purify(self.scene, self.labeler, force=force)
        self._purified_version = self.scene.version
        if update.kind == "unchanged" and self.last_purify is not None:
            return self.last_purify
        timings.update(update.timings)
        pooling_parts = ("pooling_ms", "remap_ms", "graph_scan_ms", "knn_ms", "weights_ms", "region_ms", "labeler_ms")
        observed = int(np.count_nonzero(self.scene.feature_weights() > 0))
        self.last_purify = PurifyReport(
            voxels=len(self.scene),
            mode=self.config.purification,
            student_ms=timings.get("student_ms", 0.0),
            pooling_ms=sum(timings.get(name, 0.0) for name in pooling_parts),
            observed_voxels=observed,
            timings=timings,
            kind=update.kind,
            changed_voxels=update.changed_voxels,
            region_voxels=update.region_voxels,
        )
        return self.last_purify

    # ---------------------------------------------------------------- outputs
    def set_vocabulary(self, labels: Sequence[str]) -> None:
        """Replace the vocabulary (encoded now if a model is attached); on error the previous one stays.

        Lifted state never depends on it (top-k agreement votes over its own class list).
        """
        names = check_vocabulary(labels, self.config.labeling.max_vocabulary)
        if self._models is not None:
            self._models.labeler.set_vocabulary(names)
        self.vocabulary = names

    def label(self, vocabulary: Sequence[str] | None = None) -> Labeling:
        """Per-voxel labels for the vocabulary (changing it first when given), purifying if needed."""
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self.purify()
        return self.labeler.label()

    def query(self, text: str) -> np.ndarray:
        """Per-voxel score (pooled cosine, -1..1) of a free-text query against the current map."""
        if not isinstance(text, str) or not text.strip():
            raise SegmenterError("the query text is empty")
        self.purify()
        return self.labeler.class_scores([text.strip()])[:, 0]

    def reset(self) -> None:
        """Forget the map (vocabulary and loaded models stay)."""
        self.scene.reset()
        self._purifier.invalidate()
        self._purified_version = None
        self.last_purify = None
        self.keyframes = 0

    def save(self, path: str | Path) -> Path:
        return self.scene.save(path)

    def load(self, path: str | Path) -> None:
        """Replace the map with a saved one; on error the current map stays."""
        self.scene = SceneMap.load(path, self.config.scene)
        self._purifier.invalidate()
        self._purified_version = None
        self.last_purify = None
