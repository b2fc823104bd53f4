"""Stage ``flow``: previous and current RGB frame -> optical flow at 1/8 resolution.

A small FlowNetS-style network (both frames stacked, strided convolutions, a
correlation-free regression head): cheap enough to run every frame at the edge, and
what SSP needs is *where things move* (the pre-mask), not sub-pixel accuracy. The flow
is backward flow on the current frame's grid, in pixels of the input image: pixel p of
the current frame came from p + flow(p) in the previous one (SynthAVS's ``flow_bwd``).
It is supervised with SynthAVS's exact flow, and :func:`photometric_loss` lets it learn
on real video without ground truth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FLOW_STRIDE = 8


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True))


class FlowEstimator(nn.Module):
    """forward(previous [B,3,H,W], current [B,3,H,W]) -> flow [B,2,H/8,W/8] in input pixels."""

    def __init__(self, *, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            _conv(6, width, 2), _conv(width, width),
            _conv(width, 2 * width, 2), _conv(2 * width, 2 * width),
            _conv(2 * width, 3 * width, 2),
        )
        self.context = nn.Sequential(
            _conv(3 * width, 3 * width, dilation=2), _conv(3 * width, 3 * width, dilation=4),
            _conv(3 * width, 2 * width),
        )
        self.head = nn.Conv2d(2 * width, 2, 3, padding=1)

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        x = self.encoder(torch.cat([previous, current], dim=1))
        return self.head(self.context(x)) * FLOW_STRIDE


def motion_mask(flow: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Binary motion mask [B,1,h,w] of a flow field: moved by more than ``threshold`` pixels."""
    return (flow.norm(dim=1, keepdim=True) > threshold).to(flow.dtype)


def downsample_flow(flow: torch.Tensor, stride: int = FLOW_STRIDE) -> torch.Tensor:
    """Full-resolution flow [B,2,H,W] -> [B,2,H/stride,W/stride] (area average; still in input pixels)."""
    return F.avg_pool2d(flow, stride)


def flow_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean end-point error against ground-truth flow at the prediction's resolution (see downsample_flow)."""
    return (predicted - target).norm(dim=1).mean()


def photometric_loss(previous: torch.Tensor, current: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Self-supervision for real video: warp ``previous`` by the upsampled flow and compare with ``current``.

    Charbonnier penalty on the warped difference plus a first-order smoothness term.
    """
    b, _, h, w = current.shape
    up = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    grid_x = (xs + up[:, 0]) / (w - 1) * 2 - 1
    grid_y = (ys + up[:, 1]) / (h - 1) * 2 - 1
    warped = F.grid_sample(previous, torch.stack([grid_x, grid_y], dim=-1), align_corners=True)
    data = torch.sqrt((warped - current) ** 2 + 1e-6).mean()
    smooth = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()
    return data + 0.1 * smooth / FLOW_STRIDE
