"""The two metrics against cases worked out by hand."""

import numpy as np
import pytest

from avss_sdk.metrics import IGNORE_INDEX, AVSSMeter, OVMeter, avss_miou_fscore, ov_miou


def f_score(precision: float, recall: float) -> float:
    return 1.3 * precision * recall / (0.3 * precision + recall)


# Frame B: class 0 exact; class 1 half found (P=1, G=2); class 2 over-predicted (P=2, G=1).
GT_B = np.array([[0, 1], [1, 2]])
PRED_B = np.array([[0, 1], [2, 2]])


def test_single_frame_by_hand():
    miou, fscore = avss_miou_fscore(PRED_B, GT_B, num_classes=3)
    assert miou == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert fscore == pytest.approx((1 + f_score(1, 0.5) + f_score(0.5, 1)) / 3)


def test_per_frame_counts_and_absent_classes():
    # Frame A: all background, one false positive of class 1 (U > 0, so class 1 counts this frame).
    gt_a = np.zeros((2, 2), dtype=int)
    pred_a = np.array([[0, 0], [0, 1]])
    gt, pred = np.stack([gt_a, GT_B]), np.stack([pred_a, PRED_B])

    miou, fscore = avss_miou_fscore(pred, gt, num_classes=3)
    assert miou == pytest.approx(((0.75 + 1) / 2 + (0 + 0.5) / 2 + 0.5) / 3)
    expected_f = ((f_score(1, 0.75) + 1) / 2 + (0 + f_score(1, 0.5)) / 2 + f_score(0.5, 1)) / 3
    assert fscore == pytest.approx(expected_f)

    # A fourth class that never occurs still takes its place in the mean, as 0.
    miou4, _ = avss_miou_fscore(pred, gt, num_classes=4)
    assert miou4 == pytest.approx(miou * 3 / 4)


def test_accumulating_in_batches_equals_one_shot():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(6, 8, 8))
    pred = np.where(rng.random((6, 8, 8)) < 0.7, gt, rng.integers(0, 5, size=(6, 8, 8)))
    meter = AVSSMeter(5)
    for start in range(0, 6, 2):
        meter.update(pred[start : start + 2], gt[start : start + 2])
    assert meter.compute() == pytest.approx(avss_miou_fscore(pred, gt, 5))


def test_ignored_pixels_count_nowhere():
    gt = GT_B.copy()
    gt[1, 0] = IGNORE_INDEX  # the missed class-1 pixel, predicted as 2
    miou, fscore = avss_miou_fscore(PRED_B, gt, num_classes=3)
    # Now classes 0 and 1 are exact and class 2 is exact too.
    assert miou == pytest.approx(1.0)
    assert fscore == pytest.approx(1.0)


def test_ov_miou_by_hand():
    gt = np.array([[1, 1, 2, 3, 3, 3, 0]])
    pred = np.array([[1, 2, 2, 3, 0, 0, 0]])
    result = ov_miou(pred, gt, num_classes=4, base_ids=[1, 2], novel_ids=[3])
    # class 1: TP 1, FN 1 -> 1/2; class 2: TP 1, FP 1 -> 1/2; class 3: TP 1, FN 2 -> 1/3
    assert result.base_miou == pytest.approx(0.5)
    assert result.novel_miou == pytest.approx(1 / 3)
    assert result.harmonic_miou == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert result.per_class_iou[1:] == pytest.approx([0.5, 0.5, 1 / 3])


def test_ov_miou_skips_absent_classes_and_ignores_255():
    gt = np.array([[1, 1, 2, 3, 3, 3, 0, IGNORE_INDEX]])
    pred = np.array([[1, 2, 2, 3, 0, 0, 0, 3]])
    with_absent = ov_miou(pred, gt, num_classes=5, base_ids=[1, 2, 4], novel_ids=[3])
    assert with_absent.base_miou == pytest.approx(0.5)
    assert np.isnan(with_absent.per_class_iou[4])
    assert with_absent.novel_miou == pytest.approx(1 / 3)


def test_ov_meter_accumulates_one_confusion_matrix():
    gt = np.array([[1, 1], [3, 0]])
    pred = np.array([[1, 0], [3, 3]])
    meter = OVMeter(4, base_ids=[1, 2], novel_ids=[3])
    meter.update(pred[:1], gt[:1])
    meter.update(pred[1:], gt[1:])
    assert meter.confusion.sum() == 4
    assert meter.compute().base_miou == pytest.approx(ov_miou(pred, gt, 4, [1, 2], [3]).base_miou)


def test_harmonic_is_zero_when_novel_fails():
    gt = np.array([[1, 3]])
    pred = np.array([[1, 0]])
    result = ov_miou(pred, gt, num_classes=4, base_ids=[1], novel_ids=[3])
    assert result.novel_miou == 0.0 and result.harmonic_miou == 0.0


@pytest.mark.parametrize(
    "pred, gt, message",
    [
        (np.zeros((2, 2)), np.zeros((3, 3)), "shape"),
        (np.full((2, 2), 7), np.zeros((2, 2)), "prediction"),
        (np.zeros((2, 2)), np.full((2, 2), 9), "ground truth"),
    ],
)
def test_bad_inputs_are_clear_errors(pred, gt, message):
    with pytest.raises(ValueError, match=message):
        avss_miou_fscore(pred, gt, num_classes=3)


def test_ov_ids_must_be_disjoint_and_not_background():
    with pytest.raises(ValueError, match="both base and novel"):
        OVMeter(4, base_ids=[1, 2], novel_ids=[2])
    with pytest.raises(ValueError, match="background excluded"):
        OVMeter(4, base_ids=[0, 1], novel_ids=[2])
