"""Segmentation quality on labelled scans, measured the way the field reports it.

For each scan: render views along an automatic walk, run the same :class:`SceneSegmenter` the
node runs over them (the 2D source is the noisy oracle, a benchmark instrument, unless a real
checkpoint is given), label the map with each purification mode, and score every labelled point
of the scan (a point the map never observed is a miss) under ScanNet's single-scan rule. Over
several scans the confusion is summed per method and seed, as the official protocol does, and
scored over all 20 classes (and the 19 GeoPurify reports).

    result = evaluate_scans([load_scan(folder)], EvaluationConfig(seeds=5))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.data.scenes.labeled_scan import LabeledScan
from ovseg3d_core.data.scenes.scan_views import scan_views
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
from ovseg3d_core.encoders.noisy_oracle import ERROR_MIXES, NOISE_PRESETS, NoisyOracleConfig, mixed_rates
from ovseg3d_core.encoders.registry import DENSE_EXTRACTORS
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.metrics.scan_points import scan_point_labels
from ovseg3d_core.metrics.segmentation import (
    POOLED,
    SCANNET19_DROPPED,
    SINGLE_SCAN,
    confusion_matrix,
    segmentation_metrics,
)
from ovseg3d_core.segmenter import PURIFICATION_MODES, SceneSegmenter, SegmenterConfig

MEAN_FUSION, TOPK_FUSION = "mean_fusion", "topk_fusion"
MIN_COVERAGE = 0.5  # below this share of labelled points seen by the views, a scan's score is flagged


class EvaluationWarning(UserWarning):
    """A scan's result is less trustworthy than the others (e.g. its views miss most of it)."""


@dataclass
class EvaluationConfig(Config):
    """What to evaluate; defaults follow the segmentation benchmark."""

    backend: str = setting(
        "noisy_oracle", "2D source: the noisy oracle (benchmark instrument) or openclip", choices=DENSE_EXTRACTORS
    )
    checkpoint: str = setting("", "OpenCLIP weights file (backend openclip)")
    noise: str = setting("default", "noisy-oracle preset", choices=tuple(NOISE_PRESETS))
    severity: float | None = setting(
        None, "noisy-oracle severity on error_mix's scale, replacing the preset (calibration)", low=0.0, high=1.0
    )
    error_mix: str = setting("mixed", "the noisy-oracle error mix that severity scales", choices=tuple(ERROR_MIXES))
    seeds: int = setting(5, "noisy-oracle seeds 0..seeds-1 (one run for openclip)", low=1, high=1000)
    views: int = setting(80, "rendered views per scan", low=1, high=100_000)
    trajectory_seed: int = setting(0, "seed of the camera walk through each scan", low=0)
    purifications: list[str] = setting(
        ["student_geometric", "geometric"], "purification modes scored beside raw fusion"
    )
    topk: bool = setting(True, "also lift with GeoPurify's top-k agreement fusion (a second lifting pass)")
    segmenter: SegmenterConfig = setting(
        SegmenterConfig(purification="geometric"), "segmentation pipeline (encoders are set from backend)"
    )

    def validate(self) -> None:
        super().validate()
        unknown = sorted(set(self.purifications) - set(PURIFICATION_MODES) | ({"none"} & set(self.purifications)))
        if unknown:
            raise ConfigError(
                f"purifications {unknown} are not modes to compare with raw fusion: {PURIFICATION_MODES[:-1]}"
            )
        if self.backend == "openclip" and not self.checkpoint:
            raise ConfigError("backend openclip needs checkpoint (a local OpenCLIP weights file)")

    def oracle(self, seed: int) -> NoisyOracleConfig:
        if self.severity is not None:
            return NoisyOracleConfig(seed=seed, **mixed_rates(self.severity, self.error_mix))
        return NoisyOracleConfig.preset(self.noise, seed=seed)

    def run_seeds(self) -> list[int]:
        return list(range(self.seeds)) if self.backend == "noisy_oracle" else [0]

    def segmenter_config(self, seed: int, fusion: str) -> SegmenterConfig:
        encoders = self.segmenter.encoders.replace(dense=self.backend, checkpoint=self.checkpoint)
        if self.backend == "noisy_oracle":
            encoders = encoders.replace(noisy_oracle=self.oracle(seed))
        return self.segmenter.replace(
            encoders=encoders, lifting=self.segmenter.lifting.replace(fusion=fusion), purification="none"
        )

    def describe(self) -> str:
        if self.backend == "openclip":
            return f"openclip {self.segmenter.encoders.openclip.architecture} ({self.checkpoint})"
        severity = "" if self.severity is None else f", severity {self.severity:g} of the {self.error_mix} mix"
        return f"noisy oracle, a benchmark instrument: {self.oracle(0).describe()}{severity}"


@dataclass
class EvaluationRow:
    """One scan (or ``pooled``), one method, one seed; scores are fractions in [0, 1]."""

    scan: str
    method: str
    seed: int
    miou: float
    macc: float
    fmiou: float
    fmacc: float
    miou19: float
    per_class_iou: dict[str, float]
    rule: str

    @classmethod
    def from_confusion(cls, scan: str, method: str, seed: int, confusion: np.ndarray, rule: str) -> EvaluationRow:
        scores20 = segmentation_metrics(confusion, SCANNET20_CLASSES, rule=rule)
        scores19 = segmentation_metrics(confusion, SCANNET20_CLASSES, drop_classes=SCANNET19_DROPPED, rule=rule)
        return cls(
            scan, method, seed, scores20.miou, scores20.macc, scores20.fmiou, scores20.fmacc, scores19.miou,
            scores20.per_class_iou, scores20.rule,
        )  # fmt: skip


@dataclass
class ScanOutcome:
    """What one scan gave: coverage of its labelled points and, per (method, seed), the per-point labels."""

    name: str
    coverage: float
    views: int
    predictions: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    config: EvaluationConfig
    rows: list[EvaluationRow]
    scans: list[ScanOutcome]
    warnings: list[str]

    def to_dict(self) -> dict:
        oracle = self.config.oracle(0)
        return {
            "backend": self.config.backend,
            "source": self.config.describe(),
            "preset": {"name": oracle.preset_name, "rates": oracle.rates()}
            if self.config.backend == "noisy_oracle"
            else None,
            "scans": [s.name for s in self.scans],
            "coverage": {s.name: s.coverage for s in self.scans},
            "views": self.config.views,
            "seeds": self.config.run_seeds(),
            "rules": {"scan": SINGLE_SCAN, "pooled": POOLED},
            "warnings": self.warnings,
            "rows": [row.__dict__ for row in self.rows],
        }


def evaluate_scans(
    scans: Sequence[LabeledScan],
    config: EvaluationConfig | None = None,
    render: Callable[[LabeledScan, int, int], list[RGBDFrame]] | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Score every method of ``config`` on every scan; rows per scan, method and seed, then pooled rows."""
    from tqdm import tqdm

    config = config or EvaluationConfig()
    render = render or scan_views
    if not scans:
        raise ConfigError("no scans to evaluate")
    rows: list[EvaluationRow] = []
    outcomes: list[ScanOutcome] = []
    messages: list[str] = []
    pooled: dict[tuple[str, int], np.ndarray] = {}
    methods = [MEAN_FUSION, *([TOPK_FUSION] if config.topk else []), *config.purifications]
    for scan in scans:
        frames = render(scan, config.views, config.trajectory_seed)
        outcome = ScanOutcome(scan.name, 0.0, len(frames))
        for seed in tqdm(config.run_seeds(), desc=f"{scan.name}: seeds", disable=not progress, leave=False):
            segmenter = lift_frames(config.segmenter_config(seed, "mean"), frames, progress, f"{scan.name} seed {seed}")
            for method in methods:
                if method == TOPK_FUSION:
                    lifted = lift_frames(config.segmenter_config(seed, "topk_agreement"), frames, progress, "top-k")
                    labels = lifted.label(list(SCANNET20_CLASSES)).labels
                    predicted = scan_point_labels(lifted.scene, scan.points, labels).labels
                else:
                    segmenter.set_purification("none" if method == MEAN_FUSION else method)
                    labels = segmenter.label(list(SCANNET20_CLASSES)).labels
                    points = scan_point_labels(segmenter.scene, scan.points, labels)
                    predicted = points.labels
                    labelled = scan.segment20 >= 0
                    outcome.coverage = float(points.observed[labelled].mean()) if labelled.any() else 0.0
                outcome.predictions[(method, seed)] = predicted
                confusion = confusion_matrix(scan.segment20, predicted, len(SCANNET20_CLASSES), ignore_index=-1)
                pooled[(method, seed)] = pooled.get((method, seed), 0) + confusion
                rows.append(EvaluationRow.from_confusion(scan.name, method, seed, confusion, SINGLE_SCAN))
        if outcome.coverage < MIN_COVERAGE:
            message = (
                f"{scan.name}: the {len(frames)} views cover {outcome.coverage:.0%} of its labelled points "
                f"(under {MIN_COVERAGE:.0%}); its scores mostly count unobserved points as misses"
            )
            warnings.warn(message, EvaluationWarning, stacklevel=2)
            messages.append(message)
        outcomes.append(outcome)
    for (method, seed), confusion in pooled.items():
        rows.append(EvaluationRow.from_confusion("pooled", method, seed, confusion, POOLED))
    return EvaluationResult(config, rows, outcomes, messages)


def lift_frames(
    config: SegmenterConfig, frames: list[RGBDFrame], progress: bool = True, what: str = "views"
) -> SceneSegmenter:
    """A segmenter that has lifted every frame as a keyframe (labels come later, per method)."""
    from tqdm import tqdm

    segmenter = SceneSegmenter(config)
    for frame in tqdm(frames, desc=f"{what}: lift", disable=not progress, leave=False):
        segmenter.add_frame(frame, keyframe=True)
    return segmenter


def summarise(rows: Sequence[EvaluationRow], scan: str = "pooled") -> dict[str, dict[str, float]]:
    """Per method: the mean and standard deviation over seeds of mIoU, and the gain over mean fusion paired per seed."""
    by_method: dict[str, dict[int, EvaluationRow]] = {}
    for row in rows:
        if row.scan == scan:
            by_method.setdefault(row.method, {})[row.seed] = row
    base = by_method.get(MEAN_FUSION, {})
    summary = {}
    for method, per_seed in by_method.items():
        miou = np.array([r.miou for r in per_seed.values()])
        gains = np.array([per_seed[s].miou - base[s].miou for s in per_seed if s in base])
        summary[method] = {
            "miou_mean": float(miou.mean()),
            "miou_std": float(miou.std()),
            "miou19_mean": float(np.mean([r.miou19 for r in per_seed.values()])),
            "macc_mean": float(np.mean([r.macc for r in per_seed.values()])),
            "gain_mean": float(gains.mean()) if len(gains) else float("nan"),
            "gain_std": float(gains.std()) if len(gains) else float("nan"),
            "seeds": len(per_seed),
        }
    return summary


def fused_miou(
    scan: LabeledScan,
    severity: float,
    mix: str = "mixed",
    seeds: int = 3,
    views: int = 80,
    render: Callable[[LabeledScan, int, int], list[RGBDFrame]] | None = None,
) -> dict:
    """Mean multi-view fusion's mIoU per seed at ``severity`` of ``mix``: one point of a calibration sweep."""
    config = EvaluationConfig(severity=severity, error_mix=mix, seeds=seeds, views=views, purifications=[], topk=False)
    result = evaluate_scans([scan], config, render=render)
    per_seed = [r.miou for r in result.rows if r.scan == scan.name and r.method == MEAN_FUSION]
    return {
        "severity": severity,
        "mix": mix,
        "rates": mixed_rates(severity, mix),
        "miou_per_seed": per_seed,
        "miou_mean": float(np.mean(per_seed)),
        "miou_std": float(np.std(per_seed)),
        "coverage": result.scans[0].coverage,
    }


def severity_for(sweep: Sequence[dict], target_miou: float) -> float:
    """The severity at which fused mIoU crosses ``target_miou``, interpolated between :func:`fused_miou` points."""
    points = sorted(sweep, key=lambda row: row["severity"])
    xs = np.array([row["severity"] for row in points])
    ys = np.array([row["miou_mean"] for row in points])
    # mIoU falls with severity: interpolate the crossing (np.interp needs rising x, hence the negation).
    return round(float(np.clip(np.interp(-target_miou, -ys, xs), 0.0, 1.0)), 3)
