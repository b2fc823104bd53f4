"""Capture: camera, microphone and media files, each frame paired with the audio that ends at it.

Two kinds of source, one contract (see ``VideoSource`` and ``AudioSource``):

* a video source hands out ``Frame`` objects in capture order, each stamped with a time on
  the source's clock (a live camera drops the frames a slow consumer cannot take, so the
  model never lags behind the scene);
* an audio source answers ``window(end_time)``: the 0.96 s of 16 kHz mono audio that ends
  at ``end_time`` on the same clock (causal: nothing after ``end_time``), zero padded where
  nothing was captured.

``CameraSource`` and ``MicrophoneSource`` share ``time.monotonic()`` as their clock (their
``clock`` attribute is ``"monotonic"``); ``FileSource`` is both a video and an audio source
on the file's own clock (``"media"``: seconds from the start of the file). A consumer pairs
a video source only with an audio source of the same clock.

Everything here is torch-free; sounddevice (PortAudio) and PyAV are imported when a source
that needs them is made.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import cv2
import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.media import SAMPLE_RATE, WINDOW_SECONDS

# Audio whose stated time differs from the end of what is buffered by more than this (a
# microphone overflow, a gap in a file's audio track, a stepped clock) restarts the timeline
# there, with silence for a gap; smaller differences are jitter and drift.
GAP_TOLERANCE_SECONDS = 0.01
# The share of such a small difference taken into the timeline per block: it follows a
# capture clock that drifts against the consumer's (time constant about 10 blocks) and
# averages out per-block jitter (PortAudio's estimates, PTS rounded to 1 ms).
DRIFT_GAIN = 0.1


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
    """Frames with timestamps on one clock; ``read()`` returns None once the source has ended."""

    clock: str

    def read(self) -> Frame | None: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioSource(Protocol):
    """16 kHz mono float32 audio windows that end at a given time on the source's clock."""

    clock: str

    def window(self, end_time: float, seconds: float = WINDOW_SECONDS) -> np.ndarray: ...

    def close(self) -> None: ...


class _AudioRing:
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


class CameraSource:
    """A camera (index) or video stream (URL or path) read by OpenCV in a background thread.

    Each frame is stamped with ``time.monotonic()`` as soon as ``grab()`` returns it, then
    converted to RGB. Only the newest frame is kept: a consumer slower than the camera gets
    the latest scene and ``dropped`` counts what it missed. With ``every_frame=True`` every
    frame is queued instead (at most ``queue_size``; a full queue makes the capture thread
    wait, so a live camera then drops frames in its driver).

    When the source stops delivering (a camera unplugged, a network stream cut) it is
    reopened with exponential backoff, at most ``max_reconnect_attempts`` times in a row,
    after which ``read()`` raises ``CameraError``. A local video file reopened this way
    starts over, so pass ``reconnect=False`` to end at its last frame.
    """

    clock = "monotonic"

    def __init__(
        self,
        index_or_url: int | str,
        width: int | None = None,
        height: int | None = None,
        reconnect: bool = True,
        every_frame: bool = False,
        queue_size: int = 32,
        max_reconnect_attempts: int = 5,
        reconnect_backoff: float = 0.1,
        timeout: float = 5.0,
    ) -> None:
        self.source = index_or_url
        self._size = (width, height)
        self._timeout_ms = int(timeout * 1000)
        self._reconnect = reconnect
        self._max_attempts = max_reconnect_attempts
        self._backoff = reconnect_backoff
        self._queue_size = queue_size if every_frame else 1
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = False
        self._error: CameraError | None = None
        self.dropped = 0
        self.reconnects = 0
        capture = self._open()
        if not capture.isOpened():
            capture.release()
            raise CameraError(
                f"camera {index_or_url!r} could not be opened; available cameras: {available_cameras()}"
            )
        self._thread = threading.Thread(
            target=self._run, args=(capture,), name=f"avss-camera-{index_or_url}", daemon=True
        )
        self._thread.start()

    def _open(self) -> cv2.VideoCapture:
        """Open the source; URLs get open and read timeouts so a dead server cannot hang the thread."""
        if isinstance(self.source, str):
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._timeout_ms]
            capture = cv2.VideoCapture(self.source, cv2.CAP_ANY, timeouts)
        else:
            capture = cv2.VideoCapture(self.source)
        width, height = self._size
        if capture.isOpened() and width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if capture.isOpened() and height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        return capture

    def _run(self, capture: cv2.VideoCapture) -> None:
        """Grab, stamp and publish frames until closed, the source ends, or reconnecting fails."""
        index = 0
        attempts = 0  # failed reads in a row; reset by every frame
        try:
            while not self._stop.is_set():
                ok = capture.grab()
                timestamp = time.monotonic()
                if ok:
                    ok, bgr = capture.retrieve()
                if ok:
                    attempts = 0
                    self._publish(Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), timestamp, index))
                    index += 1
                    continue
                capture.release()
                if not self._reconnect:
                    return
                if attempts == self._max_attempts:
                    self._error = CameraError(
                        f"camera {self.source!r} stopped delivering frames and could not be reopened "
                        f"after {attempts} attempts"
                    )
                    return
                if self._stop.wait(self._backoff * 2**attempts):
                    return
                attempts += 1
                capture = self._open()
                if capture.isOpened():
                    self.reconnects += 1
        finally:
            capture.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            while len(self._frames) >= self._queue_size:
                if self._queue_size == 1:  # newest-frame mode: replace the unread frame
                    self._frames.popleft()
                    self.dropped += 1
                elif self._stop.is_set():
                    return
                else:
                    self._cond.wait()
            self._frames.append(frame)
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet returned (the oldest queued one with ``every_frame``).

        Waits up to ``timeout`` seconds (None: forever) and raises ``TimeoutError`` if no
        frame came; returns None once the source has ended or was closed; raises
        ``CameraError`` if the camera was lost and could not be reopened.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames or self._ended, timeout):
                raise TimeoutError(f"camera {self.source!r} delivered no frame in {timeout} s")
            if self._frames:
                frame = self._frames.popleft()
                self._cond.notify_all()
                return frame
        if self._error is not None:
            raise self._error
        return None

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        """Stop the capture thread, wait for it and release the camera."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()  # wakes a capture thread waiting for queue space
        self._thread.join(timeout=self._timeout_ms / 1000 + 5)
        if self._thread.is_alive():
            warnings.warn(f"camera {self.source!r}: capture thread still blocked in OpenCV after close()")

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available_cameras() -> str:
    """The camera indices present, for error messages (V4L2 device nodes; only Linux lists them)."""
    if not sys.platform.startswith("linux"):
        return "unknown on this platform"
    indices = sorted(int(p.name[5:]) for p in Path("/dev").glob("video*") if p.name[5:].isdigit())
    return ", ".join(map(str, indices)) if indices else "none"


def _import_sounddevice():
    """sounddevice, with a clear error if its PortAudio library is missing."""
    try:
        import sounddevice
    except OSError as error:  # raised by the import itself when libportaudio cannot be loaded
        raise MicrophoneError(
            f"microphone capture needs the PortAudio library (e.g. apt install libportaudio2): {error}"
        ) from error
    return sounddevice


class MicrophoneSource:
    """A microphone read by a sounddevice (PortAudio) input stream into a ring buffer.

    The stream's callback stamps each block with PortAudio's ``inputBufferAdcTime`` (when
    its first sample reached the converter) and writes it to a ring of the newest
    ``buffer_seconds`` of audio. PortAudio's clock (``stream.time``) is not
    ``time.monotonic()`` (on ALSA it is the wall clock), so every callback also measures
    ``monotonic() - currentTime``; both are read within microseconds of each other, except
    that the callback may first wait for Python's GIL, which only makes the difference
    larger. The smallest difference over the last ``_OFFSET_HISTORY`` callbacks is
    therefore the offset between the clocks, and it follows a wall clock that is stepped.

    The device is opened at ``capture_rate``: by default ``sample_rate`` when it accepts
    that, else its default rate, which is then resampled to ``sample_rate``. Overflows
    (blocks PortAudio lost because the callback came too late) are counted in
    ``overflows``; the lost time becomes silence, so later audio keeps its time.
    """

    clock = "monotonic"
    _OFFSET_HISTORY = 100

    def __init__(
        self,
        device: int | str | None = None,
        sample_rate: int = SAMPLE_RATE,
        block_ms: float = 10.0,
        latency: str | float = "low",
        buffer_seconds: float = 4.0,
        capture_rate: int | None = None,
        channels: int = 1,
    ) -> None:
        sd = _import_sounddevice()
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as error:
            what = "no default microphone" if device is None else f"microphone {device!r} not found"
            raise MicrophoneError(f"{what} ({error}); input devices: {_input_devices(sd)}") from None
        self.device_name: str = info["name"]
        if capture_rate is None:
            try:
                sd.check_input_settings(device=info["index"], samplerate=sample_rate, channels=channels, dtype="float32")
                capture_rate = sample_rate
            except (ValueError, sd.PortAudioError):
                capture_rate = int(info["default_samplerate"])
        self.sample_rate = sample_rate
        self.capture_rate = capture_rate
        self.overflows = 0
        self._ring = _AudioRing(buffer_seconds, sample_rate)
        self._offsets: collections.deque[float] = collections.deque(maxlen=self._OFFSET_HISTORY)
        self._resampler = None
        if capture_rate != sample_rate:
            # FFmpeg's resampler (through PyAV, already a dependency) band-limits before it
            # decimates, which plain interpolation does not, and it keeps its filter state
            # across blocks, so a stream resampled block by block has no seams.
            import av

            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            self._samples_in = 0
            self._samples_out = 0
        try:
            self._stream = sd.InputStream(
                device=info["index"],
                samplerate=capture_rate,
                channels=channels,
                dtype="float32",
                blocksize=int(round(capture_rate * block_ms / 1000)),
                latency=latency,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as error:
            raise MicrophoneError(
                f"microphone {self.device_name!r} could not be opened at {capture_rate} Hz, {channels} channel(s): {error}"
            ) from error

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        """PortAudio's thread: stamp the block on the monotonic clock, resample it, store it."""
        self._offsets.append(time.monotonic() - time_info.currentTime)
        if status.input_overflow:
            self.overflows += 1
        # Some host APIs report no ADC time (0); then the block is taken to have just arrived.
        adc_time = time_info.inputBufferAdcTime or time_info.currentTime - frames / self.capture_rate
        start = adc_time + min(self._offsets)
        mono = indata.mean(axis=1, dtype=np.float32)
        if self._resampler is not None:
            mono, start = self._resample(mono, start + frames / self.capture_rate)
        self._ring.write(mono, start)

    def _resample(self, block: np.ndarray, end_time: float) -> tuple[np.ndarray, float]:
        """Resample a block that ends at ``end_time``; returns the output and the time of its first sample.

        The resampler holds back a few samples (its filter's look-ahead), so its output ends
        that many samples before the input does; the count is what the input would have
        produced minus what came out.
        """
        import av

        frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
        frame.sample_rate = self.capture_rate
        out = [o.to_ndarray()[0] for o in self._resampler.resample(frame)]
        samples = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        self._samples_in += block.size
        self._samples_out += samples.size
        held_back = self._samples_in * self.sample_rate / self.capture_rate - self._samples_out
        return samples, end_time - (held_back + samples.size) / self.sample_rate

    @property
    def latency(self) -> float:
        """The input latency PortAudio reports for the open stream, in seconds."""
        return float(self._stream.latency)

    @property
    def captured_until(self) -> float | None:
        """Monotonic time just after the newest captured sample (None before the first block)."""
        return self._ring.end_time

    def window(self, end_time: float, seconds: float = WINDOW_SECONDS, timeout: float = 0.0) -> np.ndarray:
        """The ``seconds`` of audio (mono float32 at ``sample_rate``) that end at monotonic time ``end_time``.

        Waits up to ``timeout`` seconds for audio up to ``end_time`` to arrive (a frame's
        audio reaches the buffer about ``latency`` after the frame); what is not captured
        yet, or no longer buffered, is zeros.
        """
        if timeout > 0:
            self._ring.wait_until(end_time, timeout)
        return self._ring.window(end_time, seconds)

    def close(self) -> None:
        """Stop and close the input stream, whose callback thread ends with it (idempotent)."""
        if not self._stream.closed:
            self._stream.stop()
            self._stream.close()

    def __enter__(self) -> MicrophoneSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _input_devices(sd) -> str:
    """``index 'name'`` of every input device, for error messages."""
    names = [f"{d['index']} {d['name']!r}" for d in sd.query_devices() if d["max_input_channels"] > 0]
    return ", ".join(names) if names else "none"


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
    dropped.
    """

    clock = "media"

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
        if "://" not in self.path and not Path(self.path).is_file():
            raise FileNotFoundError(f"media file not found: {self.path}")
        try:
            self._container = av.open(self.path, timeout=timeout)
        except av.FFmpegError as error:
            raise CaptureError(f"could not open {self.path}: {error}") from error
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
        self._ring = _AudioRing(audio_seconds, SAMPLE_RATE)
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
            raise CaptureError(f"could not decode {self.path}: {error}") from error

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

    def read(self) -> Frame | None:
        """The next frame (RGB), after the audio up to its time is buffered; None at the end."""
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

    def window(self, end_time: float, seconds: float = WINDOW_SECONDS) -> np.ndarray:
        """The ``seconds`` of 16 kHz mono audio that end at media time ``end_time``, zero padded."""
        return self._ring.window(end_time, seconds)

    def close(self) -> None:
        """Close the container (idempotent)."""
        self._container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
