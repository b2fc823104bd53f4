"""The one cross-attention function of the model, and how it is exported.

Every cross-attention in ``avss_sdk.modeling`` (pixels -> prompt tokens in ``vta``,
queries -> pixels in ``mask_decoder``) calls :func:`fused_cross_attention`. That makes
it the single place where the custom CUDA kernel replaces the reference math at export:

* by default it is plain torch and exports as scaled Q -> MatMul -> Softmax -> MatMul,
  a pattern TensorRT fuses by itself (and the only option on TensorRT < 10.9);
* inside ``with export_as_plugin():`` it calls the custom op
  ``avss::fused_cross_attention``, which :func:`onnx_translation_table` turns into one
  ONNX node ``avss::FusedCrossAttention`` bound to the TensorRT plugin in
  ``avss_sdk/runtime/tensorrt_plugin.py``.

Mask convention (identical in the numpy reference, the CUDA kernel and the plugin):

* ``mask`` is *additive* and floating point, added to the scaled scores before the
  softmax: 0 keeps a key, ``-inf`` removes it, other values bias it. It broadcasts to
  [B, H, Lq, Lk] with the usual rules: every dimension is either full or 1, and a
  lower-rank mask is aligned to the right ([Lk], [Lq, Lk], [B, 1, 1, Lk], ...).
* Only ``-inf`` counts as "masked out". A query row whose keys are all ``-inf``
  produces an all-zero output row (not NaN, not a uniform average). A large finite
  negative value such as -1e4 is just a bias: a row of those is a uniform average.
* A boolean key-padding mask ``[B, Lk]`` (True = padding) becomes an additive mask
  with :func:`key_padding_to_additive`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch

_PLUGIN_MODE = False


def key_padding_to_additive(key_padding_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, Lk] boolean padding mask (True = masked out) -> additive [B, 1, 1, Lk] mask."""
    zeros = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    return zeros.masked_fill(key_padding_mask.bool(), float("-inf"))[:, None, None, :]


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               scale: float) -> torch.Tensor:
    scores = torch.matmul(q * scale, k.transpose(-2, -1))
    if mask is None:
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    # Rows whose keys are all -inf: zero their mask so the softmax stays finite, then
    # zero their output. Softmax and the second MatMul stay adjacent for TensorRT.
    keep = (mask > float("-inf")).any(dim=-1, keepdim=True)
    safe_mask = torch.where(keep, mask, torch.zeros_like(mask))
    out = torch.matmul(torch.softmax(scores + safe_mask, dim=-1), v)
    return out * keep.to(out.dtype)


@torch.library.custom_op("avss::fused_cross_attention", mutates_args=())
def _fused_cross_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                              scale: float, has_mask: bool) -> torch.Tensor:
    """The plugin-mode op: same math; mask is always a rank-4 tensor, ignored if not has_mask."""
    return _reference(q, k, v, mask if has_mask else None, scale).contiguous()


@_fused_cross_attention_op.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
      has_mask: bool) -> torch.Tensor:
    return torch.empty_like(q)


def fused_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v, all-masked rows -> 0.

    q [B, H, Lq, D]; k, v [B, H, Lk, D]; mask additive, broadcastable to [B, H, Lq, Lk]
    (see the module docstring); scale defaults to 1 / sqrt(D). Returns [B, H, Lq, D].
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be [B, H, L, D]")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if mask is not None:
        if not mask.is_floating_point():
            raise TypeError("mask must be an additive float mask; convert a boolean "
                            "key-padding mask with key_padding_to_additive()")
        if mask.dim() > 4:
            raise ValueError(f"mask has rank {mask.dim()}, expected at most 4")
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).to(q.dtype)
    if not _PLUGIN_MODE:
        return _reference(q, k, v, mask, scale)
    has_mask = mask is not None
    if mask is None:
        mask = torch.zeros((1, 1, 1, 1), dtype=q.dtype, device=q.device)
    return _fused_cross_attention_op(q, k, v, mask, scale, has_mask)


@contextlib.contextmanager
def export_as_plugin() -> Iterator[None]:
    """Route :func:`fused_cross_attention` through ``avss::fused_cross_attention``.

    Use it around ``torch.onnx.export(..., dynamo=True,
    custom_translation_table=onnx_translation_table())`` to emit one
    ``avss::FusedCrossAttention`` node per attention.
    """
    global _PLUGIN_MODE
    previous, _PLUGIN_MODE = _PLUGIN_MODE, True
    try:
        yield
    finally:
        _PLUGIN_MODE = previous


ONNX_DOMAIN = "avss"
ONNX_OP = "FusedCrossAttention"


def _onnx_schema():
    """ONNX schema of avss::FusedCrossAttention, which onnxscript needs to emit the node."""
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    attr = OpSchema.Attribute
    return OpSchema(
        ONNX_OP, ONNX_DOMAIN, 1,
        doc="softmax(scale * q k^T + mask) v; all-masked rows -> 0 (avss_sdk.modeling.attention)",
        inputs=[param("q", "T"), param("k", "T"), param("v", "T"), param("mask", "T")],
        outputs=[param("out", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "q, k, v, mask and out")],
        attributes=[
            attr("scale", OpSchema.AttrType.FLOAT, "multiplies q k^T"),
            attr("has_mask", OpSchema.AttrType.INT, "0: the mask input is a placeholder"),
            attr("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace"),
            attr("plugin_version", OpSchema.AttrType.STRING, "TensorRT plugin version"),
        ],
    )


def onnx_translation_table() -> dict[Callable, Callable]:
    """``custom_translation_table`` for torch.onnx.export(dynamo=True) in plugin mode.

    The node ``avss::FusedCrossAttention(q, k, v, mask)`` carries ``scale`` (float),
    ``has_mask`` (int) and the ``plugin_namespace`` / ``plugin_version`` attributes that
    TensorRT's ONNX parser uses to find the plugin ``avss::FusedCrossAttention``.
    """
    import onnxscript

    node = onnxscript.values.Op(onnxscript.values.Opset(ONNX_DOMAIN, 1), ONNX_OP, _onnx_schema())

    def translate(q, k, v, mask, scale: float, has_mask: bool):
        return node(q, k, v, mask, scale=float(scale), has_mask=int(has_mask),
                    plugin_namespace=ONNX_DOMAIN, plugin_version="1")

    return {torch.ops.avss.fused_cross_attention.default: translate}


class CrossAttention(torch.nn.Module):
    """Multi-head attention of ``query`` tokens to ``source`` tokens through :func:`fused_cross_attention`.

    forward(query [B, Lq, Cq], source [B, Lk, Ck], mask additive [B, heads or 1, Lq or 1, Lk] | None)
    -> [B, Lq, dim]. Self-attention is the case source = query.
    """

    def __init__(self, query_dim: int, source_dim: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = torch.nn.Linear(query_dim, dim)
        self.kv = torch.nn.Linear(source_dim, 2 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, lq, _ = query.shape
        q = self.q(query).view(b, lq, self.heads, -1).transpose(1, 2)
        kv = self.kv(source).view(b, source.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = fused_cross_attention(q, kv[0], kv[1], mask)
        return self.out(out.transpose(1, 2).reshape(b, lq, -1))
