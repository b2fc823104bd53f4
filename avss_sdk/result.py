"""What a segmented frame gives back: the label map, the sounding objects, timings and an overlay."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from avss_sdk import viz
from avss_sdk.postprocess import labelled_region


@dataclass(frozen=True)
class SoundingObject:
    """One vocabulary word found making a sound: its pixels, box (x0, y0, x1, y1, inclusive) and score.

    ``score`` is the mean probability, over the object's pixels, that the pixel is a sounding
    object (the decoder's foreground probability), so it is comparable across vocabularies.
    """

    label: str
    class_index: int
    score: float
    mask: np.ndarray
    box: tuple[int, int, int, int]

    def __repr__(self) -> str:
        """The label, score, box and pixel count: never the mask's values."""
        return (f"SoundingObject(label={self.label!r}, score={self.score:.3f}, box={self.box}, "
                f"pixels={int(np.count_nonzero(self.mask))})")


@dataclass
class Result:
    """One frame's segmentation.

    ``labels`` is an int32 map at frame resolution: 0 background, ``k + 1`` for ``vocab[k]``.
    ``timings`` holds milliseconds per stage, ``total`` (their sum) and, from a local
    ``Segmenter``, ``latency`` (from the start of preprocessing to the result: in a pipelined
    ``Stream`` it includes the waits between stage threads).
    """

    frame: np.ndarray
    timestamp: float
    labels: np.ndarray
    vocab: list[str]
    objects: list[SoundingObject]
    timings: dict[str, float] = field(default_factory=dict)
    index: int = 0

    def __repr__(self) -> str:
        """A one-line summary: frame size, objects and total time, never the arrays."""
        objects = ", ".join(f"{o.label!r} {o.score:.2f}" for o in self.objects)
        total = self.timings.get("total")
        return (f"Result(index={self.index}, timestamp={self.timestamp:.3f}, size={self.labels.shape[1]}x"
                f"{self.labels.shape[0]}, vocab={len(self.vocab)} words, objects=[{objects}]"
                + (f", total={total:.1f} ms)" if total is not None else ")"))

    def plot(self, legend: bool = True, alpha: float = 0.45) -> np.ndarray:
        """An RGB overlay of the frame: each sounding object tinted in its class colour, with a legend."""
        image = viz.overlay(self.frame, self.labels, ["background", *self.vocab], alpha)
        if legend and self.objects:
            viz.legend(image, [f"{o.label} {o.score:.2f}" for o in self.objects],
                       colors=[viz.class_color(o.label) for o in self.objects], avoid=self.labels > 0)
        return image


def sounding_objects(labels: np.ndarray, log_background: np.ndarray, vocab: list[str]) -> list[SoundingObject]:
    """The objects of a label map, most confident first; ``log_background`` is log P(background) at its size.

    Counted and measured inside the box around every object pixel (:func:`labelled_region`), not
    over the whole frame: at camera resolution the objects usually cover a small part of it.
    """
    region = labelled_region(labels)
    if region is None:
        return []
    y, x = region[0].start, region[1].start
    crop, crop_background = labels[region], log_background[region]
    counts = np.bincount(crop.ravel(), minlength=len(vocab) + 1)
    objects = []
    for label in np.flatnonzero(counts[1:]) + 1:
        inside = crop == label
        left, top, w, h = cv2.boundingRect(inside.view(np.uint8))
        box = (x + left, y + top, x + left + w - 1, y + top + h - 1)
        score = 1.0 - float(np.mean(np.exp(crop_background[inside])))  # exp: vectorised, unlike expm1
        mask = np.zeros(labels.shape, bool)
        mask[region] = inside
        objects.append(SoundingObject(vocab[label - 1], int(label - 1), score, mask, box))
    return sorted(objects, key=lambda o: -o.score)
