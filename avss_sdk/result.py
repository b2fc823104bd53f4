"""What a segmented frame gives back: the label map, the sounding objects, timings and an overlay."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avss_sdk import viz


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


@dataclass
class Result:
    """One frame's segmentation.

    ``labels`` is an int32 map at frame resolution: 0 background, ``k + 1`` for ``vocab[k]``.
    ``timings`` holds milliseconds per stage (and ``total``).
    """

    frame: np.ndarray
    timestamp: float
    labels: np.ndarray
    vocab: list[str]
    objects: list[SoundingObject]
    timings: dict[str, float] = field(default_factory=dict)
    index: int = 0

    def plot(self, legend: bool = True, alpha: float = 0.45) -> np.ndarray:
        """An RGB overlay of the frame: each sounding object tinted in its class colour, with a legend."""
        image = viz.overlay(self.frame, self.labels, ["background", *self.vocab], alpha)
        if legend and self.objects:
            viz.legend(image, [f"{o.label} {o.score:.2f}" for o in self.objects],
                       colors=[viz.class_color(o.label) for o in self.objects])
        return image


def sounding_objects(labels: np.ndarray, foreground: np.ndarray, vocab: list[str]) -> list[SoundingObject]:
    """The objects of a label map, most confident first; ``foreground`` is P(object) at the same size."""
    objects = []
    for label in np.unique(labels):
        if label == 0:
            continue
        mask = labels == label
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        objects.append(SoundingObject(vocab[label - 1], int(label - 1), float(foreground[mask].mean()), mask, box))
    return sorted(objects, key=lambda o: -o.score)
