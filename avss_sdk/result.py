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
    """The objects of a label map, most confident first; ``log_background`` is log P(background) at its size."""
    counts = np.bincount(labels.ravel(), minlength=len(vocab) + 1)
    objects = []
    for label in np.flatnonzero(counts[1:]) + 1:
        mask = labels == label
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
        score = 1.0 - float(np.mean(np.exp(log_background[mask])))  # exp: vectorised, unlike expm1
        objects.append(SoundingObject(vocab[label - 1], int(label - 1), score, mask, box))
    return sorted(objects, key=lambda o: -o.score)
