"""avss-serve: the per-frame pipeline behind a real Triton Inference Server (through PyTriton).

    avss-serve --http-port 8000 --grpc-port 8001            # or: python -m avss_sdk.serve

Serves model ``avss_ssp_ov`` over Triton's HTTP and gRPC protocols. Every tensor has
Triton's leading batch dimension B (the model is batched); a request usually holds one
frame (B = 1), and B > 1 rows are consecutive frames of the request's stream:

inputs   ``image`` UINT8 [B, H, W, 3] (RGB, any size up to ``MAX_SIDE``), ``audio`` FP32 [B, N]
         (the 16 kHz mono window that ends at the frame), ``vocab`` BYTES [B, K] (UTF-8 words),
         ``scene`` BYTES [B, 1] (optional scene description)
outputs  ``labels`` INT32 [B, H, W] (0 background, k + 1 = vocab[k]); ``objects`` BYTES [B, 1]: the
         sounding objects, most confident first, as UTF-8 JSON ``[{"label", "class_index",
         "score", "box": [x0, y0, x1, y1] (inclusive)}]``; ``stream_frame`` INT32 [B, 1] (the
         frame's index in its server-side stream: 0 means no previous frame, zero flow);
         ``batched`` INT32 [B, 1] (how many frames the server ran in the batch this one was in)

The objects travel as one JSON string because PyTriton 0.7 cannot return a tensor with a
zero in its shape (its shared-memory copy fails), and most frames have a varying number
of objects, often none.

Streams: a request parameter ``stream`` (any string; ``RemoteSegmenter`` sends one) names
the client stream whose previous frame feeds the flow stage; a request without it is a
one-frame stream. Triton's own sequence id cannot be used through PyTriton 0.7: its
``ModelConfig`` has no sequence batcher (the config generator writes ``dynamic_batching``
or nothing), and its proxy hands the inference callable each request's inputs, parameters
and requested outputs only, not the correlation id (a ``sequence_id`` sent by a client is
accepted by Triton and never reaches the callable). A stream's state is dropped after
``--idle-timeout`` seconds without a frame (a client that dies leaks nothing).

Batching: Triton's dynamic batcher hands the callable up to ``--max-batch`` frames from
different streams at once (waiting up to ``--batch-delay-ms`` for more). With ONNX Runtime
and the learned flow, flow, image and audio encoders run once on the whole batch (their
batch axis is dynamic in the export) and VTA and mask decoder once per distinct vocabulary
in it (the class embeddings are shared by the batch); other backends (TensorRT engines are
built for batch 1) and DIS flow run the frames one after another. Two frames of one stream
in a batch run in order, one after the other.

Vocabularies are embedded once per distinct word list (and the text cache keeps every
prompt on disk), never per frame. Bad requests (a wrong dtype or shape, an empty
vocabulary, an oversize frame) get an error response; the server keeps serving. Triton
batches only requests of equal shapes with the same inputs, so a request refused for its
shape is never batched with good ones; one refused for its content (a blank word, audio that is not finite) fails
the requests batched with it too (PyTriton answers a batch with one error), with an error
that starts with ``BATCH_REFUSED`` and says so; ``RemoteSegmenter`` sends such a request again.

``--instances N`` runs N pipelines (each its own ONNX Runtime sessions) on the parts of each
batch, in threads of the one Triton model instance. Not N Triton model instances: with
PyTriton 0.7 every instance but the first reads its configuration from a socket the first
instance's Python backend stub opens, waiting 1 s at most (``get_config_from_handshake_server``
in ``pytriton/proxy/model.py``), while Triton starts the stubs in parallel; on a busy machine
the first stub takes longer and the model fails to load.

The Python backend stub inside the ``nvidia-pytriton`` 0.7 wheel misreads numpy 2 arrays
(inputs arrive as zeros, outputs with no data), so the server process needs numpy < 2;
see the README for the environment. Clients (``RemoteSegmenter``) work with any numpy.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.media import as_mono
from avss_sdk.preprocess import log_mel, normalize_image, resize_frame
from avss_sdk.runtime.backends import OnnxRuntimeBackend
from avss_sdk.segmenter import SceneEmbedding, Segmenter, Vocabulary, clean_vocabulary

MODEL_NAME = "avss_ssp_ov"
OUTPUTS = ("labels", "objects", "stream_frame", "batched")
MAX_SIDE = 4096  # frames with a side longer than this are refused
MAX_AUDIO_SAMPLES = 16000 * 10
VOCAB_CACHE_SIZE = 256  # distinct word lists kept embedded
MAX_STREAMS = 1024  # live client streams (each holds its previous frame, about 0.5 MB)
BATCH_REFUSED = "batch refused"  # starts the error of a batch failed by one bad request in it
DEFAULT_SERVE_ENV = Path.home() / ".cache" / "avss_sdk" / "serve-env"


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
    """Per-stream flow state, dropped after ``idle_timeout`` seconds without a frame."""

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


@dataclass
class _Frame:
    """One frame of a request, checked: what the pipeline runs, and where its answer goes."""

    image: np.ndarray
    audio: np.ndarray  # mono float32, 16 kHz
    vocabulary: Vocabulary
    scene: SceneEmbedding
    stream: object  # the stream id, or a fresh object for a one-frame stream
    state: _StreamState = field(default_factory=_StreamState)
    labels: np.ndarray | None = None
    objects: list = field(default_factory=list)
    index: int = 0


def _segment_batch(segmenter: Segmenter, frames: list[_Frame]) -> None:
    """Segmenter.segment for several frames at once (ONNX Runtime, learned flow): one run of each
    frame stage for the whole batch, one VTA and mask decoder run per distinct vocabulary."""
    run = segmenter.backend.run
    smalls = [resize_frame(f.image, segmenter.frame_size) for f in frames]
    current = np.concatenate([normalize_image(small)[None] for small in smalls])
    previous = np.concatenate([f.state.previous[0] if f.state.previous is not None else current[i:i + 1]
                               for i, f in enumerate(frames)])
    flow = run("flow", {"previous": previous, "current": current})["flow"]
    encoded = run("image_encoder", {"image": current})
    heard = run("audio_encoder", {"log_mel": np.stack([log_mel(f.audio) for f in frames])})["audio_embedding"]
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(id(f.vocabulary), []).append(i)
    for rows in groups.values():
        vocabulary = frames[rows[0]].vocabulary
        aligned = segmenter.align(encoded["mask_features"][rows], vocabulary,
                                  np.stack([frames[i].scene.embedding for i in rows]))
        pixel_logits = segmenter.decode(aligned, encoded["dense_embedding"][rows], flow[rows], heard[rows], vocabulary)
        for row, i in enumerate(rows):
            frames[i].labels, frames[i].objects = segmenter.label(pixel_logits[row], frames[i].image.shape[:2],
                                                                  vocabulary, smalls[i])
    for i, f in enumerate(frames):
        f.state.previous = (current[i:i + 1].copy(), smalls[i])


def _segment_each(segmenter: Segmenter, frames: list[_Frame]) -> None:
    """The frames one after another through ``Segmenter.segment`` (backends without a batch gain)."""
    for f in frames:
        segmenter.use(vocabulary=f.vocabulary, scene=f.scene)
        segmenter.previous = f.state.previous
        result = segmenter.segment(f.image, f.audio)
        f.labels, f.objects, f.state.previous = result.labels, result.objects, segmenter.previous


class FramePipeline:
    """The model's inference callable: checks a Triton batch of requests, then runs its frames on the
    instances' segmenters (each part of a batch on one of them, in parallel threads)."""

    def __init__(self, segmenters: Sequence[Segmenter], streams: StreamTable, vocabs: VocabTable) -> None:
        self.segmenters = list(segmenters)
        self.streams = streams
        self.vocabs = vocabs
        first = self.segmenters[0]
        self.batched = isinstance(first.backend, OnnxRuntimeBackend) and first.flow_mode == "model"
        self._pool = ThreadPoolExecutor(len(self.segmenters) - 1) if len(self.segmenters) > 1 else None
        self._lock = threading.Lock()

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        with self._lock:
            parsed, refused = [], []
            for request in requests:
                try:
                    parsed.append(self._parse(request))
                except BadRequest as error:
                    refused.append(error)
            if refused and len(requests) == 1:
                raise refused[0]
            if refused:
                raise BadRequest(f"{BATCH_REFUSED}: one of the {len(requests)} requests batched together is bad "
                                 f"({refused[0]}); none of them ran, so a good one may be sent again")
            frames = [f for request_frames in parsed for f in request_frames]
            for f in frames:
                if isinstance(f.stream, str):
                    f.state = self.streams.take(f.stream)
            self._run(frames)
            return [self._answer(request_frames, len(frames)) for request_frames in parsed]

    def _parse(self, request) -> list[_Frame]:
        """The request's frames, every check done before any stream state changes."""
        images, audio, vocab = (np.asarray(request[name]) for name in ("image", "audio", "vocab"))
        if images.ndim != 4 or images.shape[3] != 3 or min(images.shape[1:3]) < 1:
            raise BadRequest(f"image must be UINT8 [batch, H, W, 3], got {list(images.shape)}")
        if max(images.shape[1:3]) > MAX_SIDE:
            raise BadRequest(f"image {images.shape[2]}x{images.shape[1]} is too large (at most {MAX_SIDE} a side)")
        count = images.shape[0]
        if audio.ndim != 2 or audio.shape[0] != count or not 0 < audio.shape[1] <= MAX_AUDIO_SAMPLES:
            raise BadRequest(f"audio must be FP32 [batch, N] with 1 to {MAX_AUDIO_SAMPLES} samples, got "
                             f"{list(audio.shape)}")
        if vocab.ndim != 2 or vocab.shape[0] != count:
            raise BadRequest(f"vocab must be BYTES [batch, K], got {list(vocab.shape)}")
        scenes = np.asarray(request["scene"]).reshape(count, -1) if "scene" in request.data else None
        stream = (request.parameters or {}).get("stream")
        frames = []
        for row in range(count):
            try:
                words = tuple(clean_vocabulary(_words(vocab[row], "vocab"), self.segmenters[0].max_words))
                mono = as_mono(audio[row].astype(np.float32))
            except ValueError as error:  # BadRequest, VocabularyError, InputError: the message says why
                raise BadRequest(str(error)) from None
            scene_words = _words(scenes[row], "scene") if scenes is not None else []
            scene_text = scene_words[0] if scene_words else None
            first = self.segmenters[0]
            frames.append(_Frame(
                np.ascontiguousarray(images[row]), mono,
                self.vocabs.get(("vocab", words), lambda: first.prepare_vocab(list(words))),
                self.vocabs.get(("scene", scene_text), lambda: first.prepare_scene(scene_text)),
                str(stream) if stream is not None else object()))
        return frames

    def _run(self, frames: list[_Frame]) -> None:
        """Run the frames: in rounds where each stream has one frame (its frames in order), each round's
        frames grouped by vocabulary and split over the segmenters."""
        seen: dict[object, int] = {}
        rounds: list[list[_Frame]] = []
        for f in frames:
            k = seen[f.stream] = seen.get(f.stream, -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(f)
        segment = _segment_batch if self.batched else _segment_each
        for batch in rounds:
            batch.sort(key=lambda f: id(f.vocabulary))
            parts = [p for p in np.array_split(np.arange(len(batch)), len(self.segmenters)) if len(p)]
            jobs = [(segmenter, [batch[i] for i in part]) for segmenter, part in zip(self.segmenters, parts)]
            if self._pool is None or len(jobs) == 1:
                for segmenter, part in jobs:
                    segment(segmenter, part)
            else:
                futures = [self._pool.submit(segment, s, part) for s, part in jobs[1:]]
                segment(*jobs[0])
                for future in futures:
                    future.result()
            for f in batch:
                f.index, f.state.frames = f.state.frames, f.state.frames + 1
                f.state.last_seen = time.monotonic()  # idle time counts from the end of the last frame

    @staticmethod
    def _answer(frames: list[_Frame], batched: int) -> dict[str, np.ndarray]:
        objects = [json.dumps([{"label": o.label, "class_index": o.class_index, "score": o.score, "box": list(o.box)}
                               for o in f.objects]).encode("utf-8") for f in frames]
        return {
            "labels": np.stack([f.labels.astype(np.int32) for f in frames]),
            "objects": np.array(objects, dtype=np.bytes_).reshape(-1, 1),
            "stream_frame": np.array([[f.index] for f in frames], np.int32),
            "batched": np.full((len(frames), 1), batched, np.int32),
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


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
          host: str = "127.0.0.1", max_batch: int = 8, batch_delay_ms: float = 0.0,
          ready: Callable[[], None] | None = None, stop: threading.Event | None = None) -> None:
    """Run the server until ``stop`` is set, by default until SIGINT or SIGTERM (see :func:`stop_on_signals`).

    ``ready`` is called once it answers requests. A stop asked for while the model still loads
    takes effect once it has loaded, so Triton and its proxy processes always shut down in order.
    Serving from a thread other than the main one needs ``stop``: only the main thread gets signals."""
    _check_environment()
    _python_library_path()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(stop_on_signals())
        pipeline = FramePipeline(
            [Segmenter(engines, backend=backend, flow=flow, threads=threads) for _ in range(instances)],
            StreamTable(idle_timeout), VocabTable())
        stack.callback(pipeline.close)
        triton = stack.enter_context(Triton(config=TritonConfig(
            http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port, allow_metrics=False,
            exit_timeout_secs=5)))
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=pipeline,
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3)),
                    Tensor(name="audio", dtype=np.float32, shape=(-1,)),
                    Tensor(name="vocab", dtype=np.bytes_, shape=(-1,)),
                    Tensor(name="scene", dtype=np.bytes_, shape=(1,), optional=True)],
            outputs=[Tensor(name="labels", dtype=np.int32, shape=(-1, -1)),
                     Tensor(name="objects", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="stream_frame", dtype=np.int32, shape=(1,)),
                     Tensor(name="batched", dtype=np.int32, shape=(1,))],
            config=ModelConfig(batching=True, max_batch_size=max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=int(batch_delay_ms * 1000))),
            strict=True,
        )
        triton.run()
        if ready is not None:
            ready()
        while triton.is_alive() and not stop.wait(0.5):
            pass


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs; the previous handlers come back after.

    A flag instead of KeyboardInterrupt: an exception raised wherever the main thread happens to be
    (inside PyTriton loading the model, say) leaves its proxy processes half set up and the server
    hanging. A second signal still raises KeyboardInterrupt, to abandon a start that never ends."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    # SIGINT inherited ignored (a job started in the background by a shell) stays ignored, as Python leaves it.
    asked_for = [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) != signal.SIG_IGN]
    previous = {signum: signal.signal(signum, handle) for signum in asked_for}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def serve_python() -> Path:
    """The interpreter of the serving environment: ``$AVSS_SERVE_PYTHON``, else the one ``.ci/run`` creates."""
    return Path(os.environ.get("AVSS_SERVE_PYTHON", DEFAULT_SERVE_ENV / "bin" / "python"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """``avss-serve`` in a child process on free loopback ports, for scripts, tests and benchmarks.

        with ServerProcess("--max-batch", "4") as server:
            RemoteSegmenter(server.grpc_url, vocab=["dog"])

    ``python``: the serving environment's interpreter (default :func:`serve_python`); the child
    imports this same ``avss_sdk``. ``log``: where its output goes (default: discarded).
    Starting waits until the model is ready, or raises ``ServeError`` with the log's end.
    """

    def __init__(self, *options: str, python: str | Path | None = None, log: str | Path | None = None,
                 ready_timeout: float = 180.0) -> None:
        self.python = Path(python) if python is not None else serve_python()
        if not self.python.is_file():
            raise ServeError(f"no serving environment at {self.python} (PyTriton with numpy < 2): see the README's "
                             "'Serving', or set AVSS_SERVE_PYTHON")
        self.options, self.log, self.ready_timeout = list(options), log, ready_timeout
        self.http_port, self.grpc_port = free_port(), free_port()
        self.http_url, self.grpc_url = f"http://127.0.0.1:{self.http_port}", f"grpc://127.0.0.1:{self.grpc_port}"
        self.process: subprocess.Popen | None = None

    def _log_tail(self) -> str:
        return Path(self.log).read_text(errors="replace")[-3000:] if self.log else "(no log kept)"

    def start(self) -> "ServerProcess":
        import tritonclient.http

        package_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        with open(self.log or os.devnull, "wb") as out:
            self.process = subprocess.Popen(
                [str(self.python), "-m", "avss_sdk.serve", "--http-port", str(self.http_port),
                 "--grpc-port", str(self.grpc_port), *self.options],
                cwd=package_root, env=env, stdout=out, stderr=subprocess.STDOUT)
        client = tritonclient.http.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        deadline = time.monotonic() + self.ready_timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise ServeError(f"avss-serve exited with {self.process.returncode}:\n{self._log_tail()}")
                try:
                    if client.is_model_ready(MODEL_NAME):
                        return self
                except Exception:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServeError(f"avss-serve not ready in {self.ready_timeout:g} s:\n{self._log_tail()}")
                time.sleep(0.25)
        finally:
            client.close()

    def stop(self) -> None:
        """Terminate the server (it shuts Triton down) and wait for it; kill it if it hangs.

        SIGTERM, not SIGINT: a process started from a background job or a test worker inherits
        SIGINT ignored, and the server leaves it ignored (see :func:`stop_on_signals`)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avss-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--engines", help="export directory with manifest.json (default: the shipped model)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt or torch")
    parser.add_argument("--flow", default="model", choices=("model", "dis"))
    parser.add_argument("--instances", type=int, default=1,
                        help="pipelines that share each batch, run in parallel threads (default 1)")
    parser.add_argument("--max-batch", type=int, default=8, help="most frames Triton batches together (default 8)")
    parser.add_argument("--batch-delay-ms", type=float, default=0.0,
                        help="how long Triton may hold a request to batch it with later ones (default 0)")
    parser.add_argument("--threads", type=int, help="inference threads per instance")
    parser.add_argument("--idle-timeout", type=float, default=60.0, help="seconds before an idle stream's state is dropped")
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    if args.batch_delay_ms < 0:
        parser.error("--batch-delay-ms must be 0 or more")
    try:
        serve(args.http_port, args.grpc_port, args.engines, args.backend, args.flow, args.instances, args.threads,
              args.idle_timeout, args.host, args.max_batch, args.batch_delay_ms,
              ready=lambda: print(f"avss-serve: {MODEL_NAME} ready on http {args.host}:{args.http_port}, "
                                  f"grpc {args.host}:{args.grpc_port}", file=sys.stderr, flush=True))
    except AvssError as error:
        print(f"avss-serve: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avss-serve: stopped while starting", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
