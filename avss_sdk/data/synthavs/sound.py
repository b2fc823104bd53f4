"""Audio synthesis: each sounding object's signature, mixed with background noise.

A category's sound is additive synthesis of its harmonic template (``partials``: the
colour's fundamental times the shape's partial ratios and weights) under the shape's
amplitude pattern (steady, pulsed beeps, struck bell, tremolo), gated to the object's
sound interval with 10 ms ramps. Coloured noise is added at the scene's SNR.
"""

from __future__ import annotations

import numpy as np

from avss_sdk.data.synthavs.categories import Category
from avss_sdk.data.synthavs.scene import Scene
from avss_sdk.media import SAMPLE_RATE

MAX_PARTIAL_HZ = 7500.0  # top of the 64-band log-mel range; also keeps clear of Nyquist
_RAMP_S = 0.01

# timbre -> (partial frequency ratios, weights)
_TEMPLATES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "sine": ((1,), (1,)),
    "square": ((1, 3, 5, 7), (1, 1 / 3, 1 / 5, 1 / 7)),
    "triangle": ((1, 3, 5), (1, 1 / 9, 1 / 25)),
    "sawtooth": ((1, 2, 3, 4, 5, 6), (1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6)),
    "pulsed": ((1, 2), (1, 0.5)),
    "bell": ((1, 2.76, 5.4), (1, 0.5, 0.25)),  # inharmonic modes of a struck bar
    "tremolo": ((1, 2), (1, 0.3)),
}


def partials(category: Category) -> list[tuple[float, float]]:
    """The category's harmonic template: (frequency Hz, relative amplitude) pairs, all
    below 7500 Hz, fundamental first."""
    ratios, weights = _TEMPLATES[category.timbre]
    return [(category.f0 * r, w) for r, w in zip(ratios, weights) if category.f0 * r < MAX_PARTIAL_HZ]


def _amplitude_pattern(timbre: str, t: np.ndarray) -> np.ndarray:
    """The shape's slow amplitude pattern (1 for steady tones)."""
    if timbre == "pulsed":  # 4 beeps a second, 60 % duty, smoothed edges
        return np.clip((np.sin(2 * np.pi * 4 * t) + 0.3) * 5, 0, 1)
    if timbre == "bell":  # struck twice a second, decaying to a sustained hum
        return 0.25 + 0.75 * np.exp(-(t % 0.5) / 0.12)
    if timbre == "tremolo":  # 7 Hz amplitude modulation
        return 1.0 - 0.7 * (0.5 + 0.5 * np.sin(2 * np.pi * 7 * t))
    return np.ones_like(t)


def _gate(t: np.ndarray, on: float, off: float) -> np.ndarray:
    """1 inside [on, off) with raised-cosine ramps just inside both ends, 0 outside."""
    rise = np.clip((t - on) / _RAMP_S, 0, 1)
    fall = np.clip((off - t) / _RAMP_S, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))) * (t >= on) * (t < off)


def _coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    x = np.fft.irfft(spec / f**exponent, n)
    return x / np.sqrt(np.mean(x**2))


def synthesize_audio(scene: Scene) -> np.ndarray:
    """The clip's 16 kHz mono int16 audio, ``scene.audio_duration`` seconds long.

    Sample 0 is 0.96 s before frame 0. Sources are normalised to unit RMS while on,
    times their amplitude; noise power is set from the mixed sources' power where any
    is on and the scene's SNR (a fixed quiet level when nothing sounds).
    """
    rng = np.random.default_rng(scene.audio_seed)
    n = int(round(scene.audio_duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    mix = np.zeros(n)
    active = np.zeros(n, bool)
    for obj in scene.objects:
        if obj.sound_interval is None:
            continue
        tone = np.zeros(n)
        for freq, weight in partials(obj.category):
            tone += weight * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        tone *= _amplitude_pattern(obj.category.timbre, t + rng.uniform(0, 1))
        gate = _gate(t, *obj.sound_interval)
        on = gate > 0
        tone *= gate * obj.amplitude / np.sqrt(np.mean(tone[on] ** 2))
        mix += tone
        active |= on
    noise = _coloured_noise(rng, n, scene.noise_colour)
    if active.any():
        signal_rms = np.sqrt(np.mean(mix[active] ** 2))
        mix += noise * signal_rms * 10 ** (-scene.snr_db / 20)
        mix *= 0.1 / np.sqrt(np.mean(mix[active] ** 2))  # about -20 dBFS while sounding
    else:
        mix = 0.02 * noise
    return np.round(np.clip(mix, -1, 1) * 32767).astype(np.int16)
