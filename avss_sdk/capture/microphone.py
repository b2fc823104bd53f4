"""A microphone read by sounddevice (PortAudio) into a timed ring buffer, on the monotonic clock."""

from __future__ import annotations

import collections
import time

import numpy as np

from avss_sdk.capture.base import MicrophoneError
from avss_sdk.capture.ring import AudioRing
from avss_sdk.media import SAMPLE_RATE, WINDOW_SECONDS


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
        self._ring = AudioRing(buffer_seconds, sample_rate)
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
