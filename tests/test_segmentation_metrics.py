"""Segmentation metrics against hand-computed confusion matrices, under both averaging rules."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, SCANNET20_CLASSES
from ovseg3d_core.metrics.scan_points import NO_CLASS, scan_point_labels
from ovseg3d_core.metrics.segmentation import (
    POOLED,
    SCANNET19_CLASSES,
    SINGLE_SCAN,
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


# Scene 1 over six classes: the chair point predicted 4 is now a sofa prediction; table and sofa
# are predicted but have no ground truth; bed is neither present nor predicted.
SIX = ("wall", "floor", "chair", "table", "sofa", "bed")


def test_single_scan_rule_scores_a_predicted_but_absent_class_zero():
    m = segmentation_metrics(confusion_matrix(*SCENE1, len(SIX)), SIX, rule=SINGLE_SCAN)
    # wall 1/(2+1-1), floor 2/(2+3-2), chair 1/(3+1-1); table and sofa: union 1, TP 0; bed: union 0.
    np.testing.assert_allclose(m.iou[:5], [1 / 2, 2 / 3, 1 / 3, 0.0, 0.0])
    assert np.isnan(m.iou[5]) and "bed" not in m.per_class_iou and m.per_class_iou["sofa"] == 0.0
    assert m.miou == pytest.approx((1 / 2 + 2 / 3 + 1 / 3) / 5)  # 0.3; averaging present classes only gave 0.5
    # Accuracy is only defined where there is ground truth: wall 1/2, floor 2/2, chair 1/3.
    assert np.isnan(m.accuracy[3:]).all()
    assert m.macc == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert m.fmiou == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert m.fmacc == pytest.approx(1 / 3)
    assert m.rule.startswith("scannet-official: classes with non-zero union")


def test_pooled_rule_averages_over_all_classes_with_empty_ones_at_zero():
    m = segmentation_metrics(confusion_matrix(*SCENE1, len(SIX)), SIX, rule=POOLED)
    np.testing.assert_allclose(m.iou, [1 / 2, 2 / 3, 1 / 3, 0.0, 0.0, 0.0])
    assert m.miou == pytest.approx((1 / 2 + 2 / 3 + 1 / 3) / 6)
    assert m.macc == pytest.approx((1 / 2 + 1 + 1 / 3) / 6)
    assert m.fmiou == pytest.approx((1 / 3) / 4)
    assert m.rule == "pooled: mean over all 6 classes"
    assert m.to_dict()["rule"] == m.rule and m.to_dict()["per_class_iou"]["bed"] == 0.0


def test_accumulator_picks_the_rule_by_the_number_of_scans():
    acc = ConfusionAccumulator(SIX)
    acc.add(*SCENE1)
    one = acc.metrics()
    assert one.rule.startswith(SINGLE_SCAN) and one.miou == pytest.approx(1.5 / 5)
    acc.add(*SCENE1)
    two = acc.metrics()
    assert two.rule.startswith(POOLED) and two.miou == pytest.approx(1.5 / 6)
    assert acc.metrics(rule=SINGLE_SCAN).miou == pytest.approx(1.5 / 5)


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
    # Pooled over all classes (as GeoPurify reports 19 and OpenScene 20), the empty classes count as 0.
    assert scannet20_metrics(conf, rule=POOLED).miou == pytest.approx((1 + 1 + 1 / 3 + 1 / 2 + 1 / 2) / 20)
    assert scannet19_metrics(conf, rule=POOLED).miou == pytest.approx((1 + 1 + 1 / 2 + 1 / 2) / 19)


def test_perfect_prediction_scores_one():
    gt = np.array([0, 1, 2, 3, 3])
    m = segmentation_metrics(confusion_matrix(gt, gt, 4), NAMES)
    assert m.miou == m.macc == m.fmiou == m.fmacc == 1.0


def test_unobserved_scan_points_are_misses():
    from ovseg3d_core.scene import SceneMap

    scene = SceneMap()
    size = scene.voxel_size
    centres = np.array([[0.5, 0.5, 0.5], [2.5, 0.5, 0.5], [4.5, 0.5, 0.5]]) * size  # voxels A, B, C
    scene.integrate_points(centres)
    slots = scene.slots_of_points(centres)
    # A and B were seen by a 2D feature; C holds geometry only (its label was propagated).
    scene.set_features(slots[:2], np.ones((2, 4), np.float32), np.ones(2, np.float32))
    voxel_labels = np.empty(3, np.int64)
    voxel_labels[slots] = [0, 1, 1]
    # Points in A, B, C, outside the map, and an unlabelled one in A.
    points = np.vstack([centres + 0.2 * size, [[40 * size, 0.0, 0.0]], centres[:1]])
    gt = np.array([0, 1, 1, 0, IGNORE_INDEX])
    scored = scan_point_labels(scene, points, voxel_labels)
    np.testing.assert_array_equal(scored.labels, [0, 1, NO_CLASS, NO_CLASS, 0])
    np.testing.assert_array_equal(scored.observed, [True, True, False, False, True])
    assert scored.unobserved_labelled(gt) == 2
    m = segmentation_metrics(confusion_matrix(gt, scored.labels, 2), ("chair", "table"))
    # Each class: 1 of its 2 points hit, no false positive -> IoU 1/2, accuracy 1/2.
    np.testing.assert_allclose(m.iou, [1 / 2, 1 / 2])
    np.testing.assert_allclose(m.accuracy, [1 / 2, 1 / 2])
    # A surface point just across A's boundary (in a voxel no sample landed in) is within one voxel edge.
    beside = centres[:1] + np.array([[0.0, 0.0, 0.9 * size]])
    assert scan_point_labels(scene, beside, voxel_labels).labels.tolist() == [0]
    assert scan_point_labels(scene, beside, voxel_labels, tolerance=0.5 * size).labels.tolist() == [NO_CLASS]
    with pytest.raises(MetricsError, match="voxel labels"):
        scan_point_labels(scene, points, voxel_labels[:2])
    with pytest.raises(MetricsError, match="N x 3"):
        scan_point_labels(scene, points[:, :2], voxel_labels)


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
    with pytest.raises(MetricsError, match="averaging rule"):
        summed().metrics(rule="mean of present classes")
    with pytest.raises(MetricsError):
        ConfusionAccumulator(())
