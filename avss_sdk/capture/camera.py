"""A camera or video stream read by OpenCV in a background thread, keeping the newest frame."""

from __future__ import annotations

import collections
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import cv2

from avss_sdk.capture.base import CameraError, Frame


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
    starts over, so pass ``reconnect=False`` to end at its last frame. A camera that has sent
    no frame for ``frame_timeout`` seconds (since it opened, or since its last frame) makes
    ``read()`` raise ``CameraError`` too. ``timeout`` bounds opening and reading a URL.

    An index must be an int from 0 to 2**31 - 1 (OpenCV crashes the process on -1); a URL
    or path a non-empty string.
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
        frame_timeout: float = 10.0,
    ) -> None:
        check_camera(index_or_url)
        if not frame_timeout > 0:
            raise CameraError(f"frame_timeout must be positive, got {frame_timeout!r}")
        self.source = index_or_url
        self.frame_timeout = float(frame_timeout)
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
        self._last_frame = time.monotonic()  # when the newest frame (or the opening) happened
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
            self._last_frame = time.monotonic()
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet returned (the oldest queued one with ``every_frame``).

        Waits up to ``timeout`` seconds (None: until a frame comes) and raises
        ``TimeoutError`` if none came; returns None once the source has ended or was closed;
        raises ``CameraError`` if the camera was lost and could not be reopened, or has sent
        nothing for ``frame_timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._frames or self._ended):
                now = time.monotonic()
                stalled = self._last_frame + self.frame_timeout
                if now >= stalled:
                    raise CameraError(f"camera {self.source!r} delivered no frame in {self.frame_timeout:g} s")
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"camera {self.source!r} delivered no frame in {timeout} s")
                self._cond.wait(min(stalled, deadline if deadline is not None else stalled) - now)
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


def check_camera(index_or_url: object) -> None:
    """CameraError unless ``index_or_url`` is something OpenCV can be asked to open without crashing."""
    if isinstance(index_or_url, bool) or not isinstance(index_or_url, (int, str)) \
            or (isinstance(index_or_url, int) and not 0 <= index_or_url < 2**31) or index_or_url == "":
        raise CameraError(f"a camera is an index >= 0 or a URL, got {index_or_url!r}; "
                          f"available cameras: {available_cameras()}")


def available_cameras() -> str:
    """The camera indices present, for error messages (V4L2 device nodes; only Linux lists them)."""
    if not sys.platform.startswith("linux"):
        return "unknown on this platform"
    indices = sorted(int(p.name[5:]) for p in Path("/dev").glob("video*") if p.name[5:].isdigit())
    return ", ".join(map(str, indices)) if indices else "none"
