"""Launch the fused cross-attention kernel from Python with cuda-python's driver API.

``cuda.bindings.driver`` (cuModuleLoadData, cuLaunchKernel) rather than ``cuda.core``:
its calls are the same in cuda-python 12.x (JetPack 6) and 13.x, and it is what
TensorRT's own Python samples use. Importing this module needs no GPU, no driver and
not even cuda-python; errors come when something is called, saying what is missing.

* :class:`FusedCrossAttentionKernel` launches on device pointers and a stream.
* :func:`fused_cross_attention_numpy` runs on numpy arrays (tests, a ``cuda`` backend
  without PyTorch). Same semantics as :mod:`kernels.reference`.
* :func:`plan_launch` is the shape -> (path, grid, key splits) choice, pure Python.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avss_sdk.runtime.tensorrt_plugin import HEAD_DIMS, THREADS, rows_per_block

DEFAULT_FATBIN = Path(__file__).resolve().parent / "build" / "fused_cross_attention.fatbin"
TILE_K = 32
SMEM_BYTES = 48 * 1024  # must match fca::kSmemBytes in src/fused_cross_attention.cu
MAX_SPLITS = 64
MIN_TILES_PER_SPLIT = 4


class CudaUnavailableError(RuntimeError):
    """cuda-python, the driver, a GPU or the built kernel is missing."""


def short_path_capacity(head_dim: int, itemsize: int) -> int:
    """Most keys the short path holds in shared memory (mirror of Geo::kShortCap)."""
    words = head_dim * itemsize // 4
    key_bytes = (words + 1) * 4 + head_dim * itemsize
    q_bytes = rows_per_block(head_dim) * head_dim * 4
    return (SMEM_BYTES - q_bytes) // key_bytes // 32 * 32


@dataclass(frozen=True)
class LaunchPlan:
    """Which kernel, its grid, and how the keys are split (long path only)."""

    path: str  # "short" or "long"
    grid: tuple[int, int, int]
    splits: int
    tiles_per_split: int

    def workspace_bytes(self, batch: int, heads: int, lq: int, head_dim: int) -> int:
        """Bytes of FP32 partials (acc, m, l) the key splits exchange; 0 if unsplit."""
        if self.splits == 1:
            return 0
        return 4 * self.splits * batch * heads * lq * (head_dim + 2)

    @property
    def counters(self) -> int:
        """Arrival counters the split merge needs: one int per query tile; 0 if unsplit."""
        return 0 if self.splits == 1 else self.grid[0] * self.grid[1]


def plan_launch(batch: int, heads: int, lq: int, lk: int, head_dim: int, itemsize: int,
                num_sms: int) -> LaunchPlan:
    """Short path when K and V fit in shared memory; else tiles, split over keys when the
    query tiles alone would leave the GPU under-filled (fewer than 2 blocks per SM)."""
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head dim {head_dim} not supported (one of {HEAD_DIMS})")
    if min(batch, heads, lq, lk) < 1:
        raise ValueError("empty attention")
    q_tiles = math.ceil(lq / rows_per_block(head_dim))
    if lk <= short_path_capacity(head_dim, itemsize):
        return LaunchPlan("short", (q_tiles, batch * heads, 1), 1, 0)
    ntiles = math.ceil(lk / TILE_K)
    blocks = q_tiles * batch * heads
    splits = 1
    if blocks < 2 * num_sms:
        splits = min(math.ceil(2 * num_sms / blocks), ntiles // MIN_TILES_PER_SPLIT, MAX_SPLITS)
        splits = max(splits, 1)
    tiles_per_split = math.ceil(ntiles / splits)
    splits = math.ceil(ntiles / tiles_per_split)  # no empty split
    return LaunchPlan("long", (q_tiles, batch * heads, splits), splits, tiles_per_split)


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python < 12.6
        except ImportError as e:
            raise CudaUnavailableError(
                "cuda-python is not installed (pip install cuda-python)") from e
    return driver


def _check(result):
    driver = _driver()
    err, rest = result[0], result[1:]
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise CudaUnavailableError(f"CUDA driver error {name.decode() if name else err}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def gpu_available() -> tuple[bool, str]:
    """(True, GPU name) when a CUDA device can be used, else (False, why not)."""
    try:
        driver = _driver()
        try:
            err, = driver.cuInit(0)
        except Exception as e:  # cuda-python raises when libcuda itself is missing
            return False, f"no NVIDIA driver: {e}"
        if err != driver.CUresult.CUDA_SUCCESS:
            return False, f"cuInit failed ({err.name}): no NVIDIA driver or GPU"
        count = _check(driver.cuDeviceGetCount())
        if count == 0:
            return False, "no CUDA device"
        name = _check(driver.cuDeviceGetName(128, _check(driver.cuDeviceGet(0))))
        return True, name.split(b"\0")[0].decode()
    except CudaUnavailableError as e:
        return False, str(e)


class FusedCrossAttentionKernel:
    """The loaded fatbin on one device (its primary context, shared with PyTorch)."""

    def __init__(self, fatbin: str | Path = DEFAULT_FATBIN, device: int = 0) -> None:
        driver = _driver()
        ok, why = gpu_available()
        if not ok:
            raise CudaUnavailableError(f"cannot launch the kernel: {why}")
        fatbin = Path(fatbin)
        if not fatbin.is_file():
            raise CudaUnavailableError(f"{fatbin} not found: run 'python kernels/build.py'")
        self._driver = driver
        self.device = _check(driver.cuDeviceGet(device))
        self.context = _check(driver.cuDevicePrimaryCtxRetain(self.device))
        _check(driver.cuCtxSetCurrent(self.context))
        attr = driver.CUdevice_attribute
        self.num_sms = _check(driver.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, self.device))
        self.module = _check(driver.cuModuleLoadData(fatbin.read_bytes()))
        self._functions: dict[str, object] = {}
        # Grown on demand. Partials need no initial value. Counters are kept apart so
        # that no launch ever finds partials where it expects a counter: they are zeroed
        # when allocated, and every launch resets the ones it used.
        self._partials = (0, 0)  # (device pointer, bytes)
        self._counters = (0, 0)  # (device pointer, int count)

    def _function(self, name: str):
        if name not in self._functions:
            self._functions[name] = _check(self._driver.cuModuleGetFunction(self.module, name.encode()))
        return self._functions[name]

    def _partials_ptr(self, nbytes: int) -> int:
        ptr, size = self._partials
        if nbytes > size:
            if ptr:
                _check(self._driver.cuMemFree(ptr))
            ptr = int(_check(self._driver.cuMemAlloc(nbytes)))
            self._partials = (ptr, nbytes)
        return ptr

    def _counters_ptr(self, count: int, stream) -> int:
        ptr, size = self._counters
        if count > size:
            if ptr:
                _check(self._driver.cuMemFree(ptr))
            ptr = int(_check(self._driver.cuMemAlloc(4 * count)))
            _check(self._driver.cuMemsetD32Async(ptr, 0, count, stream))
            self._counters = (ptr, count)
        return ptr

    def launch(self, q: int, k: int, v: int, out: int, batch: int, heads: int, lq: int, lk: int,
               head_dim: int, dtype: np.dtype | type, stream: int = 0, mask: int = 0,
               mask_strides: tuple[int, int, int, int] = (0, 0, 0, 0), key_padding_mask: int = 0,
               scale: float | None = None) -> LaunchPlan:
        """Enqueue out = attention(q, k, v) on ``stream`` (device pointers, contiguous
        [B, H, L, D]). ``mask``: additive, same dtype as q, element strides per dim
        (0 = broadcast); ``key_padding_mask``: uint8 [B, Lk]. Returns the plan used."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float16, np.float32):
            raise TypeError(f"dtype {dtype} not supported (float16 or float32)")
        plan = plan_launch(batch, heads, lq, lk, head_dim, dtype.itemsize, self.num_sms)
        scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
        stream_h = self._driver.CUstream(stream)
        tn = "f16" if dtype == np.float16 else "f32"
        p, ll, i32 = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
        values = [q, k, v, out, mask or None, *mask_strides, key_padding_mask or None,
                  batch, heads, lq, lk, scale]
        types = [p, p, p, p, p, ll, ll, ll, ll, p, i32, i32, i32, i32, ctypes.c_float]
        if plan.path == "long":
            ws_bytes = plan.workspace_bytes(batch, heads, lq, head_dim)
            ws = self._partials_ptr(ws_bytes) if ws_bytes else 0
            counters = self._counters_ptr(plan.counters, stream_h) if plan.counters else 0
            values += [plan.splits, plan.tiles_per_split, ws or None, counters or None]
            types += [i32, i32, p, p]
        fn = self._function(f"fca_{plan.path}_{tn}_d{head_dim}")
        _check(self._driver.cuLaunchKernel(fn, *plan.grid, THREADS, 1, 1, 0, stream_h,
                                           (tuple(values), tuple(types)), 0))
        return plan


_KERNEL: FusedCrossAttentionKernel | None = None


def default_kernel() -> FusedCrossAttentionKernel:
    """Process-wide kernel on device 0, loaded on first use."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = FusedCrossAttentionKernel()
    return _KERNEL


def mask_layout(mask: np.ndarray, shape: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Right-align ``mask`` to rank 4, check it broadcasts to ``shape`` ([B, H, Lq, Lk]),
    and return it contiguous with element strides (0 on broadcast dimensions)."""
    if mask.ndim > 4:
        raise ValueError(f"mask rank {mask.ndim} > 4")
    m = np.ascontiguousarray(mask.reshape((1,) * (4 - mask.ndim) + mask.shape))
    for got, want in zip(m.shape, shape):
        if got not in (1, want):
            raise ValueError(f"mask shape {mask.shape} does not broadcast to {shape}")
    strides = tuple(0 if m.shape[i] == 1 else m.strides[i] // m.itemsize for i in range(4))
    return m, strides


def fused_cross_attention_numpy(q: np.ndarray, k: np.ndarray, v: np.ndarray,
                                mask: np.ndarray | None = None,
                                key_padding_mask: np.ndarray | None = None,
                                scale: float | None = None) -> np.ndarray:
    """Run the kernel on host arrays (float16 or float32 [B, H, L, D]); returns q's dtype."""
    kernel = default_kernel()
    driver = kernel._driver
    dtype = np.dtype(q.dtype)
    if dtype not in (np.float16, np.float32):
        raise TypeError("q, k, v must be float16 or float32")
    q, k, v = (np.ascontiguousarray(x, dtype=dtype) for x in (q, k, v))
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
    b, h, lq, d = q.shape
    lk = k.shape[2]
    host = {"q": q, "k": k, "v": v}
    strides = (0, 0, 0, 0)
    if mask is not None:
        host["mask"], strides = mask_layout(np.asarray(mask, dtype=dtype), (b, h, lq, lk))
    if key_padding_mask is not None:
        kpm = np.ascontiguousarray(np.asarray(key_padding_mask) != 0, dtype=np.uint8)
        if kpm.shape != (b, lk):
            raise ValueError(f"key_padding_mask must be [B, Lk] = {(b, lk)}, got {kpm.shape}")
        host["kpm"] = kpm
    out = np.empty_like(q)
    stream = _check(driver.cuStreamCreate(0))
    dev: dict[str, int] = {}
    try:
        for name, arr in [*host.items(), ("out", out)]:
            dev[name] = int(_check(driver.cuMemAlloc(max(arr.nbytes, 1))))
        for name, arr in host.items():
            _check(driver.cuMemcpyHtoDAsync(dev[name], arr.ctypes.data, arr.nbytes, stream))
        kernel.launch(dev["q"], dev["k"], dev["v"], dev["out"], b, h, lq, lk, d, dtype,
                      stream=int(stream), mask=dev.get("mask", 0), mask_strides=strides,
                      key_padding_mask=dev.get("kpm", 0), scale=scale)
        _check(driver.cuMemcpyDtoHAsync(out.ctypes.data, dev["out"], out.nbytes, stream))
        _check(driver.cuStreamSynchronize(stream))
    finally:
        for ptr in dev.values():
            driver.cuMemFree(ptr)
        driver.cuStreamDestroy(stream)
    return out
