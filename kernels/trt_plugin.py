"""TensorRT plugin ``avss::FusedCrossAttention`` for the ONNX node of the same name.

The export (``avss_sdk.modeling.attention`` in plugin mode) writes one node per
attention: domain ``avss``, op ``FusedCrossAttention``, inputs (q, k, v, mask), output
out, attributes ``scale`` (float) and ``has_mask`` (int; 0 = the mask input is a [1, 1,
1, 1] placeholder). This module binds it to a ``tensorrt.plugin`` (QDP) definition with
an ahead-of-time implementation: the engine embeds the compute_75 PTX from
``kernels/build.py`` and launches ``fca_trt_<f16|f32>_d<D>`` itself, so it runs without
Python. Semantics are those of :mod:`kernels.reference` (additive mask broadcast as
[B or 1, H or 1, Lq or 1, Lk or 1], all-masked rows -> 0).

AOT plugins need TensorRT >= 10.9; older ones (10.3 on JetPack 6) get the plain
MatMul/Softmax/MatMul export instead: :func:`plugin_supported` is what the export asks.
Limits of the AOT path: there is no workspace, so keys are never split across blocks;
attributes are not serialized, so ``scale`` travels as an int32 kernel argument holding
its float32 bits; the head dimension must be a build-time constant (32, 64 or 128).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from kernels.launcher import HEAD_DIMS, THREADS, rows_per_block

PLUGIN_ID = "avss::FusedCrossAttention"
MIN_TENSORRT = (10, 9)
DEFAULT_PTX = Path(__file__).resolve().parent / "build" / "fused_cross_attention.ptx"

_registered = False


def parse_version(version: str) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0, 34); trailing non-numeric parts ('10.3.0.post1') ignored."""
    parts = []
    for piece in version.strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    if not parts:
        raise ValueError(f"not a version: {version!r}")
    return tuple(parts)


def plugin_supported(trt_version: str | None) -> bool:
    """Whether TensorRT ``trt_version`` can run the AOT plugin (None: not installed)."""
    if not trt_version:
        return False
    try:
        return parse_version(trt_version)[:2] >= MIN_TENSORRT
    except ValueError:
        return False


def tensorrt_version() -> str | None:
    """Version of the importable ``tensorrt``, or None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)


def float_bits(x: float) -> int:
    """The float32 bit pattern of ``x`` as a signed int32 (how ``scale`` reaches the kernel)."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


def kernel_name(is_fp16: bool, head_dim: int) -> str:
    """Entry point in the PTX for one dtype and head dimension."""
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head dim {head_dim} not supported (one of {HEAD_DIMS})")
    return f"fca_trt_{'f16' if is_fp16 else 'f32'}_d{head_dim}"


def register_plugin(ptx_path: str | Path = DEFAULT_PTX) -> bool:
    """Register the plugin with TensorRT's plugin registry; False when not possible
    (no tensorrt, or older than 10.9). Idempotent. Call before parsing the ONNX."""
    global _registered
    if _registered:
        return True
    if not plugin_supported(tensorrt_version()):
        return False
    ptx_path = Path(ptx_path)
    if not ptx_path.is_file():
        raise FileNotFoundError(f"{ptx_path} not found: run 'python kernels/build.py'")
    ptx = ptx_path.read_text()

    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(PLUGIN_ID)
    def _describe(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, mask: trtp.TensorDesc,
                  scale: float, has_mask: int) -> trtp.TensorDesc:
        return q.like()

    @trtp.autotune(PLUGIN_ID)
    def _formats(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, mask: trtp.TensorDesc,
                 scale: float, has_mask: int, outputs: tuple[trtp.TensorDesc]) -> list:
        # All five tensors FP16, or all FP32; linear (row-major) layout.
        return [trtp.AutoTuneCombination("FP16|FP32, FP16|FP32, FP16|FP32, FP16|FP32, FP16|FP32", "LINEAR")]

    @trtp.aot_impl(PLUGIN_ID)
    def _aot(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, mask: trtp.TensorDesc,
             scale: float, has_mask: int, outputs: tuple[trtp.TensorDesc], tactic: int):
        dim = q.shape_expr[3]
        if not dim.is_constant:
            raise ValueError("FusedCrossAttention needs a build-time constant head dimension")
        head_dim = dim.constant_value()
        name = kernel_name(q.dtype == trt.float16, head_dim)
        batch, heads, lq = q.shape_expr[0], q.shape_expr[1], q.shape_expr[2]
        bq = rows_per_block(head_dim)
        launch = trtp.KernelLaunchParams()
        launch.grid_x = (lq + (bq - 1)) // bq
        launch.grid_y = batch * heads
        launch.block_x = THREADS
        launch.shared_mem = 0  # static shared memory only
        # Kernel arguments after the 4 input pointers, before the output pointer.
        scalars = [batch, heads, lq, k.shape_expr[2], *(mask.shape_expr[i] for i in range(4)),
                   int(bool(has_mask)), float_bits(float(scale))]
        extra = trtp.SymIntExprs(len(scalars))
        for i, value in enumerate(scalars):
            extra[i] = trtp.SymInt32(value)
        return name, ptx, launch, extra

    _registered = True
    return True
