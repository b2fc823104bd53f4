"""Run the stages as TensorRT engines with cuda-python; keep the engines matched to this machine.

Torch-free. ``tensorrt`` and ``cuda-python`` are imported when first needed, so this module
imports everywhere; what is missing is reported when something is called.

* :class:`TensorRTStage` loads one engine and runs it on numpy arrays: one CUDA stream,
  device buffers sized once for the profile's largest shapes, ``execute_async_v3``.
* :class:`TensorRTEngineCache` gives every stage an engine built for this TensorRT version,
  this GPU, this ONNX file, precision and profile, rebuilding (with a message saying why)
  what does not match. Building uses :mod:`avss_sdk.runtime.tensorrt_build`.
* :func:`check_engine_file` refuses a missing, truncated or altered engine with a clear
  :class:`EngineFileError` before TensorRT is handed it (a corrupt plan can crash the
  process). Engines carry a ``<engine>.sha256`` sidecar, written by :func:`write_engine`,
  in ``sha256sum`` format so ``sha256sum -c`` checks it too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.runtime.manifest import EngineEntry, Manifest, file_hash, write_atomic

TENSORRT_INSTALL_HINT = ("install it with 'pip install tensorrt' (x86_64, CUDA 12 or 13) or, on Jetson, "
                         "use the TensorRT that JetPack ships (python3-libnvinfer)")
CUDA_PYTHON_HINT = "install it with 'pip install cuda-python'"
MIN_ENGINE_BYTES = 1024  # the smallest plan TensorRT writes is several KiB


class TensorRTUnavailable(AvssError, RuntimeError):
    """TensorRT, cuda-python, the driver or a GPU is missing."""


class EngineFileError(AvssError, RuntimeError):
    """An engine file that is missing, truncated, altered, or that TensorRT refuses to load."""


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    actual = _sha256(path)
    if actual != recorded[0]:
        raise EngineFileError(f"engine {path} does not match its checksum ({size} bytes, sha256 "
                              f"{actual[:12]}..., recorded {recorded[0][:12]}...): truncated or altered; "
                              "delete it to rebuild")


def _numpy_dtype(trt: Any, dtype: Any) -> np.dtype:
    return np.dtype(trt.nptype(dtype))


class TensorRTStage:
    """One engine, ready to run: ``stage(**inputs) -> {output name: array}``.

    Device buffers are allocated once, for the largest shapes of optimization profile 0, so a
    call never allocates on the GPU. Not thread-safe: one stage object per thread.
    """

    def __init__(self, engine_path: str | os.PathLike, device: int = 0) -> None:
        self.path = Path(engine_path)
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._stream = None
        check_engine_file(self.path)
        trt = import_tensorrt()
        rt = cudart()
        compute_capability(device)  # a clear error without a GPU, before TensorRT tries
        cuda_call(rt.cudaSetDevice(device))
        self._trt, self._rt = trt, rt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineFileError(f"TensorRT {trt.__version__} could not load {self.path} (built by another "
                                  "TensorRT version or for another GPU?); delete it to rebuild")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineFileError(f"could not create an execution context for {self.path} (out of GPU memory?)")
        self.inputs: dict[str, tuple[tuple[int, ...], np.dtype, tuple, tuple]] = {}  # shape, dtype, min, max
        self.outputs: dict[str, np.dtype] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = _numpy_dtype(trt, self.engine.get_tensor_dtype(name))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(self.engine.get_tensor_shape(name))
                if -1 in shape:
                    low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
                else:
                    low = high = shape
                self.inputs[name] = (shape, dtype, low, high)
            else:
                self.outputs[name] = dtype
        self._stream = cuda_call(rt.cudaStreamCreate())
        self._allocate()

    def _allocate(self) -> None:
        """Buffers for the profile's max shapes; output sizes follow from the inputs at their max."""
        for name, (_, dtype, _, high) in self.inputs.items():
            if not self.context.set_input_shape(name, high):
                raise EngineFileError(f"{self.path}: input {name!r} refuses its own profile max {high}")
            self._malloc(name, int(np.prod(high)) * dtype.itemsize)
        for name, dtype in self.outputs.items():
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineFileError(f"{self.path}: output {name!r} has a data-dependent shape {shape}, "
                                      "which this backend does not support")
            self._malloc(name, int(np.prod(shape)) * dtype.itemsize)

    def _malloc(self, name: str, nbytes: int) -> None:
        pointer = int(cuda_call(self._rt.cudaMalloc(max(nbytes, 1))))
        self._buffers[name] = (pointer, nbytes)
        self.context.set_tensor_address(name, pointer)

    def _host_input(self, name: str, value: np.ndarray) -> np.ndarray:
        shape, dtype, low, high = self.inputs[name]
        array = np.asarray(value)
        if array.dtype.kind != dtype.kind and not (array.dtype.kind in "iu" and dtype.kind in "iu"):
            raise TypeError(f"{self.path.name}: input {name!r} must be {dtype}, got {array.dtype}")
        if array.ndim != len(shape) or any(d < lo or d > hi for d, lo, hi in zip(array.shape, low, high)):
            raise ValueError(f"{self.path.name}: input {name!r} has shape {array.shape}; the engine takes "
                             f"{shape} with each dimension between {low} and {high}")
        return np.ascontiguousarray(array, dtype=dtype)

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the engine on host arrays; returns the outputs as new host arrays."""
        if self._stream is None:
            raise RuntimeError(f"{self.path.name}: this stage is closed")
        missing, extra = set(self.inputs) - set(inputs), set(inputs) - set(self.inputs)
        if missing or extra:
            raise ValueError(f"{self.path.name}: inputs are {sorted(self.inputs)}; missing {sorted(missing)}, "
                             f"unknown {sorted(extra)}")
        rt, stream = self._rt, self._stream
        host = {name: self._host_input(name, value) for name, value in inputs.items()}  # alive until sync
        for name, array in host.items():
            if not self.context.set_input_shape(name, array.shape):
                raise ValueError(f"{self.path.name}: TensorRT refused shape {array.shape} for {name!r}")
            cuda_call(rt.cudaMemcpyAsync(self._buffers[name][0], array.ctypes.data, array.nbytes,
                                         rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if not self.context.execute_async_v3(int(stream)):
            cuda_call(rt.cudaStreamSynchronize(stream))
            raise RuntimeError(f"{self.path.name}: TensorRT failed to run the engine (see its log above)")
        results = {}
        for name, dtype in self.outputs.items():
            results[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype)
            cuda_call(rt.cudaMemcpyAsync(results[name].ctypes.data, self._buffers[name][0], results[name].nbytes,
                                         rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        cuda_call(rt.cudaStreamSynchronize(stream))
        return results

    def close(self) -> None:
        """Free the device buffers and the stream (idempotent)."""
        buffers, self._buffers = self._buffers, {}
        for pointer, _ in buffers.values():
            self._rt.cudaFree(pointer)
        if self._stream is not None:
            self._rt.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = self.engine = None

    def __del__(self) -> None:
        if getattr(self, "_buffers", None) or getattr(self, "_stream", None) is not None:
            self.close()

    def __enter__(self) -> "TensorRTStage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorRTEngineCache:
    """Engines for every stage of a manifest that match this machine, rebuilt when they do not.

    A stage's engine is reused when :func:`engine_is_current` finds its recorded TensorRT
    version, GPU, ONNX hash, precision and profile unchanged (the manifest's own engine first,
    then one in ``cache_dir``, recorded in ``<engine>.json``); anything else is rebuilt from
    the stage's ONNX into ``cache_dir``, with a message saying what changed.
    """

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def ensure(self, manifest: Manifest, precision: str, workspace_gb: float, plugin: bool,
               cache_dir: str | os.PathLike) -> dict[str, Path]:
        """{stage: engine path} for every stage, building into ``cache_dir`` what is missing or stale."""
        build = _builder()
        version = tensorrt_version()
        if version is None:
            import_tensorrt()  # raises with the install hint
        capability = compute_capability()
        engines = {}
        for name in manifest.stages:
            path, reason = self.select(manifest, name, precision, version, capability, cache_dir, plugin)
            if path is None:
                onnx_path = build.stage_onnx(manifest, name, version, precision, plugin)
                self.log(f"{name}: {reason}: rebuilding from {onnx_path}")
                path = Path(cache_dir) / f"{name}.{precision}.engine"
                entry = build.build_engine(onnx_path, path, precision, build.stage_profile(manifest, name),
                                           workspace_gb, Path(cache_dir) / "timing.cache", plugin, self.log)
                entry.file = path.name
                write_atomic(_record_path(path), (json.dumps(asdict(entry), indent=2) + "\n").encode("utf-8"))
            engines[name] = path
        return engines

    def select(self, manifest: Manifest, stage: str, precision: str, version: str, capability: str,
               cache_dir: str | os.PathLike, plugin: bool = False) -> tuple[Path | None, str]:
        """(engine path, "up to date") for a usable engine of ``stage`` built for ``version`` and
        ``capability`` (the manifest's own first, then ``cache_dir``'s), else (None, why not)."""
        build = _builder()
        onnx_hash = file_hash(build.stage_onnx(manifest, stage, version, precision, plugin))
        profile = build.stage_profile(manifest, stage)
        candidates = []
        entry = manifest.stages[stage].engine
        if entry is not None:
            candidates.append((entry, manifest.path(entry.file)))
        cached = Path(cache_dir) / f"{stage}.{precision}.engine"
        record = _record_path(cached)
        if record.is_file():
            try:
                candidates.append((EngineEntry(**json.loads(record.read_text(encoding="utf-8"))), cached))
            except (TypeError, ValueError) as error:
                self.log(f"{stage}: ignoring unreadable engine record {record} ({error})")
        reason = "no engine built yet"
        for entry, path in candidates:
            current, reason = build.engine_is_current(entry, version, capability, onnx_hash, precision, profile)
            if current:
                try:
                    check_engine_file(path)
                except EngineFileError as error:
                    current, reason = False, str(error)
            if current:
                return path, reason
        return None, reason


def _record_path(engine_path: Path) -> Path:
    """The JSON record of what a cached engine was built for: ``<engine>.json``."""
    return engine_path.with_name(engine_path.name + ".json")


def _builder() -> Any:
    """:mod:`avss_sdk.runtime.tensorrt_build`, imported late: it imports this module."""
    from avss_sdk.runtime import tensorrt_build

    return tensorrt_build
