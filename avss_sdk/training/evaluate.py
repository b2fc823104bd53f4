"""Evaluation of a trained SSP-OV model on a prepared split (the metrics of :mod:`avss_sdk.metrics`).

Every frame is segmented causally (frame t with frame t - 1 and the audio that ends at
t) with the dataset's *whole* vocabulary, base and novel classes together, as in
OV-AVSS. Reported: base / novel / harmonic mIoU, AVSBench's AVSS mIoU and F-score, a
per-class IoU table, and for SynthAVS the same mIoUs on frames whose sounding objects
all move and on frames whose sounding objects all stand still. Labels are compared at
the model's input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.metrics import AVSSMeter, OVMeter
from avss_sdk.modeling.checkpoint import CheckpointError, load_model
from avss_sdk.modeling.ssp_ov import SSPOV
from avss_sdk.postprocess import (FOREGROUND_THRESHOLD, GUIDED_FILTER_CANDIDATES, GuidedFilter, decide,
                                  foreground_and_words, label_map, refine_foreground)
from avss_sdk.preprocess import LOG_MEL_SECONDS
from avss_sdk.training.data import FrameArrays, label_lookup, make_batch, resize_frame_labels

if TYPE_CHECKING:
    from avss_sdk.segmenter import Segmenter


@dataclass
class SplitScores:
    base_miou: float
    novel_miou: float
    harmonic_miou: float
    frames: int


@dataclass
class EvaluationResult:
    scores: SplitScores
    avss_miou: float
    avss_fscore: float
    moving: SplitScores
    still: SplitScores
    per_class: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def load_model_and_split(checkpoint: str | Path, data: str | Path, split: str
                         ) -> tuple[SSPOV, dict[str, Any], AVSSDataset]:
    """The model, its checkpoint payload and the split's clips (all classes) for the evaluation scripts.

    Raises ``SystemExit`` with a one-line message for a missing or foreign checkpoint, a missing
    dataset or an empty split: these are command-line entry points' inputs.
    """
    try:
        model, payload = load_model(checkpoint)
        dataset = AVSSDataset(data, split=split, classes="all", load_flow=False)
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if len(dataset) == 0:
        raise SystemExit(f"error: {data} has no clips in split {split!r}")
    return model, payload, dataset


def _scores(meter: OVMeter, frames: int) -> SplitScores:
    result = meter.compute()
    return SplitScores(100 * result.base_miou, 100 * result.novel_miou, 100 * result.harmonic_miou, frames)


@torch.no_grad()
def pixel_log_probs(model: SSPOV, previous: torch.Tensor, current: torch.Tensor, log_mel: torch.Tensor,
                    class_embeddings: torch.Tensor, scene_embedding: torch.Tensor) -> np.ndarray:
    """The decoder's per-pixel log-probabilities [B, K+1, H, W], upsampled to the input resolution."""
    out = model(previous, current, log_mel, class_embeddings, scene_embedding).decoder
    return F.interpolate(out.pixel_logits, size=current.shape[-2:], mode="bilinear", align_corners=False).numpy()


def predictions(model: SSPOV, data: FrameArrays, scene_text: bool, batch_size: int, progress: bool,
                 desc: str) -> Iterator[tuple[list[tuple[int, int]], np.ndarray, np.ndarray, np.ndarray]]:
    """(frame pairs, per-pixel log-probabilities, targets, the RGB input frames [B, S, S, 3]) per batch of
    every valid frame, whole vocabulary."""
    model.eval()
    vocabulary = data.class_names[1:]
    lookup = label_lookup(data.class_names, vocabulary)  # identity on dataset ids; ignore stays ignore
    classes = model.text_encoder.embed_categories(vocabulary)
    frames = data.frame_index()
    for start in tqdm(range(0, len(frames), batch_size), desc=desc, unit="batch", disable=not progress):
        pairs = frames[start:start + batch_size]
        batch = make_batch(data, pairs, lookup)
        scene = model.scene_embeddings(batch.scenes if scene_text else [None] * len(pairs))
        logits = pixel_log_probs(model, batch.previous, batch.current, batch.log_mel, classes, scene)
        yield pairs, logits, batch.targets.numpy(), np.stack([data.frames[c, t] for c, t in pairs])


@torch.no_grad()
def calibrate_decision(model: SSPOV, data: FrameArrays, base_ids: list[int], novel_ids: list[int],
                       thresholds: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6),
                       filters: tuple[GuidedFilter | None, ...] = GUIDED_FILTER_CANDIDATES, batch_size: int = 32,
                       progress: bool = True
                       ) -> tuple[float, GuidedFilter | None, dict[tuple[GuidedFilter | None, float], float]]:
    """The foreground threshold and guided filter (or none) with the best harmonic mIoU on ``data``
    (a validation split, no scene text), and every (filter, threshold) pair's score."""
    meters = {(g, t): OVMeter(len(data.class_names), base_ids, novel_ids) for g in filters for t in thresholds}
    for _, logits, targets, guides in predictions(model, data, False, batch_size, progress, "calibrating"):
        plain, words = foreground_and_words(logits)  # the words do not depend on the filter
        for guided in filters:
            foreground = refine_foreground(plain, guides, guided)
            for threshold in thresholds:
                meters[guided, threshold].update(decide(foreground, words, threshold), targets)
    scores = {key: 100 * m.compute().harmonic_miou for key, m in meters.items()}
    guided, threshold = max(scores, key=scores.get)
    return threshold, guided, scores


@torch.no_grad()
def evaluate(model: SSPOV, data: FrameArrays, base_ids: list[int], novel_ids: list[int], scene_text: bool,
             batch_size: int = 32, progress: bool = True,
             threshold: float = FOREGROUND_THRESHOLD, guided: GuidedFilter | None = None) -> EvaluationResult:
    """Segment every valid frame of ``data`` and score it (see the module docstring)."""
    num_classes = len(data.class_names)
    overall, moving, still = (OVMeter(num_classes, base_ids, novel_ids) for _ in range(3))
    avss = AVSSMeter(num_classes)
    counts = {"moving": 0, "still": 0}
    for pairs, logits, targets, guides in predictions(model, data, scene_text, batch_size, progress, "evaluating"):
        labels = label_map(logits, threshold, guides, guided)
        for (clip, t), pred, gt in zip(pairs, labels, targets):
            overall.update(pred, gt)
            avss.update(pred, gt)
            flag = data.moving[clip, t]
            if flag == 1:
                moving.update(pred, gt)
                counts["moving"] += 1
            elif flag == 0:
                still.update(pred, gt)
                counts["still"] += 1
    miou, fscore = avss.compute()
    per_class_iou = overall.compute().per_class_iou
    novel = set(novel_ids)
    per_class = [{"class": data.class_names[i], "split": "novel" if i in novel else "base",
                  "iou": None if np.isnan(per_class_iou[i]) else round(100 * float(per_class_iou[i]), 2)}
                 for i in sorted([*base_ids, *novel_ids])]
    return EvaluationResult(_scores(overall, len(data.frame_index())), 100 * miou, 100 * fscore,
                            _scores(moving, counts["moving"]), _scores(still, counts["still"]), per_class)


def runtime_labels(segmenter: "Segmenter", dataset: AVSSDataset, size: int, progress: bool = True
                   ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(clip, frame, labels, truth) of every annotated frame as the torch-free runtime labels it.

    The segmenter streams each clip frame by frame with the dataset's whole vocabulary;
    its frame-size labels and the truth are resized to ``size`` (the model input) exactly
    as :func:`evaluate`'s targets are, so they differ from :func:`predictions` only by the runtime.
    """
    segmenter.set_vocab(dataset.class_names[1:])  # label k + 1 is then the dataset's class id k + 1
    for i in tqdm(range(len(dataset)), desc="evaluating the runtime", unit="clip", disable=not progress):
        clip = dataset[i]
        segmenter.reset()
        for t in range(len(clip.frames)):
            result = segmenter.segment(clip.frames[t], clip.audio_window(t, LOG_MEL_SECONDS),
                                       float(clip.frame_times[t]), t)
            if clip.label_valid[t]:
                yield (i, t, resize_frame_labels(result.labels.astype(np.uint8), size),
                       resize_frame_labels(clip.labels[t], size))


def evaluate_runtime(segmenter: "Segmenter", dataset: AVSSDataset, size: int, progress: bool = True) -> SplitScores:
    """Base / novel / harmonic mIoU of the torch-free runtime (``Segmenter``) on ``dataset``."""
    meter = OVMeter(len(dataset.class_names), dataset.base_ids, dataset.novel_ids)
    frames = 0
    for _, _, labels, truth in runtime_labels(segmenter, dataset, size, progress):
        meter.update(labels, truth)
        frames += 1
    return _scores(meter, frames)
