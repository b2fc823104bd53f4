"""Stream: real sources, the real segmenter (shipped model), a PulseAudio virtual microphone.

Nothing is mocked: files are written with PyAV, the microphone is a PulseAudio null sink
recorded through PortAudio (tests/virtual_mic.py), audio is played into it through a
PortAudio output stream whose DAC times say when each sample was played, and every
frame goes through the shipped model. There is no camera here: a live camera is stood
in for by a file paced at its frame rate on the monotonic clock (what ``audio=<mic>``
does with a file), and the camera's own behaviour is tested in test_capture.py.
"""

from __future__ import annotations

import _thread
import fractions
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import wave
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from avss_sdk.capture import CameraError, CameraSource, FileSource
from avss_sdk.media import SAMPLE_RATE, audio_window, read_audio
from avss_sdk.preprocess import LOG_MEL_SAMPLES, LOG_MEL_SECONDS
from avss_sdk.segmenter import Segmenter, VocabularyError
from avss_sdk.stream import Stream, StreamError, pipeline_threads
from virtual_mic import Player, virtual_mic, without_underflow  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_clip.mp4"
DEMO_WORDS = json.loads(DEMO.with_suffix(".json").read_text())["vocab"]
FPS = 10
ONSETS = (0.5, 1.7, 2.9)  # tone onsets (s): on frame times, further apart than a window
SYNC_TOLERANCE = 0.02  # a file's audio window must end within 20 ms of its frame


def avss_threads() -> set[threading.Thread]:
    """Live threads this package starts (camera capture, vocabulary worker)."""
    return {t for t in threading.enumerate() if t.name.startswith("avss") and t.is_alive()}


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def write_tone_clip(path: Path, frames: int = 40, fps: int = FPS, size: tuple[int, int] = (64, 48),
                    audio_rate: int = 48000) -> Path:
    """H.264 video of ``frames`` grey frames and AAC audio holding 1 kHz bursts that start at ONSETS."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("h264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac", rate=audio_rate, layout="mono")
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), (5 * k) % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        track = tone_track(frames / fps, audio_rate)
        for start in range(0, track.size, 1024):
            frame = av.AudioFrame.from_ndarray(track[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = audio_rate, start, fractions.Fraction(1, audio_rate)
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def tone_track(seconds: float, rate: int) -> np.ndarray:
    """0.2 s 1 kHz bursts starting at ONSETS, silence elsewhere."""
    t = np.arange(int(round(seconds * rate))) / rate
    track = np.zeros(t.size, np.float32)
    for onset in ONSETS:
        on = (t >= onset) & (t < onset + 0.2)
        track[on] = 0.5 * np.sin(2 * np.pi * 1000 * (t[on] - onset))
    return track


def onset_end_times(pairs, onsets) -> list[tuple[float, float]]:
    """(frame timestamp, time at which its window ends, measured from the tone onset found in it).

    Only windows whose tone onset lies inside them count, at least 25 ms after the start
    and before the end, so that the onset is unambiguous.
    """
    measured = []
    for frame, window in pairs:
        loud = np.flatnonzero(np.abs(window) > 0.1)
        if loud.size == 0 or loud[0] < 0.025 * SAMPLE_RATE:
            continue
        first = loud[0]
        after = window.size - first  # samples from the onset to the end of the window
        if after < 0.025 * SAMPLE_RATE:
            continue
        onset = min(onsets, key=lambda o: abs(o - (frame.timestamp - after / SAMPLE_RATE)))
        measured.append((frame.timestamp, onset + after / SAMPLE_RATE))
    return measured


def label_agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean over frames of the mean IoU over the labels either map has (1 where both are background)."""
    scores = []
    for x, y in zip(a, b, strict=True):
        labels = (set(np.unique(x)) | set(np.unique(y))) - {0}
        scores.append(np.mean([((x == c) & (y == c)).sum() / ((x == c) | (y == c)).sum() for c in labels])
                      if labels else 1.0)
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    """The shipped model, loaded once for the module (streams reuse it through ``segmenter=``)."""
    return Segmenter(vocab=DEMO_WORDS)


@pytest.fixture(scope="module")
def demo_labels(segmenter) -> list[np.ndarray]:
    """The demo clip segmented from the file: the reference for the microphone."""
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        return [result.labels for result in stream]


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory) -> Path:
    return write_tone_clip(tmp_path_factory.mktemp("tones") / "tones.mp4")


# --- files ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_file_stream_segments_every_frame_in_order(segmenter, demo_labels):
    before = avss_threads()
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        results = list(stream)
        assert stream.frames == 80 and stream.dropped == 0
        assert stream.fps > 0 and stream.backend is segmenter.backend and stream.backend_name == segmenter.backend_name and stream.clock == "media"
    assert [r.index for r in results] == list(range(80))
    assert np.allclose([r.timestamp for r in results], 0.96 + np.arange(80) / FPS, atol=1e-6)
    assert all(r.labels.shape == (224, 224) and r.vocab == DEMO_WORDS for r in results)
    assert label_agreement([r.labels for r in results], demo_labels) == 1.0  # deterministic
    found = sum(bool(r.objects) for r in results)
    assert found >= 40, f"the model found sounding objects in only {found} of 80 frames"
    assert avss_threads() == before


@pytest.mark.timeout(120)
def test_the_pipelined_stream_gives_what_one_frame_at_a_time_gives(segmenter, demo_labels):
    """Overlapping frames on stage threads changes no frame, order, pairing or label."""
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter, pipeline=False) as stream:
        sequential = list(stream)
    assert [r.index for r in sequential] == list(range(80))
    assert label_agreement([r.labels for r in sequential], demo_labels) == 1.0
    assert all(np.array_equal(a.labels, b) for a, b in zip(sequential, demo_labels))
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        piped = [next(stream)]
        with pytest.raises(StreamError, match="already being segmented"):
            next(stream.pairs())
        piped += list(stream)
    assert [(r.index, r.timestamp) for r in piped] == [(r.index, r.timestamp) for r in sequential]
    assert all(r.timings["latency"] >= r.timings["total"] > 0 for r in piped)


def test_a_pipelined_stream_shares_the_cores_among_its_sessions():
    """Three stage threads run ONNX Runtime sessions at once: the segmenter a pipelined stream makes
    gives each session a third of the cores (at least one); one frame at a time, ONNX Runtime's own
    default (0: every core); torch's threads, which are process-wide, stay as they were."""
    assert [pipeline_threads(cores) for cores in (1, 2, 3, 8, 16)] == [1, 1, 1, 2, 5]
    for pipeline, threads in ((True, pipeline_threads()), (False, 0)):
        with Stream(source=DEMO, vocab=DEMO_WORDS, backend="onnxruntime", pipeline=pipeline) as stream:
            for session in stream.segmenter.backend.sessions.values():
                assert session.get_session_options().intra_op_num_threads == threads
    import torch

    before = torch.get_num_threads()
    with Stream(source=DEMO, vocab=DEMO_WORDS, backend="torch"):
        assert torch.get_num_threads() == before  # process-wide: a torch stream leaves it as it was


@pytest.mark.timeout(60)
def test_a_pipelined_stream_left_by_break_releases_its_threads(segmenter, tone_clip):
    """A for loop left with break and no close(): the stage threads hold the stream only weakly,
    so dropping it ends them and the camera's capture thread (OpenCV reading a file stands in)."""
    before = avss_threads()
    for result in Stream(camera=str(tone_clip), audio=tone_clip, every_frame=True, segmenter=segmenter):
        assert result.index == 0 and any(t.name.startswith("avss-stream") for t in avss_threads())
        break
    deadline = time.monotonic() + 10
    while avss_threads() != before and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert avss_threads() == before


@pytest.mark.timeout(60)
def test_every_camera_frame_in_order_through_the_pipeline(segmenter, tone_clip):
    """every_frame=True with a camera (OpenCV reading a file stands in for it, dubbed with the
    file's audio): the pipeline reads ahead, yet no frame is dropped and they come out in order."""
    with Stream(camera=str(tone_clip), audio=tone_clip, every_frame=True, segmenter=segmenter) as stream:
        results = [result for _, result in zip(range(30), stream)]
        assert stream.dropped == 0
    assert [r.index for r in results] == list(range(30))
    times = [r.timestamp for r in results]
    assert all(b > a for a, b in zip(times, times[1:]))


@pytest.mark.timeout(30)
def test_each_frame_of_a_file_gets_the_audio_that_ends_at_its_timestamp(segmenter, tone_clip):
    with Stream(source=tone_clip, segmenter=segmenter) as stream:
        pairs = list(stream.pairs())
    assert len(pairs) == 40 and all(w.shape == (LOG_MEL_SAMPLES,) and w.dtype == np.float32 for _, w in pairs)
    measured = onset_end_times(pairs, ONSETS)
    assert len(measured) >= 20  # each onset is in the windows of the ~9 frames after it
    errors = [abs(end - timestamp) for timestamp, end in measured]
    assert max(errors) <= SYNC_TOLERANCE, errors


@pytest.mark.timeout(30)
def test_video_dubbed_with_a_files_audio(segmenter, tone_clip, tmp_path):
    """audio=<file>: its track starts at time 0 of a file's media clock, or at a camera's first frame."""
    mute = tmp_path / "mute.mp4"
    with av.open(str(tone_clip)) as src, av.open(str(mute), "w") as out:  # the same video, no audio
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with pytest.warns(UserWarning, match="no audio track"):
        with Stream(source=mute, audio=tone_clip, segmenter=segmenter) as stream:
            pairs = list(stream.pairs())
    errors = [abs(end - timestamp) for timestamp, end in onset_end_times(pairs, ONSETS)]
    assert len(errors) >= 20 and max(errors) <= SYNC_TOLERANCE, errors

    # A camera (OpenCV reading the file stands in) dubbed with a file: its time 0 is the first frame's.
    track = read_audio(tone_clip)
    with Stream(camera=str(tone_clip), audio=str(tone_clip), segmenter=segmenter) as stream:
        pairs = [pair for _, pair in zip(range(20), stream.pairs())]
    first = pairs[0][0].timestamp
    for frame, window in pairs:
        assert np.array_equal(window, audio_window(track, frame.timestamp - first, seconds=LOG_MEL_SECONDS))


# --- the microphone ----------------------------------------------------------------------------


def input_device() -> int:
    import sounddevice as sd

    return int(sd.query_devices(kind="input")["index"])


@pytest.mark.timeout(60)
def test_audio_windows_from_the_microphone_end_at_their_frames(virtual_mic, segmenter, tone_clip):
    """A file paced as live with the microphone: tones played at known DAC times are found in
    each frame's window where its timestamp says, within the devices' reported latency."""
    signal = tone_track(4.0, SAMPLE_RATE)

    def measure():
        with Stream(source=tone_clip, audio=input_device(), segmenter=segmenter, every_frame=True) as stream:
            assert stream.clock == "monotonic"
            player = Player(signal)
            assert player.started.wait(5)
            pairs = []
            for frame, window in stream.pairs():
                pairs.append((frame, window))
                if frame.timestamp > player.start_time + 3.3:
                    break
            input_latency = stream._audio.latency
        player.join()
        player.check_timing()
        return player, pairs, input_latency

    player, pairs, input_latency = without_underflow(measure)
    onsets = [player.start_time + onset for onset in ONSETS]
    measured = onset_end_times(pairs, onsets)
    assert len(measured) >= 20
    errors = [end - timestamp for timestamp, end in measured]
    assert max(map(abs, errors)) <= input_latency + player.latency + 0.005, (errors, input_latency, player.latency)


@pytest.mark.timeout(90)
def test_labels_from_the_microphone_agree_with_the_file(virtual_mic, segmenter, demo_labels, tmp_path):
    """The demo clip's audio played into the virtual microphone while its video plays as live.

    The microphone hears the same samples (to 16-bit rounding) a few milliseconds off, so
    the label maps must agree with the file's: mean IoU over 40 frames >= 0.9 (1 with the
    same samples at the same times; measured here: 50 ms late still gives 0.94). The same
    video with silence agrees < 0.5 (measured: 0): the audio decides what is labelled.
    """
    track = read_audio(DEMO)
    frames = 40
    with Stream(source=DEMO, audio=input_device(), vocab=DEMO_WORDS, segmenter=segmenter, every_frame=True) as stream:
        player = Player(track[: int((0.96 + frames / FPS + 0.2) * SAMPLE_RATE)])
        assert player.started.wait(5)
        # The first frame (media time 0.96 s) is released when asked for: ask when the player is there.
        time.sleep(max(0.0, player.start_time + 0.96 - time.monotonic()))
        results = [result for _, result in zip(range(frames), stream)]
        dropped = stream.dropped
    player.join()
    assert dropped == 0 and [r.index for r in results] == list(range(frames))
    assert abs(results[0].timestamp - (player.start_time + 0.96)) < 0.05
    agreement = label_agreement([r.labels for r in results], demo_labels[:frames])
    assert agreement >= 0.9, agreement

    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE), w.writeframes(bytes(2 * 9 * SAMPLE_RATE))
    with Stream(source=DEMO, audio=silence, segmenter=segmenter) as stream:
        silent = [result.labels for _, result in zip(range(frames), stream)]
    assert label_agreement(silent, demo_labels[:frames]) < 0.5


@pytest.mark.timeout(60)
def test_camera_and_microphone(virtual_mic, segmenter, tone_clip):
    """The default pairing, camera + microphone on the monotonic clock. OpenCV reading a
    file as a stream stands in for the camera: it delivers far faster than the model runs,
    so the stream keeps only the newest frame and counts the rest as dropped."""
    before = avss_threads()
    with Stream(camera=str(tone_clip), mic=input_device(), vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        assert stream.clock == "monotonic" and any(t.name.startswith("avss-camera") for t in avss_threads())
        results = [(time.monotonic(), result) for _, result in zip(range(15), stream)]
        assert stream.dropped > 0 and stream.fps > 0
    indices = [r.index for _, r in results]
    assert all(b > a for a, b in zip(indices, indices[1:])) and indices[-1] - 14 == stream.dropped
    ages = [now - r.timestamp for now, r in results]
    assert np.median(ages) < 0.5, ages  # the newest frames, not a queue behind the model
    assert avss_threads() == before


# --- vocabulary and scene changes while running ------------------------------------------------


@pytest.mark.timeout(60)
def test_set_vocab_switches_without_stalling_the_frame_loop(segmenter):
    words = ["lime hexagon", "teal crescent", "perro que ladra"]  # new words: the text encoder runs
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter, realtime=True) as stream:
        results, future = [], None
        for result in stream:
            results.append((time.monotonic(), result))
            if len(results) == 3:
                start = time.monotonic()
                future = stream.set_vocab(words)
                scene_future = stream.set_scene("shapes on a striped background")
                assert time.monotonic() - start < 0.05  # returns at once: the worker prepares them
            if future is not None and future.done() and scene_future.done() and result.vocab == words:
                break
        assert future.result().words == words and scene_future.done()  # both ready while frames came
        assert stream.vocab == words and stream.scene == "shapes on a striped background"
    switched = next(i for i, (_, r) in enumerate(results) if r.vocab == words)
    assert all(r.vocab == DEMO_WORDS for _, r in results[:switched]) and switched >= 3
    gaps = np.diff([t for t, _ in results])
    assert gaps.max() < 0.5, gaps  # frames kept coming at about 10 a second while it was prepared
    assert not avss_threads()


@pytest.mark.timeout(30)
def test_vocabulary_errors_raise_in_the_caller_at_once(segmenter):
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        next(stream)
        for bad, message in [
            ([], "empty"),
            ("dog, guitar", "not one string"),
            (["dog", 3], "not a string"),
            (["dog", "  "], "blank"),
            (["dog", "x" * 201], "characters long"),
            (None, "no vocabulary"),
        ]:
            with pytest.raises(VocabularyError, match=message):
                stream.set_vocab(bad)
        with pytest.raises(VocabularyError, match="scene must be a string"):
            stream.set_scene(["a", "b"])
        assert next(stream).vocab == DEMO_WORDS  # nothing changed
    with pytest.raises(VocabularyError, match="empty"):
        Stream(source=DEMO, vocab=[])
    assert not avss_threads()


@pytest.mark.timeout(30)
def test_duplicate_words_are_dropped_with_a_warning(segmenter):
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        with pytest.warns(UserWarning, match="duplicate vocabulary words ignored"):
            future = stream.set_vocab(["dog", "guitar", " Dog "])
        assert future.result(timeout=20).words == ["dog", "guitar"]
        assert next(stream).vocab == ["dog", "guitar"]


@pytest.mark.timeout(60)
def test_non_ascii_words_work(segmenter):
    words = ["chien qui aboie", "猫", "гітара", "café ☕"]
    with Stream(source=DEMO, vocab=words, segmenter=segmenter) as stream:
        result = next(stream)
    assert result.vocab == words and result.labels.max() <= len(words)


@pytest.mark.timeout(120)
def test_a_thousand_word_vocabulary(segmenter):
    """Within the engines' limit (none on ONNX Runtime) it works; beyond it, a clear error at once."""
    words = [f"object number {i}" for i in range(1000)]
    with Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter) as stream:
        if segmenter.max_words is not None and segmenter.max_words < 1000:
            with pytest.raises(VocabularyError, match=f"at most {segmenter.max_words}"):
                stream.set_vocab(words)
        else:
            stream.set_vocab(words).result(timeout=100)
            result = next(stream)
            assert len(result.vocab) == 1000 and result.labels.max() <= 1000


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_missing_camera_is_a_clear_error_at_once(segmenter):
    start = time.monotonic()
    with pytest.raises(CameraError, match=r"camera 97 could not be opened; available cameras: "):
        Stream(camera=97, vocab=DEMO_WORDS, segmenter=segmenter)
    assert time.monotonic() - start < 5
    assert not avss_threads()


@pytest.mark.timeout(20)
def test_missing_files_and_missing_video_are_clear_errors(segmenter, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        Stream(source=tmp_path / "nothing.mp4", segmenter=segmenter)
    with pytest.raises(FileNotFoundError, match="audio file not found: .*nothing.wav"):
        Stream(source=DEMO, audio=tmp_path / "nothing.wav", segmenter=segmenter)
    with pytest.raises(StreamError, match="no video"):
        Stream(camera=None, segmenter=segmenter)


@pytest.mark.timeout(20)
def test_video_and_audio_on_different_clocks_are_refused(segmenter, tone_clip):
    camera_like = CameraSource(str(tone_clip), reconnect=False)  # a monotonic-clock video source
    try:
        with FileSource(tone_clip) as media_clock_audio:
            with pytest.raises(StreamError, match="'monotonic' clock cannot be paired with audio on the 'media' clock"):
                Stream(source=camera_like, audio=media_clock_audio, segmenter=segmenter)
    finally:
        camera_like.close()


@pytest.mark.timeout(60)
def test_a_corrupt_manifest_is_a_clear_error(segmenter, tmp_path):
    engines = tmp_path / "engines"
    shutil.copytree(segmenter.manifest.root, engines)
    (engines / "manifest.json").write_text('{"format": "avss_sdk.manifest", "version": 1, "model": ')
    with pytest.raises(ValueError, match="manifest"):
        Stream(source=DEMO, vocab=DEMO_WORDS, engines=engines)
    (engines / "manifest.json").unlink()
    with pytest.raises((ValueError, FileNotFoundError), match="manifest"):
        Stream(source=DEMO, vocab=DEMO_WORDS, engines=engines)


# --- stopping ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stop_from_another_thread_and_close_are_clean(segmenter):
    stream = Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter, realtime=True)
    stream.set_vocab(["red circle"])  # starts the worker thread
    threading.Timer(0.5, stream.stop).start()
    count = sum(1 for _ in stream)
    assert 2 <= count < 20  # 10 frames a second, stopped after about half a second
    stream.close()
    stream.close()  # idempotent
    assert not avss_threads()
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.timeout(30)
def test_ctrl_c_closes_the_stream_and_propagates(segmenter):
    # Python's own Ctrl-C handler, whatever an earlier test in this worker process left installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stream = Stream(source=DEMO, vocab=DEMO_WORDS, segmenter=segmenter, realtime=True)
        stream.set_vocab(["red circle"])
        threading.Timer(0.5, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:
                pass
        assert stream._closed and not avss_threads()
    finally:
        signal.signal(signal.SIGINT, previous)


# --- a long run ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_thousand_frames_memory_flat_every_thread_ends(tmp_path):
    """The stream loads its own model here (OpenCV DIS flow, the cheaper one on a CPU) and closes it.

    Over the 800 frames after warming up, Python's allocations may grow by 1 MB (1.25 kB a frame)."""
    path = write_tone_clip(tmp_path / "long.mp4", frames=1000, fps=25, size=(32, 32), audio_rate=16000)
    threads_before = set(threading.enumerate())
    tracemalloc.start()
    try:
        with Stream(source=path, vocab=DEMO_WORDS, flow="dis") as stream:
            for result in stream:
                if result.index == 200:  # warmed up: buffers allocated, caches filled
                    traced, rss = tracemalloc.get_traced_memory()[0], rss_bytes()
                    stream.set_vocab(DEMO_WORDS[::-1])
            assert stream.frames == 1000 and result.index == 999
            grown_traced, grown_rss = tracemalloc.get_traced_memory()[0] - traced, rss_bytes() - rss
    finally:
        tracemalloc.stop()
    assert grown_traced < 1_000_000, grown_traced
    assert grown_rss < 30_000_000, grown_rss
    assert set(threading.enumerate()) <= threads_before
    assert not avss_threads()


# --- the live demo ----------------------------------------------------------------------------------


def run_demo(*args: str, timeout: float = 240, env: dict | None = None, cwd: Path = ROOT,
             code: str = "from avss_sdk.demo import main; sys.exit(main(sys.argv[1:]))") -> subprocess.CompletedProcess:
    """Run the demo (what avss-demo and samples/live_demo.py run) on this checkout's package, without a display."""
    env = {key: value for key, value in (env or os.environ).items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", f"import sys\n{code}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def assert_one_error_line(done: subprocess.CompletedProcess, status: int, *says: str) -> None:
    """A failure a user sees: its status, one ``error:`` line saying what, no traceback or OpenCV log lines."""
    assert done.returncode == status, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert all(text in errors[0] for text in says), errors
    assert "Traceback" not in done.stderr and "WARN" not in done.stderr and "[ERROR" not in done.stderr


@pytest.mark.timeout(300)
def test_live_demo_headless_writes_h264_with_the_clips_sound(tmp_path):
    out = tmp_path / "out.mp4"
    snapshot = tmp_path / "last.png"
    done = run_demo("--headless", "--source", str(DEMO), "--frames", "12", "--out", str(out), "--flow", "dis",
                    "--snapshot", str(snapshot), code="import runpy; runpy.run_path('samples/live_demo.py', "
                                                      "run_name='__main__')")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("avss_sdk: backend") == 1  # the model loads once
    height, width, _ = cv2.imread(str(snapshot)).shape
    assert height == 224 and width > 224  # the frame, and the legend beside it
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert float(video.average_rate) == pytest.approx(10, abs=0.5)  # the clip's rate, from its frame times
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (224, width, 3)
    sound = read_audio(out)
    assert len(sound) / SAMPLE_RATE == pytest.approx(1.2, abs=0.1)  # 12 frames at 10 fps
    clip = read_audio(DEMO)[: len(sound)]
    assert np.sqrt(np.mean(sound ** 2)) > 0.3 * np.sqrt(np.mean(clip ** 2)) > 0  # the clip's sound, not silence


@pytest.mark.timeout(300)
def test_live_demo_without_a_camera_plays_the_demo_clip_with_the_users_words(tmp_path):
    done = run_demo("--camera", "97", "--vocab", "dog", "--frames", "1")
    assert_one_error_line(done, 2, "camera 97 could not be opened")
    assert "running headless" in done.stderr  # no display here: no window error before the camera's
    done = run_demo("--frames", "2", "--vocab", "dog, red star")  # no camera named: the demo clip, these words
    assert done.returncode == 0, done.stderr
    assert "camera 0 could not be opened" in done.stderr and "demo clip" in done.stderr
    assert "looking for: dog, red star" in done.stderr and done.stderr.count("avss_sdk: backend") == 1
    assert "WARN" not in done.stderr and "Traceback" not in done.stderr


def test_demo_without_a_display_runs_headless_and_writes_segmented_mp4(monkeypatch):
    from avss_sdk.demo import DEFAULT_OUT, parse_args

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    args = parse_args([])
    assert args.headless and args.out == DEFAULT_OUT == Path("segmented.mp4")
    assert parse_args(["--frames", "3"]).out is None  # a timing run writes nothing
    assert parse_args(["--snapshot", "x.png"]).out is None


def test_demo_legend_and_status_go_beside_the_frame_hiding_nothing():
    from avss_sdk.demo import compose
    from avss_sdk.result import Result, sounding_objects

    frame = np.full((120, 160, 3), 90, np.uint8)
    labels = np.zeros((120, 160), np.int32)
    labels[:40, :50] = 1  # an object in the top left, where a legend would go
    objects = sounding_objects(labels, np.full((120, 160), -2.0, np.float32), ["purple square"])
    result = Result(frame, 0.0, labels, ["purple square"], objects)
    image = compose(result, "onnxruntime", 120)
    assert image.shape == (120, 280, 3)
    assert np.array_equal(image[:, :160], result.plot(legend=False))  # the frame part: the overlay alone
    assert (image[:, 160:] != 32).any()  # the panel holds the key


def test_demo_status_says_no_frame_rate_before_it_is_measured():
    from avss_sdk.demo import status_text

    assert status_text(0.0, "onnxruntime") == "onnxruntime"
    assert status_text(12.34, "onnxruntime") == " 12.3 fps  onnxruntime"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend, block, says", [("tensorrt", "", "TensorRT is not installed"),
                                                  ("torch", "sys.modules['torch'] = None\n", "needs PyTorch")])
def test_demo_backend_that_cannot_run_is_one_error_line(backend, block, says):
    import importlib.util

    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    done = run_demo("--backend", backend, "--frames", "1",
                    code=f"{block}from avss_sdk.demo import main; sys.exit(main(sys.argv[1:]))")
    assert_one_error_line(done, 2, says)


def test_demo_bad_options_are_one_error_line():
    for args, says in [(["--vocab", " , "], "--vocab has no words"), (["--out", "x.avi"], "--out must end in"),
                       (["--source", "clip.mp4"], "--vocab is required"), (["--frames", "0"], "at least 1")]:
        done = run_demo(*args, timeout=60)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "error:" in last and says in last, done.stderr


def test_avss_demo_is_an_installed_command_with_its_clip_in_the_package():
    from avss_sdk.demo import DEMO_CLIP, build_parser, main

    project = (ROOT / "pyproject.toml").read_text()
    assert '\navss-demo = "avss_sdk.demo:main"\n' in project and callable(main)
    assert DEMO_CLIP.is_file() and f'"{DEMO_CLIP.relative_to(ROOT / "avss_sdk").as_posix()}"' in project
    assert DEMO.resolve() == DEMO_CLIP  # samples/demo_clip.mp4 is the package's clip
    build_parser().add_argument("--rtsp", type=int)  # a front end can extend the options
