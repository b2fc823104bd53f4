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
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), ["background"])


def test_overlay_outlines_objects_on_the_frame_edge_and_skips_unknown_labels():
    frame = np.full((10, 12, 3), 50, dtype=np.uint8)
    labels = np.zeros((10, 12), dtype=np.int32)
    labels[0:4, 8:12] = 1  # the top right corner
    labels[7:10, 0:3] = 9  # no class 9: left as it is
    out = overlay(frame, labels, ["background", "dog"])
    assert tuple(out[0, 11]) == tuple(out[3, 8]) == class_color("dog")  # the outline along the frame's edges
    assert np.array_equal(out[labels != 1], frame[labels != 1])


def test_legend_draws_in_the_corner():
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    legend(image, ["dog", "guitar"])
    assert image[:60, :100].any() and not image[150:, 150:].any()


def _hue(rgb: tuple[int, int, int]) -> int:
    import cv2

    return int(cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0, 0])


@pytest.mark.parametrize("name, hue", [("purple square", 143), ("cyan ring", 93), ("a red star", 179),
                                       ("Blue guitar", 113), ("pink triangle", 163), ("green circle", 63)])
def test_a_colour_word_in_the_name_sets_the_colour(name, hue):
    distance = abs(_hue(class_color(name)) - hue)
    assert min(distance, 180 - distance) <= 8, (name, class_color(name))  # OpenCV hues: 0..179, a circle


def test_names_with_one_colour_word_still_differ_and_stay_stable():
    shades = {class_color(f"red {shape}") for shape in ("star", "circle", "cross", "ring")}
    assert len(shades) > 1
    assert class_color("purple square") == class_color("purple square")


def test_the_legend_goes_to_the_corner_that_hides_least():
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    objects = np.zeros((200, 200), dtype=bool)
    objects[:80, :80] = True  # an object in the top left
    legend(image, ["dog", "guitar"], avoid=objects)
    assert not image[:60, :100].any() and image[:60, 100:].any()  # the top right, not over the object
    objects[:80, 100:] = True  # and one in the top right: the bottom left is free
    image[:] = 0
    legend(image, ["dog"], avoid=objects)
    assert image[150:, :100].any() and not image[:100].any()


def test_result_repr_is_one_short_line():
    from avss_sdk.result import Result, sounding_objects

    labels = np.zeros((480, 640), np.int32)
    labels[10:20, 30:50] = 1
    objects = sounding_objects(labels, np.full((480, 640), -3.0, np.float32), ["dog"])
    result = Result(np.zeros((480, 640, 3), np.uint8), 1.25, labels, ["dog"], objects, {"total": 12.5}, 7)
    text = repr(result)
    assert "\n" not in text and len(text) < 200, text
    assert "640x480" in text and "'dog' 0.95" in text and "12.5 ms" in text
    assert "pixels=200" in repr(objects[0]) and "array" not in repr(objects[0])
