"""Segmentation metrics exactly as the field computes them (numpy only).

Two yardsticks are used in audio-visual semantic segmentation, and they disagree on
purpose, so both are implemented to the letter:

* :func:`avss_miou_fscore` is AVSBench's official AVSS metric: IoU and F-score are
  computed per *frame* and class, summed over frames, divided by the number of frames
  where the class occurs in prediction or ground truth, and averaged over *all*
  classes, background and classes absent from the set included (they count as 0).
* :func:`ov_miou` is OV-AVSS's open-vocabulary metric: one confusion matrix over the
  whole set, IoU per class, mean over base and over novel classes (background in
  neither, classes absent from the set skipped) and their harmonic mean.

Pixels labelled :data:`IGNORE_INDEX` in the ground truth are left out of both.
Both come as accumulators (feed frames in batches, read the result at the end) and as
one-shot functions over whole arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from avss_sdk.errors import InputError

IGNORE_INDEX = 255
F_BETA2 = 0.3  # AVSBench's beta^2: precision weighs more than recall
_EPS = np.finfo(np.float64).eps  # AVSBench adds 2.22e-16 to the union


def _check_labels(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction / ground-truth pair and flatten them to [frames, pixels]."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.ndim != 3:
        raise InputError(f"expected label maps [H, W] or [N, H, W], got shape {pred.shape}")
    if num_classes < 1:
        raise InputError(f"num_classes must be positive, got {num_classes}")
    pred = pred.reshape(pred.shape[0], -1).astype(np.int64)
    gt = gt.reshape(gt.shape[0], -1).astype(np.int64)
    valid_gt = gt != IGNORE_INDEX
    if np.any((gt[valid_gt] < 0) | (gt[valid_gt] >= num_classes)):
        raise InputError(f"ground truth holds labels outside [0, {num_classes}) other than {IGNORE_INDEX}")
    if np.any((pred[valid_gt] < 0) | (pred[valid_gt] >= num_classes)):
        raise InputError(f"prediction holds labels outside [0, {num_classes})")
    return pred, gt


@dataclass
class AVSSMeter:
    """Accumulates AVSBench's official per-frame, per-class IoU and F-score sums."""

    num_classes: int

    def __post_init__(self) -> None:
        self.iou_sum = np.zeros(self.num_classes)
        self.fscore_sum = np.zeros(self.num_classes)
        self.count = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add frames: ``pred`` and ``gt`` are class-index maps [H, W] or [N, H, W]."""
        pred, gt = _check_labels(pred, gt, self.num_classes)
        c = self.num_classes
        frames = pred.shape[0]
        valid = gt != IGNORE_INDEX
        offsets = np.arange(frames)[:, None] * c

        def per_frame_histogram(labels: np.ndarray, where: np.ndarray) -> np.ndarray:
            return np.bincount((labels + offsets)[where], minlength=frames * c).reshape(frames, c)

        area_pred = per_frame_histogram(pred, valid).astype(np.float64)
        area_gt = per_frame_histogram(gt, valid).astype(np.float64)
        area_inter = per_frame_histogram(gt, valid & (pred == gt)).astype(np.float64)
        area_union = area_pred + area_gt - area_inter

        with np.errstate(divide="ignore", invalid="ignore"):
            iou = area_inter / (_EPS + area_union)
            precision = area_inter / area_pred
            recall = area_inter / area_gt
            fscore = (1 + F_BETA2) * precision * recall / (F_BETA2 * precision + recall)
        fscore[np.isnan(fscore)] = 0.0

        self.iou_sum += iou.sum(axis=0)
        self.fscore_sum += fscore.sum(axis=0)
        self.count += (area_union > 0).sum(axis=0)

    def per_class(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class IoU and F-score; classes never seen in prediction or truth are 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.iou_sum / self.count
            fscore = self.fscore_sum / self.count
        return np.nan_to_num(iou, nan=0.0), np.nan_to_num(fscore, nan=0.0)

    def compute(self) -> tuple[float, float]:
        """(mIoU, mean F-score), each averaged over all classes including background."""
        iou, fscore = self.per_class()
        return float(iou.mean()), float(fscore.mean())


def avss_miou_fscore(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[float, float]:
    """AVSBench's official AVSS metric over frames [N, H, W] (or one [H, W]): (mIoU, F)."""
    meter = AVSSMeter(num_classes)
    meter.update(pred, gt)
    return meter.compute()


@dataclass
class OVResult:
    """OV-AVSS's open-vocabulary scores; ``per_class_iou`` is NaN for absent classes."""

    base_miou: float
    novel_miou: float
    harmonic_miou: float
    per_class_iou: np.ndarray


@dataclass
class OVMeter:
    """Accumulates OV-AVSS's whole-set confusion matrix (rows: truth, columns: prediction)."""

    num_classes: int
    base_ids: Sequence[int]
    novel_ids: Sequence[int]

    def __post_init__(self) -> None:
        for name, ids in (("base_ids", self.base_ids), ("novel_ids", self.novel_ids)):
            bad = [i for i in ids if not 0 < i < self.num_classes]
            if bad:
                raise InputError(f"{name} must be class indices in [1, {self.num_classes}) (background excluded): {bad}")
        overlap = set(self.base_ids) & set(self.novel_ids)
        if overlap:
            raise InputError(f"classes {sorted(overlap)} are both base and novel")
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add frames: ``pred`` and ``gt`` are class-index maps [H, W] or [N, H, W]."""
        pred, gt = _check_labels(pred, gt, self.num_classes)
        valid = gt != IGNORE_INDEX
        c = self.num_classes
        self.confusion += np.bincount(gt[valid] * c + pred[valid], minlength=c * c).reshape(c, c)

    def compute(self) -> OVResult:
        """Mean IoU over base classes, over novel classes, and their harmonic mean."""
        tp = np.diag(self.confusion).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - tp)
        base = _nanmean(iou[list(self.base_ids)])
        novel = _nanmean(iou[list(self.novel_ids)])
        harmonic = 2 * base * novel / (base + novel) if base + novel > 0 else 0.0
        return OVResult(base, novel, harmonic, iou)


def _nanmean(values: np.ndarray) -> float:
    """Mean over the classes that occur at all; 0 when none does."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else 0.0


def ov_miou(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    base_ids: Sequence[int],
    novel_ids: Sequence[int],
) -> OVResult:
    """OV-AVSS's metric over frames [N, H, W] (or one [H, W]): base, novel and harmonic mIoU."""
    meter = OVMeter(num_classes, base_ids, novel_ids)
    meter.update(pred, gt)
    return meter.compute()
