"""Stage ``mask_decoder``: audio-visual fusion, sound-source queries, flow-guided masks, open-vocabulary labels.

* Audio-visual fusion: the audio embedding modulates every pixel feature (FiLM), and
  its projection into the text space gives a per-pixel correspondence map (cosine
  with the dense embedding): what is heard, where it is seen.
* Universal sound-source localization (OV-AVSS): Q learned queries, each shifted by
  the audio embedding, find the objects that may be sounding; a class-agnostic
  *sounding score* per query says whether it is one.
* Flow pre-mask (SSP): a soft motion mask from the flow biases the queries' attention
  towards moving pixels (one learned strength per head) and is a feature channel.
* Open-vocabulary classification: each query's embedding and the dense embedding
  pooled under its mask are compared by cosine similarity with the K text embeddings,
  scaled by a learned temperature.
* Heard words: the audio, mapped into the text space, scores each of the K words as
  sounding now or not (:func:`heard_logits`, trained multi-label by the audio-text
  loss). With ``use_heard_gate`` a pixel's foreground logit adds the heard score of
  the word it looks like: a silent object whose word is not heard is pushed to the
  background, several sounding classes at once each keep their own evidence (one
  "heard" vector's cosine alone blurs a mixture).
* Per-pixel labels: every pixel is softly assigned to one query or to a learned "no
  object" slot (softmax over Q + 1). Its foreground logit is a dense head plus the
  sounding logits of its queries (plus the heard gate); its word logits are the dense embedding's scaled
  cosine similarity to the K text embeddings plus its queries' class logits. The K + 1
  output channels are log-probabilities, log P(bg) and log P(fg) + log P(word | fg),
  background first (see :mod:`avss_sdk.postprocess` for the label decision).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from avss_sdk.modeling.attention import CrossAttention

class DecoderOutput(NamedTuple):
    pixel_logits: torch.Tensor  # [B, K+1, H, W] log-probabilities, background first
    masks: torch.Tensor  # [B, Q, H, W] per-query mask logits
    class_logits: torch.Tensor  # [B, Q, K] scaled cosine similarities
    sounding: torch.Tensor  # [B, Q] sounding-score logits
    pixel_features: torch.Tensor  # [B, C, H, W] audio-fused features (for the post-mask head)
    audio_embedding: torch.Tensor  # [B, D] the audio mapped into the text space (unit length)


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_cross, self.norm_self, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, dim, dim, heads)
        self.self_attention = CrossAttention(dim, dim, dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, queries: torch.Tensor, position: torch.Tensor, pixels: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        # DETR-style: the learned query position joins every attention, so queries stay distinct.
        queries = queries + self.cross(self.norm_cross(queries) + position, pixels, bias)
        normed = self.norm_self(queries) + position
        queries = queries + self.self_attention(normed, normed)
        return queries + self.ffn(self.norm_ffn(queries))


HEARD_SCALE = 10.0  # heard logits span [-10, 0] .. [0, 10]: cosine 0.5 is the "heard" boundary


def heard_logits(heard: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """[B, K] logits of "word k sounds now" from the unit audio embedding [B, D] and unit word embeddings [K, D]."""
    return HEARD_SCALE * (heard @ class_embeddings.t()) - HEARD_SCALE / 2


def flow_premask(flow: torch.Tensor, threshold: float = 1.0, sharpness: float = 4.0) -> torch.Tensor:
    """SSP's pre-mask: a soft motion mask [B,1,H,W] from flow [B,2,H,W] (pixels moved > ``threshold``)."""
    return torch.sigmoid(sharpness * (flow.norm(dim=1, keepdim=True) - threshold))


class MaskDecoder(nn.Module):
    """forward(features, dense_embedding, flow, audio, class_embeddings) -> (pixel_logits, masks, class_logits, sounding)."""

    def __init__(self, *, hidden_dim: int, embed_dim: int, audio_dim: int, num_queries: int = 8, layers: int = 2,
                 heads: int = 4, use_premask: bool = True,
                 use_heard_gate: bool = False) -> None:
        super().__init__()
        self.use_premask = use_premask
        self.heard_weight = nn.Parameter(torch.tensor(0.5)) if use_heard_gate else None
        self.heads = heads
        self.film = nn.Linear(audio_dim, 2 * hidden_dim)
        self.audio_to_text = nn.Linear(audio_dim, embed_dim)
        self.correspondence_feature = nn.Conv2d(1, hidden_dim, 1)
        self.correspondence_weight = nn.Parameter(torch.tensor(5.0))
        self.premask_feature = nn.Conv2d(1, hidden_dim, 1)
        self.premask_strength = nn.Parameter(torch.full((heads,), 2.0))
        self.pixel_norm = nn.LayerNorm(hidden_dim)
        self.query_embed = nn.Parameter(torch.randn(num_queries, hidden_dim))
        self.query_position = nn.Parameter(torch.randn(num_queries, hidden_dim))
        self.audio_to_query = nn.Linear(audio_dim, hidden_dim)
        self.layers = nn.ModuleList(_DecoderLayer(hidden_dim, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, hidden_dim))
        self.sounding_head = nn.Linear(hidden_dim, 1)
        self.class_embed = nn.Linear(hidden_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.66))  # exp(2.66) ~ 14: a moderate start
        self.no_object_logit = nn.Parameter(torch.tensor(0.0))
        self.foreground_head = nn.Conv2d(hidden_dim, 1, 1)

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
        # Sums over channels, queries or words are batched matmuls on maps flattened to [B, C, H*W]
        # (to_grid unflattens them), not einsum: ONNX Runtime's Einsum transposes its operands, and
        # with seven einsums the exported decoder ran 1.5x as long on a CPU
        # (benchmarks/results/export-ab-decoder-matmul-cpu.md).
        def to_grid(flat: torch.Tensor) -> torch.Tensor:
            return flat.unflatten(2, (h, w))

        # Audio-visual correspondence: how much each pixel's text-space embedding looks like
        # what is heard (the audio mapped into the same space).
        heard = F.normalize(self.audio_to_text(audio), dim=-1)
        dense_unit = F.normalize(dense_embedding, dim=1).flatten(2)  # [B, D, H*W]
        correspondence = to_grid(heard.unsqueeze(1) @ dense_unit)
        pixels = pixels + self.correspondence_feature(correspondence)
        bias = None
        if self.use_premask:
            premask = flow_premask(flow)
            pixels = pixels + self.premask_feature(premask)
            # Additive attention bias toward moving pixels, one learned strength per head.
            bias = (premask.flatten(2) - 0.5).unsqueeze(1) * self.premask_strength.view(1, -1, 1, 1)
        tokens = self.pixel_norm(pixels.flatten(2).transpose(1, 2))  # [B, HW, C]

        queries = self.query_embed.unsqueeze(0) + self.audio_to_query(audio).unsqueeze(1)
        position = self.query_position.unsqueeze(0)
        for layer in self.layers:
            queries = layer(queries, position, tokens, bias)
        queries = self.out_norm(queries)

        masks = to_grid(self.mask_embed(queries) @ pixels.flatten(2))
        sounding = self.sounding_head(queries).squeeze(-1)

        weights = torch.sigmoid(masks)
        pooled = (weights.flatten(2) @ dense_embedding.flatten(2).transpose(1, 2)
                  / (weights.sum((2, 3)).unsqueeze(-1) + 1e-6))
        query_vectors = F.normalize(F.normalize(self.class_embed(queries), dim=-1) + F.normalize(pooled, dim=-1), dim=-1)
        class_logits = self.logit_scale.exp() * query_vectors @ class_embeddings.t()

        slot_logits = torch.cat([masks, self.no_object_logit.expand(b, 1, h, w)], dim=1)
        assignment = torch.softmax(slot_logits, dim=1)[:, :-1]  # [B, Q, H, W]
        # Per pixel: "is a sounding object here" (a dense head plus the sounding score of the
        # queries the pixel belongs to) and "which word" (the dense embedding's similarity to
        # the text plus the class scores of those queries), combined as P(bg), P(fg) P(k | fg).
        foreground = (self.foreground_head(pixels) + self.correspondence_weight * correspondence
                      + to_grid(sounding.unsqueeze(1) @ assignment.flatten(2)))
        dense_logits = self.logit_scale.exp() * to_grid(class_embeddings @ dense_unit)
        word_logits = dense_logits + to_grid(class_logits.transpose(1, 2) @ assignment.flatten(2))
        if self.heard_weight is not None:
            # The heard score of the word each pixel looks like (expected over its word distribution).
            word_probabilities = torch.softmax(word_logits, dim=1).flatten(2)
            heard_here = heard_logits(heard, class_embeddings).unsqueeze(1) @ word_probabilities
            foreground = foreground + self.heard_weight * to_grid(heard_here)
        pixel_logits = torch.cat([F.logsigmoid(-foreground),
                                  F.logsigmoid(foreground) + torch.log_softmax(word_logits, dim=1)], dim=1)
        return DecoderOutput(pixel_logits, masks, class_logits, sounding, pixels, heard)
