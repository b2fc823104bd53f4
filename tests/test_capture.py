"""Capture: camera, microphone and file sources, and the audio window paired with each frame.

Everything runs for real: video files written with PyAV and read by OpenCV or PyAV, and a
PulseAudio null sink as the microphone (tests/virtual_mic.py), recorded through
sounddevice. There is no camera here, so the camera's frame-dropping, queueing and
reconnecting run on video files, which OpenCV opens like a network stream.
"""

from __future__ import annotations

import fractions
import sys
import threading
import time
import tracemalloc
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from avss_sdk.capture import (
    AudioSource,
    CameraError,
    CameraSource,
    CaptureError,
    FileSource,
    MicrophoneError,
    MicrophoneSource,
    VideoSource,
    AudioRing,
)
from avss_sdk.media import SAMPLE_RATE, audio_window, read_audio
from virtual_mic import play, virtual_mic, without_underflow  # noqa: F401  (the fixture)

FPS = 10
ONSETS = (0.5, 1.7, 2.9)  # tone onsets in seconds, on frame times, further apart than a window
TONE_SECONDS = 0.2


def tone_track(seconds: float, rate: int, start: float = 0.0) -> np.ndarray:
    """1 kHz tone bursts of TONE_SECONDS at ONSETS (media time), silence elsewhere; the track begins at ``start``."""
    t = start + np.arange(int(round((seconds - start) * rate))) / rate
    track = np.zeros(t.size, dtype=np.float32)
    for onset in ONSETS:
        on = (t >= onset) & (t < onset + TONE_SECONDS)
        track[on] = 0.5 * np.sin(2 * np.pi * 1000 * (t[on] - onset))
    return track


def write_clip(
    path: Path,
    frames: int = 40,
    fps: int = FPS,
    audio_codec: str | None = "aac",
    audio_rate: int = 48000,
    audio_start: float = 0.0,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """An H.264 clip whose frame k is grey level 5k (mod 256), with tone bursts at ONSETS.

    The audio track begins ``audio_start`` seconds after the video (its first PTS).
    """
    with av.open(str(path), "w") as out:
        video = out.add_stream("h264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream(audio_codec, rate=audio_rate, layout="mono") if audio_codec else None
        for k in range(frames):
            image = np.full((size[1], size[0], 3), (5 * k) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            track = tone_track(frames / fps, audio_rate, audio_start)
            pcm = audio_codec.startswith("pcm_s16")
            first = int(round(audio_start * audio_rate))
            for s in range(0, track.size, 1024):
                chunk = track[None, s : s + 1024]
                data = (chunk * 32767).astype(np.int16) if pcm else chunk
                frame = av.AudioFrame.from_ndarray(data, format="s16" if pcm else "fltp", layout="mono")
                frame.sample_rate, frame.pts = audio_rate, first + s
                frame.time_base = fractions.Fraction(1, audio_rate)
                out.mux(audio.encode(frame))
            out.mux(audio.encode())
    return path


def camera_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("avss-camera") and t.is_alive()]


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """40 frames at 10 fps with AAC audio at 48 kHz."""
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """2000 tiny frames at 25 fps with 80 s of AAC audio."""
    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames=2000, fps=25, size=(32, 32), audio_rate=16000)


# --- the common protocol -----------------------------------------------------------


def test_sources_share_one_protocol(clip):
    with FileSource(clip) as source:
        assert isinstance(source, VideoSource) and isinstance(source, AudioSource)
        assert source.clock == "media"
    with CameraSource(str(clip), reconnect=False) as camera:
        assert isinstance(camera, VideoSource) and camera.clock == "monotonic"
    assert MicrophoneSource.clock == "monotonic"  # an instance is checked with the virtual microphone


# --- files: frames, timestamps and their audio windows --------------------------------


@pytest.mark.parametrize(
    "audio_codec, audio_rate, audio_start, suffix",
    [
        ("pcm_s16le", 48000, 0.0, "mkv"),  # exact samples, PTS in milliseconds
        ("aac", 44100, 0.0, "mp4"),  # a lossy codec with encoder delay, another rate
        ("aac", 48000, 0.3, "mp4"),  # the audio track begins 0.3 s after the video
    ],
)
def test_each_frame_gets_the_audio_that_ends_at_its_timestamp(tmp_path, audio_codec, audio_rate, audio_start, suffix):
    path = write_clip(tmp_path / f"sync.{suffix}", audio_codec=audio_codec, audio_rate=audio_rate, audio_start=audio_start)
    with FileSource(path) as source:
        pairs = [(frame, source.window(frame.timestamp)) for frame in source]  # as a consumer would
        assert source.read() is None
    frames = [frame for frame, _ in pairs]
    assert [f.index for f in frames] == list(range(40))
    assert np.allclose([f.timestamp for f in frames], np.arange(40) / FPS, atol=1e-6)
    assert [round(f.image.mean() / 5) for f in frames] == list(range(40))  # grey 5k: the right frames
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)

    truth = tone_track(4.0, SAMPLE_RATE, audio_start)  # what the file holds, on the media clock
    truth = np.concatenate([np.zeros(int(round(audio_start * SAMPLE_RATE)), np.float32), truth])
    tolerance = int(0.02 * SAMPLE_RATE)  # 20 ms
    for frame, window in pairs:
        expected = audio_window(truth, frame.timestamp)
        assert window.shape == expected.shape and window.dtype == np.float32
        loud, heard = np.abs(expected) > 0.1, np.abs(window) > 0.1
        if not loud.any():  # a tone that starts at or after the frame: at most 20 ms of it, at the end
            assert not heard[:-tolerance].any(), f"sound in the silent window of frame {frame.index}"
            continue
        # Where the tones begin and end in the window: within 20 ms of where they should.
        for edge in (np.argmax, lambda x: x.size - 1 - np.argmax(x[::-1])):
            assert abs(int(edge(heard)) - int(edge(loud))) <= tolerance, frame


def test_file_windows_match_the_decoded_track(clip):
    """Incremental decoding gives the samples media.read_audio gives for the whole file."""
    track = read_audio(clip)
    with FileSource(clip) as source:
        for frame in source:
            assert np.array_equal(source.window(frame.timestamp), audio_window(track, frame.timestamp))


def test_a_file_without_audio_gives_silence_and_a_warning(tmp_path):
    path = write_clip(tmp_path / "mute.mp4", frames=5, audio_codec=None)
    with pytest.warns(UserWarning, match="no audio track"):
        source = FileSource(path)
    with source:
        frames = list(source)
        assert len(frames) == 5
        assert not source.window(frames[-1].timestamp).any()


def test_realtime_paces_frames_at_the_media_rate(clip):
    with FileSource(clip, realtime=True) as source:
        start = time.monotonic()
        frames = [source.read() for _ in range(6)]
        elapsed = time.monotonic() - start
    assert frames[-1].timestamp == pytest.approx(0.5)
    assert 0.45 <= elapsed < 1.5


# --- bad input -------------------------------------------------------------------------


def test_a_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nothing.mp4"
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        FileSource(missing)


@pytest.mark.timeout(30)
def test_corrupt_files_are_clear_errors_never_hangs(tmp_path, clip):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all " * 1000)
    with pytest.raises(CaptureError, match="junk.mp4"):
        FileSource(junk)
    cut_mp4 = tmp_path / "cut.mp4"  # mp4 keeps its index at the end: cut, it cannot be opened
    cut_mp4.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(CaptureError, match="cut.mp4"):
        FileSource(cut_mp4)
    audio_only = tmp_path / "audio.wav"
    with wave.open(str(audio_only), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE), w.writeframes(bytes(3200))
    with pytest.raises(CaptureError, match="no video stream"):
        FileSource(audio_only)


@pytest.mark.timeout(30)
def test_a_truncated_stream_ends_where_it_was_cut(tmp_path):
    """Matroska, cut in half, plays up to the cut and then ends; nothing hangs or raises."""
    whole = write_clip(tmp_path / "whole.mkv", audio_codec="pcm_s16le")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with FileSource(cut) as source:
        frames = [(frame, source.window(frame.timestamp)) for frame in source]
    assert 10 < len(frames) < 40
    assert [frame.index for frame, _ in frames] == list(range(len(frames)))
    assert frames[5][1].any()  # the audio before the cut is there


@pytest.mark.timeout(10)
def test_a_camera_that_does_not_exist_is_a_clear_error_at_once():
    start = time.monotonic()
    with pytest.raises(CameraError, match=r"camera 97 could not be opened; available cameras: "):
        CameraSource(97)
    assert time.monotonic() - start < 5
    assert not camera_threads()


def test_a_missing_microphone_is_a_clear_error():
    try:
        import sounddevice  # noqa: F401
    except OSError as error:
        pytest.skip(f"needs PortAudio (apt install libportaudio2): {error}")
    with pytest.raises(MicrophoneError, match=r"microphone 97 not found.*input devices: "):
        MicrophoneSource(97)
    with pytest.raises(MicrophoneError, match="no such mic"):
        MicrophoneSource("no such mic")


# --- camera: newest frame only, every frame on request, reconnect, shutdown ---------------


def test_a_slow_consumer_gets_the_newest_frame_and_the_rest_are_dropped(clip):
    """A looping source produces far faster than 10 reads a second; reads must skip, never queue."""
    with CameraSource(str(clip), reconnect_backoff=0.001) as camera:
        frames, ages = [], []
        for _ in range(10):
            time.sleep(0.1)
            frame = camera.read(timeout=5)
            ages.append(time.monotonic() - frame.timestamp)
            frames.append(frame)
        indices = [f.index for f in frames]
        assert all(b > a + 1 for a, b in zip(indices, indices[1:])), indices  # gaps: frames were dropped
        assert camera.dropped >= sum(b - a - 1 for a, b in zip(indices, indices[1:]))
        assert np.median(ages) < 0.05, ages  # fresh: produced after the consumer's 0.1 s nap began
        assert camera.reconnects > 0  # the 40-frame file was reopened: indices still increased
        assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert not camera_threads()


def test_every_frame_mode_queues_instead_of_dropping(clip):
    with CameraSource(str(clip), reconnect=False, every_frame=True, queue_size=4) as camera:
        frames = []
        while (frame := camera.read(timeout=5)) is not None:
            time.sleep(0.005)
            frames.append(frame)
        assert [f.index for f in frames] == list(range(40))
        assert [round(f.image.mean() / 5) for f in frames] == list(range(40))  # RGB, in order
        assert camera.dropped == 0
    assert not camera_threads()


@pytest.mark.timeout(30)
def test_a_lost_camera_is_reopened_then_given_up_on_with_a_clear_error(tmp_path, clip):
    source = tmp_path / "camera.mp4"
    source.write_bytes(clip.read_bytes())
    with CameraSource(str(source), every_frame=True, max_reconnect_attempts=3, reconnect_backoff=0.01) as camera:
        frames = [camera.read(timeout=5) for _ in range(100)]  # 40 frames a pass: reopened twice
        assert [f.index for f in frames] == list(range(100))
        assert camera.reconnects >= 2
        source.unlink()  # the open pass plays on; the next reopen fails
        start = time.monotonic()
        with pytest.raises(CameraError, match="could not be reopened after 3 attempts"):
            while camera.read(timeout=5) is not None:
                pass
        assert time.monotonic() - start < 5  # backoff 0.01 + 0.02 + 0.04 s
    assert not camera_threads()


def test_close_wakes_a_blocked_capture_thread_and_joins_it(clip):
    camera = CameraSource(str(clip), every_frame=True, queue_size=2)
    time.sleep(0.2)  # the capture thread now waits for queue space
    assert camera_threads()
    start = time.monotonic()
    camera.close()
    assert time.monotonic() - start < 2
    assert not camera_threads()
    assert camera.read(timeout=0) is not None  # frames already captured are still handed out
    camera.close()  # a second close is harmless


def test_read_times_out_rather_than_hanging(clip):
    with CameraSource(str(clip), reconnect_backoff=2.0) as camera:
        time.sleep(0.3)  # all 40 frames captured; the thread now waits 2 s to reopen the file
        assert camera.read(timeout=1).index == 39  # the newest
        with pytest.raises(TimeoutError, match="no frame in 0.1 s"):
            camera.read(timeout=0.1)


# --- a long run ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_two_thousand_frames_memory_flat_every_thread_ends(long_clip):
    threads_before = threading.active_count()
    tracemalloc.start()
    try:
        for make in (lambda: FileSource(long_clip), lambda: CameraSource(str(long_clip), reconnect=False, every_frame=True)):
            with make() as source:
                count = 0
                for frame in source:
                    if isinstance(source, FileSource):
                        source.window(frame.timestamp)
                    if count == 200:  # warmed up: buffers allocated, caches filled
                        traced, rss = tracemalloc.get_traced_memory()[0], rss_bytes()
                    assert frame.index == count
                    count += 1
                assert count == 2000
                assert tracemalloc.get_traced_memory()[0] - traced < 1_000_000
                assert rss_bytes() - rss < 20_000_000
    finally:
        tracemalloc.stop()
    assert not camera_threads()
    assert threading.active_count() == threads_before


# --- the audio ring behind both audio sources ---------------------------------------------


def test_the_audio_ring_keeps_sample_times_across_gaps_and_wraparound():
    ring = AudioRing(seconds=2.0, sample_rate=100)
    assert not ring.window(5.0, seconds=0.5).any()  # nothing captured yet: silence
    ring.write(np.arange(1, 51, dtype=np.float32), start_time=10.0)  # samples 1..50 at 10.00..10.49
    assert np.array_equal(ring.window(10.5, 0.5), np.arange(1, 51))
    ring.write(np.full(20, 7, np.float32), start_time=11.0)  # 0.5 s lost (an overflow): silence there
    window = ring.window(11.2, 1.2)
    assert np.array_equal(window[:50], np.arange(1, 51)) and not window[50:100].any()
    assert (window[100:] == 7).all()
    ring.write(np.full(250, 3, np.float32), start_time=11.2)  # more than the ring holds: wraps
    window = ring.window(13.7, 2.5)
    assert not window[:50].any() and (window[50:] == 3).all()  # older than 2 s: no longer buffered
    assert not ring.window(14.0, 0.3)[-30:].any()  # not captured yet: silence


def test_the_audio_ring_follows_a_drifting_clock_through_jitter():
    """Blocks stamped by a clock 0.1 % fast, with +-0.5 ms jitter: times stay within a millisecond."""
    rng = np.random.default_rng(1)
    ring = AudioRing(seconds=4.0, sample_rate=SAMPLE_RATE)
    for k in range(1000):  # 10 s of 10 ms blocks
        block = np.zeros(160, np.float32)
        block[0] = 1.0 if k == 900 else 0.0  # a click, captured at 100 + 9.009 s
        ring.write(block, 100.0 + k * 0.01 * 1.001 + rng.uniform(-0.0005, 0.0005))
    assert ring.end_time == pytest.approx(100 + 1000 * 0.01 * 1.001, abs=0.001)
    click = 100 + 900 * 0.01 * 1.001
    window = ring.window(click + 0.5, seconds=1.0)
    found = click + 0.5 - (window.size - np.argmax(window)) / SAMPLE_RATE
    assert found == pytest.approx(click, abs=0.001)


# --- the microphone, through a PulseAudio null sink -----------------------------------------


def write_wav(path: Path, signal: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.clip(signal, -1, 1) * 32767).round().astype("<i2").tobytes())
    return path


def test_the_microphone_records_what_is_played_sample_exact(virtual_mic, tmp_path):
    rng = np.random.default_rng(0)
    rate = SAMPLE_RATE
    played = np.zeros(int(1.2 * rate), dtype=np.float32)
    t = np.arange(int(0.2 * rate)) / rate
    played[int(0.2 * rate) : int(0.4 * rate)] = 0.4 * np.sin(2 * np.pi * 440 * t)
    played[int(0.6 * rate) : int(0.8 * rate)] = 0.3 * rng.standard_normal(t.size).clip(-3, 3) / 3
    played[int(0.9 * rate) : int(1.1 * rate)] = 0.4 * np.sin(2 * np.pi * 1250 * t)
    wav = write_wav(tmp_path / "played.wav", played, rate)
    played = read_audio(wav)  # as quantised to 16 bits

    with MicrophoneSource() as mic:
        assert mic.capture_rate == SAMPLE_RATE  # the null sink's monitor takes 16 kHz directly
        time.sleep(0.2)
        spawned = time.monotonic()
        virtual_mic.play(wav)
        end = time.monotonic() + 0.1
        recorded = mic.window(end, seconds=end - spawned + 0.2, timeout=1.0)
        overflows = mic.overflows
    assert overflows == 0
    scores = np.correlate(recorded, played, "valid")
    lag = int(np.argmax(scores))
    aligned = recorded[lag : lag + played.size]
    assert np.abs(aligned - played).max() < 1e-3  # the same samples, to 16-bit rounding
    assert np.abs(np.delete(recorded, np.s_[lag : lag + played.size])).max() < 1e-3  # silence around
    started = end - (recorded.size - lag) / SAMPLE_RATE  # monotonic time of the WAV's first sample
    # Not before paplay was started; within half a second of it (process start, connection).
    assert spawned - mic.latency <= started < spawned + 0.5, started - spawned


def first_sound(window: np.ndarray, end_time: float) -> float:
    """The time of the first sample above 0.1 in an audio window that ends at ``end_time``."""
    return end_time - (window.size - np.argmax(np.abs(window) > 0.1)) / SAMPLE_RATE


@pytest.mark.parametrize("capture_rate, channels", [(None, 1), (48000, 2)])
def test_microphone_timestamps_agree_with_playback_within_the_reported_latency(virtual_mic, capture_rate, channels):
    """A tone played at a known PortAudio DAC time is found at that monotonic time in the recording.

    The 48 kHz stereo case goes through the resampler and the channel average.
    """
    rate = SAMPLE_RATE
    signal = np.zeros(int(0.6 * rate), dtype=np.float32)
    signal[int(0.3 * rate) : int(0.5 * rate)] = 0.5 * np.sin(2 * np.pi * 700 * np.arange(int(0.2 * rate)) / rate)

    def measure():
        with MicrophoneSource(capture_rate=capture_rate, channels=channels) as mic:
            assert mic.capture_rate == (capture_rate or SAMPLE_RATE)
            time.sleep(0.2)
            first_sample, output_latency = play(signal, rate)
            onset = first_sample + 0.3
            return mic.window(onset + 0.5, seconds=1.0, timeout=1.0), onset, mic.latency, output_latency

    window, onset, input_latency, output_latency = without_underflow(measure)
    found = first_sound(window, onset + 0.5)
    tolerance = 0.005  # PortAudio's DAC/ADC estimates and the sink's scheduling
    assert abs(found - onset) <= input_latency + output_latency + tolerance, (found - onset, input_latency)
    tone = window[np.argmax(np.abs(window) > 0.1) :][: int(0.19 * rate)]
    assert np.abs(tone).max() == pytest.approx(0.5, abs=0.03)  # the mono average of equal channels


def test_a_stalled_callback_keeps_audio_times(virtual_mic, tmp_path):
    """The callback starved of the GIL for 0.5 s gets its blocks late, in a burst; their ADC
    times still place the audio where it was captured."""
    rate = SAMPLE_RATE
    signal = np.zeros(int(1.0 * rate), dtype=np.float32)
    signal[int(0.5 * rate) : int(0.7 * rate)] = 0.5 * np.sin(2 * np.pi * 500 * np.arange(int(0.2 * rate)) / rate)

    def measure():
        with MicrophoneSource() as mic:
            time.sleep(0.2)
            interval = sys.getswitchinterval()
            sys.setswitchinterval(2.0)  # this thread keeps the GIL through the busy loop
            try:
                stalled = time.monotonic()
                while time.monotonic() - stalled < 0.5:
                    pass
            finally:
                sys.setswitchinterval(interval)
            first_sample, output_latency = play(signal, rate)
            onset = first_sample + 0.5
            return mic.window(onset + 0.3, seconds=2.5, timeout=1.0), onset, mic.latency, output_latency

    window, onset, latency, output_latency = without_underflow(measure)
    found = first_sound(window, onset + 0.3)
    assert abs(found - onset) <= latency + output_latency + 0.005


def test_window_waits_for_audio_that_is_about_to_arrive_and_close_is_final(virtual_mic):
    mic = MicrophoneSource()
    assert isinstance(mic, AudioSource)
    try:
        target = time.monotonic() + 0.1
        mic.window(target, timeout=2.0)
        assert mic.captured_until >= target
        assert mic.latency > 0
    finally:
        mic.close()
    stopped = mic.captured_until
    time.sleep(0.1)
    assert mic.captured_until == stopped  # no callbacks after close
    mic.close()
