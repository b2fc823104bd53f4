"""Overlays of label maps on frames, with colours that stay the same for a class."""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from avss_sdk.errors import InputError


def class_color(name: str) -> tuple[int, int, int]:
    """A bright RGB colour derived from the class name, so it is stable across runs and vocabularies."""
    hue = zlib.crc32(name.encode("utf-8")) % 180  # OpenCV hue range
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def overlay(frame: np.ndarray, labels: np.ndarray, class_names: list[str], alpha: float = 0.45) -> np.ndarray:
    """Tint each labelled region of ``frame`` (RGB) with its class colour and outline it.

    Label 0 is background and left as is. The outline keeps the object's own colours
    readable under the tint.
    """
    if frame.shape[:2] != labels.shape:
        raise InputError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    out = frame.astype(np.float32)
    present = [i for i in np.unique(labels) if 0 < i < len(class_names)]
    for index in present:
        region = labels == index
        out[region] = (1 - alpha) * out[region] + alpha * np.array(class_color(class_names[index]), np.float32)
    out = out.astype(np.uint8)
    for index in present:
        contours, _ = cv2.findContours((labels == index).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
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


def legend(image: np.ndarray, names: list[str], colors: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Draw a colour key for ``names`` in the top-left corner of an RGB image (in place) and return it.

    Each entry's colour is ``class_color(name)`` unless ``colors`` gives it (for entries such
    as "dog 0.83" whose text is not the class name).
    """
    colors = colors if colors is not None else [class_color(name) for name in names]
    scale = max(image.shape[0] / 480, 0.8)
    line = int(22 * scale)
    for row, name in enumerate(names):
        y = 6 + row * line
        cv2.rectangle(image, (6, y), (6 + line - 6, y + line - 6), colors[row], thickness=-1)
        caption(image, name, (10 + line, y + line - 8), 0.5 * scale)
    return image
