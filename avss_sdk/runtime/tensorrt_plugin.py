"""The ``avss::FusedCrossAttention`` TensorRT plugin, carried by the installed package.

The export in plugin mode (``avss_sdk.modeling.attention``) writes one ONNX node per
cross-attention: domain ``avss``, op ``FusedCrossAttention``, inputs (q, k, v, mask),
output out, attributes ``scale`` (float) and ``has_mask`` (int; 0 = the mask input is a
[1, 1, 1, 1] placeholder). :func:`register_plugin` binds it to a ``tensorrt.plugin``
definition with an ahead-of-time (AOT) implementation: the engine embeds the kernel's PTX
and launches ``fca_trt_<f16|f32>_d<D>`` itself, so the engine runs without Python.

What the package carries and what the device makes:

* ``cuda/fused_cross_attention.cu`` is the kernel's one source (``kernels/`` at the top of
  the repository builds, benchmarks and tests it from here), so a pip-installed SDK has it.
* :func:`ensure_ptx` compiles it to compute_75 PTX with the device's *own* nvcc into a cache
  folder: PTX carries the ISA version of the nvcc that wrote it, and a driver cannot JIT PTX
  from a newer toolkit (JetPack 6 ships CUDA 12.6), so no prebuilt PTX is shipped.

The decisions are pure functions, tested without TensorRT: :func:`plugin_unavailable_reason`
(TensorRT < 10.9, a GPU older than the PTX's target, no PTX), :func:`ptx_target` (what a
PTX file was written for) and :func:`stage_uses_plugin` (which stages' engines embed it).

Limits of the AOT path: there is no workspace, so keys are never split across blocks;
attributes are not serialized into the engine, so ``scale`` travels as an int32 kernel
argument holding its float32 bits; the head dimension must be a build-time constant.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from avss_sdk.errors import AvssError
from avss_sdk.runtime.tensorrt_common import AOT_PLUGINS_FROM, format_version, has_feature, tensorrt_version

PLUGIN_ID = "avss::FusedCrossAttention"
KERNEL_SOURCE = Path(__file__).resolve().parent / "cuda" / "fused_cross_attention.cu"
PTX_ARCH = 75  # compute_75 PTX: JIT-compiled by the driver for any GPU from Turing on
PTX_NAME = "fused_cross_attention.ptx"
NVCC_FLAGS = ("-std=c++17", "-O3")
HEAD_DIMS = (32, 64, 128)  # the kernel's instantiations
THREADS = 128  # 4 warps a block (fca::kThreads in the source)

_registered_ptx: list[str | os.PathLike | None] = []  # the PTX the registered definition reads (one registration a process)


class KernelBuildError(AvssError, RuntimeError):
    """The kernel's PTX cannot be made here (no nvcc, a compiler error)."""


def rows_per_block(head_dim: int) -> int:
    """Query rows one block owns (4 warps; 4 rows a warp at D=128, else 8)."""
    return 4 * (4 if head_dim == 128 else 8)


def float_bits(x: float) -> int:
    """The float32 bit pattern of ``x`` as a signed int32 (how ``scale`` reaches the kernel)."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


def kernel_name(is_fp16: bool, head_dim: int) -> str:
    """Entry point in the PTX for one dtype and head dimension."""
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head dim {head_dim} not supported (one of {HEAD_DIMS})")
    return f"fca_trt_{'f16' if is_fp16 else 'f32'}_d{head_dim}"


# -- decisions (pure) -----------------------------------------------------------------------------

def capability_number(capability: str) -> int:
    """'8.7' -> 87."""
    major, _, minor = str(capability).partition(".")
    return int(major) * 10 + int(minor or 0)


def ptx_target(ptx: str) -> int:
    """The architecture a PTX text was written for ('.target sm_75' -> 75); ValueError if none."""
    match = re.search(r"^\s*\.target\s+sm_(\d+)", ptx, re.MULTILINE)
    if not match:
        raise ValueError("not a PTX file: it has no '.target sm_NN' line")
    return int(match.group(1))


def plugin_unavailable_reason(version: str | None, capability: str, ptx_arch: int | None = PTX_ARCH) -> str | None:
    """Why plugin engines cannot run here, in one line, or None when they can.

    ``version`` is TensorRT's (None: not installed), ``capability`` the GPU's ('8.7'),
    ``ptx_arch`` the target of the PTX at hand (None: there is none)."""
    if not has_feature(version, AOT_PLUGINS_FROM):
        return _old_tensorrt(version)
    if ptx_arch is None:
        return "no PTX of the fused attention kernel (no nvcc to build it with)"
    if capability_number(capability) < ptx_arch:
        return (f"no PTX for this GPU: the kernel's PTX targets compute_{ptx_arch}, "
                f"this GPU has compute capability {capability}")
    return None


def _old_tensorrt(version: str | None) -> str:
    have = f"TensorRT {version}" if version else "no TensorRT"
    return f"{have}: plugin engines need TensorRT >= {format_version(AOT_PLUGINS_FROM)} (AOT plugins)"


def stage_uses_plugin(onnx_files: dict[str, str], plugin: bool) -> bool:
    """Whether a stage's engine embeds the plugin: plugin mode was asked for and the export wrote
    a ``-plugin`` variant for it (stages with attention only)."""
    return plugin and any(key.endswith("-plugin") for key in onnx_files)


# -- the PTX --------------------------------------------------------------------------------------

def find_nvcc(explicit: str | None = None) -> str:
    """Path of nvcc: ``explicit``, else $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda."""
    candidates = [explicit] if explicit else []
    if not explicit:
        for env in ("CUDA_HOME", "CUDA_PATH"):
            if os.environ.get(env):
                candidates.append(str(Path(os.environ[env]) / "bin" / "nvcc"))
        candidates.append(shutil.which("nvcc") or "")
        candidates.append("/usr/local/cuda/bin/nvcc")
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise KernelBuildError(f"nvcc not found (tried {', '.join(c for c in candidates if c) or 'nothing'}). "
                           "Install the CUDA toolkit, put its bin/ on PATH, or set CUDA_HOME.")


def supported_archs(nvcc: str) -> set[int]:
    """Compute capabilities (e.g. 75, 90) this nvcc can compile for."""
    out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True)
    if out.returncode != 0:
        raise KernelBuildError(f"{nvcc} --list-gpu-arch failed: {out.stderr.strip()}")
    return {int(m) for m in re.findall(r"compute_(\d+)", out.stdout)}


def compile_ptx(out: str | os.PathLike, nvcc: str | None = None) -> tuple[Path, int]:
    """Compile :data:`KERNEL_SOURCE` to PTX at ``out`` (atomically) with the local nvcc, for
    compute_75 or, where that nvcc no longer knows it, its oldest target. Returns (path, arch)."""
    nvcc = find_nvcc(nvcc)
    known = supported_archs(nvcc)
    if not known:
        raise KernelBuildError(f"{nvcc} lists no GPU architectures")
    arch = PTX_ARCH if PTX_ARCH in known else min(known)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([nvcc, *NVCC_FLAGS, f"-arch=compute_{arch}", "-ptx", "-o", tmp, str(KERNEL_SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise KernelBuildError(f"{nvcc} failed on {KERNEL_SOURCE.name}:\n{proc.stdout}{proc.stderr}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out, arch


def ensure_ptx(cache_dir: str | os.PathLike, nvcc: str | None = None,
               log: Callable[[str], None] = print) -> Path:
    """The kernel's PTX in ``cache_dir``, compiled there by the local nvcc the first time."""
    path = Path(cache_dir) / PTX_NAME
    if path.is_file() and path.stat().st_mtime >= KERNEL_SOURCE.stat().st_mtime:
        return path
    path, arch = compile_ptx(path, nvcc)
    log(f"built {path} (compute_{arch} PTX of {KERNEL_SOURCE.name})")
    return path


# -- TensorRT -------------------------------------------------------------------------------------

def register_plugin(ptx_path: str | os.PathLike | None = None) -> None:
    """Register ``avss::FusedCrossAttention`` with TensorRT's plugin registry (idempotent).

    Call it before parsing an ONNX with plugin nodes and before deserializing an engine that
    embeds the plugin: TensorRT looks the plugin up by name in both. ``ptx_path`` is read when
    TensorRT asks for the AOT implementation, at build time; deserializing needs none (None).
    Raises :class:`KernelBuildError` on a TensorRT without AOT plugins."""
    version = tensorrt_version()
    if not has_feature(version, AOT_PLUGINS_FROM):
        raise KernelBuildError(_old_tensorrt(version))
    if _registered_ptx:
        _registered_ptx[0] = ptx_path
        return
    _registered_ptx.append(ptx_path)
    _define_plugin()


def _define_plugin() -> None:
    """The ``tensorrt.plugin`` definition: shape, formats and the AOT launch of the kernel."""
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
             scale: float, has_mask: int, outputs: tuple[trtp.TensorDesc], tactic: int) -> tuple[str, str, Any, Any]:
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
        if _registered_ptx[0] is None:
            raise KernelBuildError("building a plugin engine needs the kernel's PTX: register_plugin(ensure_ptx(...))")
        return name, Path(_registered_ptx[0]).read_text(), launch, extra
