"""What the TensorRT builder and the engine runner share: versions, the GPU, engine files.

Torch-free, and TensorRT-free until something is called: ``tensorrt`` and ``cuda-python``
are imported on first use, so this module imports everywhere and what is missing is
reported when it is needed.

* Versions: :func:`tensorrt_version` and :func:`parse_version` (the only ones in the SDK),
  and one minimum-version constant per TensorRT feature the SDK uses.
* The GPU: :func:`compute_capability` through cuda-python's runtime API.
* Engine files: :func:`write_engine` writes a plan with a ``<engine>.sha256`` sidecar
  (``sha256sum`` format, so ``sha256sum -c`` checks it too); :func:`check_engine_file`
  refuses a missing, truncated or altered plan with a clear :class:`EngineFileError`
  before TensorRT is handed it (a corrupt plan can crash the process).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from avss_sdk.errors import AvssError
from avss_sdk.fileio import sha256_file, write_atomic

# One constant per feature, each the first TensorRT version that has it.
MIN_TENSORRT = (10, 3)  # the oldest this SDK supports: JetPack 6; the plain MatMul/Softmax attention
PYTHON_PLUGINS_FROM = (10, 6)  # tensorrt.plugin (decorator-defined plugins, run through Python)
AOT_PLUGINS_FROM = (10, 9)  # tensorrt.plugin.aot_impl: the PTX is embedded in the engine
STRONGLY_TYPED_FROM = (11, 0)  # the FP16/INT8 builder flags are gone; types come from the ONNX

TENSORRT_INSTALL_HINT = ("install it with 'pip install tensorrt' (x86_64, CUDA 12 or 13) or, on Jetson, "
                         "use the TensorRT that JetPack ships (python3-libnvinfer)")
CUDA_PYTHON_HINT = "install it with 'pip install cuda-python'"
MIN_ENGINE_BYTES = 1024  # the smallest plan TensorRT writes is several KiB
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.+-][0-9A-Za-z][0-9A-Za-z.+-]*)?$")


class TensorRTUnavailable(AvssError, RuntimeError):
    """TensorRT, cuda-python, the driver or a GPU is missing."""


class EngineFileError(AvssError, RuntimeError):
    """An engine file that is missing, truncated, altered, or that TensorRT refuses to load."""


def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); '11.0' -> (11, 0); '10.3.0.post1' -> (10, 3, 0);
    ValueError for anything that is not a version."""
    match = _VERSION.match(str(version).strip())
    if not match:
        raise ValueError(f"not a TensorRT version: {version!r} (expected e.g. '10.3.0.30')")
    return tuple(int(g) for g in match.groups() if g is not None)


def has_feature(version: str | None, since: tuple[int, int]) -> bool:
    """Whether TensorRT ``version`` is at least ``since`` (one of the ``*_FROM`` constants);
    False when TensorRT is missing (None) or the version is unreadable."""
    if not version:
        return False
    try:
        return parse_version(version)[:2] >= since
    except ValueError:
        return False


def format_version(version: tuple[int, ...]) -> str:
    """(10, 9) -> '10.9'."""
    return ".".join(map(str, version))


def tensorrt_version() -> str | None:
    """Version of the importable ``tensorrt`` ('10.3.0.30'), or None when it is not importable."""
    try:
        import tensorrt
    except ImportError:
        return None
    return str(getattr(tensorrt, "__version__", "")) or None


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(f"TensorRT is not installed ({error}); {TENSORRT_INSTALL_HINT}. "
                                  "Without it, use backend='onnxruntime'.") from error
    return tensorrt


def cudart() -> Any:
    """cuda-python's runtime API module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError as error:
            raise TensorRTUnavailable(f"cuda-python is not installed; {CUDA_PYTHON_HINT}") from error
    return runtime


def cuda_call(result: tuple) -> Any:
    """Unpack a cuda-python ``(error, value...)`` result; :class:`TensorRTUnavailable` on error."""
    rt = cudart()
    error, values = result[0], result[1:]
    if error != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(error)
        raise TensorRTUnavailable(f"CUDA error {error.name}: {text.decode() if text else error}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def compute_capability(device: int = 0) -> str:
    """Compute capability of CUDA device ``device`` as 'major.minor' ('8.7' on Jetson Orin)."""
    rt = cudart()
    try:
        count = cuda_call(rt.cudaGetDeviceCount())
    except TensorRTUnavailable as error:
        raise TensorRTUnavailable(f"no usable CUDA GPU (TensorRT engines need one): {error}") from None
    if device >= count:
        raise TensorRTUnavailable(f"CUDA device {device} does not exist ({count} device(s))")
    attr = rt.cudaDeviceAttr
    major = cuda_call(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device))
    minor = cuda_call(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device))
    return f"{major}.{minor}"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """Where the engine's checksum lives: ``<engine>.sha256``."""
    path = Path(engine_path)
    return path.with_name(path.name + ".sha256")


def record_path(engine_path: str | os.PathLike) -> Path:
    """The JSON record of what a cached engine was built for: ``<engine>.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def write_engine(engine_path: str | os.PathLike, plan: bytes) -> None:
    """Write a serialized engine and its checksum sidecar, both atomically (checksum last)."""
    engine_path = Path(engine_path)
    write_atomic(engine_path, plan)
    digest = hashlib.sha256(plan).hexdigest()
    write_atomic(sidecar_path(engine_path), f"{digest}  {engine_path.name}\n".encode("ascii"))


def check_engine_file(path: str | os.PathLike) -> None:
    """Refuse an engine TensorRT should not be handed: missing, empty, too small to be a plan,
    without its checksum sidecar, or not matching it (truncated, altered). Raises :class:`EngineFileError`."""
    path = Path(path)
    if not path.is_file():
        raise EngineFileError(f"engine {path} does not exist")
    size = path.stat().st_size
    if size < MIN_ENGINE_BYTES:
        raise EngineFileError(f"engine {path} has {size} bytes: too small to be a TensorRT plan "
                              "(an interrupted build?); delete it to rebuild")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise EngineFileError(f"engine {path} has no checksum file {sidecar.name}: it was not written by "
                              "avss_sdk's builder, or the build was interrupted; delete it to rebuild")
    recorded = sidecar.read_text(encoding="ascii", errors="replace").split()
    if not recorded or len(recorded[0]) != 64:
        raise EngineFileError(f"checksum file {sidecar} is malformed; delete {path} to rebuild")
    actual = sha256_file(path)
    if actual != recorded[0]:
        raise EngineFileError(f"engine {path} does not match its checksum ({size} bytes, sha256 "
                              f"{actual[:12]}..., recorded {recorded[0][:12]}...): truncated or altered; "
                              "delete it to rebuild")
