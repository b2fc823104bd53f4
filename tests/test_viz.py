"""Overlay colours are stable per class and only labelled pixels change."""

import numpy as np
import pytest

from avss_sdk.viz import class_color, legend, overlay


def test_class_colour_depends_on_the_name_only():
    assert class_color("red star") == class_color("red star")
    assert class_color("red star") != class_color("blue circle")


def test_overlay_paints_labelled_pixels_only():
    frame = np.full((8, 8, 3), 100, dtype=np.uint8)
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:7, 2:7] = 2
    out = overlay(frame, labels, ["background", "dog", "guitar"])
    assert np.array_equal(out[labels == 0], frame[labels == 0])
    expected_tint = 0.55 * 100 + 0.45 * np.array(class_color("guitar"))
    assert np.allclose(out[4, 4], expected_tint, atol=1)  # inside: the tint
    assert tuple(out[2, 2]) == class_color("guitar")  # the edge: the outline


def test_overlay_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5), np.uint8), ["background"])


def test_legend_draws_in_the_corner():
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    legend(image, ["dog", "guitar"])
    assert image[:60, :100].any() and not image[150:, 150:].any()
