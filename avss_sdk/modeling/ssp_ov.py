"""The SSP-OV model: the six stages of DESIGN.md wired together, its config and checkpoints.

:class:`SSPOV` composes the stage modules exactly as the runtime chains their engines:
``flow(prev, cur)``, ``image_encoder(cur)``, ``audio_encoder(log_mel)``,
``text_encoder(tokens)`` (once per vocabulary), ``vta(features, classes, scene)``,
``mask_decoder(aligned, dense, flow, audio, classes)``. The post-mask head is used in
training only.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avss_sdk.errors import AvssError
from avss_sdk.modeling.audio_encoder import AudioEncoder
from avss_sdk.modeling.flow import FlowEstimator
from avss_sdk.modeling.image_encoder import build_image_encoder
from avss_sdk.modeling.mask_decoder import DecoderOutput, MaskDecoder
from avss_sdk.modeling.post_mask import PostMaskHead
from avss_sdk.modeling.text_encoder import TextEncoder, create_open_clip
from avss_sdk.modeling.vta import VisualTextualAlignment
from avss_sdk.runtime.manifest import write_atomic

CHECKPOINT_FORMAT = "avss_sdk.ssp_ov"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "ssp_ov_default.pt"


@dataclass
class ModelConfig:
    """Everything that defines the architecture; stored in every checkpoint.

    The ``use_*`` switches are the ablations of the method's claims: flow pre-mask,
    scene prompt, category prompt (VTA), post-mask loss.
    """

    image_size: int = 192
    backbone: str = "efficientnet_lite0"  # or "open_clip": the image tower of ``text_model``
    pretrained_backbone: bool = True
    hidden_dim: int = 96
    audio_dim: int = 128
    text_model: str = "avss-text-tiny"  # any open_clip model name, e.g. "ViT-B-32"
    text_checkpoint: str | None = None  # a real CLIP checkpoint file for ``text_model``
    num_queries: int = 8
    decoder_layers: int = 2
    heads: int = 4
    flow_width: int = 32
    use_premask: bool = True
    use_scene_prompt: bool = True
    use_vta: bool = True
    use_post_mask: bool = True
    use_heard_gate: bool = False  # off for checkpoints made before it existed

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class ForwardOutput:
    flow: torch.Tensor
    decoder: DecoderOutput
    post_mask: torch.Tensor | None = field(default=None)


class SSPOV(nn.Module):
    """Stages of SSP-OV plus the training-only post-mask head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        clip = create_open_clip(config.text_model, config.text_checkpoint)
        visual = clip.visual if config.backbone == "open_clip" else None
        self.text_encoder = TextEncoder(clip, config.text_model)
        embed_dim = self.text_encoder.embed_dim
        self.flow = FlowEstimator(config.flow_width)
        self.image_encoder = build_image_encoder(config.backbone, config.hidden_dim, embed_dim,
                                                 config.pretrained_backbone, visual)
        self.audio_encoder = AudioEncoder(config.audio_dim)
        self.vta = VisualTextualAlignment(config.hidden_dim, embed_dim, config.heads, enabled=config.use_vta)
        self.mask_decoder = MaskDecoder(config.hidden_dim, embed_dim, config.audio_dim, config.num_queries,
                                        config.decoder_layers, config.heads, use_premask=config.use_premask,
                                        use_heard_gate=config.use_heard_gate)
        self.post_mask = PostMaskHead(config.hidden_dim) if config.use_post_mask else None

    def scene_embeddings(self, descriptions: list[str | None]) -> torch.Tensor:
        """[B, D] scene prompt embeddings; all "no scene text" when the scene prompt is switched off."""
        if not self.config.use_scene_prompt:
            descriptions = [None] * len(descriptions)
        return self.text_encoder.embed_scenes(descriptions)

    def forward(self, previous: torch.Tensor, current: torch.Tensor, log_mel: torch.Tensor,
                class_embeddings: torch.Tensor, scene_embedding: torch.Tensor) -> ForwardOutput:
        """previous/current [B,3,H,W] normalised frames, log_mel [B,96,64], class_embeddings [K,D], scene [B,D]."""
        flow = self.flow(previous, current)
        features, dense = self.image_encoder(current)
        audio = self.audio_encoder(log_mel)
        aligned = self.vta(features, class_embeddings, scene_embedding)
        decoded = self.mask_decoder.decode(aligned, dense, flow.detach(), audio, class_embeddings)
        post = self.post_mask(decoded.pixel_features) if self.post_mask is not None else None
        return ForwardOutput(flow, decoded, post)


class CheckpointError(AvssError, ValueError):
    """A file that is not an SSP-OV checkpoint, or one that does not match the model."""


def build_model(config: ModelConfig) -> SSPOV:
    return SSPOV(config)


def save_checkpoint(path: str | os.PathLike, model: SSPOV, extra: dict[str, Any] | None = None,
                    half: bool = False) -> None:
    """Write ``model`` (and ``extra``: optimizer, step, ...) atomically: temp file, fsync, rename."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "config": dataclasses.asdict(model.config), "model": state, **(extra or {})}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """"default" -> the shipped checkpoint; otherwise the path, which must exist."""
    resolved = DEFAULT_CHECKPOINT if str(path) == "default" else Path(path)
    if not resolved.is_file():
        hint = " (the package ships without its default model?)" if str(path) == "default" else ""
        raise FileNotFoundError(f"checkpoint not found: {resolved}{hint}")
    return resolved


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint file; a clear :class:`CheckpointError` for anything else."""
    path = resolve_checkpoint(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(f"{path} is not a readable checkpoint: not a torch.save archive")
    try:
        # weights_only: a checkpoint is data. Unpickling arbitrary objects would let a file run code.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path} holds Python objects beyond tensors and plain containers; it is refused "
                              f"unread because loading it could run code. Re-save it with only state dicts, "
                              f"numbers, strings, lists and dicts") from None
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an SSP-OV checkpoint (from another model or program?)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, "
                              f"this avss_sdk reads version {CHECKPOINT_VERSION}")
    model = payload.get("model")
    if not isinstance(payload.get("config"), dict) or not isinstance(model, dict) \
            or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{path} is damaged: it needs a 'config' mapping and a 'model' state dict of tensors")
    return payload


def load_model(path: str | os.PathLike, **overrides: Any) -> tuple[SSPOV, dict[str, Any]]:
    """(model in eval mode with the checkpoint's weights in float32, the checkpoint payload)."""
    payload = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict({**payload["config"], "pretrained_backbone": False, **overrides})
        model = build_model(config)
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: torch refused a size
        raise CheckpointError(f"{path} holds a model config this code cannot build: {error}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path} does not match its model config: missing {result.missing_keys[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")
    return model.eval(), payload
