"""The newest seconds of mono audio with the time of every sample: what microphones and files buffer into."""

from __future__ import annotations

import threading

import numpy as np

# Audio whose stated time differs from the end of what is buffered by more than this (a
# microphone overflow, a gap in a file's audio track, a stepped clock) restarts the timeline
# there, with silence for a gap; smaller differences are jitter and drift.
GAP_TOLERANCE_SECONDS = 0.01
# The share of such a small difference taken into the timeline per block: it follows a
# capture clock that drifts against the consumer's (time constant about 10 blocks) and
# averages out per-block jitter (PortAudio's estimates, PTS rounded to 1 ms).
DRIFT_GAIN = 0.1


class AudioRing:
    """The newest ``seconds`` of mono audio, with the time of every sample.

    Samples are written in blocks with the time of their first sample; the ring keeps a
    running sample count and the time just after the newest sample, which together map any
    time to a sample position. That time advances by the samples written and is pulled
    towards each block's stated time by ``DRIFT_GAIN``; a gap longer than
    ``GAP_TOLERANCE_SECONDS`` is filled with zeros, so older samples keep their times.
    """

    def __init__(self, seconds: float, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._buffer = np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
        self._written = 0  # samples written since the start, zeros for gaps included
        self._end_time: float | None = None  # time just after the newest sample
        self._changed = threading.Condition()

    @property
    def end_time(self) -> float | None:
        """Time just after the newest sample, or None before the first write."""
        return self._end_time

    def write(self, samples: np.ndarray, start_time: float | None) -> None:
        """Append ``samples`` whose first one was captured at ``start_time`` (None: right after the last)."""
        with self._changed:
            if self._end_time is None:
                start_time = start_time or 0.0
            elif start_time is None:
                start_time = self._end_time
            elif start_time - self._end_time > GAP_TOLERANCE_SECONDS:
                gap = int(round((start_time - self._end_time) * self.sample_rate))
                self._append(np.zeros(min(gap, self._buffer.size), dtype=np.float32), gap)
            elif start_time - self._end_time > -GAP_TOLERANCE_SECONDS:
                start_time = self._end_time + DRIFT_GAIN * (start_time - self._end_time)
            self._append(samples, samples.size)
            self._end_time = start_time + samples.size / self.sample_rate
            self._changed.notify_all()

    def _append(self, samples: np.ndarray, count: int) -> None:
        """Write the last ``buffer size`` of ``samples`` and advance the count by ``count``."""
        size = self._buffer.size
        samples = samples[-size:]
        start = (self._written + count - samples.size) % size
        first = min(samples.size, size - start)
        self._buffer[start : start + first] = samples[:first]
        self._buffer[: samples.size - first] = samples[first:]
        self._written += count

    def wait_until(self, time_: float, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until audio up to ``time_`` is buffered; True if it is."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._end_time is not None and self._end_time >= time_, timeout
            )

    def window(self, end_time: float, seconds: float) -> np.ndarray:
        """The ``seconds`` of audio that end at ``end_time``, zeros where nothing is buffered."""
        length = int(round(seconds * self.sample_rate))
        window = np.zeros(length, dtype=np.float32)
        with self._changed:
            if self._end_time is None:
                return window
            end = self._written - int(round((self._end_time - end_time) * self.sample_rate))
            start = end - length
            lo = max(start, self._written - self._buffer.size, 0)
            hi = min(end, self._written)
            if hi > lo:
                positions = np.arange(lo, hi) % self._buffer.size
                window[lo - start : hi - start] = self._buffer[positions]
        return window
