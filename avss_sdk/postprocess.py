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
