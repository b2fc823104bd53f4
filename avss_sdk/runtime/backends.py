"""Backends behind one interface: ``backend.run(stage, {input: array}) -> {output: array}``.

* ``tensorrt``: one engine per stage from the manifest (rebuilt for this machine where they
  no longer match), run with cuda-python (:mod:`avss_sdk.runtime.tensorrt_backend`).
* ``onnxruntime``: one session per stage with the best execution provider present
  (TensorRT, then CUDA, then CPU).
* ``torch``: the checkpoint's own modules, the reference the others are checked against.

:func:`make_backend` with ``"auto"`` takes the first of those that works here. All read
only the manifest; all take and return numpy arrays, so the segmenter never knows which
one it drives.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from avss_sdk.errors import AvssError, InputError
from avss_sdk.runtime.manifest import Manifest, ManifestError, TensorSpec, check_onnx_file, file_hash

BACKENDS = ("tensorrt", "onnxruntime", "torch")
ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ONNX_PRECISIONS = ("auto", "fp32", "fp16", "int8")
ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
             "int32": "tensor(int32)", "bool": "tensor(bool)"}


def log_to_stderr(message: str) -> None:
    """The default ``log``: the SDK's messages go to stderr, never into a program's output."""
    print(message, file=sys.stderr)


class BackendError(AvssError, RuntimeError):
    """A backend that cannot run here (missing package, no GPU, no engines), with what to do about it."""


class Backend(Protocol):
    """What every backend offers the segmenter."""

    name: str
    description: str
    max_vocab: int | None  # the largest vocabulary it accepts (TensorRT: its profiles' limit); None: any


    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def saturates_8bit_weights(machine: str, cpuinfo: str | None) -> bool:
    """Whether ONNX Runtime's u8 x s8 products saturate on this CPU with full 8-bit weights: an x86 CPU
    with AVX2 but no VNNI (``vpmaddubsw`` adds pairs into 16 bits). ``machine``: ``platform.machine()``;
    ``cpuinfo``: Linux's /proc/cpuinfo text (None where there is none: not known, so False)."""
    if machine.lower() not in ("x86_64", "amd64", "x86", "i686", "i386") or not cpuinfo:
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni"} & set(flags)


def this_cpu_saturates_8bit_weights() -> bool:
    """:func:`saturates_8bit_weights` for the CPU this runs on."""
    import platform

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = None
    return saturates_8bit_weights(platform.machine(), cpuinfo)


class OnnxRuntimeBackend:
    """One ONNX Runtime session per stage; ``precision`` picks the manifest's fp32, fp16 or int8 files.

    ``"int8"`` runs ``int8_stages`` (default: those the export's accuracy check accepted,
    :attr:`Manifest.int8_stages`) from their INT8 files (the ``int8_cpu`` variant on a CPU) and
    every other stage in FP32; ``"auto"`` is ``"int8"`` on a CPU when the manifest accepted any
    INT8 stage, else ``"fp32"`` (also for an export whose CPU files have full 8-bit weights, on
    a CPU where those saturate: :func:`saturates_8bit_weights`).

    Each file is checked before it runs: its sha256 against the manifest (hashed once per
    file version, remembered in ``cache_dir``), and its inputs and outputs (names, ranks,
    fixed sizes, types) against the stage's entry, so a file changed or swapped for another
    stage's is a :class:`ManifestError` naming it at load, not a wrong answer later.

    On a GPU execution provider, runs go through I/O binding: tensors that one stage hands
    to another (features, flow, the audio embedding) stay on the GPU as ``OrtValue``s and
    only the final outputs are copied back. ``bind_io`` forces it on or off (on a CPU it
    changes nothing but the call path).
    """

    name = "onnxruntime"
    max_vocab = None  # the ONNX files take any vocabulary size

    def __init__(self, manifest: Manifest, precision: str = "fp32", providers: list[str] | None = None,
                 threads: int | None = None, bind_io: bool | None = None,
                 cache_dir: str | os.PathLike | None = None, int8_stages: tuple[str, ...] | None = None) -> None:
        from avss_sdk.runtime.text_cache import default_cache_dir

        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendError("the onnxruntime backend needs onnxruntime: pip install onnxruntime "
                               "(or onnxruntime-gpu)") from error
        available = ort.get_available_providers()
        chosen = providers or [p for p in ORT_PROVIDERS if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Stages alternate with numpy work (preprocessing, labels) and capture threads; worker
        # threads that spin between runs would take those cores away on a small CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        on_cpu = chosen[0] == "CPUExecutionProvider"
        if precision not in ONNX_PRECISIONS:
            raise InputError(f"precision must be one of {ONNX_PRECISIONS}, got {precision!r}")
        self.fallback = None  # why "auto" did not take the export's INT8 stages, where it did not
        if precision == "auto":
            precision = "int8" if on_cpu and manifest.int8_stages else "fp32"
            if precision == "int8" and manifest.int8.calibration.cpu_weight_bits == 8 \
                    and this_cpu_saturates_8bit_weights():
                precision = "fp32"
                self.fallback = ("its INT8 files have 8-bit weights, which saturate on this CPU (AVX2 without "
                                 "VNNI); for 7-bit ones: python -m avss_sdk.export.quantize_int8 "
                                 f"{manifest.root} --calibration DATA")
        int8 = (manifest.int8_stages if int8_stages is None else tuple(int8_stages)) if precision == "int8" else ()
        files = {stage: ("int8_cpu" if on_cpu else "int8") if stage in int8 else
                 "fp32" if precision == "int8" else precision for stage in manifest.stages}
        self.precision = precision
        self.int8_stages = int8
        self.sessions = {}
        for stage, entry in manifest.stages.items():
            path = check_onnx_file(manifest, stage, files[stage], cache_dir or default_cache_dir())
            try:
                session = ort.InferenceSession(str(path), options, providers=chosen)
            except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ManifestError(f"{path} is not a loadable ONNX model ({error})") from error
            _check_session(path, "inputs", session.get_inputs(), entry.inputs)
            _check_session(path, "outputs", session.get_outputs(), entry.outputs)
            self.sessions[stage] = session
        self.providers = self.sessions["flow"].get_providers()
        on_gpu = self.providers[0] != "CPUExecutionProvider"
        self.bind_io = on_gpu if bind_io is None else bind_io
        self._device = "cuda" if on_gpu else "cpu"
        self._ort = ort
        detail = f"int8: {', '.join(int8)}; others fp32" if int8 else "fp32" if precision == "int8" else precision
        self.description = f"onnxruntime {ort.__version__} ({self.providers[0]}, {detail})" + \
            (f"; not int8: {self.fallback}" if self.fallback else "")
        self._outputs = {stage: [o.name for o in s.get_outputs()] for stage, s in self.sessions.items()}
        consumed = {t.name for stage in manifest.stages.values() for t in stage.inputs}
        self._handed_on = {name for outputs in self._outputs.values() for name in outputs if name in consumed}

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs as arrays; with I/O binding, those another stage takes stay ``OrtValue``s on the device."""
        if not self.bind_io:
            return dict(zip(self._outputs[stage], self.sessions[stage].run(None, inputs)))
        binding = self.sessions[stage].io_binding()
        for name, value in inputs.items():
            if isinstance(value, self._ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self._outputs[stage]:
            binding.bind_output(name, self._device if name in self._handed_on else "cpu")
        self.sessions[stage].run_with_iobinding(binding)
        return {name: value if name in self._handed_on else value.numpy()
                for name, value in zip(self._outputs[stage], binding.get_outputs())}

    def close(self) -> None:
        self.sessions.clear()


def _check_session(path: Path, kind: str, found: list, specs: list[TensorSpec]) -> None:
    """ManifestError unless an ONNX file's inputs or outputs are the stage's (names, ranks, fixed sizes, types)."""
    described = [(t.name, t.type, list(t.shape)) for t in found]
    if [t.name for t in found] != [s.name for s in specs]:
        raise ManifestError(f"{path} has {kind} {[t.name for t in found]}; its stage expects {[s.name for s in specs]} "
                            f"(is it another stage's file?)")
    for (name, onnx_type, shape), spec in zip(described, specs):
        fixed_differs = len(shape) != len(spec.shape) or any(
            isinstance(want, int) and got != want for got, want in zip(shape, spec.shape))
        if fixed_differs or onnx_type != ORT_TYPES[spec.dtype]:
            raise ManifestError(f"{path}: {name!r} is {onnx_type} {shape}; its stage expects {spec.dtype} "
                                f"{list(spec.shape)} (is it another stage's file?)")


class TorchBackend:
    """The checkpoint the manifest was exported from, run by its PyTorch modules (the reference)."""

    name = "torch"
    max_vocab = None

    def __init__(self, manifest: Manifest, threads: int | None = None) -> None:
        try:
            import torch
        except ImportError as error:
            raise BackendError("the torch backend needs PyTorch (pip install torch==2.13.0 and "
                               "avss_sdk[train]); the onnxruntime backend does not") from error
        from avss_sdk.modeling.checkpoint import load_model

        checkpoint = manifest.path(manifest.model.checkpoint or "")
        if not checkpoint.is_file():
            raise BackendError(f"the torch backend needs the checkpoint this export came from; "
                               f"{checkpoint} is missing")
        if file_hash(checkpoint) != manifest.model_hash:
            raise BackendError(f"{checkpoint} is not the checkpoint {manifest.root} was exported from "
                               f"(hash {file_hash(checkpoint)}, manifest {manifest.model_hash})")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        model, _ = load_model(checkpoint)
        self._stages: dict[str, Callable] = {
            "flow": model.flow, "image_encoder": model.image_encoder, "audio_encoder": model.audio_encoder,
            "text_encoder": model.text_encoder, "vta": model.vta, "mask_decoder": model.mask_decoder}
        self._names = {name: ([t.name for t in s.inputs], [t.name for t in s.outputs])
                       for name, s in manifest.stages.items()}
        self.description = f"torch {torch.__version__} (CPU threads {torch.get_num_threads()})"

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        input_names, output_names = self._names[stage]
        with self._torch.inference_mode():
            out = self._stages[stage](*(self._torch.from_numpy(inputs[n]) for n in input_names))
        out = out if isinstance(out, tuple) else (out,)
        return {name: value.numpy() for name, value in zip(output_names, out)}

    def close(self) -> None:
        self._stages.clear()


class TensorRTBackend:
    """One TensorRT engine per stage, made current for this machine by the engine cache."""

    name = "tensorrt"

    def __init__(self, manifest: Manifest, cache_dir: str | os.PathLike,
                 log: Callable[[str], None] = log_to_stderr) -> None:
        from avss_sdk.runtime import tensorrt_build as build
        from avss_sdk.runtime.tensorrt_backend import TensorRTStage
        from avss_sdk.runtime.tensorrt_common import TENSORRT_INSTALL_HINT, compute_capability, tensorrt_version

        version = tensorrt_version()
        if version is None:
            raise BackendError(f"TensorRT is not installed: {TENSORRT_INSTALL_HINT}")
        try:
            capability = compute_capability()
        except Exception as error:  # cuda-python missing, no driver, no GPU
            raise BackendError(f"TensorRT needs a CUDA GPU: {error}") from error
        precision = build.runtime_precision(manifest, version)
        plugin, reason = build.plugin_choice(manifest, version, capability)
        if reason is not None:
            log(f"avss_sdk: {reason}")
        try:
            engines = build.TensorRTEngineCache(log).ensure(manifest, precision, 2.0, plugin,
                                                            Path(cache_dir) / "engines" / manifest.model_hash)
            self.stages = {name: TensorRTStage(path, plugin=uses_plugin) for name, (path, uses_plugin) in engines.items()}
        except (RuntimeError, ValueError) as error:  # a failed (re)build or load: other backends may still run
            raise BackendError(f"no usable TensorRT engines: {error}") from error
        self.max_vocab: int | None = manifest.max_vocab
        with_plugin = sorted(name for name, (_, uses_plugin) in engines.items() if uses_plugin)
        extra = f", fused-attention plugin in {', '.join(with_plugin)}" if with_plugin else ""
        self.description = f"tensorrt {version} (compute capability {capability}, {precision}{extra})"

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.stages[stage](**inputs)

    def close(self) -> None:
        for stage in self.stages.values():
            stage.close()
        self.stages.clear()


def nvidia_gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU with its driver loaded (desktop or Jetson), without CUDA calls."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/etc/nv_tegra_release").is_file()


def make_backend(manifest: Manifest, backend: str = "auto", cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None, log: Callable[[str], None] = log_to_stderr,
                 verbose: bool = False, precision: str = "auto") -> Backend:
    """The backend named ``backend``, or with ``"auto"`` the first of tensorrt, onnxruntime, torch that loads.

    With ``"auto"`` any SDK error while loading one (a missing package, no GPU, a file that
    fails its checks) moves on to the next, and the reasons are logged with the one chosen; a
    skipped TensorRT is mentioned only where an NVIDIA GPU is present (where it could run) or
    with ``verbose``. ``precision`` is the onnxruntime backend's (see :class:`OnnxRuntimeBackend`);
    TensorRT picks its own from the manifest and its version, and torch is the FP32 reference.
    """
    from avss_sdk.runtime.text_cache import default_cache_dir

    if backend not in ("auto", *BACKENDS):
        raise InputError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    makers: dict[str, Callable[[], Backend]] = {
        "tensorrt": lambda: TensorRTBackend(manifest, cache_dir or default_cache_dir(), log),
        "onnxruntime": lambda: OnnxRuntimeBackend(manifest, precision, threads=threads, cache_dir=cache_dir),
        "torch": lambda: TorchBackend(manifest, threads=threads),
    }
    if backend != "auto":
        return makers[backend]()
    reasons = []
    for name in BACKENDS:
        try:
            chosen = makers[name]()
        except AvssError as error:
            if name != "tensorrt" or verbose or nvidia_gpu_present():
                reasons.append(f"{name}: {error}")
            continue
        skipped = f" (skipped {'; '.join(reasons)})" if reasons else ""
        log(f"avss_sdk: backend {chosen.description}{skipped}")
        return chosen
    raise BackendError("no backend can run here:\n  " + "\n  ".join(reasons))
