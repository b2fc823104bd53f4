"""Stage ``vta``: SSP's visual-textual alignment.

Every pixel token of the mask features cross-attends to the prompt embeddings (the K
category embeddings and the scene embedding) and adds what it read back, so the
features the mask decoder sees already know which of the user's words each pixel looks
like. K is free: the same weights serve any vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from avss_sdk.modeling.attention import CrossAttention


class VisualTextualAlignment(nn.Module):
    """forward(mask_features [B,C,H,W], class_embeddings [K,D], scene_embedding [B,D]) -> [B,C,H,W].

    With ``enabled=False`` (the "no category prompt" ablation) it returns the features
    unchanged; the scene embedding alone is then ignored too.
    """

    def __init__(self, *, hidden_dim: int, embed_dim: int, heads: int = 4, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.norm = nn.LayerNorm(hidden_dim)
        self.attention = CrossAttention(hidden_dim, embed_dim, hidden_dim, heads)
        self.ffn = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(),
                                 nn.Linear(2 * hidden_dim, hidden_dim))

    def forward(self, mask_features: torch.Tensor, class_embeddings: torch.Tensor,
                scene_embedding: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return mask_features
        b, c, h, w = mask_features.shape
        pixels = mask_features.flatten(2).transpose(1, 2)  # [B, HW, C]
        prompts = torch.cat([class_embeddings.unsqueeze(0).expand(b, -1, -1), scene_embedding.unsqueeze(1)], dim=1)
        pixels = pixels + self.attention(self.norm(pixels), prompts)
        pixels = pixels + self.ffn(pixels)
        return pixels.transpose(1, 2).reshape(b, c, h, w)
