"""Rendering a scene: textured background, shapes in z-order, labels and exact flow.

Coordinates are OpenCV's: pixel (row i, column j) has its centre at (x=j, y=i). Every
object moves rigidly between frames (translation plus rotation about its centre), so
the ground-truth flow of each visible pixel is that similarity transform, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avss_sdk.data.synthavs.scene import BACKGROUND_COLOURS, Scene, SceneObject

_SUBPIXEL_BITS = 4


@dataclass
class RenderedClip:
    """Rendered arrays of one clip (T frames of H x W).

    frames [T,H,W,3] uint8 RGB; instances [T,H,W] int16 (index into scene.objects of the
    top-most object, -1 for background); labels [T,H,W] uint8 (class of sounding objects,
    0 elsewhere); flow_fwd / flow_bwd [T,H,W,2] float32 (see ``render_clip``).
    """

    frames: np.ndarray
    instances: np.ndarray
    labels: np.ndarray
    flow_fwd: np.ndarray
    flow_bwd: np.ndarray


def render_background(pattern: str, colour: str, size: int, seed: int) -> np.ndarray:
    """A static [size, size, 3] uint8 RGB background: a muted colour and a darker shade of
    it, mixed by the pattern (stripes, checker, smooth noise, gradient or plain), plus grain."""
    rng = np.random.default_rng(seed)
    base = np.array(BACKGROUND_COLOURS[colour], np.float32)
    shade = base * rng.uniform(0.6, 0.8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, np.pi)
    along = xx * np.cos(theta) + yy * np.sin(theta)
    if pattern == "striped":
        w = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * np.pi * rng.uniform(4, 9) * along))
    elif pattern == "checkered":
        n = rng.uniform(3, 7)
        w = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
    elif pattern == "mottled":
        coarse = rng.random((6, 6)).astype(np.float32)
        w = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    elif pattern == "shaded":
        w = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif pattern == "plain":
        w = np.zeros((size, size), np.float32)
    else:
        raise ValueError(f"unknown background pattern {pattern!r}")
    img = base * (1 - w[..., None]) + shade * w[..., None]
    img += rng.normal(0, 3.0, (size, size, 1)).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _unit_outline(shape: str) -> list[tuple[np.ndarray, int]]:
    """The shape at unit radius as polygons [N, 2] to fill with 1 (body) or 0 (holes)."""
    def ngon(n: int, r: float, phase: float = 0.0, dx: float = 0.0) -> np.ndarray:
        a = phase + 2 * np.pi * np.arange(n) / n
        return np.stack([dx + r * np.cos(a), r * np.sin(a)], axis=1)

    if shape == "circle":
        return [(ngon(48, 1.0), 1)]
    if shape == "square":
        return [(ngon(4, 1.0, np.pi / 4), 1)]
    if shape == "triangle":
        return [(ngon(3, 1.05, -np.pi / 2), 1)]
    if shape == "star":
        pts = ngon(10, 1.0, -np.pi / 2)
        pts[1::2] *= 0.45
        return [(pts, 1)]
    if shape == "cross":
        a, b = 0.32, 1.0
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
               (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        return [(np.array(pts, np.float64), 1)]
    if shape == "ring":
        return [(ngon(48, 1.0), 1), (ngon(48, 0.55), 0)]
    if shape == "crescent":
        return [(ngon(48, 1.0), 1), (ngon(48, 0.82, dx=0.45), 0)]
    raise ValueError(f"unknown shape {shape!r}")


def object_mask(obj: SceneObject, t: int, size: int) -> np.ndarray:
    """Boolean [size, size] mask of ``obj`` at frame ``t`` (ignoring occlusion)."""
    c, s = np.cos(obj.angles[t]), np.sin(obj.angles[t])
    rot = np.array([[c, -s], [s, c]])
    mask = np.zeros((size, size), np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    for poly, value in _unit_outline(obj.category.shape):
        pts = (poly * obj.radius) @ rot.T + obj.centres[t]
        fixed = np.round(pts * scale).astype(np.int32)
        cv2.fillPoly(mask, [fixed], value, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


def _rigid_flow(obj: SceneObject, src: int, dst: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Displacement [N, 2] taking points (xs, ys) of ``obj`` at frame src to frame dst."""
    dtheta = obj.angles[dst] - obj.angles[src]
    c, s = np.cos(dtheta), np.sin(dtheta)
    rel = np.stack([xs, ys], axis=1).astype(np.float64) - obj.centres[src]
    moved = rel @ np.array([[c, -s], [s, c]]).T + obj.centres[dst]
    return (moved - rel - obj.centres[src]).astype(np.float32)


def render_clip(scene: Scene) -> RenderedClip:
    """Render frames, instance maps, sounding labels and ground-truth flow of ``scene``.

    flow_fwd[t] is defined on frame t-1's grid: its pixel p moves to p + flow_fwd[t](p) in
    frame t. flow_bwd[t] is defined on frame t's grid: its pixel p came from
    p + flow_bwd[t](p) in frame t-1. Both are zero on the (static) background and at t=0.
    """
    size, n = scene.size, scene.frames
    bg = render_background(scene.pattern, scene.bg_colour, size, scene.texture_seed)
    frames = np.empty((n, size, size, 3), np.uint8)
    instances = np.full((n, size, size), -1, np.int16)
    labels = np.zeros((n, size, size), np.uint8)
    flow_fwd = np.zeros((n, size, size, 2), np.float32)
    flow_bwd = np.zeros((n, size, size, 2), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sounding = [o.sounding(scene.frame_times) for o in scene.objects]
    for t in range(n):
        frame = bg.astype(np.float32)
        for k, obj in enumerate(scene.objects):
            mask = object_mask(obj, t, size)
            # A soft directional shading that rotates with the object: it looks 3-D and
            # makes rotation visible, while keeping the hue (the colour name) intact.
            a = obj.shade_angle + obj.angles[t]
            ramp = ((xx[mask] - obj.centres[t, 0]) * np.cos(a)
                    + (yy[mask] - obj.centres[t, 1]) * np.sin(a)) / obj.radius
            gain = obj.brightness * (1.0 + 0.12 * ramp)
            frame[mask] = np.asarray(obj.category.rgb, np.float32) * gain[:, None]
            instances[t][mask] = k
        frames[t] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
        lut = np.zeros(len(scene.objects) + 1, np.uint8)  # index -1 -> last entry -> 0
        for k, obj in enumerate(scene.objects):
            lut[k] = obj.category.index if sounding[k][t] else 0
        labels[t] = lut[instances[t]]
        if t == 0:
            continue
        for k, obj in enumerate(scene.objects):
            if not obj.moving:
                continue
            ys, xs = np.nonzero(instances[t - 1] == k)
            flow_fwd[t, ys, xs] = _rigid_flow(obj, t - 1, t, ys, xs)
            ys, xs = np.nonzero(instances[t] == k)
            flow_bwd[t, ys, xs] = _rigid_flow(obj, t, t - 1, ys, xs)
    return RenderedClip(frames, instances, labels, flow_fwd, flow_bwd)
