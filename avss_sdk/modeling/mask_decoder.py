"""Stage ``mask_decoder``: audio-visual fusion, sound-source queries, flow-guided masks, open-vocabulary labels.

* Audio-visual fusion: the audio embedding modulates every pixel feature (FiLM).
* Universal sound-source localization (OV-AVSS): Q learned queries, each shifted by
  the audio embedding, find the objects that may be sounding; a class-agnostic
  *sounding score* per query says whether it is one.
* Flow pre-mask (SSP): a soft motion mask from the flow biases the queries' attention
  towards moving pixels (one learned strength per head) and is a feature channel.
* Open-vocabulary classification: each query's embedding and the dense embedding
  pooled under its mask are compared by cosine similarity with the K text embeddings,
  scaled by a learned temperature.
* Per-pixel labels: every pixel is softly assigned to one query or to a learned "no
  object" slot (softmax over Q + 1); a query spreads its sounding probability over
  the K classes. The K + 1 channels are log-probabilities that sum to one, with
  background first, so channel k + 1 is vocabulary word k and argmax is the label map.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from avss_sdk.modeling.attention import CrossAttention

PROBABILITY_FLOOR = 1e-6


class DecoderOutput(NamedTuple):
    pixel_logits: torch.Tensor  # [B, K+1, H, W] log-probabilities, background first
    masks: torch.Tensor  # [B, Q, H, W] per-query mask logits
    class_logits: torch.Tensor  # [B, Q, K] scaled cosine similarities
    sounding: torch.Tensor  # [B, Q] sounding-score logits
    pixel_features: torch.Tensor  # [B, C, H, W] audio-fused features (for the post-mask head)


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_cross, self.norm_self, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, dim, dim, heads)
        self.self_attention = CrossAttention(dim, dim, dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        queries = queries + self.cross(self.norm_cross(queries), pixels, bias)
        normed = self.norm_self(queries)
        queries = queries + self.self_attention(normed, normed)
        return queries + self.ffn(self.norm_ffn(queries))


def flow_premask(flow: torch.Tensor, threshold: float = 1.0, sharpness: float = 4.0) -> torch.Tensor:
    """SSP's pre-mask: a soft motion mask [B,1,H,W] from flow [B,2,H,W] (pixels moved > ``threshold``)."""
    return torch.sigmoid(sharpness * (flow.norm(dim=1, keepdim=True) - threshold))


class MaskDecoder(nn.Module):
    """forward(features, dense_embedding, flow, audio, class_embeddings) -> (pixel_logits, masks, class_logits, sounding)."""

    def __init__(self, hidden_dim: int, embed_dim: int, audio_dim: int, num_queries: int = 8, layers: int = 2,
                 heads: int = 4, use_premask: bool = True) -> None:
        super().__init__()
        self.use_premask = use_premask
        self.heads = heads
        self.film = nn.Linear(audio_dim, 2 * hidden_dim)
        self.premask_feature = nn.Conv2d(1, hidden_dim, 1)
        self.premask_strength = nn.Parameter(torch.full((heads,), 2.0))
        self.pixel_norm = nn.LayerNorm(hidden_dim)
        self.query_embed = nn.Parameter(torch.randn(num_queries, hidden_dim) * 0.02)
        self.audio_to_query = nn.Linear(audio_dim, hidden_dim)
        self.layers = nn.ModuleList(_DecoderLayer(hidden_dim, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, hidden_dim))
        self.sounding_head = nn.Linear(hidden_dim, 1)
        self.class_embed = nn.Linear(hidden_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.66))  # exp(2.66) ~ 14: a moderate start
        self.no_object_logit = nn.Parameter(torch.tensor(0.0))

    def forward(self, features: torch.Tensor, dense_embedding: torch.Tensor, flow: torch.Tensor,
                audio: torch.Tensor, class_embeddings: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.decode(features, dense_embedding, flow, audio, class_embeddings)
        return out.pixel_logits, out.masks, out.class_logits, out.sounding

    def decode(self, features: torch.Tensor, dense_embedding: torch.Tensor, flow: torch.Tensor,
               audio: torch.Tensor, class_embeddings: torch.Tensor) -> DecoderOutput:
        b, c, h, w = features.shape
        gamma, beta = self.film(audio)[:, :, None, None].chunk(2, dim=1)
        pixels = features * (1 + torch.tanh(gamma)) + beta
        bias = None
        if self.use_premask:
            premask = flow_premask(flow)
            pixels = pixels + self.premask_feature(premask)
            # Additive attention bias toward moving pixels, one learned strength per head.
            bias = (premask.flatten(2) - 0.5).unsqueeze(1) * self.premask_strength.view(1, -1, 1, 1)
        tokens = self.pixel_norm(pixels.flatten(2).transpose(1, 2))  # [B, HW, C]

        queries = self.query_embed.unsqueeze(0) + self.audio_to_query(audio).unsqueeze(1)
        for layer in self.layers:
            queries = layer(queries, tokens, bias)
        queries = self.out_norm(queries)

        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), pixels)
        sounding = self.sounding_head(queries).squeeze(-1)

        weights = torch.sigmoid(masks)
        pooled = torch.einsum("bqhw,bdhw->bqd", weights, dense_embedding) / (weights.sum((2, 3)).unsqueeze(-1) + 1e-6)
        query_vectors = F.normalize(F.normalize(self.class_embed(queries), dim=-1) + F.normalize(pooled, dim=-1), dim=-1)
        class_logits = self.logit_scale.exp() * query_vectors @ class_embeddings.t()

        slot_logits = torch.cat([masks, self.no_object_logit.expand(b, 1, h, w)], dim=1)
        assignment = torch.softmax(slot_logits, dim=1)[:, :-1]  # [B, Q, H, W]
        class_probs = torch.softmax(class_logits, dim=-1) * torch.sigmoid(sounding).unsqueeze(-1)  # [B, Q, K]
        object_probs = torch.einsum("bqk,bqhw->bkhw", class_probs, assignment)
        background = (1 - object_probs.sum(1, keepdim=True))
        probs = torch.cat([background, object_probs], dim=1).clamp_min(PROBABILITY_FLOOR)
        return DecoderOutput(probs.log(), masks, class_logits, sounding, pixels)
