"""Run one stage's TensorRT engine on numpy arrays with cuda-python.

Torch-free. ``tensorrt`` and ``cuda-python`` are imported when a stage is created, so this
module imports everywhere; what is missing is reported then. The engines come from
:class:`avss_sdk.runtime.tensorrt_build.TensorRTEngineCache`; what both share (versions, the
GPU, engine-file checks) is in :mod:`avss_sdk.runtime.tensorrt_common`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from avss_sdk.runtime import tensorrt_plugin
from avss_sdk.runtime.tensorrt_common import (
    EngineFileError,
    check_engine_file,
    compute_capability,
    cuda_call,
    cudart,
    import_tensorrt,
)


def _numpy_dtype(trt: Any, dtype: Any) -> np.dtype:
    return np.dtype(trt.nptype(dtype))


class TensorRTStage:
    """One engine, ready to run: ``stage(**inputs) -> {output name: array}``.

    Device buffers are allocated once, for the largest shapes of optimization profile 0, so a
    call never allocates on the GPU. Not thread-safe: one stage object per thread. ``plugin``:
    the engine embeds ``avss::FusedCrossAttention``, which is registered (from this package)
    before the engine is deserialized.
    """

    def __init__(self, engine_path: str | os.PathLike, device: int = 0, plugin: bool = False) -> None:
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
        if plugin:
            try:
                tensorrt_plugin.register_plugin()
            except tensorrt_plugin.KernelBuildError as error:
                raise EngineFileError(f"{self.path} embeds the fused-attention plugin, which cannot be had "
                                      f"here ({error}); delete it to rebuild a plain engine") from None
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
