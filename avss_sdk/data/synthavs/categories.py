"""Compositional categories: colour x shape, each with a look and a sound signature.

Colour sets the look's hue and the sound's fundamental frequency (hue order follows
the spectrum: red is the lowest pitch, pink the highest); shape sets the silhouette
and the timbre. The base/novel split is fixed (a function of the attribute indices,
never of a seed), so every run of every split agrees on it.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> (RGB, fundamental Hz). Saturated hues, > 40 apart in CIELAB; fundamentals are
# log-spaced by 1.48 (whose powers 2.19, 3.24, 4.80 stay off integers, so no colour
# sits exactly on a low harmonic of another), 180-2800 Hz, >= 2.5 mel bands apart in
# the 64-band 125-7500 Hz log-mel used by the audio encoder.
COLOURS: dict[str, tuple[tuple[int, int, int], float]] = {
    "red": ((220, 20, 30), 180.0),
    "orange": ((255, 130, 0), 266.0),
    "yellow": ((245, 225, 0), 394.0),
    "green": ((20, 170, 40), 584.0),
    "cyan": ((0, 210, 230), 864.0),
    "blue": ((20, 80, 255), 1278.0),
    "purple": ((140, 20, 170), 1892.0),
    "pink": ((255, 100, 200), 2800.0),
}

# name -> timbre (see sound.partials / sound.synthesize_audio for what each means).
SHAPES: dict[str, str] = {
    "circle": "sine",
    "square": "square",
    "triangle": "triangle",
    "star": "sawtooth",
    "cross": "pulsed",
    "ring": "bell",
    "crescent": "tremolo",
}


@dataclass(frozen=True)
class Category:
    """One class: its name ("red star"), attributes, label index (1-based) and signature."""

    name: str
    colour: str
    shape: str
    index: int
    rgb: tuple[int, int, int]
    f0: float
    timbre: str
    novel: bool


def _is_novel(colour_idx: int, shape_idx: int) -> bool:
    # A fixed 2-in-5 pattern over the attribute grid: ~40 % novel, and every colour row
    # and every shape column keeps base members (3*c mod 5 and s mod 5 both cycle).
    return (3 * colour_idx + shape_idx) % 5 < 2


def _build() -> list[Category]:
    cats = []
    for ci, (colour, (rgb, f0)) in enumerate(COLOURS.items()):
        for si, (shape, timbre) in enumerate(SHAPES.items()):
            cats.append(
                Category(
                    name=f"{colour} {shape}",
                    colour=colour,
                    shape=shape,
                    index=len(cats) + 1,
                    rgb=rgb,
                    f0=f0,
                    timbre=timbre,
                    novel=_is_novel(ci, si),
                )
            )
    return cats


CATEGORIES: list[Category] = _build()
BASE: list[Category] = [c for c in CATEGORIES if not c.novel]
NOVEL: list[Category] = [c for c in CATEGORIES if c.novel]
_BY_NAME = {c.name: c for c in CATEGORIES}


def category_by_name(name: str) -> Category:
    """The category called ``name`` (KeyError if there is none)."""
    return _BY_NAME[name]


def label2idx() -> dict[str, int]:
    """{"background": 0, name: index, ...} for all categories, in one fixed order."""
    return {"background": 0, **{c.name: c.index for c in CATEGORIES}}
