"""Stage ``audio_encoder``: a log-mel window -> one audio embedding.

The log-mel itself is computed by :func:`avss_sdk.preprocess.log_mel` (numpy, outside
the engine: TensorRT 10.3 has no STFT), so this stage is a plain CNN that every runtime
builds. A small VGGish-shaped stack of 3x3 convolutions and pooling, then a projection
of the whole remaining time x frequency grid: the embedding knows not only what is
heard but *when* in the window, so a sound that stopped half a second before the frame
is not mistaken for one that sounds now (labels are per frame timestamp).
"""

from __future__ import annotations

import torch
from torch import nn

from avss_sdk.preprocess import MEL_BANDS, MEL_FRAMES


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class AudioEncoder(nn.Module):
    """forward(log_mel [B, 96, 64]) -> audio embedding [B, dim]."""

    def __init__(self, *, dim: int, width: int = 32) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(1)
        self.features = nn.Sequential(_block(1, width), _block(width, 2 * width), _block(2 * width, 4 * width),
                                      _block(4 * width, 4 * width))
        grid = (MEL_FRAMES // 16) * (MEL_BANDS // 16)
        self.project = nn.Sequential(nn.Linear(4 * width * grid, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.input_shape = (MEL_FRAMES, MEL_BANDS)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = self.features(self.norm(log_mel.unsqueeze(1)))  # [B, C, T/16, F/16]
        return self.project(x.flatten(1))
