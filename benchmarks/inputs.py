"""Random stage inputs of a model's size, shared by the stage benchmarks (export_ab, batch_stages)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from avss_sdk.segmenter import Segmenter

# Inputs every frame of a batch shares: the vocabulary's category embeddings [K, D].
SHARED_INPUTS = ("class_embeddings",)


def stage_inputs(segmenter: Segmenter, words: Sequence[str], batch: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """Inputs of ``batch`` random frames to every frame stage, each stage fed by ``segmenter``'s own earlier
    stages (VTA from the image encoder, the mask decoder from all of them), with ``words`` as vocabulary."""
    run, size = segmenter.backend.run, segmenter.frame_size
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    mel_shape = segmenter.manifest.stages["audio_encoder"].inputs[0].shape[1:]
    mel = rng.standard_normal((batch, *mel_shape)).astype(np.float32)
    embeddings = segmenter.prepare_vocab(words).embeddings
    inputs = {"flow": {"previous": image, "current": image[:, :, ::-1].copy()}, "image_encoder": {"image": image},
              "audio_encoder": {"log_mel": mel}}
    encoded = run("image_encoder", inputs["image_encoder"])
    inputs["vta"] = {"mask_features": encoded["mask_features"], "class_embeddings": embeddings,
                     "scene_embedding": np.repeat(segmenter.prepare_scene(None).embedding[None], batch, axis=0)}
    inputs["mask_decoder"] = {"aligned_features": run("vta", inputs["vta"])["aligned_features"],
                              "dense_embedding": encoded["dense_embedding"],
                              "flow": run("flow", inputs["flow"])["flow"],
                              "audio_embedding": run("audio_encoder", inputs["audio_encoder"])["audio_embedding"],
                              "class_embeddings": embeddings}
    return inputs


def frames(inputs: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    """A stage's ``inputs`` for the frames ``rows`` of their batch (shared inputs whole)."""
    return {name: value if name in SHARED_INPUTS else value[rows] for name, value in inputs.items()}
