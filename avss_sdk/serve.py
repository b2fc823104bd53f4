"""avss-serve: the per-frame pipeline behind a real Triton Inference Server (through PyTriton).

    avss-serve --http-port 8000 --grpc-port 8001            # or: python -m avss_sdk.serve

Serves model ``avss_ssp_ov`` over Triton's HTTP and gRPC protocols:

inputs   ``image`` UINT8 [H, W, 3] (RGB, any size up to ``MAX_SIDE``), ``audio`` FP32 [N] (the
         16 kHz mono window that ends at the frame), ``vocab`` BYTES [K] (UTF-8 words),
         ``scene`` BYTES [1] (optional scene description)
outputs  ``labels`` INT32 [H, W] (0 background, k + 1 = vocab[k]); ``objects`` BYTES [1]: the
         sounding objects, most confident first, as UTF-8 JSON ``[{"label", "class_index",
         "score", "box": [x0, y0, x1, y1] (inclusive)}]``; ``stream_frame`` INT32 [1] (this
         frame's index in its server-side stream: 0 means no previous frame, zero flow)

The objects travel as one JSON string because PyTriton 0.7 cannot return a tensor with a
zero in its shape (its shared-memory copy fails), and most frames have a varying number
of objects, often none.

Streams: a request parameter ``stream`` (any string; ``RemoteSegmenter`` sends one) names
the client stream whose previous frame feeds the flow stage; a request without it is a
one-frame stream. PyTriton hands the inference callable the request's parameters but not
Triton's sequence id (its proxy forwards inputs and parameters only), so the stream id
travels as a parameter. A stream's state is dropped after ``--idle-timeout`` seconds
without a frame (a client that dies leaks nothing).

Vocabularies are embedded once per distinct word list (and the text cache keeps every
prompt on disk), never per frame. Bad requests (a wrong dtype or shape, an empty
vocabulary, an oversize frame) get an error response; the server keeps serving.

Each ``--instances`` is one Triton model instance with its own pipeline (its own ONNX
Runtime sessions); Triton runs instances concurrently. Dynamic batching is not configured:
a batched request would need a batch dimension in the protocol, frames of different sizes
or vocabularies cannot share a batch, and PyTriton answers a failed batch with one error
for every request in it, so one bad client would fail the others.

The Python backend stub inside the ``nvidia-pytriton`` 0.7 wheel misreads numpy 2 arrays
(inputs arrive as zeros, outputs with no data), so the server process needs numpy < 2;
see the README for the environment. Clients (``RemoteSegmenter``) work with any numpy.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.segmenter import Segmenter, clean_vocabulary

MODEL_NAME = "avss_ssp_ov"
MAX_SIDE = 4096  # frames with a side longer than this are refused
MAX_AUDIO_SAMPLES = 16000 * 10
VOCAB_CACHE_SIZE = 256  # distinct word lists kept embedded
MAX_STREAMS = 1024  # live client streams (each holds its previous frame, about 0.5 MB)


class ServeError(AvssError, RuntimeError):
    """The server cannot start here (missing PyTriton, numpy 2 in the server process)."""


class BadRequest(AvssError, ValueError):
    """A request the pipeline cannot run: its message is what the client sees."""


@dataclass
class _StreamState:
    previous: tuple | None = None
    frames: int = 0
    last_seen: float = 0.0


class StreamTable:
    """Per-stream flow state shared by all instances, dropped after ``idle_timeout`` seconds."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self._states: dict[str, _StreamState] = {}
        self._lock = threading.Lock()

    def take(self, stream: str) -> _StreamState:
        """The stream's state (a new one if unknown or expired); drops every idle stream first."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, s in self._states.items() if now - s.last_seen > self.idle_timeout]:
                del self._states[key]
            if stream not in self._states and len(self._states) >= MAX_STREAMS:
                raise BadRequest(f"{MAX_STREAMS} streams are live: try again when one has been idle for "
                                 f"{self.idle_timeout:g} s")
            state = self._states.setdefault(stream, _StreamState())
            state.last_seen = now
            return state


class VocabTable:
    """Embedded vocabularies and scenes by their words: each distinct one goes through the text encoder once."""

    def __init__(self, size: int = VOCAB_CACHE_SIZE) -> None:
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key: tuple, prepare: Callable[[], object]) -> object:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = prepare()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def _words(array: np.ndarray, name: str) -> list[str]:
    try:
        return [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in np.asarray(array).reshape(-1)]
    except UnicodeDecodeError:
        raise BadRequest(f"{name} must be UTF-8 text") from None


class FramePipeline:
    """One model instance's inference callable: a ``Segmenter`` whose flow reference is swapped per stream."""

    def __init__(self, segmenter: Segmenter, streams: StreamTable, vocabs: VocabTable) -> None:
        self.segmenter = segmenter
        self.streams = streams
        self.vocabs = vocabs
        self._lock = threading.Lock()

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        with self._lock:
            return [self._one(request) for request in requests]

    def _one(self, request) -> dict[str, np.ndarray]:
        image, audio = request["image"], np.asarray(request["audio"], np.float32).reshape(-1)
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise BadRequest(f"image must be UINT8 [H, W, 3], got {list(image.shape)}")
        if max(image.shape[:2]) > MAX_SIDE:
            raise BadRequest(f"image {image.shape[1]}x{image.shape[0]} is too large (at most {MAX_SIDE} a side)")
        if not 0 < audio.size <= MAX_AUDIO_SAMPLES:
            raise BadRequest(f"audio must hold 1 to {MAX_AUDIO_SAMPLES} samples, got {audio.size}")
        try:
            words = tuple(clean_vocabulary(_words(request["vocab"], "vocab"), self.segmenter.max_words))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        scene_words = _words(request["scene"], "scene") if "scene" in request.data else []
        scene_text = scene_words[0] if scene_words else None
        vocabulary = self.vocabs.get(("vocab", words), lambda: self.segmenter.prepare_vocab(list(words)))
        scene = self.vocabs.get(("scene", scene_text), lambda: self.segmenter.prepare_scene(scene_text))

        parameters = request.parameters or {}
        stream = parameters.get("stream")
        state = self.streams.take(str(stream)) if stream is not None else _StreamState()
        self.segmenter.use(vocabulary=vocabulary, scene=scene)
        self.segmenter.previous = state.previous
        result = self.segmenter.segment(np.ascontiguousarray(image), audio)
        state.previous, frame = self.segmenter.previous, state.frames
        state.frames += 1
        state.last_seen = time.monotonic()  # idle time counts from the end of the last frame
        objects = [{"label": o.label, "class_index": o.class_index, "score": o.score, "box": list(o.box)}
                   for o in result.objects]
        return {
            "labels": result.labels.astype(np.int32),
            "objects": np.array([json.dumps(objects).encode("utf-8")], dtype=np.bytes_),
            "stream_frame": np.array([frame], np.int32),
        }


def _check_environment() -> None:
    """Fail early, in one line, where the Triton Python backend cannot work."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise ServeError(
            f"the server process needs numpy < 2 (this one has {np.__version__}): the Triton Python "
            "backend stub in nvidia-pytriton 0.7 misreads numpy 2 arrays; see the README's 'Serving' section")
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise ServeError("PyTriton is not installed: pip install 'avss_sdk[serve]' (see the README's 'Serving')") from None


def _python_library_path() -> None:
    """Let the Python backend stub load this interpreter's libpython (not a system one) so it sees our packages."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def serve(http_port: int = 8000, grpc_port: int = 8001, engines: str | Path | None = None, backend: str = "auto",
          flow: str = "model", instances: int = 1, threads: int | None = None, idle_timeout: float = 60.0,
          host: str = "127.0.0.1", ready: Callable[[], None] | None = None) -> None:
    """Run the server until interrupted (SIGINT or SIGTERM). ``ready`` is called once it answers requests."""
    _check_environment()
    _python_library_path()
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    streams, vocabs = StreamTable(idle_timeout), VocabTable()
    pipelines = [FramePipeline(Segmenter(engines, backend=backend, flow=flow, threads=threads), streams, vocabs)
                 for _ in range(instances)]
    config = TritonConfig(http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
                          allow_metrics=False, exit_timeout_secs=5)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=pipelines,
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3)),
                    Tensor(name="audio", dtype=np.float32, shape=(-1,)),
                    Tensor(name="vocab", dtype=np.bytes_, shape=(-1,)),
                    Tensor(name="scene", dtype=np.bytes_, shape=(1,), optional=True)],
            outputs=[Tensor(name="labels", dtype=np.int32, shape=(-1, -1)),
                     Tensor(name="objects", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="stream_frame", dtype=np.int32, shape=(1,))],
            config=ModelConfig(batching=False),
            strict=True,
        )
        triton.run()
        if ready is not None:
            ready()
        try:
            while triton.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avss-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--engines", help="export directory with manifest.json (default: the shipped model)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt or torch")
    parser.add_argument("--flow", default="model", choices=("model", "dis"))
    parser.add_argument("--instances", type=int, default=1, help="model instances run concurrently (default 1)")
    parser.add_argument("--threads", type=int, help="inference threads per instance")
    parser.add_argument("--idle-timeout", type=float, default=60.0, help="seconds before an idle stream's state is dropped")
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated server shuts Triton down too
    try:
        serve(args.http_port, args.grpc_port, args.engines, args.backend, args.flow, args.instances, args.threads,
              args.idle_timeout, args.host,
              ready=lambda: print(f"avss-serve: {MODEL_NAME} ready on http {args.host}:{args.http_port}, "
                                  f"grpc {args.host}:{args.grpc_port}", file=sys.stderr, flush=True))
    except AvssError as error:
        print(f"avss-serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
