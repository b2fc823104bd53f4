"""SSP's post-mask (training only): an auxiliary head that must reproduce the flow's motion mask.

It reads the audio-fused pixel features of the mask decoder, so the loss teaches those
features where things move; it is not exported and costs nothing at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avss_sdk.modeling.flow import motion_mask


class PostMaskHead(nn.Module):
    """forward(pixel_features [B,C,H,W]) -> motion-mask logits [B,1,H,W]."""

    def __init__(self, *, hidden_dim: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim // 2, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden_dim // 2, 1, 1))

    def forward(self, pixel_features: torch.Tensor) -> torch.Tensor:
        return self.head(pixel_features)


def post_mask_loss(logits: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """BCE between the head's logits [B,1,h,w] and the motion mask of flow [B,2,h,w] on the same grid."""
    return F.binary_cross_entropy_with_logits(logits, motion_mask(flow))
