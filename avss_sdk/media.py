"""Reading audio from files and cutting the causal audio window that belongs to a frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avss_sdk.errors import InputError, MissingFileError

SAMPLE_RATE = 16000
WINDOW_SECONDS = 0.96  # 96 log-mel frames of 10 ms: VGGish's example length
MAX_CHANNELS = 16  # the larger axis of a 2-D audio array is time; the other, at most this, channels
# Float audio is expected in [-1, 1]; resampling and mixing overshoot a little, but a peak above
# this is PCM passed as float without scaling.
MAX_FLOAT_PEAK = 2.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 384000
PCM_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio track of any file PyAV (FFmpeg) reads, as mono float32 at ``sample_rate``.

    PyAV decodes and resamples, so WAV, FLAC, AAC in MP4 and the rest take one path.
    Channels are averaged here rather than by FFmpeg's down-mix, whose -3 dB centre
    gain would make a stereo file louder than the same sound recorded in mono.
    """
    import av  # imported here: PyAV is only needed when files are read

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"{path} has no audio track")
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    except av.FFmpegError as error:
        raise InputError(f"could not decode audio from {path}: {error}") from error
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def audio_window(
    audio: np.ndarray,
    end_time: float,
    sample_rate: int = SAMPLE_RATE,
    seconds: float = WINDOW_SECONDS,
) -> np.ndarray:
    """The ``seconds`` of ``audio`` that end at ``end_time`` (causal), zero-padded outside the signal."""
    length = int(round(seconds * sample_rate))
    end = int(round(end_time * sample_rate))
    start = end - length
    window = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(end, audio.shape[0])
    if hi > lo:
        window[lo - start : hi - start] = audio[lo:hi]
    return window


def as_mono(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Audio as the model takes it: mono float32 in [-1, 1] at :data:`SAMPLE_RATE`.

    Takes float audio in [-1, 1], or int16 / int32 PCM (scaled to [-1, 1]); mono ``[N]`` or
    multichannel ``[N, C]`` or ``[C, N]`` (channels averaged; the channel axis is the one of
    at most :data:`MAX_CHANNELS`); at ``sample_rate`` (resampled when it is not 16 kHz).
    Anything else (None, NaN, other dtypes, unscaled PCM in a float array) is an
    :class:`~avss_sdk.errors.InputError` that says what was expected.
    """
    if audio is None or isinstance(audio, (str, bytes)):
        raise InputError(f"audio must be an array of samples, got {type(audio).__name__}")
    try:
        audio = np.asarray(audio)
    except (TypeError, ValueError) as error:
        raise InputError(f"audio must be an array of samples: {error}") from None
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InputError(f"sample_rate must be an int from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz, "
                         f"got {sample_rate!r}")
    if audio.dtype in PCM_SCALE:
        audio = audio.astype(np.float32) / np.float32(PCM_SCALE[audio.dtype])
    elif audio.dtype.kind == "f":
        if not np.isfinite(audio).all():
            raise InputError("audio holds NaN or infinite samples")
        peak = float(np.abs(audio).max(initial=0.0))
        if peak > MAX_FLOAT_PEAK:
            raise InputError(f"float audio must be in [-1, 1], its peak is {peak:.4g}; pass int16/int32 PCM as "
                             f"its integer array (it is scaled), or divide it by its full scale")
        audio = audio.astype(np.float32, copy=False)
    else:
        raise InputError(f"audio must be float in [-1, 1] or int16/int32 PCM, got {audio.dtype}")
    if audio.ndim == 2:
        channel_axis = [axis for axis in (0, 1) if audio.shape[axis] <= MAX_CHANNELS]
        if len(channel_axis) != 1 or audio.shape[1 - channel_axis[0]] <= MAX_CHANNELS:
            raise InputError(f"cannot tell channels from samples in audio of shape {audio.shape}: give [N] mono, "
                             f"[N, C] or [C, N] with at most {MAX_CHANNELS} channels and more samples than that")
        audio = audio.mean(axis=channel_axis[0], dtype=np.float32)
    elif audio.ndim != 1:
        raise InputError(f"audio must be [N] mono or [N, C] / [C, N] multichannel, got shape {audio.shape}")
    if sample_rate != SAMPLE_RATE and audio.size:
        audio = _resample(audio, int(sample_rate))
    return np.ascontiguousarray(audio, dtype=np.float32)


def _resample(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 audio from ``sample_rate`` to :data:`SAMPLE_RATE` with FFmpeg's band-limited resampler."""
    import av

    frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    out = [f.to_ndarray()[0] for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(out) if out else np.zeros(0, np.float32)
