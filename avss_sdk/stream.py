"""Stream: capture, audio/video pairing, vocabulary swaps and segmentation, frame after frame.

    with Stream(camera=0, vocab=["dog", "guitar", "person speaking"]) as stream:
        for result in stream:          # until the source ends, stream.stop(), or Ctrl-C
            cv2.imshow("avss", result.plot()[..., ::-1])
            if user_typed_words:
                stream.set_vocab(words)  # prepared in the background; the stream never stalls

Where video and audio come from, and on which clock they are paired (a frame is paired
with the ``LOG_MEL_SECONDS`` of audio that end at its timestamp, on one clock):

* ``camera`` and ``mic`` (the default): ``CameraSource`` and ``MicrophoneSource``, both on
  ``time.monotonic()``. The camera keeps only its newest frame (``every_frame=True``
  queues them); the audio of a frame reaches the microphone's buffer about the device's
  latency after the frame, so pairing waits that long for it, never longer.
* ``source="clip.mp4"`` (a file or URL): ``FileSource`` gives video and audio on the
  file's own media clock. Frames are processed as fast as the model runs, every one
  (``realtime=True`` paces them at the file's frame rate instead).
* ``audio=`` replaces the audio of either:
  - a microphone index (``mic=`` with a file says the same, and also takes a device name):
    with a camera it is the same as ``mic=``; with a file the file is *played as if live*:
    each frame is released at its media time on the monotonic clock and stamped with that
    time, paired with what the microphone heard then, and a frame that is already late
    when the next one is due is dropped like a camera's (``every_frame=True`` keeps them all);
  - a local media file: its first audio track is *dubbed* over the video: the track's time
    0 is the time of the stream's first frame, on the stream's clock, whether the video
    is a camera or a file; after its end the audio is silence. The track is decoded
    whole at start (about 230 MB an hour), so this is meant for clips.
* ``source=`` and ``audio=`` also take source objects (``capture.VideoSource`` /
  ``capture.AudioSource``); those stay the caller's to close. A video and an audio source
  on different clocks that the rules above cannot pair raise ``StreamError``.

Vocabulary and scene changes while running: ``set_vocab`` checks the words in the calling
thread (``segmenter.clean_vocabulary``: empty, not strings, blank, too long, more than the
engines take: ``VocabularyError`` at once; a duplicate is dropped with a warning), then a
background worker runs the text encoder (``Segmenter.prepare_vocab``, hundreds of ms when
the words are new; ``close()`` cancels it between text-encoder calls) and the frame loop
switches to it (``Segmenter.use``, O(1)) before the first frame after it is ready. Frames
keep coming with the old words meanwhile. The returned ``Future`` resolves when the vocabulary is ready; a failure there (one that only
the text encoder finds) is kept in the future and also issued as a warning, and the
stream goes on with the previous words.

Threads: the camera's capture thread, PortAudio's callback thread, the vocabulary
worker and, with ``pipeline=True`` (the default), the pipeline's stage threads;
``close()`` (idempotent; also the end of the source, an error in the loop, Ctrl-C, and
leaving a ``with`` block; a stream dropped without it is released when it is collected)
ends every one of them. Ctrl-C closes the stream and then lets ``KeyboardInterrupt``
through, as Python does.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import warnings
import weakref
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from avss_sdk.capture import AudioSource, CameraSource, FileSource, Frame, MicrophoneSource, VideoSource, check_camera
from avss_sdk.errors import AvssError, MissingFileError
from avss_sdk.media import audio_window, read_audio
from avss_sdk.pipeline import Pipeline
from avss_sdk.preprocess import LOG_MEL_SECONDS
from avss_sdk.result import Result
from avss_sdk.runtime.backends import Backend
from avss_sdk.segmenter import FrameState, Segmenter
from avss_sdk.vocab import check_vocab_size, clean_scene, clean_vocabulary

# How often a wait for a frame checks whether the stream was stopped.
_POLL_SECONDS = 0.1
# Extra time, beyond the microphone's reported latency, that pairing waits for a frame's audio.
_AUDIO_WAIT_MARGIN = 0.05
# Results over which ``fps`` is measured.
_FPS_WINDOW = 30
# Stage threads of a pipelined Stream that run ONNX Runtime sessions at the same time: prepare (flow,
# audio encoder), encode_image (image encoder, VTA) and finish (mask decoder).
_SESSION_STAGES = 3


def pipeline_threads(cores: int | None = None) -> int:
    """ONNX Runtime threads per session for a pipelined Stream on ``cores`` usable cores (None: this process's).

    The stage threads run three sessions at once; with every core each (ONNX Runtime's default)
    they contend, so the cores are shared among them, at least one each.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // _SESSION_STAGES)


class StreamError(AvssError, ValueError):
    """A stream that cannot work as asked: no video source, or video and audio on clocks that cannot be paired."""


class _PacedFile:
    """A ``FileSource`` whose frames are released at their media time, measured from the first frame.

    With ``restamp`` the frames carry the monotonic time they were due (clock "monotonic"),
    so they pair with a live microphone; else their media time. With ``drop_late`` a frame
    whose successor is already due is skipped (the consumer fell behind), as a camera does.
    Waiting ends early when ``stop`` is set.
    """

    def __init__(self, source: FileSource, stop: threading.Event, restamp: bool, drop_late: bool) -> None:
        self.source = source
        self.clock = "monotonic" if restamp else source.clock
        self._stop = stop
        self._restamp = restamp
        self._drop_late = drop_late
        self._period = 1.0 / source.fps if source.fps else 0.0
        self._origin: float | None = None  # monotonic time of media time 0

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame at its due time (the wait ends early, with None, when the stream stops)."""
        while (frame := self.source.read()) is not None:
            now = time.monotonic()
            if self._origin is None:
                self._origin = now - frame.timestamp
            due = self._origin + frame.timestamp
            if self._drop_late and now - due > self._period:
                continue
            if due > now and self._stop.wait(due - now):
                return None
            return Frame(frame.image, due, frame.index) if self._restamp else frame
        return None


class _DubbedAudio:
    """A media file's audio track on the stream's clock: its time 0 is ``origin``.

    On a file's media clock that is 0; on the monotonic clock, the time of the first window
    asked for (the first frame's).
    """

    latency = 0.0  # the whole track is decoded at start

    def __init__(self, path: str | Path, clock: str) -> None:
        self.path = str(path)
        self.clock = clock
        self.track = read_audio(path)
        self.origin: float | None = 0.0 if clock == "media" else None

    def window(self, end_time: float, seconds: float = LOG_MEL_SECONDS, timeout: float = 0.0) -> np.ndarray:
        if self.origin is None:
            self.origin = end_time
        return audio_window(self.track, end_time - self.origin, seconds=seconds)

    def close(self) -> None:
        """Nothing to release: the track is in memory."""


class Stream:
    """Segment a live or recorded audio-visual stream: an iterator of ``Result``s and a context manager.

    ``camera`` is an OpenCV camera index or URL; ``mic`` a sounddevice input device index or
    name (None: the system's default microphone). ``source`` (a file, URL or VideoSource)
    replaces the camera; ``audio`` (a microphone index, a file, or an AudioSource) replaces
    the audio (``mic`` with ``source`` means ``audio=mic``); see the module docstring for how
    they pair. ``vocab``, ``scene``,
    ``engines``, ``backend`` and ``flow`` go to the ``Segmenter``; pass ``segmenter=`` to
    reuse one already loaded (the stream then sets its vocabulary and scene when given,
    calls its ``reset()``, and leaves it open when it closes). ``every_frame``: queue every
    camera frame (or every frame of a file paced for a microphone) instead of keeping only
    the newest; ``realtime``: pace a file at its frame rate; ``frame_timeout``: seconds
    without a frame from the camera the stream opens before ``CameraError`` (a source object
    keeps its own).
    ``server``: an ``avss-serve`` URL
    (``http://host:port`` or ``grpc://host:port``): frames are segmented there
    (``RemoteSegmenter``) instead of in this process; ``engines``, ``backend`` and ``flow``
    are then the server's. ``pipeline`` (default True): overlap consecutive frames on
    threads (see ``avss_sdk.pipeline``): reading, pairing, preprocessing, flow and audio
    encoder; the image encoder and VTA; the rest in the iterating thread (with ``server=``: reading
    and pairing on one thread, the request in the iterating one). Frames still come out in
    order, each with its own audio, and ``every_frame`` keeps its meaning; a camera frame is
    read at most two frames before its result is due. The segmenter a pipelined stream makes
    gives each ONNX Runtime session a share of the cores (:func:`pipeline_threads`), not all
    (not so with ``backend="torch"``, whose thread count is process-wide).

    Attributes: ``fps`` (results per second over the last 30), ``backend`` (the object) and
    ``backend_name``, ``dropped``
    (frames the source produced that were not segmented, from gaps in ``Frame.index``),
    ``frames`` (results so far), ``clock``, ``vocab`` and ``scene`` (in use).
    """

    def __init__(
        self,
        camera: int | str | None = 0,
        mic: int | str | None = None,
        vocab: Sequence[str] | None = None,
        scene: str | None = None,
        engines: str | Path | None = None,
        backend: str = "auto",
        source: str | Path | VideoSource | None = None,
        audio: int | str | Path | AudioSource | None = None,
        flow: str = "model",
        every_frame: bool = False,
        realtime: bool = False,
        segmenter: Segmenter | None = None,
        frame_timeout: float = 10.0,
        server: str | None = None,
        pipeline: bool = True,
    ) -> None:
        self._stop = threading.Event()
        self._cancel = threading.Event()  # set by close(): the vocabulary worker stops between chunks
        self._closed = False
        self._close_lock = threading.Lock()
        self._loop_lock = threading.RLock()  # held while a frame is read and segmented
        self._owned: list = []  # sources this stream opened, closed by it
        self._worker: ThreadPoolExecutor | None = None
        self._pending: dict[str, object] = {}
        self._pending_lock = threading.Lock()
        self._pipelined = pipeline
        self._pipeline: Pipeline | None = None
        self._result_times: collections.deque[float] = collections.deque(maxlen=_FPS_WINDOW)
        self._last_index = -1  # Frame.index of the last frame taken; sources count from 0
        self.dropped = 0
        self.frames = 0

        if source is None and camera is None:
            raise StreamError("no video: give camera= (an index or URL) or source= (a file or URL)")
        if source is None:
            check_camera(camera)  # before the model loads, and before OpenCV sees it
        if source is not None and mic is not None and audio is not None:
            raise StreamError(f"mic={mic!r} and audio={audio!r} name two audio sources for one video; give one")
        self._owns_segmenter = segmenter is None
        keep = segmenter is not None and vocab is None and segmenter.vocab  # the segmenter's own words
        words = None if keep else clean_vocabulary(vocab)  # before the model loads: bad words fail fast
        if segmenter is None:
            if server is not None:
                from avss_sdk.remote import RemoteSegmenter

                self.segmenter = RemoteSegmenter(server, vocab=words, scene=scene)
            else:
                # torch's thread count is process-wide: a torch backend keeps its own.
                share = pipeline and backend != "torch"
                self.segmenter = Segmenter(engines, vocab=words, scene=scene, backend=backend, flow=flow,
                                           threads=pipeline_threads() if share else None)
        else:
            self.segmenter = segmenter
            if words is not None:
                segmenter.set_vocab(words)
            if scene is not None:
                segmenter.set_scene(scene)
            segmenter.reset()
        try:
            self._video, self._audio = self._open(camera, mic, source, audio, every_frame, realtime, frame_timeout)
        except BaseException:
            self._closed = True
            self._close_sources()
            if self._owns_segmenter:
                self.segmenter.close()
            raise
        self.clock: str = self._video.clock

    # --- opening the sources ----------------------------------------------------------

    def _own(self, source):
        self._owned.append(source)
        return source

    def _open(self, camera, mic, source, audio, every_frame: bool, realtime: bool,
              frame_timeout: float) -> tuple:
        """The video and audio sources, opened and paired by the rules of the module docstring."""
        microphone = audio if isinstance(audio, int) and not isinstance(audio, bool) else None
        if source is not None and mic is not None:  # a file paired with a microphone, as with audio=N
            microphone = mic
        audio_file = audio if isinstance(audio, (str, Path)) else None
        if audio_file is not None and not Path(audio_file).is_file():
            raise MissingFileError(f"audio file not found: {audio_file}")

        if source is None:
            with quiet_opencv():  # a missing camera: CameraError says it once, without OpenCV's own lines
                video = self._own(CameraSource(camera, every_frame=every_frame, frame_timeout=frame_timeout))
        elif isinstance(source, (str, Path)):
            video = self._own(FileSource(source))
        else:
            video = source
        live = microphone is not None or (source is None and audio is None)
        if isinstance(video, FileSource) and (realtime or live):
            video = _PacedFile(video, self._stop, restamp=live, drop_late=live and not every_frame)

        if live:
            device = microphone if microphone is not None else mic
            sound: AudioSource = self._own(MicrophoneSource(device))
        elif audio_file is not None:
            sound = _DubbedAudio(audio_file, video.clock)
        elif audio is not None:
            sound = audio
        elif isinstance(video, (FileSource, _PacedFile)):
            sound = video.source if isinstance(video, _PacedFile) else video
        else:
            raise StreamError(f"no audio for video source {video!r}: give audio= (a microphone index, a file or an AudioSource)")
        if sound.clock != video.clock:
            raise StreamError(
                f"video on the {video.clock!r} clock cannot be paired with audio on the {sound.clock!r} clock; "
                "only a FileSource (or a file path) can be paced as live to pair with a microphone"
            )
        return video, sound

    # --- vocabulary and scene -------------------------------------------------------------

    def set_vocab(self, words: Sequence[str]) -> Future:
        """Switch to a new vocabulary without stalling: checked now, prepared in the background.

        Raises ``VocabularyError`` at once for what ``segmenter.clean_vocabulary`` finds
        (duplicates are dropped with a warning, here too). The returned future resolves to
        the prepared ``Vocabulary``; the first frame segmented after that uses it.
        """
        words = clean_vocabulary(words)
        check_vocab_size(words, self.segmenter.max_words)
        return self._submit("vocabulary", self.segmenter.prepare_vocab, words)

    def set_scene(self, text: str | None) -> Future:
        """Switch to a new scene description (None: none) the way ``set_vocab`` switches words."""
        return self._submit("scene", self.segmenter.prepare_scene, clean_scene(text))

    def _submit(self, kind: str, prepare: Callable, argument) -> Future:
        """Run ``prepare(argument)`` on the worker; its result becomes the pending ``kind``."""
        if self._closed:
            raise StreamError("the stream is closed")

        def job():
            prepared = prepare(argument, cancel=self._cancel)
            with self._pending_lock:
                self._pending[kind] = prepared  # a later request, finished later, replaces it
            return prepared

        with self._pending_lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avss-vocab")
            try:
                future = self._worker.submit(job)
            except RuntimeError:  # close() shut the worker down meanwhile
                raise StreamError("the stream is closed") from None
        future.add_done_callback(_warn_on_failure(kind, argument))
        return future

    def _apply_pending(self) -> None:
        """Switch the segmenter to what the worker prepared since the last frame (loop thread only)."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if pending:
            self.segmenter.use(**pending)

    @property
    def vocab(self) -> list[str]:
        """The words in use now."""
        return list(self.segmenter.vocab)

    @property
    def scene(self) -> str | None:
        """The scene description in use now."""
        return self.segmenter.scene

    @property
    def backend(self) -> Backend:
        """The inference backend the segmenter runs on (``.name``, ``.description``), as ``Segmenter.backend``."""
        return self.segmenter.backend

    @property
    def backend_name(self) -> str:
        """The backend's name: "tensorrt", "onnxruntime" or "torch"."""
        return self.segmenter.backend_name

    @property
    def fps(self) -> float:
        """Results per second over the last ``_FPS_WINDOW`` results (0 before the second)."""
        times = self._result_times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def audio(self, end_time: float, seconds: float) -> np.ndarray:
        """The source's 16 kHz mono audio of ``seconds`` that ends at ``end_time`` (the stream's clock).

        For recording what a stream heard alongside its results (e.g. the demo's video);
        audio a microphone's ring buffer no longer holds, or outside a file, is silence.
        """
        return self._audio.window(end_time, seconds=seconds)

    # --- the frame loop -------------------------------------------------------------------

    def _read_frame(self) -> Frame | None:
        """The next frame, or None once the source ended or the stream was stopped.

        The source raises its own error when it has stalled for good (its own timeout).
        """
        while not self._stop.is_set():
            try:
                return self._video.read(timeout=_POLL_SECONDS)
            except TimeoutError:
                continue
        return None

    def _audio_for(self, frame: Frame) -> np.ndarray:
        """The audio that ends at the frame's timestamp (waiting up to the source's latency for it)."""
        latency = self._audio.latency
        wait = latency + _AUDIO_WAIT_MARGIN if latency > 0 else 0.0
        return self._audio.window(frame.timestamp, seconds=LOG_MEL_SECONDS, timeout=wait)

    def _read_pair(self) -> tuple[Frame, np.ndarray] | None:
        """The next frame and its audio; None at the end."""
        frame = self._read_frame()
        if frame is None:
            return None
        return frame, self._audio_for(frame)

    def _taken(self, index: int) -> None:
        """Count the frames skipped before the one with ``Frame.index`` ``index`` (handed out in order)."""
        self.dropped += max(0, index - self._last_index - 1)
        self._last_index = index

    def _prepare(self, pair: tuple[Frame, np.ndarray]) -> FrameState:
        frame, audio = pair
        return self.segmenter.prepare(frame.image, audio, frame.timestamp, frame.index)

    def _finish(self, state: FrameState) -> Result:
        self._apply_pending()
        return self.segmenter.finish(state)

    def _segment_pair(self, pair: tuple[Frame, np.ndarray]) -> Result:
        """A segmenter without stages of its own (a server's) segments the whole frame here."""
        frame, audio = pair
        self._apply_pending()
        return self.segmenter.segment(frame.image, audio, frame.timestamp, frame.index)

    def _next_pipelined(self) -> Result:
        """One result from the pipeline (started at the first frame); StopIteration at the end."""
        with self._loop_lock:
            if self._closed:
                raise StopIteration
            try:
                if self._pipeline is None:
                    staged = isinstance(self.segmenter, Segmenter)
                    steps = [_weak(self._prepare), self.segmenter.encode_image, _weak(self._finish)] if staged \
                        else [_weak(self._segment_pair)]
                    self._pipeline = Pipeline(_weak(self._read_pair, read=True), steps, name="avss-stream")
                result = next(self._pipeline)
            except BaseException:  # the end, an error, or Ctrl-C: release everything first
                self.close()
                raise
            self._taken(result.index)  # here, not when read: frames read ahead are not dropped yet
            self.frames += 1
            self._result_times.append(time.monotonic())
            return result

    def _step(self, segment: bool) -> Result | tuple[Frame, np.ndarray]:
        """One frame: read, pair with audio, and (``segment``) segment it; StopIteration at the end."""
        with self._loop_lock:
            if self._closed:
                raise StopIteration
            if self._pipeline is not None:
                raise StreamError("this stream's frames are already being segmented; pairs() needs a stream of its own")
            try:
                pair = self._read_pair()
                if pair is None:
                    raise StopIteration
                frame, audio = pair
                self._taken(frame.index)
                if not segment:
                    return frame, audio
                self._apply_pending()
                result = self.segmenter.segment(frame.image, audio, frame.timestamp, frame.index)
            except BaseException:  # the end, an error, or Ctrl-C: release everything first
                self.close()
                raise
            self.frames += 1
            self._result_times.append(time.monotonic())
            return result

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Result:
        return self._next_pipelined() if self._pipelined else self._step(segment=True)

    def pairs(self) -> Iterator[tuple[Frame, np.ndarray]]:
        """The frames with their audio windows (16 kHz mono, ``LOG_MEL_SECONDS``), without segmenting.

        For recording, checking synchronisation or another model; it consumes the same
        source as iterating over the stream does.
        """
        while True:
            try:
                yield self._step(segment=False)
            except StopIteration:
                return

    # --- shutdown ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the stream to end (from any thread): iteration stops after the frame in progress."""
        self._stop.set()

    def close(self) -> None:
        """Stop, end the vocabulary worker and every capture thread, release the sources (idempotent).

        From another thread, it waits for the frame in progress to finish first.
        """
        self._release(wait=True)

    def _release(self, wait: bool) -> None:
        self._stop.set()
        self._cancel.set()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._worker is not None:
            self._worker.shutdown(wait=wait, cancel_futures=True)
        if self._pipeline is not None:
            self._pipeline.close()  # its threads read the sources: joined before those close
        with self._loop_lock:
            self._close_sources()
            if self._owns_segmenter:
                self.segmenter.close()

    def _close_sources(self) -> None:
        while self._owned:
            self._owned.pop().close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped without close() (a for loop left with break): release it, without
        # waiting for the worker, which may be the thread that dropped the last reference.
        if not getattr(self, "_closed", True) and hasattr(self, "_video"):
            self._release(wait=False)


def _weak(method: Callable, read: bool = False) -> Callable:
    """``method`` through a weak reference, so that the pipeline's threads never keep a dropped
    stream alive and ``__del__`` still releases a stream left without ``close()``. Once the
    stream is gone, a ``read`` returns None (the end) and a step raises ``ReferenceError``."""
    ref = weakref.WeakMethod(method)

    def call(*args):
        bound = ref()
        if bound is None:
            if read:
                return None
            raise ReferenceError("the stream was dropped")
        return bound(*args)

    return call


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (WARN, ERROR) for the duration: where our error says it better."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _warn_on_failure(kind: str, argument) -> Callable[[Future], None]:
    """A done-callback that warns when preparing a vocabulary or scene failed (the stream keeps the old one)."""

    def callback(future: Future) -> None:
        if not future.cancelled() and not isinstance(future.exception(), (CancelledError, type(None))):
            warnings.warn(f"{kind} {argument!r} could not be prepared, keeping the previous one: {future.exception()}")

    return callback
