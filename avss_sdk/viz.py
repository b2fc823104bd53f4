"""Overlays of label maps on frames, with colours that stay the same for a class."""

from __future__ import annotations

import re
import zlib

import cv2
import numpy as np

from avss_sdk.errors import InputError
from avss_sdk.postprocess import labelled_region

# Colour words and the colour (RGB) a class named with one is drawn in, so that a
# "purple square" is never drawn cyan. Names without a colour word get a hue from a hash.
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 35), "orange": (255, 135, 0), "yellow": (245, 225, 20), "green": (30, 180, 50),
    "cyan": (0, 215, 235), "blue": (30, 90, 255), "purple": (150, 40, 200), "violet": (150, 40, 200),
    "pink": (255, 105, 195), "magenta": (235, 0, 235), "brown": (150, 90, 40), "white": (245, 245, 245),
    "black": (45, 45, 45), "gray": (140, 140, 140), "grey": (140, 140, 140),
}


def class_color(name: str) -> tuple[int, int, int]:
    """A stable RGB colour for a class: the colour its name says, else a bright hue from the name.

    Stable across runs and vocabularies (it depends on the name only). Where the name
    holds a colour word ("purple square"), the colour is that colour, its brightness
    varied a little by the whole name so "red star" and "red circle" still differ.
    """
    key = zlib.crc32(name.encode("utf-8"))
    colour = next((COLOUR_WORDS[w] for w in re.findall(r"[a-z]+", name.lower()) if w in COLOUR_WORDS), None)
    if colour is not None:
        scale = 1.0 - 0.12 * (key % 3)  # 1, 0.88 or 0.76: darker shades of the same colour
        r, g, b = (int(round(c * scale)) for c in colour)
        return r, g, b
    hue = key % 180  # OpenCV hue range
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def overlay(frame: np.ndarray, labels: np.ndarray, class_names: list[str], alpha: float = 0.45) -> np.ndarray:
    """Tint each labelled region of ``frame`` (RGB uint8) with its class colour and outline it.

    Label 0 is background and left as is. The outline keeps the object's own colours
    readable under the tint. The work is done inside the box around the labelled pixels, and
    the tint by a lookup table of every channel value's blend: a live demo draws every frame,
    and blending the whole frame in float cost more than segmenting it.
    """
    if frame.shape[:2] != labels.shape:
        raise InputError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"expected an RGB uint8 frame [H, W, 3], got {frame.dtype} {frame.shape}")
    out = frame.copy()
    box = labelled_region(labels)
    if box is None:
        return out
    y, x = box[0].start, box[1].start
    crop, target = labels[box], out[box]
    present = [i for i in np.flatnonzero(np.bincount(crop[crop > 0])) if i < len(class_names)]
    channel_values = np.arange(256, dtype=np.float32)[:, None]
    for index in present:
        tint = (1 - alpha) * channel_values + alpha * np.array(class_color(class_names[index]), np.float32)
        blended = cv2.LUT(target, tint.astype(np.uint8).reshape(256, 1, 3))
        np.copyto(target, blended, where=(crop == index)[..., None])
    for index in present:
        contours, _ = cv2.findContours((crop == index).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x, y))
        cv2.drawContours(out, contours, -1, class_color(class_names[index]), thickness=max(1, frame.shape[0] // 160))
    return out


def caption(image: np.ndarray, text: str, origin: tuple[int, int], font_scale: float = 0.5) -> np.ndarray:
    """White ``text`` on a darkened box at ``origin`` (the text's bottom-left) in an RGB image, in place.

    A box keeps small text readable on any background, where an outline would thicken
    small glyphs into each other.
    """
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    x, y = origin
    y0, y1 = max(y - height - 3, 0), min(y + baseline + 1, image.shape[0])
    x0, x1 = max(x - 3, 0), min(x + width + 3, image.shape[1])
    image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * 0.4).astype(image.dtype)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def legend(image: np.ndarray, names: list[str], colors: list[tuple[int, int, int]] | None = None,
           avoid: np.ndarray | None = None) -> np.ndarray:
    """Draw a colour key for ``names`` in a corner of an RGB image (in place) and return it.

    The corner is the one whose key would hide the fewest ``avoid`` pixels (a boolean mask,
    e.g. the labelled objects); without ``avoid``, the top left. Each entry's colour is
    ``class_color(name)`` unless ``colors`` gives it (for entries such as "dog 0.83" whose
    text is not the class name).
    """
    colors = colors if colors is not None else [class_color(name) for name in names]
    font, line = legend_scale(image.shape[0])
    text_width = max((cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, font, 1)[0][0] for n in names), default=0)
    width, height = 10 + line + text_width + 3, 6 + len(names) * line
    x, y = legend_corner(image.shape[:2], (height, width), avoid)
    for row, name in enumerate(names):
        top = y + 6 + row * line
        cv2.rectangle(image, (x + 6, top), (x + line, top + line - 6), colors[row], thickness=-1)
        caption(image, name, (x + 10 + line, top + line - 8), font)
    return image


def legend_corner(image_size: tuple[int, int], box: tuple[int, int], avoid: np.ndarray | None) -> tuple[int, int]:
    """The top-left (x, y) of a ``box`` (height, width) in the image corner hiding the fewest ``avoid`` pixels.

    Ties go to the top left, then top right, bottom left, bottom right.
    """
    (rows, cols), (height, width) = image_size, box
    corners = [(0, 0), (max(cols - width, 0), 0), (0, max(rows - height, 0)),
               (max(cols - width, 0), max(rows - height, 0))]
    if avoid is None:
        return corners[0]
    hidden = [int(np.count_nonzero(avoid[y:y + height, x:x + width])) for x, y in corners]
    return corners[hidden.index(min(hidden))]


def legend_scale(height: int) -> tuple[float, int]:
    """Font scale and line height of a legend for an image ``height`` pixels high."""
    scale = max(height / 480, 0.8)
    return 0.5 * scale, int(22 * scale)


def panel_width(names: list[str], height: int) -> int:
    """The width a :func:`legend_panel` needs to show ``names`` beside an image ``height`` pixels high."""
    font, line = legend_scale(height)
    text = max((cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, font, 1)[0][0] for n in names), default=0)
    return (16 + line + text + 1) // 2 * 2  # even: H.264 wants even frame sizes


def legend_panel(height: int, width: int, names: list[str], colors: list[tuple[int, int, int]] | None = None,
                 footer: str | None = None) -> np.ndarray:
    """A dark RGB panel [height, width] with a colour key for ``names`` and a ``footer`` line at the bottom.

    Placed beside a frame it hides nothing of it (what the demo's video does). Entries that
    do not fit are left out; colours as in :func:`legend`.
    """
    colors = colors if colors is not None else [class_color(name) for name in names]
    panel = np.full((height, width, 3), 32, np.uint8)
    font, line = legend_scale(height)
    bottom = height - (line + 4 if footer else 0)
    for row, name in enumerate(names):
        top = 6 + row * line
        if top + line > bottom:
            break
        cv2.rectangle(panel, (6, top), (line, top + line - 6), colors[row], thickness=-1)
        cv2.putText(panel, name, (10 + line, top + line - 8), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1,
                    cv2.LINE_AA)
    if footer:
        cv2.putText(panel, footer, (6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, font * 0.9, (200, 200, 200), 1,
                    cv2.LINE_AA)
    return panel
