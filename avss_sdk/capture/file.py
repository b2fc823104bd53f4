"""A media file or URL decoded by PyAV: both a video and an audio source, on the file's own clock."""

from __future__ import annotations

import collections
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from avss_sdk.capture.base import CaptureError, Frame
from avss_sdk.capture.ring import AudioRing
from avss_sdk.errors import MissingFileError
from avss_sdk.media import SAMPLE_RATE, WINDOW_SECONDS


class FileSource:
    """Video frames and audio of a media file or URL, decoded together by PyAV.

    Frame timestamps come from the video stream's PTS, in seconds from the start of the
    media; audio is placed on the same clock by its own PTS (so an audio track that starts
    late starts late here too), averaged to mono and resampled to 16 kHz the way
    ``media.read_audio`` does it. Audio is decoded incrementally, packet by packet in file
    order: before a frame is returned, demuxing goes on (holding at most
    ``max_lookahead`` frames) until the audio up to the frame's time has been decoded, so
    ``window(frame.timestamp)`` is complete; only the newest ``audio_seconds`` are kept,
    which keeps memory flat on long files and streams.

    A file without audio gives silence (with a warning). ``realtime=True`` returns each
    frame no earlier than its media time after the first one (for demos); frames are never
    dropped. ``timeout`` bounds each wait for a URL's server, when opening and reading; a
    server that does not answer in time is a ``CaptureError`` that says so.
    """

    clock = "media"
    latency = 0.0  # a frame's audio is decoded before the frame is returned

    def __init__(
        self,
        path_or_url: str | Path,
        realtime: bool = False,
        audio_seconds: float = 10.0,
        max_lookahead: int = 32,
        timeout: float = 10.0,
    ) -> None:
        import av

        self.path = str(path_or_url)
        self._timeout = timeout
        if "://" not in self.path and not Path(self.path).is_file():
            raise MissingFileError(f"media file not found: {self.path}")
        try:
            self._container = av.open(self.path, timeout=timeout)
        except av.FFmpegError as error:
            raise CaptureError(f"could not open {self.path}: {self._reason(error)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise CaptureError(f"{self.path} has no video stream")
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        self.fps = float(self._video.average_rate or 0.0)
        streams = [self._video]
        self._audio = None
        if self._container.streams.audio:
            self._audio = self._container.streams.audio[0]
            streams.append(self._audio)
            self._resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
            self._samples_in = 0
            self._samples_out = 0
        else:
            warnings.warn(f"{self.path} has no audio track; its audio windows are silence")
        self._start = (self._container.start_time or 0) / av.time_base
        self._packets = self._container.demux(*streams)
        self._demux_done = False
        self._ring = AudioRing(audio_seconds, SAMPLE_RATE)
        self._pending: collections.deque = collections.deque()  # decoded, not yet returned
        self._max_lookahead = max_lookahead
        self._index = 0
        self._realtime = realtime
        self._wall_start: float | None = None

    def _demux_next(self) -> None:
        """Decode one packet into pending video frames or buffered audio; flag the end of the file."""
        import av

        try:
            packet = next(self._packets, None)
            if packet is None:
                self._demux_done = True
                if self._audio is not None:
                    self._store_audio(self._resampler.resample(None), None)
                return
            for frame in packet.decode():
                if packet.stream is self._video:
                    self._pending.append(frame)
                else:
                    self._store_audio(self._resampler.resample(frame), frame)
        except av.FFmpegError as error:
            raise CaptureError(f"could not read {self.path}: {self._reason(error)}") from None

    def _reason(self, error: Exception) -> str:
        """FFmpeg's error in words: its "Immediate exit requested" is our own timeout firing."""
        import av

        if isinstance(error, av.ExitError):
            return f"no answer from the server within {self._timeout:g} s (timeout)"
        return str(error)

    def _store_audio(self, resampled: list, source) -> None:
        """Average resampled frames to mono and buffer them at the media time of their first sample."""
        if not resampled:
            return
        samples = np.concatenate([f.to_ndarray().mean(axis=0, dtype=np.float32) for f in resampled])
        self._samples_out += samples.size
        start = None
        if source is not None:
            self._samples_in += source.samples
            if source.time is not None:
                # The resampler holds back a few samples; the output ends that much before the input.
                held_back = self._samples_in * SAMPLE_RATE / source.sample_rate - self._samples_out
                end = source.time - self._start + source.samples / source.sample_rate
                start = end - (held_back + samples.size) / SAMPLE_RATE
        self._ring.write(samples, start)

    def _audio_behind(self, timestamp: float) -> bool:
        """Whether audio up to ``timestamp`` may still be in packets not yet demuxed."""
        end = self._ring.end_time
        return self._audio is not None and not self._demux_done and (end is None or end < timestamp)

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (RGB), after the audio up to its time is buffered; None at the end.

        ``timeout`` is not needed here: waits for a server are bounded by the source's own.
        """
        while not self._demux_done and (
            not self._pending
            or (self._audio_behind(self._timestamp(self._pending[0])) and len(self._pending) < self._max_lookahead)
        ):
            self._demux_next()
        if not self._pending:
            return None
        decoded = self._pending.popleft()
        frame = Frame(decoded.to_ndarray(format="rgb24"), self._timestamp(decoded), self._index)
        self._index += 1
        if self._realtime:
            if self._wall_start is None:
                self._wall_start = time.monotonic() - frame.timestamp
            time.sleep(max(0.0, self._wall_start + frame.timestamp - time.monotonic()))
        return frame

    def _timestamp(self, decoded) -> float:
        """Media time of a decoded video frame; frames without PTS are spaced at the average rate."""
        if decoded.time is not None:
            return decoded.time - self._start
        return self._index / self.fps if self.fps else 0.0

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def window(self, end_time: float, seconds: float = WINDOW_SECONDS, timeout: float = 0.0) -> np.ndarray:
        """The ``seconds`` of 16 kHz mono audio that end at media time ``end_time``, zero padded.

        Never waits: ``read()`` buffered the audio up to each frame before returning it.
        """
        return self._ring.window(end_time, seconds)

    def close(self) -> None:
        """Close the container (idempotent)."""
        self._container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | Path, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """A media file's first ``limit`` frames (all: None), each with the audio window that ends at it:
    [(RGB uint8 [H, W, 3], 16 kHz mono float32)], what ``Segmenter.segment`` takes, in memory."""
    pairs = []
    with FileSource(path) as source:
        while (limit is None or len(pairs) < limit) and (frame := source.read()) is not None:
            pairs.append((frame.image, source.window(frame.timestamp)))
    return pairs
