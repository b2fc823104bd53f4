"""An ordered chain of worker threads, so that the stages of consecutive frames overlap.

    pipeline = Pipeline(read, [front, middle, back])   # read() -> item, or None at the end
    for item in pipeline: ...                            # back(middle(front(read())))

``read`` and every step but the last run on their own thread each (``read`` on the first
step's); the last step runs in the consumer's thread, inside ``next()``. Each hand-over is
a queue of ``depth`` items, so while the consumer finishes frame t, the threads before it
work on frames t + 1, t + 2, ... and at most ``depth`` finished items wait per queue (a
camera that keeps only its newest frame is therefore read at most a few frames early).
Items leave in the order ``read`` produced them: every step is one thread, first in first
out. An exception in any thread ends the pipeline and is raised by ``next()``, after the
items produced before it. ``close()`` stops reading and joins every thread; a step in
progress finishes first.

Why threads: the stages are ONNX Runtime sessions, OpenCV and PyAV calls and numpy, which
all release the GIL, and one frame's stages alone do not keep a small CPU's cores busy.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.05
_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Pipeline(Generic[T]):
    """``read`` then ``steps`` over consecutive items, overlapped across threads; iterate for the results."""

    def __init__(self, read: Callable[[], T | None], steps: Sequence[Callable[[T], T]], depth: int = 1,
                 name: str = "avss-pipeline") -> None:
        if not steps:
            raise ValueError("a pipeline needs at least one step")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._stop = threading.Event()
        self._last = steps[-1]
        self._queues: list[queue.Queue] = [queue.Queue(depth) for _ in steps[:-1]] or [queue.Queue(depth)]
        self._done = False
        workers = [(self._first_worker, (read, steps[0] if len(steps) > 1 else None, self._queues[0]))]
        for i, step in enumerate(steps[1:-1]):
            workers.append((self._worker, (step, self._queues[i], self._queues[i + 1])))
        self._threads = [threading.Thread(target=target, args=args, name=f"{name}-{i}", daemon=True)
                         for i, (target, args) in enumerate(workers)]
        for thread in self._threads:
            thread.start()

    def _put(self, out: queue.Queue, item: object) -> bool:
        """Hand ``item`` on, waiting for room; False if the pipeline was closed meanwhile."""
        while not self._stop.is_set():
            try:
                out.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, source: queue.Queue) -> object:
        while not self._stop.is_set():
            try:
                return source.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return _END

    def _first_worker(self, read: Callable[[], T | None], step: Callable[[T], T] | None, out: queue.Queue) -> None:
        try:
            while not self._stop.is_set():
                item = read()
                if item is None:
                    break
                if not self._put(out, step(item) if step is not None else item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(out, _Failure(error))
            return
        self._put(out, _END)

    def _worker(self, step: Callable[[T], T], source: queue.Queue, out: queue.Queue) -> None:
        while (item := self._get(source)) is not _END:
            if not isinstance(item, _Failure):
                try:
                    item = step(item)
                except BaseException as error:
                    item = _Failure(error)
            if not self._put(out, item) or isinstance(item, _Failure):
                return
        self._put(out, _END)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._get(self._queues[-1])
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return self._last(item)

    def close(self) -> None:
        """Stop reading, let a step in progress finish, and join every thread (idempotent)."""
        self._stop.set()
        self._done = True
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
