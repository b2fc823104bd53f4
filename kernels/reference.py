"""Numpy reference of fused cross-attention: the single source of truth for the tests.

out = softmax(scale * Q K^T + mask) V, computed in float64.

* q [B, H, Lq, D]; k, v [B, H, Lk, D].
* ``mask``: additive float mask broadcastable as [B or 1, H or 1, Lq or 1, Lk]
  (lower ranks are aligned to the right, as in numpy); -inf removes a key.
* ``key_padding_mask``: [B, Lk], nonzero = that key is masked out.
* ``scale`` defaults to 1 / sqrt(D).
* A row whose keys are all masked out (every score -inf) is all zeros, never NaN.
"""

from __future__ import annotations

import numpy as np


def fused_cross_attention_reference(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    key_padding_mask: np.ndarray | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """Reference attention output [B, H, Lq, D] in float64."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError("q, k, v must be [B, H, L, D]")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    scores = np.einsum("bhqd,bhkd->bhqk", q64 * scale, k64)
    if mask is not None:
        scores = scores + np.asarray(mask, dtype=np.float64)
    if key_padding_mask is not None:
        kpm = np.asarray(key_padding_mask).astype(bool)
        if kpm.shape != (q.shape[0], k.shape[2]):
            raise ValueError(f"key_padding_mask must be [B, Lk], got {kpm.shape}")
        scores = np.where(kpm[:, None, None, :], -np.inf, scores)
    row_max = scores.max(axis=-1, keepdims=True)
    valid = row_max > -np.inf
    shifted = np.where(valid, scores - np.where(valid, row_max, 0.0), -np.inf)
    p = np.exp(shifted)
    denom = p.sum(axis=-1, keepdims=True)
    p = np.divide(p, denom, out=np.zeros_like(p), where=denom > 0)
    return np.einsum("bhqk,bhkd->bhqd", p, v64)
