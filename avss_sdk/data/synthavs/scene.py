"""Sampling one clip's scene: background, objects, motion, sounding intervals, noise.

A ``Scene`` holds everything needed to render the frames (``render.render_clip``) and
synthesise the audio (``sound.synthesize_audio``) as pure functions of it, so one seed
gives byte-identical files whatever the number of worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avss_sdk.data.synthavs.categories import BASE, CATEGORIES, Category
from avss_sdk.media import WINDOW_SECONDS

AUDIO_OFFSET = WINDOW_SECONDS  # audio before frame 0: one full causal window for frame 0
SPLITS = ("train", "val", "test")
NOISE_COLOURS = ("white", "pink", "brown")
# Muted, low-chroma colours: none can be mistaken for a (saturated) object colour.
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "beige": (170, 160, 138),
    "slate": (100, 110, 124),
    "sage": (124, 138, 118),
    "taupe": (140, 126, 116),
}
PATTERNS = ("striped", "checkered", "mottled", "shaded", "plain")


@dataclass
class SceneObject:
    """One object: category, size, per-frame pose, motion and (if it sounds) its interval.

    ``centres`` [T, 2] (x, y) and ``angles`` [T] (radians) are the pose at each frame;
    ``sound_interval`` is (t_on, t_off) in seconds into the clip audio, or None if silent.
    """

    category: Category
    radius: float
    centres: np.ndarray
    angles: np.ndarray
    moving: bool
    sound_interval: tuple[float, float] | None
    amplitude: float
    brightness: float
    shade_angle: float

    def sounding(self, frame_times: np.ndarray) -> list[bool]:
        """Whether the sound is active (t_on <= t < t_off) at each frame's timestamp."""
        if self.sound_interval is None:
            return [False] * len(frame_times)
        on, off = self.sound_interval
        return [bool(on <= t < off) for t in frame_times]


@dataclass
class Scene:
    """A sampled clip. ``objects`` are in z-order, bottom first (later ones occlude)."""

    split: str
    size: int
    fps: float
    frames: int
    pattern: str
    bg_colour: str
    texture_seed: int
    objects: list[SceneObject]
    snr_db: float
    noise_colour: str
    audio_seed: int
    frame_times: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.frame_times = AUDIO_OFFSET + np.arange(self.frames) / self.fps

    @property
    def audio_duration(self) -> float:
        """Seconds of audio: the 0.96 s lead-in plus one frame period per frame."""
        return AUDIO_OFFSET + self.frames / self.fps

    @property
    def background(self) -> str:
        """The background's description, e.g. "striped grey"."""
        return f"{self.pattern} {self.bg_colour}"


def _trajectory(
    rng: np.random.Generator, size: int, radius: float, frames: int, moving: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame centres (translation with bounces off the frame edges) and angles."""
    lo, hi = radius, size - radius
    pos = rng.uniform(lo, hi, 2)
    angle0 = rng.uniform(0, 2 * np.pi)
    vel = np.zeros(2)
    omega = 0.0
    if moving:
        speed = rng.uniform(0.03, 0.07) * size
        direction = rng.uniform(0, 2 * np.pi)
        vel = speed * np.array([np.cos(direction), np.sin(direction)])
        if rng.random() < 0.5:
            omega = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.2)
    centres = np.empty((frames, 2))
    for t in range(frames):
        centres[t] = pos
        pos = pos + vel
        for d in range(2):
            if pos[d] < lo:
                pos[d], vel[d] = 2 * lo - pos[d], -vel[d]
            elif pos[d] > hi:
                pos[d], vel[d] = 2 * hi - pos[d], -vel[d]
    return centres, angle0 + omega * np.arange(frames)


def _min_visible_fraction(objects: list[SceneObject], size: int) -> float:
    """Smallest visible fraction of any object on any frame (discs on a coarse grid)."""
    step = 2.0
    g = np.arange(step / 2, size, step)
    xx, yy = np.meshgrid(g, g)
    worst = 1.0
    for t in range(len(objects[0].angles)):
        discs = [
            (xx - o.centres[t, 0]) ** 2 + (yy - o.centres[t, 1]) ** 2 < (0.8 * o.radius) ** 2
            for o in objects
        ]
        for k, disc in enumerate(discs):
            covered = np.zeros_like(disc)
            for above in discs[k + 1 :]:
                covered |= above
            area = disc.sum()
            if area:
                worst = min(worst, float((disc & ~covered).sum()) / area)
    return worst


def _sound_interval(
    rng: np.random.Generator, frame_times: np.ndarray, fps: float, duration: float
) -> tuple[float, float]:
    """An interval containing >= 1 frame timestamp; it may start and/or stop mid-clip.

    Boundaries fall between frames (never within 15 % of a frame period of a timestamp),
    so the per-frame sounding flags are unambiguous.
    """
    n = len(frame_times)
    dt = 1.0 / fps
    mode = rng.choice(["whole", "starts", "stops", "both"], p=[0.4, 0.2, 0.2, 0.2])
    if n < 3:
        mode = "whole"
    on, off = 0.0, duration
    if mode == "starts":
        on = frame_times[rng.integers(1, n)] - rng.uniform(0.15, 0.85) * dt
    elif mode == "stops":
        off = frame_times[rng.integers(0, n - 1)] + rng.uniform(0.15, 0.85) * dt
    elif mode == "both":
        first = int(rng.integers(1, n - 1))
        last = int(rng.integers(first, n - 1))
        on = frame_times[first] - rng.uniform(0.15, 0.85) * dt
        off = frame_times[last] + rng.uniform(0.15, 0.85) * dt
    return round(float(on), 6), round(float(off), 6)


def sample_scene(
    rng: np.random.Generator, split: str, frames: int = 10, fps: float = 5.0, size: int = 224
) -> Scene:
    """Sample a clip: 1-4 objects, 0-3 sounding, distractors, occlusion, noise, SNR.

    Train scenes draw only base categories (novel ones never appear, not even silent);
    val/test draw from all categories. With probability 0.3 a silent twin of a sounding
    object's category is added; then only motion can tell them apart, so the sounding
    copy is made to move and the silent twin stays still.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pool = BASE if split == "train" else CATEGORIES
    n_obj = int(rng.integers(1, 5))
    p_sound = np.array([0.1, 0.45, 0.3, 0.15])[: min(3, n_obj) + 1]
    n_sound = int(rng.choice(len(p_sound), p=p_sound / p_sound.sum()))
    sounding = [pool[i] for i in rng.choice(len(pool), n_sound, replace=False)]
    twin = n_sound > 0 and n_obj > n_sound and rng.random() < 0.3
    others = [c for c in pool if c not in sounding]
    silent = [others[i] for i in rng.choice(len(others), n_obj - n_sound, replace=True)]
    if twin:
        silent[0] = sounding[0]
    specs = [(c, True) for c in sounding] + [(c, False) for c in silent]
    moving = [bool(rng.random() < 0.6) for _ in specs]
    if twin:
        moving[0], moving[n_sound] = True, False
    order = rng.permutation(n_obj)
    radii = rng.uniform(0.09, 0.17, n_obj) * size
    frame_times = AUDIO_OFFSET + np.arange(frames) / fps
    duration = AUDIO_OFFSET + frames / fps

    best: list[SceneObject] = []
    best_vis = -1.0
    for _ in range(30):  # rejection-sample poses until no object is mostly hidden
        objs = []
        for k in order:
            cat = specs[k][0]
            centres, angles = _trajectory(rng, size, radii[k], frames, moving[k])
            objs.append(
                SceneObject(
                    category=cat,
                    radius=float(radii[k]),
                    centres=centres,
                    angles=angles,
                    moving=moving[k],
                    sound_interval=None,
                    amplitude=1.0,
                    brightness=float(rng.uniform(0.85, 1.0)),
                    shade_angle=float(rng.uniform(0, 2 * np.pi)),
                )
            )
        vis = _min_visible_fraction(objs, size)
        if vis > best_vis:
            best, best_vis = objs, vis
        if vis >= 0.35:
            break
    for obj, k in zip(best, order):
        if specs[k][1]:
            obj.sound_interval = _sound_interval(rng, frame_times, fps, duration)
            obj.amplitude = float(rng.uniform(0.4, 1.0))
    return Scene(
        split=split,
        size=size,
        fps=float(fps),
        frames=frames,
        pattern=str(rng.choice(PATTERNS)),
        bg_colour=str(rng.choice(list(BACKGROUND_COLOURS))),
        texture_seed=int(rng.integers(2**31)),
        objects=best,
        snr_db=round(float(rng.uniform(0.0, 30.0)), 3),
        noise_colour=str(rng.choice(NOISE_COLOURS)),
        audio_seed=int(rng.integers(2**31)),
    )


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def scene_text(scene: Scene) -> str:
    """The broad scene description (SSP's second prompt), from the bottom object up.

    E.g. "a red star, two blue circles and an orange ring over a striped grey background".
    """
    counts: dict[Category, int] = {}
    for obj in scene.objects:
        counts[obj.category] = counts.get(obj.category, 0) + 1
    numbers = {2: "two", 3: "three", 4: "four"}
    parts = []
    for cat, n in counts.items():
        if n == 1:
            article = "an" if cat.name[0] in "aeiou" else "a"
            parts.append(f"{article} {cat.name}")
        else:
            parts.append(f"{numbers[n]} {cat.colour} {_plural(cat.shape)}")
    things = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{things} over a {scene.background} background"
