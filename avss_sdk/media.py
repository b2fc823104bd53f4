"""Reading audio from files and cutting the causal audio window that belongs to a frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 0.96  # 96 log-mel frames of 10 ms: VGGish's example length


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio track of any file PyAV (FFmpeg) reads, as mono float32 at ``sample_rate``.

    PyAV decodes and resamples, so WAV, FLAC, AAC in MP4 and the rest take one path.
    Channels are averaged here rather than by FFmpeg's down-mix, whose -3 dB centre
    gain would make a stereo file louder than the same sound recorded in mono.
    """
    import av  # imported here: PyAV is only needed when files are read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio track")
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
    except av.FFmpegError as error:
        raise ValueError(f"could not decode audio from {path}: {error}") from error
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
