"""The contract every source keeps: ``Frame``, ``VideoSource``, ``AudioSource``, and capture errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.media import WINDOW_SECONDS


class CaptureError(AvssError, RuntimeError):
    """A source could not be opened or read (the message names it)."""


class CameraError(CaptureError):
    """A camera could not be opened, or was lost and could not be reopened."""


class MicrophoneError(CaptureError):
    """A microphone could not be found or opened."""


@dataclass(frozen=True)
class Frame:
    """One video frame: RGB uint8 (H, W, 3), its time on the source's clock in seconds, its number.

    ``index`` counts every frame the source produced, including dropped ones, so a gap in
    the indices a consumer sees is the number of frames it missed.
    """

    image: np.ndarray
    timestamp: float
    index: int


@runtime_checkable
class VideoSource(Protocol):
    """Frames with timestamps on one clock.

    ``read(timeout)`` returns the next frame, None once the source has ended, and raises
    ``TimeoutError`` when no frame came within ``timeout`` seconds (None: the source's own
    limit); a source that has stalled for good raises its ``CaptureError`` instead.
    """

    clock: str

    def read(self, timeout: float | None = None) -> Frame | None: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioSource(Protocol):
    """16 kHz mono float32 audio windows that end at a given time on the source's clock.

    ``latency``: seconds after a moment until its audio is in the buffer (0 when it is
    there before it is asked for, as in files); ``window(..., timeout=)`` waits up to
    ``timeout`` seconds for the audio up to ``end_time``.
    """

    clock: str
    latency: float

    def window(self, end_time: float, seconds: float = WINDOW_SECONDS, timeout: float = 0.0) -> np.ndarray: ...

    def close(self) -> None: ...
