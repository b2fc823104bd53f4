"""The SSP-OV model: the six stages of DESIGN.md wired together, and its config.

:class:`SSPOV` composes the stage modules exactly as the runtime chains their engines:
``flow(prev, cur)``, ``image_encoder(cur)``, ``audio_encoder(log_mel)``,
``text_encoder(tokens)`` (once per vocabulary), ``vta(features, classes, scene)``,
``mask_decoder(aligned, dense, flow, audio, classes)``. The post-mask head is used in
training only. Building a model and reading and writing checkpoints is
:mod:`avss_sdk.modeling.checkpoint`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from avss_sdk.modeling.audio_encoder import AudioEncoder
from avss_sdk.modeling.flow import FlowEstimator
from avss_sdk.modeling.image_encoder import build_image_encoder
from avss_sdk.modeling.mask_decoder import DecoderOutput, MaskDecoder
from avss_sdk.modeling.post_mask import PostMaskHead
from avss_sdk.modeling.text_encoder import TextEncoder, create_open_clip
from avss_sdk.modeling.vta import VisualTextualAlignment
from avss_sdk.vocab import CATEGORY_TEMPLATES, SCENE_TEMPLATE


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

    def __init__(self, config: ModelConfig, *, category_templates: Sequence[str] = CATEGORY_TEMPLATES,
                 scene_template: str = SCENE_TEMPLATE) -> None:
        super().__init__()
        self.config = config
        clip = create_open_clip(config.text_model, config.text_checkpoint)
        visual = clip.visual if config.backbone == "open_clip" else None
        self.text_encoder = TextEncoder(clip=clip, model_name=config.text_model,
                                        category_templates=category_templates, scene_template=scene_template)
        embed_dim = self.text_encoder.embed_dim
        self.flow = FlowEstimator(width=config.flow_width)
        self.image_encoder = build_image_encoder(backbone=config.backbone, hidden_dim=config.hidden_dim,
                                                 embed_dim=embed_dim, pretrained=config.pretrained_backbone,
                                                 open_clip_visual=visual)
        self.audio_encoder = AudioEncoder(dim=config.audio_dim)
        self.vta = VisualTextualAlignment(hidden_dim=config.hidden_dim, embed_dim=embed_dim, heads=config.heads,
                                          enabled=config.use_vta)
        self.mask_decoder = MaskDecoder(hidden_dim=config.hidden_dim, embed_dim=embed_dim, audio_dim=config.audio_dim,
                                        num_queries=config.num_queries, layers=config.decoder_layers,
                                        heads=config.heads, use_premask=config.use_premask,
                                        use_heard_gate=config.use_heard_gate)
        self.post_mask = PostMaskHead(hidden_dim=config.hidden_dim) if config.use_post_mask else None

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
