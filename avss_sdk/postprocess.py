"""From the mask decoder's per-pixel output to a label map: one implementation for evaluation and runtime.

The decoder's K + 1 channels are log-probabilities (background first). A flat argmax
would let background win wherever the object probability is split over several
similar words (it often is, with an open vocabulary), so the decision is taken in two
steps, as OV-AVSS's class-agnostic localization suggests: a pixel is a sounding object
if its object probability ``1 - P(background)`` exceeds ``threshold``, and it is then
labelled with its most likely word.
"""

from __future__ import annotations

import numpy as np

from avss_sdk.errors import InputError

FOREGROUND_THRESHOLD = 0.5


def foreground_and_words(pixel_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., K+1, H, W] log-probabilities -> (P(object) [..., H, W], most likely word k + 1 [..., H, W])."""
    logits = np.asarray(pixel_logits)
    if logits.ndim < 3 or logits.shape[-3] < 2:
        raise InputError(f"expected [..., K+1, H, W] with K >= 1, got {logits.shape}")
    return 1.0 - np.exp(logits[..., 0, :, :]), np.argmax(logits[..., 1:, :, :], axis=-3) + 1


def decide(foreground: np.ndarray, words: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """Labels from :func:`foreground_and_words`: the word where P(object) > threshold, else 0."""
    return np.where(foreground > threshold, words, 0).astype(np.int64)


def label_map(pixel_logits: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """[..., K+1, H, W] log-probabilities -> [..., H, W] labels (0 background, k + 1 vocabulary word k)."""
    return decide(*foreground_and_words(pixel_logits), threshold)


def upsampled_label_map(pixel_logits: np.ndarray, size: tuple[int, int], threshold: float = FOREGROUND_THRESHOLD,
                        word_stride: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """One frame's [K+1, h, w] log-probabilities -> (labels [H, W] int32, log P(background) [H, W]) at ``size``.

    The same decision as :func:`label_map` after bilinear upsampling, made affordable at
    camera resolution (an argmax over K channels of every camera pixel costs more than the
    whole model on a small CPU): "is it a sounding object" is decided on the background
    channel upsampled to ``size``, so outlines are as smooth as full upsampling makes them;
    "which word" is decided at ``word_stride`` times the decoder's grid (the model's input
    resolution, where evaluation decides it too) and scaled to ``size`` by nearest neighbour.
    Only the words that win on a grid cell next to a sounding one are upsampled: bilinear
    upsampling mixes the 2 x 2 cells around a pixel, so a pixel whose cells all have
    P(object) <= threshold cannot be an object pixel, and only words winning around the
    object pixels can label them.
    """
    import cv2

    logits = np.asarray(pixel_logits, np.float32)
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise InputError(f"expected one frame's [K+1, h, w] log-probabilities, got {logits.shape}")
    height, width = size
    background = cv2.resize(logits[0], (width, height), interpolation=cv2.INTER_LINEAR)
    # P(object) > threshold  <=>  log P(background) < log(1 - threshold): no exp over the frame.
    limit = np.log1p(-threshold) if threshold < 1 else -np.inf
    near = cv2.dilate((logits[0] < limit).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if not near.any():
        return np.zeros((height, width), np.int32), background
    words = np.unique(np.argmax(logits[1:], axis=0)[near]) + 1
    if len(words) == 1:
        word_map = np.full((height, width), words[0], np.int32)
    else:
        grid = (min(width, logits.shape[2] * word_stride), min(height, logits.shape[1] * word_stride))
        fine = cv2.resize(np.ascontiguousarray(logits[words].transpose(1, 2, 0)), grid, interpolation=cv2.INTER_LINEAR)
        word_index = np.argmax(fine, axis=-1).astype(np.uint16)
        word_map = words[cv2.resize(word_index, (width, height), interpolation=cv2.INTER_NEAREST)].astype(np.int32)
    return np.where(background < limit, word_map, 0).astype(np.int32), background
