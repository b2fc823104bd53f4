"""The guided filter that refines P(object) along the frame's colour edges, and its use in the label decision."""

from __future__ import annotations

import numpy as np
import pytest

from avss_sdk.errors import InputError
from avss_sdk.postprocess import GuidedFilter, label_map, upsampled_label_map


def _reference(probability: np.ndarray, guide: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """The colour guided filter written plainly: window sums by cumulative sums, one 3 x 3 solve per pixel."""
    image = guide.astype(np.float64) / 255.0
    p = probability.astype(np.float64)
    height, width = p.shape

    def mean(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, [(radius, radius), (radius, radius)] + [(0, 0)] * (x.ndim - 2), mode="symmetric")
        out = np.empty_like(x)
        for i in range(height):
            for j in range(width):
                out[i, j] = padded[i:i + 2 * radius + 1, j:j + 2 * radius + 1].mean(axis=(0, 1))
        return out

    mean_i, mean_p = mean(image), mean(p)
    outer = mean(image[..., :, None] * image[..., None, :]) - mean_i[..., :, None] * mean_i[..., None, :]
    cov = mean(image * p[..., None]) - mean_i * mean_p[..., None]
    a = np.linalg.solve(outer + eps * np.eye(3), cov[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(-1)
    return (mean(a) * image).sum(-1) + mean(b)


def test_guided_filter_equals_the_plain_formula():
    rng = np.random.default_rng(0)
    guide = rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)
    probability = rng.random((20, 23)).astype(np.float32)
    for radius, eps in ((1, 1e-3), (3, 1e-2)):
        np.testing.assert_allclose(GuidedFilter(radius, eps)(probability, guide),
                                   _reference(probability, guide, radius, eps), atol=2e-4)


def _edge_scene(size: int = 96, edge: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """A red object left of column ``edge`` on a grey striped background, and P(object) as a stride-8
    decoder gives it, bilinearly upsampled: its cell across the edge (a quarter object) reads 0.7,
    so the 0.5 outline overshoots the object by 4 columns."""
    import cv2

    guide = np.full((size, size, 3), 90, np.uint8)
    guide[::6] = 110  # background texture: edges the filter must not follow
    guide[:, :edge] = (200, 30, 30)
    coarse = np.full((size // 8, size // 8), 0.05, np.float32)
    coarse[:, :edge // 8] = 0.95
    coarse[:, edge // 8] = 0.7
    return guide, cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("guided", [GuidedFilter(8, 1e-2), GuidedFilter(8, 1e-2, 4)])
def test_guided_filter_moves_the_outline_onto_the_colour_edge(guided):
    guide, probability = _edge_scene()
    truth = np.zeros(probability.shape, bool)
    truth[:, :50] = True
    before = probability > 0.5
    after = guided(probability, guide) > 0.5
    assert (before != truth).sum() == 4 * 96  # 4 columns of background labelled object
    assert (after != truth).sum() <= 96  # at most one column left
    assert after[:, :48].all() and not after[:, 52:].any()


def test_guided_filter_settings_are_checked_and_round_trip():
    guided = GuidedFilter(8, 0.01, 4)
    assert GuidedFilter.from_dict(guided.to_dict()) == guided and GuidedFilter.from_dict(None) is None
    for bad in ({"radius": 0, "eps": 0.01, "subsample": 1}, {"radius": 8, "eps": 0.0, "subsample": 1},
                {"radius": 8.5, "eps": 0.01, "subsample": 1}, {"radius": 8, "eps": 0.01}, "r8", [8, 0.01, 1]):
        with pytest.raises(InputError):
            GuidedFilter.from_dict(bad)
    with pytest.raises(InputError, match="RGB guide"):
        guided(np.zeros((8, 8), np.float32), np.zeros((8, 9, 3), np.uint8))


def test_label_decision_with_the_guided_filter_at_input_and_camera_size():
    """Evaluation (label_map at the input size) and the runtime (upsampled_label_map) decide alike."""
    import torch
    import torch.nn.functional as F

    guide, _ = _edge_scene(size=192, edge=100)
    coarse = np.full((24, 24), 0.05, np.float32)
    coarse[4:20, :12] = 0.95
    coarse[4:20, 12] = 0.7  # the cell across the red edge at column 100
    words = np.full((2, 24, 24), 0.2, np.float32)
    words[0, :, :12], words[1, :, 12:] = 0.8, 0.8
    logits = torch.from_numpy(np.log(np.concatenate([1 - coarse[None], coarse * words])))
    guided = GuidedFilter(8, 1e-2)
    upsampled = F.interpolate(logits[None], size=(192, 192), mode="bilinear", align_corners=False).numpy()
    evaluated = label_map(upsampled, 0.5, guide[None], guided)[0]
    plain = label_map(upsampled, 0.5)[0]
    runtime, log_background = upsampled_label_map(logits.numpy(), (192, 192), 0.5, guide=guide, guided=guided)
    assert (runtime == evaluated).mean() > 0.999 and log_background.shape == (192, 192)
    row = 96
    assert plain[row, 100:].sum() > 0 and evaluated[row, 100:].sum() < plain[row, 100:].sum()
    assert evaluated[row, :96].all() and not evaluated[row, 104:].any()  # the outline follows the colour edge
    camera, _ = upsampled_label_map(logits.numpy(), (480, 640), 0.5, guide=guide, guided=guided)
    assert camera.shape == (480, 640) and abs((camera > 0).mean() - (evaluated > 0).mean()) < 0.01
    with pytest.raises(InputError, match="guide"):
        upsampled_label_map(logits.numpy(), (192, 192), 0.5, guided=guided)


def test_sounding_objects_boxes_masks_and_scores():
    """Each word in the label map is one object: its exact pixels and box, and its mean P(object) as score."""
    from avss_sdk.result import sounding_objects

    labels = np.zeros((120, 160), np.int32)
    labels[10:20, 30:35] = 2  # "cat": rows 10-19, columns 30-34
    labels[50, 100] = 2  # a stray pixel of the same word widens its box
    labels[70:90, 5:25] = 1  # "dog"
    log_background = np.full(labels.shape, np.log(0.9), np.float32)
    log_background[labels == 2] = np.log(0.2)  # P(object) 0.8: the more confident object comes first
    log_background[70:90, 5:15] = np.log(0.5)
    log_background[70:90, 15:25] = np.log(0.3)
    objects = sounding_objects(labels, log_background, ["dog", "cat", "bird"])
    assert [(o.label, o.class_index) for o in objects] == [("cat", 1), ("dog", 0)]
    cat, dog = objects
    assert cat.box == (30, 10, 100, 50) and dog.box == (5, 70, 24, 89)
    np.testing.assert_array_equal(cat.mask, labels == 2)
    np.testing.assert_array_equal(dog.mask, labels == 1)
    assert cat.score == pytest.approx(0.8, abs=1e-6) and dog.score == pytest.approx(0.6, abs=1e-6)
    assert sounding_objects(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.float32), ["dog"]) == []
