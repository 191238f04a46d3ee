"""Semantic segmentation metrics as the official ScanNet, OpenScene and GeoPurify evaluations compute them.

Every evaluated point adds one count to a confusion matrix (rows = true class). IoU of a class is
TP / (TP + FP + FN) and its accuracy TP / (points of the class); how the per-class values are
averaged depends on what was evaluated, and every :class:`SegmentationMetrics` names its rule:

- ``scannet-official`` (one scan): ScanNet's ``evaluate_semantic_label.py`` gives a class an IoU
  whenever its union is non-zero and NaN only when it is empty. A class predicted but absent from
  the ground truth therefore scores 0 and counts in the mean; a class neither present nor
  predicted is left out. Accuracy has no value for a class without ground truth (0 / 0; ScanNet
  reports no accuracy at all, and OpenScene's ``evaluate`` scores accuracy only for classes with
  ground-truth points), so mAcc averages the classes with ground truth: a wrong prediction is
  already a miss in the accuracy of the point's true class.
- ``pooled`` (confusion summed over scans): OpenScene's ``evaluate`` divides the summed class
  scores by the number of classes and GeoPurify's validation takes ``np.mean`` of I / (U + 1e-10)
  and I / (T + 1e-10) over all classes, so a class without points scores 0 and the mean is over
  all C classes (20, or 19 for GeoPurify's variant).

Foreground means apply the same rule to the classes that are not wall, floor or ceiling. The
19-class ScanNet variant that GeoPurify's code reports drops ``otherfurniture``: its ground-truth
points are ignored and predictions of it count as misses for the true class.

The confusion matrix has ``C + 1`` columns: the last one counts points predicted as no class at all
(the labeler's background index, a point never observed, or any value outside ``[0, C)``). As in
ScanNet's script, which maps a prediction outside the valid ids to an unknown id, they are misses
for their true class and false positives for none. (OpenScene drops such "no feature" points from
the IoU; scoring them as misses keeps an unobserved object from vanishing from the score.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ovseg3d_core.data.scenes.scannet import BACKGROUND_CLASS_NAMES, IGNORE_INDEX, SCANNET20_CLASSES

SCANNET19_DROPPED = ("otherfurniture",)
SCANNET19_CLASSES = tuple(name for name in SCANNET20_CLASSES if name not in SCANNET19_DROPPED)

SINGLE_SCAN = "scannet-official"
POOLED = "pooled"
RULES = (SINGLE_SCAN, POOLED)


class MetricsError(ValueError):
    """Predictions and ground truth cannot be compared (shape, class range, class names or rule)."""


def confusion_matrix(
    ground_truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """``C x (C + 1)`` int64 counts, rows = true class, columns = predicted class (+ "no class").

    Points whose ground truth is ``ignore_index`` are skipped; any other ground truth outside
    ``[0, C)`` is an error because it means the label set and the class list disagree.
    """
    if num_classes < 1:
        raise MetricsError(f"num_classes must be positive, got {num_classes}")
    gt = np.asarray(ground_truth).ravel()
    pred = np.asarray(prediction).ravel()
    if gt.shape != pred.shape:
        raise MetricsError(f"ground truth has {gt.size} points but prediction has {pred.size}")
    if not (np.issubdtype(gt.dtype, np.integer) and np.issubdtype(pred.dtype, np.integer)):
        raise MetricsError(f"labels must be integer arrays, got {gt.dtype} and {pred.dtype}")
    keep = gt != ignore_index
    gt, pred = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    bad = (gt < 0) | (gt >= num_classes)
    if bad.any():
        raise MetricsError(
            f"{int(bad.sum())} ground-truth labels outside [0, {num_classes}) and not the ignore index "
            f"{ignore_index} (e.g. {int(gt[bad][0])})"
        )
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1).astype(np.int64)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Per-class and mean scores under ``rule``; NaN marks a class the rule leaves out of the means."""

    class_names: tuple[str, ...]
    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    macc: float
    fmiou: float
    fmacc: float
    confusion: np.ndarray
    rule: str

    @property
    def per_class_iou(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.class_names, self.iou, strict=True) if np.isfinite(v)}

    @property
    def per_class_accuracy(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.class_names, self.accuracy, strict=True) if np.isfinite(v)}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary: the averaging rule, the means and the per-class values they average."""
        return {
            "rule": self.rule,
            "miou": self.miou,
            "macc": self.macc,
            "fmiou": self.fmiou,
            "fmacc": self.fmacc,
            "per_class_iou": self.per_class_iou,
            "per_class_accuracy": self.per_class_accuracy,
        }


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _rule_description(rule: str, classes: int) -> str:
    if rule == SINGLE_SCAN:
        return f"{SINGLE_SCAN}: classes with non-zero union (mAcc: classes with ground truth)"
    if rule == POOLED:
        return f"{POOLED}: mean over all {classes} classes"
    raise MetricsError(f"unknown averaging rule {rule!r}; expected one of {RULES}")


def segmentation_metrics(
    confusion: np.ndarray,
    class_names: Sequence[str],
    drop_classes: Iterable[str] = (),
    background_names: Iterable[str] = BACKGROUND_CLASS_NAMES,
    rule: str = SINGLE_SCAN,
) -> SegmentationMetrics:
    """Scores from a :func:`confusion_matrix` over ``class_names`` under ``rule`` (see the module notes).

    The default, ``scannet-official``, fits one scan; a confusion summed over scans takes
    ``rule="pooled"``. ``drop_classes`` evaluates a smaller class set on the same predictions (the
    ScanNet 19-class variant): their ground-truth rows are removed and predictions of them become
    "no class". ``background_names`` are the classes foreground means leave out.
    """
    confusion = np.asarray(confusion)
    names = tuple(class_names)
    n = len(names)
    if confusion.shape != (n, n + 1):
        raise MetricsError(f"confusion matrix is {confusion.shape}, expected {(n, n + 1)} for {n} classes")
    drop = set(drop_classes)
    unknown = drop - set(names)
    if unknown:
        raise MetricsError(f"cannot drop unknown classes {sorted(unknown)}")
    keep = np.array([name not in drop for name in names])
    kept = confusion[np.ix_(keep, np.append(keep, False))]
    missed = confusion[keep].sum(axis=1) - kept.sum(axis=1)
    confusion = np.concatenate([kept, missed[:, None]], axis=1).astype(np.float64)
    names = tuple(name for name, k in zip(names, keep, strict=True) if k)
    description = _rule_description(rule, len(names))

    true_positive = np.diag(confusion[:, :-1])
    gt_count = confusion.sum(axis=1)
    union = gt_count + confusion[:, :-1].sum(axis=0) - true_positive
    undefined = 0.0 if rule == POOLED else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, undefined)
        accuracy = np.where(gt_count > 0, true_positive / gt_count, undefined)
    foreground = np.array([name not in set(background_names) for name in names])
    return SegmentationMetrics(
        class_names=names,
        iou=iou,
        accuracy=accuracy,
        miou=_nanmean(iou),
        macc=_nanmean(accuracy),
        fmiou=_nanmean(iou[foreground]),
        fmacc=_nanmean(accuracy[foreground]),
        confusion=confusion.astype(np.int64),
        rule=description,
    )


class ConfusionAccumulator:
    """Sums confusion matrices over scans (the official protocol), then scores once."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX) -> None:
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise MetricsError("need at least one class")
        self.ignore_index = ignore_index
        self.confusion = np.zeros((len(self.class_names), len(self.class_names) + 1), dtype=np.int64)
        self.scenes = 0

    def add(self, ground_truth: np.ndarray, prediction: np.ndarray) -> None:
        self.confusion += confusion_matrix(ground_truth, prediction, len(self.class_names), self.ignore_index)
        self.scenes += 1

    @property
    def rule(self) -> str:
        """One scan is scored by ScanNet's single-scan rule, several by the pooled one."""
        return SINGLE_SCAN if self.scenes <= 1 else POOLED

    def metrics(
        self,
        drop_classes: Iterable[str] = (),
        background_names: Iterable[str] = BACKGROUND_CLASS_NAMES,
        rule: str | None = None,
    ) -> SegmentationMetrics:
        """Scores of the summed confusion; ``rule`` defaults to :attr:`rule` (by the number of scans)."""
        return segmentation_metrics(
            self.confusion, self.class_names, drop_classes, background_names, rule=rule or self.rule
        )


def scannet20_metrics(confusion: np.ndarray, rule: str = SINGLE_SCAN) -> SegmentationMetrics:
    """ScanNet 20-class scores (OpenScene's protocol, with ``otherfurniture``)."""
    return segmentation_metrics(confusion, SCANNET20_CLASSES, rule=rule)


def scannet19_metrics(confusion: np.ndarray, rule: str = SINGLE_SCAN) -> SegmentationMetrics:
    """ScanNet 19-class scores (GeoPurify's protocol: ``otherfurniture`` dropped) from a 20-class matrix."""
    return segmentation_metrics(confusion, SCANNET20_CLASSES, drop_classes=SCANNET19_DROPPED, rule=rule)
