"""From the mask decoder's per-pixel output to a label map: one implementation for evaluation and runtime.

The decoder's K + 1 channels are log-probabilities (background first). A flat argmax
would let background win wherever the object probability is split over several
similar words (it often is, with an open vocabulary), so the decision is taken in two
steps, as OV-AVSS's class-agnostic localization suggests: a pixel is a sounding object
if its object probability ``1 - P(background)`` exceeds ``threshold``, and it is then
labelled with its most likely word.

The decoder sees the frame at stride 8, so its object probability, upsampled, has blurred,
blocky outlines. Where a model ships a :class:`GuidedFilter`, that probability is first
refined at the model's input resolution with the input frame as the guide, so outlines
follow the colour edges of the frame (He et al., "Guided Image Filtering", 2010).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avss_sdk.errors import InputError

FOREGROUND_THRESHOLD = 0.5


@dataclass(frozen=True)
class GuidedFilter:
    """Edge-aware refinement of P(object) [H, W] with the RGB frame [H, W, 3] at the same size as guide.

    The colour guided filter: in every window of ``2 radius + 1`` pixels the output is a linear
    function of the guide's colour, fitted to the input probability with ridge ``eps`` (guide
    colours scaled to [0, 1]), so a sharp colour edge inside a window becomes a sharp edge of
    the output. Written with ``cv2.boxFilter`` because the OpenCV that ships the filter
    (``cv2.ximgproc``, opencv-contrib) conflicts with opencv-python and is absent from
    Jetson's system OpenCV; the 3 x 3 solve per pixel is closed-form (by the adjugate) because
    ``np.linalg.solve`` over every pixel is several times slower.
    """

    radius: int
    eps: float
    subsample: int = 1

    def __post_init__(self) -> None:
        for name in ("radius", "subsample"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"guided filter {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or not self.eps > 0:
            raise InputError(f"guided filter eps must be a number > 0, got {self.eps!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "GuidedFilter | None":
        """The filter a checkpoint or manifest records ({"radius", "eps", "subsample"}), or None for none."""
        if values is None:
            return None
        if not isinstance(values, dict) or set(values) != {"radius", "eps", "subsample"}:
            raise InputError(f"a guided filter is {{'radius': int, 'eps': float, 'subsample': int}}, got {values!r}")
        return cls(values["radius"], values["eps"], values["subsample"])

    def to_dict(self) -> dict[str, Any]:
        return {"radius": self.radius, "eps": self.eps, "subsample": self.subsample}

    def __str__(self) -> str:
        return f"guided filter r{self.radius} eps {self.eps:g}" + (f" /{self.subsample}" if self.subsample > 1 else "")

    def __call__(self, foreground: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """Refined P(object) [H, W]; with ``subsample`` s > 1 the linear coefficients are fitted on
        the frame shrunk s times (radius / s) and upsampled (He and Sun's "fast guided filter")."""
        import cv2

        probability = np.asarray(foreground, np.float32)
        image = np.asarray(guide)
        if probability.ndim != 2 or image.shape != (*probability.shape, 3):
            raise InputError(f"expected P(object) [H, W] and its RGB guide [H, W, 3], got {probability.shape} "
                             f"and {image.shape}")
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        fit_image, fit_probability, radius = image, probability, self.radius
        if self.subsample > 1:
            shrunk = (max(1, image.shape[1] // self.subsample), max(1, image.shape[0] // self.subsample))
            fit_image = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
            fit_probability = cv2.resize(probability, shrunk, interpolation=cv2.INTER_AREA)
            radius = max(1, self.radius // self.subsample)
        size = (2 * radius + 1,) * 2
        r, g, b = (fit_image[..., i] for i in range(3))
        # Every window mean in one box filter over the stacked channels.
        means = cv2.boxFilter(np.dstack([fit_image, fit_probability, fit_image * fit_probability[..., None],
                                         r * r, r * g, r * b, g * g, g * b, b * b]),
                              -1, size, borderType=cv2.BORDER_REFLECT)
        mr, mg, mb, mp, rp, gp, bp, mrr, mrg, mrb, mgg, mgb, mbb = (means[..., i] for i in range(13))
        cr, cg, cb = rp - mr * mp, gp - mg * mp, bp - mb * mp
        rr, rg, rb = mrr - mr * mr + self.eps, mrg - mr * mg, mrb - mr * mb
        gg, gb, bb = mgg - mg * mg + self.eps, mgb - mg * mb, mbb - mb * mb + self.eps
        # The inverse of the symmetric covariance + eps I by its adjugate.
        i_rr, i_rg, i_rb = gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg
        i_gg, i_gb, i_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
        det = rr * i_rr + rg * i_rg + rb * i_rb
        a_r = (i_rr * cr + i_rg * cg + i_rb * cb) / det
        a_g = (i_rg * cr + i_gg * cg + i_gb * cb) / det
        a_b = (i_rb * cr + i_gb * cg + i_bb * cb) / det
        coefficients = np.dstack([a_r, a_g, a_b, mp - a_r * mr - a_g * mg - a_b * mb])
        coefficients = cv2.boxFilter(coefficients, -1, size, borderType=cv2.BORDER_REFLECT)
        if self.subsample > 1:
            coefficients = cv2.resize(coefficients, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        # einsum: a product summed over a last axis of 3 is several times slower as (x * y).sum(-1)
        return np.einsum("hwc,hwc->hw", coefficients[..., :3], image) + coefficients[..., 3]


# What ``train/ship.py`` chooses from on the val split, with the threshold (None: no refinement).
GUIDED_FILTER_CANDIDATES: tuple[GuidedFilter | None, ...] = (
    None, GuidedFilter(4, 1e-3), GuidedFilter(4, 1e-2), GuidedFilter(8, 1e-3), GuidedFilter(8, 1e-2),
    GuidedFilter(8, 1e-3, 4), GuidedFilter(8, 1e-2, 4), GuidedFilter(12, 1e-2), GuidedFilter(12, 1e-2, 4))


def foreground_and_words(pixel_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., K+1, H, W] log-probabilities -> (P(object) [..., H, W], most likely word k + 1 [..., H, W])."""
    logits = np.asarray(pixel_logits)
    if logits.ndim < 3 or logits.shape[-3] < 2:
        raise InputError(f"expected [..., K+1, H, W] with K >= 1, got {logits.shape}")
    return 1.0 - np.exp(logits[..., 0, :, :]), np.argmax(logits[..., 1:, :, :], axis=-3) + 1


def decide(foreground: np.ndarray, words: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """Labels from :func:`foreground_and_words`: the word where P(object) > threshold, else 0."""
    return np.where(foreground > threshold, words, 0).astype(np.int64)


def refined_foreground_and_words(pixel_logits: np.ndarray, guides: np.ndarray | None = None,
                                 guided: GuidedFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`foreground_and_words`, with P(object) refined by ``guided`` where one is given.

    ``guides``: the RGB frames [..., H, W, 3] the model saw, at the size of ``pixel_logits``.
    """
    foreground, words = foreground_and_words(pixel_logits)
    return refine_foreground(foreground, guides, guided), words


def refine_foreground(foreground: np.ndarray, guides: np.ndarray | None, guided: GuidedFilter | None) -> np.ndarray:
    """P(object) [..., H, W] refined frame by frame by ``guided`` with ``guides`` [..., H, W, 3]
    (unchanged where ``guided`` is None)."""
    if guided is None:
        return foreground
    if guides is None or np.shape(guides) != (*foreground.shape, 3):
        raise InputError(f"the guided filter needs one RGB frame per label map {foreground.shape}, "
                         f"got {None if guides is None else np.shape(guides)}")
    flat = foreground.reshape(-1, *foreground.shape[-2:])
    frames = np.asarray(guides).reshape(-1, *np.shape(guides)[-3:])
    return np.stack([guided(f, g) for f, g in zip(flat, frames)]).reshape(foreground.shape)


def label_map(pixel_logits: np.ndarray, threshold: float = FOREGROUND_THRESHOLD, guides: np.ndarray | None = None,
              guided: GuidedFilter | None = None) -> np.ndarray:
    """[..., K+1, H, W] log-probabilities -> [..., H, W] labels (0 background, k + 1 vocabulary word k).

    With ``guided``, P(object) is refined first (``guides``: the input frames [..., H, W, 3]).
    """
    return decide(*refined_foreground_and_words(pixel_logits, guides, guided), threshold)


def labelled_region(labels: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, columns) of the box around every labelled pixel (label > 0) of a label map [H, W], or None
    for a map without any: per-object work at camera resolution (objects, overlay) stays inside it."""
    import cv2

    x, y, width, height = cv2.boundingRect((labels > 0).view(np.uint8))  # one pass, over a uint8 mask
    return (slice(y, y + height), slice(x, x + width)) if width else None


def upsampled_label_map(pixel_logits: np.ndarray, size: tuple[int, int], threshold: float = FOREGROUND_THRESHOLD,
                        word_stride: int = 8, guide: np.ndarray | None = None,
                        guided: GuidedFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
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

    With ``guided``, P(object) is upsampled to the input frame ``guide`` [S, S, 3] (the model's
    input), refined there as evaluation refines it, and that map is upsampled to ``size``.
    """
    import cv2

    logits = np.asarray(pixel_logits, np.float32)
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise InputError(f"expected one frame's [K+1, h, w] log-probabilities, got {logits.shape}")
    height, width = size
    # P(object) > threshold  <=>  log P(background) < log(1 - threshold): no exp over the frame.
    limit = np.log1p(-threshold) if threshold < 1 else -np.inf
    if guided is None:
        background = cv2.resize(logits[0], (width, height), interpolation=cv2.INTER_LINEAR)
        sounding_cells = logits[0] < limit
    else:
        if guide is None or guide.ndim != 3:
            raise InputError("the guided filter needs the model's input frame [S, S, 3] as guide")
        grid_background = cv2.resize(logits[0], (guide.shape[1], guide.shape[0]), interpolation=cv2.INTER_LINEAR)
        # exp and log, not expm1 and log1p: numpy vectorises only the former (float32: 5 to 7x faster).
        refined = np.clip(guided(1.0 - np.exp(grid_background), guide), 0.0, 1.0 - 1e-6)
        background = cv2.resize(np.log(1.0 - refined), (width, height), interpolation=cv2.INTER_LINEAR)
        # A cell counts as sounding if any of its input pixels is (area average > 0).
        sounding_cells = cv2.resize((refined > threshold).astype(np.float32), logits.shape[:0:-1],
                                    interpolation=cv2.INTER_AREA) > 0
    near = cv2.dilate(sounding_cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if not near.any():
        return np.zeros((height, width), np.int32), background
    words = (np.unique(np.argmax(logits[1:], axis=0)[near]) + 1).astype(np.int32)
    sounding = background < limit
    if len(words) == 1:  # one word: no word map at camera size
        return sounding * words[0], background
    grid = (min(width, logits.shape[2] * word_stride), min(height, logits.shape[1] * word_stride))
    fine = cv2.resize(np.ascontiguousarray(logits[words].transpose(1, 2, 0)), grid, interpolation=cv2.INTER_LINEAR)
    # Words are looked up on the grid and the label map scaled, not the index map: a gather over every
    # camera pixel costs more than the rest of this function.
    word_labels = cv2.resize(words[np.argmax(fine, axis=-1)], (width, height), interpolation=cv2.INTER_NEAREST)
    return word_labels * sounding, background
