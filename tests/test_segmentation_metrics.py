"""Segmentation metrics against hand-computed confusion matrices (two scenes summed)."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.data.scannet import IGNORE_INDEX, SCANNET20_CLASSES
from ovseg3d_core.metrics.segmentation import (
    SCANNET19_CLASSES,
    ConfusionAccumulator,
    MetricsError,
    confusion_matrix,
    scannet19_metrics,
    scannet20_metrics,
    segmentation_metrics,
)

NAMES = ("wall", "floor", "chair", "table")
# Scene 1: the last point is unlabeled; 4 is the labeler's background index (no class).
SCENE1 = (np.array([0, 0, 1, 1, 2, 2, 2, IGNORE_INDEX]), np.array([0, 1, 1, 1, 2, 3, 4, 0]))
SCENE2 = (np.array([3, 3, 2]), np.array([3, 2, 2]))


def summed() -> ConfusionAccumulator:
    acc = ConfusionAccumulator(NAMES)
    acc.add(*SCENE1)
    acc.add(*SCENE2)
    return acc


def test_confusion_counts_rows_truth_columns_prediction_plus_no_class():
    expected = np.array(
        [
            [1, 1, 0, 0, 0],
            [0, 2, 0, 0, 0],
            [0, 0, 2, 1, 1],
            [0, 0, 1, 1, 0],
        ]
    )
    np.testing.assert_array_equal(summed().confusion, expected)
    assert summed().scenes == 2


def test_scores_summed_over_scenes_match_hand_computation():
    m = summed().metrics()
    # IoU = TP / (GT + predicted - TP): wall 1/2, floor 2/3, chair 2/5, table 1/3.
    np.testing.assert_allclose(m.iou, [1 / 2, 2 / 3, 2 / 5, 1 / 3])
    np.testing.assert_allclose(m.accuracy, [1 / 2, 1.0, 2 / 4, 1 / 2])
    assert m.miou == pytest.approx((1 / 2 + 2 / 3 + 2 / 5 + 1 / 3) / 4)
    assert m.macc == pytest.approx(0.625)
    # Foreground leaves out wall and floor.
    assert m.fmiou == pytest.approx((2 / 5 + 1 / 3) / 2)
    assert m.fmacc == pytest.approx(0.5)
    assert m.per_class_iou["chair"] == pytest.approx(0.4)


def test_summing_confusions_differs_from_averaging_scene_scores():
    one = segmentation_metrics(confusion_matrix(*SCENE1, 4), NAMES)
    two = segmentation_metrics(confusion_matrix(*SCENE2, 4), NAMES)
    assert summed().metrics().miou != pytest.approx(np.nanmean([one.miou, two.miou]))


def test_dropping_a_class_ignores_its_truth_and_turns_its_predictions_into_misses():
    m = summed().metrics(drop_classes=("table",))
    assert m.class_names == ("wall", "floor", "chair")
    # chair: TP 2, GT 4 (its table prediction is now a miss), predicted as chair 2 (table row gone).
    np.testing.assert_allclose(m.iou, [1 / 2, 2 / 3, 2 / 4])
    assert m.miou == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)


def test_class_without_ground_truth_is_left_out_of_the_means():
    names = (*NAMES, "sofa")
    acc = ConfusionAccumulator(names)
    acc.add(*SCENE1)
    acc.add(*SCENE2)
    m = acc.metrics()
    assert np.isnan(m.iou[4]) and "sofa" not in m.per_class_iou
    assert m.miou == pytest.approx(summed().metrics().miou)


def test_scannet_20_and_19_class_variants():
    gt = np.array([0, 1, 4, 4, 19, 19, 6])  # wall, floor, chair x2, otherfurniture x2, table
    pred = np.array([0, 1, 4, 6, 4, 19, 6])
    conf = confusion_matrix(gt, pred, 20)
    m20, m19 = scannet20_metrics(conf), scannet19_metrics(conf)
    assert len(SCANNET19_CLASSES) == 19 and "otherfurniture" not in SCANNET19_CLASSES
    assert m19.class_names == SCANNET19_CLASSES
    # 20 classes: chair 1/(2+2-1), table 1/(1+2-1), otherfurniture 1/(2+1-1).
    assert m20.miou == pytest.approx((1 + 1 + 1 / 3 + 1 / 2 + 1 / 2) / 5)
    # 19 classes: the otherfurniture points are ignored, so chair has one fewer false positive.
    assert m19.per_class_iou["chair"] == pytest.approx(1 / 2)
    assert m19.miou == pytest.approx((1 + 1 + 1 / 2 + 1 / 2) / 4)
    assert m20.fmiou == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert SCANNET20_CLASSES[19] == "otherfurniture"


def test_perfect_prediction_scores_one():
    gt = np.array([0, 1, 2, 3, 3])
    m = segmentation_metrics(confusion_matrix(gt, gt, 4), NAMES)
    assert m.miou == m.macc == m.fmiou == m.fmacc == 1.0


def test_bad_input_is_rejected():
    with pytest.raises(MetricsError, match="points"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 4)
    with pytest.raises(MetricsError, match="outside"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 4)
    with pytest.raises(MetricsError, match="integer"):
        confusion_matrix(np.array([0.0]), np.array([0]), 4)
    with pytest.raises(MetricsError, match="expected"):
        segmentation_metrics(np.zeros((3, 3)), NAMES)
    with pytest.raises(MetricsError, match="unknown"):
        summed().metrics(drop_classes=("lamp",))
    with pytest.raises(MetricsError):
        ConfusionAccumulator(())
