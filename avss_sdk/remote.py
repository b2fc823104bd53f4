"""RemoteSegmenter: the ``Segmenter`` API answered by an ``avss-serve`` Triton server.

    segmenter = RemoteSegmenter("grpc://127.0.0.1:8001", vocab=["dog", "guitar"])
    result = segmenter.segment(rgb, audio)            # the same Result as Segmenter.segment
    Stream(camera=0, vocab=[...], server="http://127.0.0.1:8000")   # the same, for a stream

Each ``RemoteSegmenter`` is one client stream: its frames carry a stream id (a request
parameter, see :mod:`avss_sdk.serve`) so the server keeps its previous frame for the flow
stage; ``reset()`` starts a new stream. A request the server refused only because a bad
request of another client was batched with it is sent once more. URLs are ``http://host:port`` or
``grpc://host:port`` (no scheme: HTTP). Needs ``tritonclient`` (``pip install
'avss_sdk[client]'``), which works with numpy 1 and 2.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
import weakref
from typing import Sequence

import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.result import Result, SoundingObject
from avss_sdk.segmenter import VocabularyError, clean_vocabulary
from avss_sdk.serve import BATCH_REFUSED, MODEL_NAME, OUTPUTS

_PROBE_FRAME = np.zeros((8, 8, 3), np.uint8)  # what prepare_vocab sends so the server embeds new words early
_PROBE_AUDIO = np.zeros(160, np.float32)


class ServerError(AvssError, RuntimeError):
    """The server refused a request or could not be reached; the message is the server's reason."""


def _reason(error: Exception) -> str:
    """The one line of a Triton error that says why: our ``BadRequest`` text, else the last exception line."""
    text = str(error)
    found = re.findall(r"(?:BadRequest|VocabularyError|ValueError): ([^\n]+)", text)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if re.match(r"\s*\w+(Error|Exception): ", line)]
    return lines[-1] if lines else text.splitlines()[0] if text else type(error).__name__


class RemoteSegmenter:
    """Segment frames on an ``avss-serve`` server: ``segment(rgb, audio)`` -> :class:`Result`.

    ``url``: ``http://host:port`` or ``grpc://host:port``. ``vocab`` / ``scene`` as for
    ``Segmenter``. ``timeout``: seconds a request may take (network and inference).
    """

    max_words = None  # the server checks the vocabulary size against its engines

    def __init__(self, url: str, vocab: Sequence[str] = (), scene: str | None = None, timeout: float = 30.0) -> None:
        scheme, _, address = url.rpartition("://")
        scheme = scheme or "http"
        if scheme not in ("http", "grpc") or not address:
            raise ValueError(f"server URL must be http://host:port or grpc://host:port, got {url!r}")
        try:
            if scheme == "grpc":
                import tritonclient.grpc as client
            else:
                import tritonclient.http as client
        except ImportError:
            raise ServerError("RemoteSegmenter needs tritonclient: pip install 'avss_sdk[client]'") from None
        self.url = f"{scheme}://{address}"
        self.backend_name = f"triton {self.url}"
        self._client_module = client
        self._timeout = timeout
        self._address = address
        self._local = threading.local()  # over HTTP one client per thread: a gevent connection cannot switch threads
        self._clients: weakref.WeakSet = weakref.WeakSet()  # every live one, for close()
        self._shared = client.InferenceServerClient(address) if scheme == "grpc" else None  # gRPC: one for all threads
        if self._shared is not None:
            self._clients.add(self._shared)
        self._words: list[str] = []
        self._scene = ""
        self._stream = uuid.uuid4().hex
        self.last_batch = 0  # frames the server ran in one batch with the last one segmented
        if scene is not None:
            self.set_scene(scene)
        if vocab:
            self.set_vocab(vocab)

    @property
    def vocab(self) -> list[str]:
        return list(self._words)

    @property
    def scene(self) -> str | None:
        return self._scene or None

    def _infer(self, image: np.ndarray, audio: np.ndarray, words: Sequence[str], scene: str,
               parameters: dict | None) -> dict[str, np.ndarray]:
        """One frame as a batch of one; the outputs of that one frame."""
        client = self._client_module
        tensors = [("image", image[None], "UINT8"), ("audio", audio[None], "FP32"),
                   ("vocab", np.array([[w.encode("utf-8") for w in words]], dtype=np.object_), "BYTES")]
        if scene:
            tensors.append(("scene", np.array([[scene.encode("utf-8")]], dtype=np.object_), "BYTES"))
        inputs = []
        for name, array, dtype in tensors:
            tensor = client.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [client.InferRequestedOutput(name) for name in OUTPUTS]
        kwargs = {"client_timeout": self._timeout} if client.__name__.endswith("grpc") else {}
        retried = False
        while True:
            try:
                response = self._client().infer(MODEL_NAME, inputs, outputs=outputs, parameters=parameters, **kwargs)
            except Exception as error:  # tritonclient raises its own exception types per protocol
                reason = _reason(error)
                if retried or not reason.startswith(BATCH_REFUSED):
                    raise ServerError(f"{self.url}: {reason}") from None
                retried = True  # another client's bad request was batched with this one: it did not run
                continue
            return {name: response.as_numpy(name)[0] for name in OUTPUTS}

    def _client(self):
        """The client for this thread: the shared one over gRPC, its own over HTTP (geventhttpclient)."""
        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client_module.InferenceServerClient(
                self._address, network_timeout=self._timeout)
            self._clients.add(client)
        return client

    def prepare_vocab(self, words: Sequence[str], cancel: threading.Event | None = None) -> list[str]:
        """Check the words and have the server embed them now (one tiny frame), so the switch does not stall.

        ``cancel`` (as :meth:`Segmenter.prepare_vocab`'s) is accepted; the one request is not cut short.
        """
        words = clean_vocabulary(words)
        self._infer(_PROBE_FRAME, _PROBE_AUDIO, words, self._scene, None)
        return words

    def prepare_scene(self, text: str | None, cancel: threading.Event | None = None) -> str:
        """Check a scene description; "" stands for none (so ``use(scene=...)`` can switch it off).

        ``cancel`` is accepted as :meth:`Segmenter.prepare_scene` takes it (nothing here to cut short).
        """
        if text is not None and not isinstance(text, str):
            raise VocabularyError(f"scene must be a string or None, got {type(text).__name__}")
        return " ".join(text.split()) if text else ""

    def use(self, vocabulary: Sequence[str] | None = None, scene: str | None = None) -> None:
        """Switch to prepared words and/or scene (takes effect at the next frame)."""
        if vocabulary is not None:
            self._words = list(vocabulary)
        if scene is not None:
            self._scene = scene

    def set_vocab(self, words: Sequence[str]) -> None:
        self.use(vocabulary=self.prepare_vocab(words))

    def set_scene(self, text: str | None) -> None:
        self._scene = self.prepare_scene(text)

    def reset(self) -> None:
        """Start a new stream on the server: the next frame has no previous frame (zero flow)."""
        self._stream = uuid.uuid4().hex

    def segment(self, image: np.ndarray, audio: np.ndarray, timestamp: float = 0.0, index: int = 0) -> Result:
        """Segment one RGB uint8 frame [H, W, 3] with the 16 kHz mono audio window that ends at it."""
        words = self._words
        if not words:
            raise VocabularyError("no vocabulary set: pass vocab=[...] or call set_vocab([...]) first")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {image.dtype} {image.shape}")
        start = time.perf_counter()
        out = self._infer(np.ascontiguousarray(image), np.asarray(audio, np.float32).reshape(-1), words,
                          self._scene, {"stream": self._stream})
        labels, self.last_batch = out["labels"], int(out["batched"][0])
        objects = [SoundingObject(o["label"], int(o["class_index"]), float(o["score"]),
                                  labels == o["class_index"] + 1, tuple(int(v) for v in o["box"]))
                   for o in json.loads(bytes(out["objects"][0]).decode("utf-8"))]
        timings = {"total": (time.perf_counter() - start) * 1000.0}
        return Result(image, timestamp, labels, list(words), objects, timings, index)

    def close(self) -> None:
        """Close the connections (the server drops this stream's state after its idle timeout)."""
        for client in list(self._clients):
            client.close()
        self._local = threading.local()

    def __enter__(self) -> "RemoteSegmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_streams(url: str, vocabularies: Sequence[Sequence[str]], frames: Sequence[tuple[np.ndarray, np.ndarray]],
                warm_up: bool = False, timeout: float = 300.0) -> list[list[tuple[Result, float, int]]]:
    """Concurrent client streams, as live clients: one ``RemoteSegmenter`` per vocabulary, each in its
    own thread sending ``frames`` ((image, audio) pairs) in order, each waiting for its answer.

    All streams start together (after connecting and, with ``warm_up``, one frame each that is then
    forgotten with ``reset()``). Returns, per stream, (result, seconds from send to answer, frames
    the server ran in that batch) per frame. The first error of any stream is raised.
    """
    out: list[list] = [[] for _ in vocabularies]
    errors: list[Exception] = []
    start = threading.Barrier(len(vocabularies))

    def stream(k: int) -> None:
        try:
            with RemoteSegmenter(url, vocab=vocabularies[k], timeout=timeout) as remote:
                if warm_up:
                    remote.segment(*frames[0])
                    remote.reset()
                start.wait(timeout=timeout)
                for image, audio in frames:
                    began = time.perf_counter()
                    result = remote.segment(image, audio)
                    out[k].append((result, time.perf_counter() - began, remote.last_batch))
        except Exception as error:  # reported in the caller's thread
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(len(vocabularies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if errors:
        raise (real or errors)[0]
    return out
