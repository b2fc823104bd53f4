"""Image normalisation and log-mel: the one implementation used by training, export and runtime.

Everything here is numpy so that the runtime needs no torch; the training data loader
calls the same functions, so a model never sees inputs prepared two different ways.

Log-mel follows VGGish's conventions (16 kHz, 25 ms Hann window, 10 ms hop, 512-point
FFT magnitude, 64 HTK-mel bands from 125 to 7500 Hz, ``log(mel + 0.01)``) and gives
96 frames per window. 96 frames of 10 ms need ``400 + 95 * 160`` samples, so a window is
:data:`LOG_MEL_SECONDS` (0.975 s) long, ending at the frame's timestamp. It is written
here rather than taken from librosa or torchaudio because the runtime must not depend on
torch, and librosa would pull numba and a JIT warm-up into every start.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from avss_sdk.errors import InputError
from avss_sdk.media import SAMPLE_RATE

# Image: EfficientNet-Lite was trained on inputs scaled to [-1, 1].
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

MEL_BANDS = 64
MEL_FRAMES = 96
MEL_WINDOW = 400  # 25 ms at 16 kHz
MEL_HOP = 160  # 10 ms
MEL_FFT = 512
MEL_FMIN = 125.0
MEL_FMAX = 7500.0
LOG_OFFSET = 0.01
LOG_MEL_SAMPLES = MEL_WINDOW + (MEL_FRAMES - 1) * MEL_HOP
LOG_MEL_SECONDS = LOG_MEL_SAMPLES / SAMPLE_RATE


def resize_frame(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 frame [H, W, 3] to ``size`` (an int for square, or (H, W))."""
    height, width = (size, size) if isinstance(size, int) else size
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [..., H, W, 3] -> float32 [..., 3, H, W] scaled by IMAGE_MEAN / IMAGE_STD."""
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise InputError(f"expected RGB uint8 [..., H, W, 3], got {rgb.dtype} {rgb.shape}")
    mean = np.asarray(IMAGE_MEAN, np.float32)[:, None, None] * 255.0
    std = np.asarray(IMAGE_STD, np.float32)[:, None, None] * 255.0
    # Planes first, then the arithmetic: numpy broadcasting over a last axis of 3 is ten times slower.
    image = np.ascontiguousarray(np.moveaxis(rgb, -1, -3)).astype(np.float32)
    image -= mean
    image /= std
    return image


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


@lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[MEL_FFT // 2 + 1, MEL_BANDS] triangular HTK-mel weights (VGGish's definition)."""
    bins = MEL_FFT // 2 + 1
    bin_mel = _hz_to_mel(np.linspace(0.0, sample_rate / 2.0, bins))
    edges = np.linspace(_hz_to_mel(np.float64(MEL_FMIN)), _hz_to_mel(np.float64(MEL_FMAX)), MEL_BANDS + 2)
    weights = np.zeros((bins, MEL_BANDS), np.float64)
    for band in range(MEL_BANDS):
        lower, centre, upper = edges[band : band + 3]
        rising = (bin_mel - lower) / (centre - lower)
        falling = (upper - bin_mel) / (upper - centre)
        weights[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # VGGish drops the DC bin
    weights.setflags(write=False)
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _sparse_filterbank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The filterbank's nonzero weights band by band: (bins, weights, first entry of each band).

    A band covers 1 to 17 of the 257 FFT bins, so applying it as a gather and a segmented sum
    is exact up to summation order and never calls BLAS, whose worker threads, woken for a
    [96, 257] x [257, 64] product, cost milliseconds per frame on a busy CPU.
    """
    weights = mel_filterbank()
    bands, bins = np.nonzero(weights.T)  # band-major order
    if len(np.unique(bands)) != MEL_BANDS:
        raise RuntimeError("a mel band covers no FFT bin")
    starts = np.searchsorted(bands, np.arange(MEL_BANDS))
    values = weights[bins, bands]
    for array in (bins, values, starts):
        array.setflags(write=False)
    return bins, values, starts


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_WINDOW) / MEL_WINDOW)).astype(np.float32)
    window.setflags(write=False)
    return window


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Mono 16 kHz float audio [..., LOG_MEL_SAMPLES] -> log-mel [..., MEL_FRAMES, MEL_BANDS] float32.

    Shorter input is zero-padded at the front (the window is causal: it ends at "now").
    """
    audio = np.asarray(audio, np.float32)
    if audio.shape[-1] < LOG_MEL_SAMPLES:
        pad = [(0, 0)] * (audio.ndim - 1) + [(LOG_MEL_SAMPLES - audio.shape[-1], 0)]
        audio = np.pad(audio, pad)
    audio = audio[..., -LOG_MEL_SAMPLES:]
    frames = np.lib.stride_tricks.sliding_window_view(audio, MEL_WINDOW, axis=-1)[..., ::MEL_HOP, :]
    spectrum = np.abs(np.fft.rfft(frames * _hann(), n=MEL_FFT, axis=-1)).astype(np.float32)
    bins, weights, starts = _sparse_filterbank()
    mel = np.add.reduceat(spectrum[..., bins] * weights, starts, axis=-1)
    return np.log(mel + LOG_OFFSET).astype(np.float32)
