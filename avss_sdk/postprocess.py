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

FOREGROUND_THRESHOLD = 0.5


def foreground_and_words(pixel_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., K+1, H, W] log-probabilities -> (P(object) [..., H, W], most likely word k + 1 [..., H, W])."""
    logits = np.asarray(pixel_logits)
    if logits.ndim < 3 or logits.shape[-3] < 2:
        raise ValueError(f"expected [..., K+1, H, W] with K >= 1, got {logits.shape}")
    return 1.0 - np.exp(logits[..., 0, :, :]), np.argmax(logits[..., 1:, :, :], axis=-3) + 1


def decide(foreground: np.ndarray, words: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """Labels from :func:`foreground_and_words`: the word where P(object) > threshold, else 0."""
    return np.where(foreground > threshold, words, 0).astype(np.int64)


def label_map(pixel_logits: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """[..., K+1, H, W] log-probabilities -> [..., H, W] labels (0 background, k + 1 vocabulary word k)."""
    return decide(*foreground_and_words(pixel_logits), threshold)


def upsampled_label_map(pixel_logits: np.ndarray, size: tuple[int, int],
                        threshold: float = FOREGROUND_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """One frame's [K+1, h, w] log-probabilities -> (labels [H, W] int32, P(object) [H, W]) at ``size``.

    Bilinear upsampling of the log-probabilities (as evaluation does), then :func:`decide`.
    Only background and the words that win somewhere at the decoder's resolution are
    upsampled: with a large vocabulary the others would cost most of the time and, being
    nowhere the most likely word, would almost never win between two grid points.
    """
    import cv2

    logits = np.asarray(pixel_logits, np.float32)
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise ValueError(f"expected one frame's [K+1, h, w] log-probabilities, got {logits.shape}")
    words = np.unique(np.argmax(logits[1:], axis=0)) + 1
    channels = np.concatenate([[0], words])
    height, width = size
    up = cv2.resize(np.ascontiguousarray(logits[channels].transpose(1, 2, 0)), (width, height),
                    interpolation=cv2.INTER_LINEAR).reshape(height, width, len(channels))
    foreground = 1.0 - np.exp(up[..., 0])
    labels = words[np.argmax(up[..., 1:], axis=-1)]
    return decide(foreground, labels, threshold).astype(np.int32), foreground
