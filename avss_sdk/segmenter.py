"""Single-frame segmentation on arrays: one RGB frame and its audio window in, a :class:`Result` out.

:class:`Segmenter` chains the stages of DESIGN.md on whichever backend runs here, reading
only the export's manifest (the package's default model when ``engines`` is None):

    flow(previous, current) | image_encoder(current) | audio_encoder(log_mel)
    -> vta(mask_features, class_embeddings, scene) -> mask_decoder(...) -> label map

Preprocessing (resize, normalisation, log-mel) and the label decision are the same
functions training and evaluation use (:mod:`avss_sdk.preprocess`, :mod:`avss_sdk.postprocess`).
Text goes through the text encoder only when the vocabulary or scene changes, and every
prompt embedding is cached in memory and on disk (:mod:`avss_sdk.runtime.text_cache`), so
:meth:`Segmenter.prepare_vocab` is slow only for words this model has never seen.

The only state between frames is the previous frame (for flow); :meth:`reset` forgets it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from avss_sdk.errors import ClosedError, InputError
from avss_sdk.media import SAMPLE_RATE, as_mono
from avss_sdk.postprocess import upsampled_label_map
from avss_sdk.preprocess import log_mel, normalize_image, resize_frame
from avss_sdk.result import Result, SoundingObject, sounding_objects
from avss_sdk.runtime.backends import log_to_stderr, make_backend
from avss_sdk.runtime.manifest import Manifest, ManifestError
from avss_sdk.runtime.text_cache import TextEmbeddingCache
from avss_sdk.tokenizer import ClipTokenizer
from avss_sdk.vocab import (MAX_WORD_CHARS, VocabularyError, category_prompts, clean_scene, clean_vocabulary,
                            scene_prompt)

__all__ = ["MAX_WORD_CHARS", "FrameState", "SceneEmbedding", "Segmenter", "Vocabulary", "VocabularyError", "clean_vocabulary",
           "dis_flow"]

DEFAULT_ENGINES = Path(__file__).resolve().parent / "models" / "default"
FLOW_MODES = ("model", "dis")
TEXT_BATCH = 64  # prompts per text-encoder call: bounded memory for a 1000-word vocabulary
# flow="dis": the cheapest preset. Finer presets come closer to the true flow at several times the
# cost, yet stay far from the learned stage on SynthAVS (benchmarks/results/flow-accuracy-cpu.md).
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST


def dis_flow(dis: "cv2.DISOpticalFlow", previous: np.ndarray, current: np.ndarray, stride: int) -> np.ndarray:
    """OpenCV DIS flow between two resized RGB frames, as the learned flow stage gives it: [1, 2, H/stride, W/stride].

    Backward flow on the current frame's grid (current(p) = previous(p + flow(p))), in input
    pixels, averaged down to the decoder's grid.
    """
    dense = dis.calc(cv2.cvtColor(current, cv2.COLOR_RGB2GRAY), cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY), None)
    grid = (current.shape[1] // stride, current.shape[0] // stride)
    return cv2.resize(dense, grid, interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None].astype(np.float32)


@dataclass(frozen=True)
class Vocabulary:
    """Words and their category embeddings [K, D] (prompt-ensemble means, L2-normalised)."""

    words: list[str]
    embeddings: np.ndarray


@dataclass(frozen=True)
class SceneEmbedding:
    """A scene description (None: no scene text) and its embedding [D]."""

    text: str | None
    embedding: np.ndarray


@dataclass
class FrameState:
    """One frame on its way through :meth:`Segmenter.prepare`, ``encode_image`` and ``finish``.

    ``timings`` gets milliseconds per stage; ``started`` is when ``prepare`` began (latency).
    """

    image: np.ndarray
    timestamp: float
    index: int
    small: np.ndarray | None = None  # the frame at the model's input size, RGB uint8 (the guided filter's guide)
    current: np.ndarray | None = None
    flow: np.ndarray | None = None
    audio_embedding: np.ndarray | None = None
    encoded: dict[str, np.ndarray] | None = None
    aligned: np.ndarray | None = None  # VTA's output, for aligned_for's vocabulary and scene
    aligned_for: tuple[Vocabulary, SceneEmbedding] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _clock: float = 0.0

    def __post_init__(self) -> None:
        self._clock = self.started

    def restart(self) -> None:
        """Start timing the next stage now (time spent waiting between threads is not a stage's)."""
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Record the milliseconds since the last lap (or restart) as ``stage``'s."""
        now = time.perf_counter()
        self.timings[stage] = (now - self._clock) * 1000.0
        self._clock = now


class Segmenter:
    """Segment single frames: ``segmenter.segment(rgb, audio)`` -> :class:`Result`.

    ``engines``: a directory with ``manifest.json`` from ``avss-build-engines`` (None:
    the package's default model). ``backend``: "auto", "tensorrt", "onnxruntime" or "torch".
    ``flow``: "model" (the learned flow stage) or "dis" (OpenCV DIS optical flow, cheaper on
    CPUs). ``cache_dir``: where text embeddings (and rebuilt engines) are cached. ``vocab``
    None leaves the words to :meth:`set_vocab`; an empty vocabulary is refused at once.
    ``verbose``: also say why ``auto`` skipped TensorRT on a machine without an NVIDIA GPU.
    ``precision``: the onnxruntime backend's ("auto": the INT8 stages the export accepted, on a
    CPU, else FP32; "fp32"; "fp16"; "int8").
    """

    def __init__(self, engines: str | Path | None = None, vocab: Sequence[str] | None = None,
                 scene: str | None = None, backend: str = "auto", flow: str = "model",
                 cache_dir: str | Path | None = None, threads: int | None = None,
                 log: Callable[[str], None] = log_to_stderr, verbose: bool = False,
                 precision: str = "auto") -> None:
        if flow not in FLOW_MODES:
            raise InputError(f"flow must be one of {FLOW_MODES}, got {flow!r}")
        words = clean_vocabulary(vocab) if vocab is not None else None  # before the model loads: fail fast
        scene = clean_scene(scene)
        self._closed = threading.Event()
        self.manifest = Manifest.load(engines if engines is not None else DEFAULT_ENGINES)
        self.manifest.check_stages()
        text = self.manifest.text
        self.tokenizer = ClipTokenizer.from_file(self.manifest.path(text.tokenizer))
        if self.tokenizer.context_length != text.context_length:
            raise ManifestError(f"{self.manifest.path(text.tokenizer)} makes {self.tokenizer.context_length} tokens, "
                                f"the manifest's text encoder takes {text.context_length}")
        self.backend = make_backend(self.manifest, backend, cache_dir, threads, log, verbose, precision)
        self.backend_name = self.backend.name
        self.flow_mode = flow
        self.frame_size = self.manifest.preprocess.image_size
        self.threshold = self.manifest.postprocess.foreground_threshold
        self.guided = self.manifest.postprocess.guided
        self.max_words = self.backend.max_vocab
        self.text_cache = TextEmbeddingCache(self.manifest.model_hash, text.embed_dim, cache_dir, log=log)
        self._no_scene = np.asarray(text.no_scene_embedding, np.float32)
        self._text_lock = threading.Lock()  # one text-encoder call at a time (TensorRT contexts are not shared)
        self._previous: np.ndarray | None = None
        self._dis = None
        self._vocabulary: Vocabulary | None = None
        self._scene = self.prepare_scene(scene)
        if words is not None:
            self.set_vocab(words)

    @property
    def vocab(self) -> list[str]:
        return list(self._vocabulary.words) if self._vocabulary else []

    @property
    def scene(self) -> str | None:
        return self._scene.text

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ClosedError("this Segmenter is closed; make a new one")

    def _encode_text(self, prompts: list[str], cancel: threading.Event | None = None) -> np.ndarray:
        """Text embeddings, TEXT_BATCH prompts per call; CancelledError between calls once ``cancel`` is set."""
        chunks = []
        for start in range(0, len(prompts), TEXT_BATCH):
            if (cancel is not None and cancel.is_set()) or self._closed.is_set():
                raise CancelledError("preparing the vocabulary was cancelled")
            tokens = self.tokenizer(prompts[start:start + TEXT_BATCH])
            with self._text_lock:
                self._check_open()
                chunks.append(self.backend.run("text_encoder", {"token_ids": tokens})["text_embedding"])
        return np.concatenate(chunks).astype(np.float32)

    def prepare_vocab(self, words: Sequence[str], cancel: threading.Event | None = None) -> Vocabulary:
        """Embed a vocabulary (thread-safe; only prompts never cached run the text encoder).

        Setting ``cancel`` (or closing the segmenter) stops the work between text-encoder
        calls with ``concurrent.futures.CancelledError``.
        """
        self._check_open()
        words = clean_vocabulary(words, self.max_words)
        templates = self.manifest.text.category_templates
        prompts = [prompt for word in words for prompt in category_prompts(word, templates)]
        vectors = self.text_cache.embed(prompts, lambda new: self._encode_text(new, cancel))
        mean = vectors.reshape(len(words), len(templates), -1).mean(axis=1)
        return Vocabulary(list(words), (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32))

    def prepare_scene(self, text: str | None, cancel: threading.Event | None = None) -> SceneEmbedding:
        """Embed a scene description (None or blank: the model's learned "no scene text" embedding)."""
        self._check_open()
        text = clean_scene(text)
        if text is None:
            return SceneEmbedding(None, self._no_scene)
        prompt = scene_prompt(text, self.manifest.text.scene_template)
        return SceneEmbedding(text, self.text_cache.embed([prompt], lambda new: self._encode_text(new, cancel))[0])

    def use(self, vocabulary: Vocabulary | None = None, scene: SceneEmbedding | None = None) -> None:
        """Switch to a prepared vocabulary and/or scene (O(1); takes effect at the next frame)."""
        if vocabulary is not None:
            self._vocabulary = vocabulary
        if scene is not None:
            self._scene = scene

    def set_vocab(self, words: Sequence[str]) -> None:
        self.use(vocabulary=self.prepare_vocab(words))

    def set_scene(self, text: str | None) -> None:
        self.use(scene=self.prepare_scene(text))

    def reset(self) -> None:
        """Forget the previous frame (a new source starts): the next frame's flow is zero."""
        self._previous = None

    @property
    def previous(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The flow reference (previous frame's model input, resized RGB); a server swaps it per stream."""
        return self._previous

    @previous.setter
    def previous(self, state: tuple[np.ndarray, np.ndarray] | None) -> None:
        self._previous = state

    def _flow(self, previous: np.ndarray, current: np.ndarray, small: np.ndarray,
              previous_small: np.ndarray) -> np.ndarray:
        if self.flow_mode == "model":
            return self.backend.run("flow", {"previous": previous, "current": current})["flow"]
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(DIS_PRESET)
        return dis_flow(self._dis, previous_small, small, self.manifest.preprocess.flow_stride)

    def prepare(self, image: np.ndarray, audio: np.ndarray, timestamp: float = 0.0, index: int = 0,
                sample_rate: int = SAMPLE_RATE) -> FrameState:
        """First part of :meth:`segment`: input checks, preprocessing, flow and the audio encoder.

        Call it in frame order (flow pairs each frame with the one prepared before it).
        """
        self._check_open()
        if self._vocabulary is None:
            raise VocabularyError("no vocabulary set: pass vocab=[...] or call set_vocab([...]) first")
        try:
            image = np.ascontiguousarray(image)
        except (TypeError, ValueError) as error:
            raise InputError(f"expected an RGB uint8 frame [H, W, 3]: {error}") from None
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise InputError(f"expected an RGB uint8 frame [H, W, 3] with H, W >= 1, got {image.dtype} {image.shape}")
        mono = as_mono(audio, sample_rate)
        state = FrameState(image, timestamp, index)
        small = state.small = resize_frame(image, self.frame_size)
        state.current = normalize_image(small)[None]
        mel = log_mel(mono)[None]
        previous, previous_small = self._previous if self._previous is not None else (state.current, small)
        self._previous = (state.current, small)
        state.lap("preprocess")
        state.flow = self._flow(previous, state.current, small, previous_small)
        state.lap("flow")
        state.audio_embedding = self.backend.run("audio_encoder", {"log_mel": mel})["audio_embedding"]
        state.lap("audio_encoder")
        return state

    def encode_image(self, state: FrameState) -> FrameState:
        """Second part of :meth:`segment`: the image encoder (independent of the previous frame), then VTA
        with the vocabulary and scene in use now (``finish`` runs VTA again if they change before it)."""
        self._check_open()
        state.restart()
        state.encoded = self.backend.run("image_encoder", {"image": state.current})
        state.lap("image_encoder")
        self._align(state)
        return state

    def _align(self, state: FrameState) -> None:
        vocabulary, scene = self._vocabulary, self._scene
        state.aligned = self.align(state.encoded["mask_features"], vocabulary, scene.embedding[None])
        state.aligned_for = (vocabulary, scene)
        state.lap("vta")

    def finish(self, state: FrameState) -> Result:
        """Last part of :meth:`segment`: the mask decoder and labels, with the vocabulary in use now."""
        self._check_open()
        vocabulary = self._vocabulary
        state.restart()
        used = state.aligned_for
        if used is None or used[0] is not vocabulary or used[1] is not self._scene:
            self._align(state)  # the words or the scene changed since encode_image
        pixel_logits = self.decode(state.aligned, state.encoded["dense_embedding"], state.flow,
                                   state.audio_embedding, vocabulary)
        state.lap("mask_decoder")
        labels, objects = self.label(pixel_logits[0], state.image.shape[:2], vocabulary, state.small)
        state.lap("postprocess")
        timings = state.timings
        timings["total"] = sum(timings.values())
        timings["latency"] = (time.perf_counter() - state.started) * 1000.0
        return Result(state.image, state.timestamp, labels, list(vocabulary.words), objects, timings, state.index)

    def align(self, mask_features: np.ndarray, vocabulary: Vocabulary, scene_embeddings: np.ndarray) -> np.ndarray:
        """VTA for a batch of frames that share ``vocabulary``: aligned features from the image encoder's
        mask features [B, ...] and one scene embedding per frame [B, D]."""
        return self.backend.run("vta", {"mask_features": mask_features, "class_embeddings": vocabulary.embeddings,
                                        "scene_embedding": scene_embeddings})["aligned_features"]

    def decode(self, aligned: np.ndarray, dense_embedding: np.ndarray, flow: np.ndarray, audio_embedding: np.ndarray,
               vocabulary: Vocabulary) -> np.ndarray:
        """The mask decoder for a batch of frames that share ``vocabulary`` (batch B of every input, ``aligned``
        from :meth:`align`): pixel log-probabilities [B, K + 1, h, w]. The server batches frames of several
        streams through :meth:`align` and this; :meth:`finish` passes one frame."""
        return self.backend.run("mask_decoder", {
            "aligned_features": aligned, "dense_embedding": dense_embedding, "flow": flow,
            "audio_embedding": audio_embedding, "class_embeddings": vocabulary.embeddings})["pixel_logits"]

    def label(self, pixel_logits: np.ndarray, shape: tuple[int, int], vocabulary: Vocabulary,
              small: np.ndarray) -> tuple[np.ndarray, list[SoundingObject]]:
        """One frame's label map at ``shape`` (H, W) and its sounding objects, from its pixel
        log-probabilities [K + 1, h, w] and the frame at the model's input size ``small`` (the
        same decision evaluation makes, at this export's threshold and guided filter)."""
        labels, log_background = upsampled_label_map(pixel_logits, shape, self.threshold, guide=small,
                                                     guided=self.guided)
        return labels, sounding_objects(labels, log_background, vocabulary.words)

    def segment(self, image: np.ndarray, audio: np.ndarray, timestamp: float = 0.0, index: int = 0,
                sample_rate: int = SAMPLE_RATE) -> Result:
        """Segment one RGB uint8 frame [H, W, 3] with the audio window that ends at it.

        ``audio``: what :func:`avss_sdk.media.as_mono` takes (float in [-1, 1] or int16/int32
        PCM; mono, [N, C] or [C, N]) at ``sample_rate``. Bad input is an ``InputError``
        (a ``ValueError``) saying what was expected. The same as
        ``finish(encode_image(prepare(...)))``; ``Stream`` runs those three on different
        threads so that consecutive frames overlap.
        """
        return self.finish(self.encode_image(self.prepare(image, audio, timestamp, index, sample_rate)))

    def close(self) -> None:
        """Release the backend (idempotent); a text-encoder call in progress finishes first."""
        self._closed.set()
        with self._text_lock:
            self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
