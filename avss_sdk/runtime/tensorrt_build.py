"""Build one stage's TensorRT engine from its ONNX file, for TensorRT 10.3 through 11.x.

Used by ``export/build_engines.py`` and, to rebuild engines that no longer match the
machine, by :class:`avss_sdk.runtime.tensorrt_backend.TensorRTEngineCache`.

Precision, by TensorRT version (:func:`precision_mode`, a pure function of the version):

* 10.x ("builder_flags"): parse the **fp32** ONNX into a weakly typed network; fp16 sets
  ``BuilderFlag.FP16`` and TensorRT picks FP16 kernels where it finds them faster; fp32
  also clears ``BuilderFlag.TF32`` so fp32 engines match the ONNX Runtime reference.
* 11 and later ("strongly_typed"): the FP16/INT8 builder flags are gone; the network is
  created ``STRONGLY_TYPED`` from the ONNX of the requested precision (the export's fp16
  ONNX holds the types), so TensorRT follows the types in the file.

:func:`onnx_precision` says which of the manifest's ONNX files that means. Engines are
cached by :func:`avss_sdk.runtime.manifest.engine_key` of TensorRT version, GPU compute
capability, ONNX file hash, precision and profile; :func:`engine_is_current` says in words
what changed when one of them did.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

from avss_sdk.errors import AvssError
from avss_sdk.runtime.manifest import PRECISIONS, EngineEntry, Manifest, StageEntry, engine_key, file_hash, write_atomic
from avss_sdk.runtime.tensorrt_backend import (  # noqa: F401  (re-exported: the builder's public API)
    EngineFileError,
    TensorRTUnavailable,
    check_engine_file,
    compute_capability,
    import_tensorrt,
    tensorrt_version,
    write_engine,
)

__all__ = ["EngineBuildError", "EngineFileError", "TensorRTUnavailable", "build_engine", "build_profile",
           "check_engine_file", "compute_capability", "engine_is_current", "import_tensorrt", "onnx_precision",
           "parse_version", "precision_mode", "runtime_precision", "stage_onnx", "stage_profile", "tensorrt_version"]

MIN_TENSORRT = (10, 3)
STRONGLY_TYPED_FROM = (11, 0)
DYNAMIC_AXES = ("batch", "vocab", "prompts")
OPT_VOCAB = 16
OPT_PROMPTS = 16
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.+-][0-9A-Za-z][0-9A-Za-z.+-]*)?$")

Profile = dict[str, dict[str, list[int]]]


class EngineBuildError(AvssError, RuntimeError):
    """TensorRT could not parse the ONNX or build the engine; the message says where and why."""


def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); '11.0' -> (11, 0); ValueError for anything not a version."""
    match = _VERSION.match(str(version).strip())
    if not match:
        raise ValueError(f"not a TensorRT version: {version!r} (expected e.g. '10.3.0.30')")
    return tuple(int(g) for g in match.groups() if g is not None)


def precision_mode(version: str, precision: str) -> str:
    """How TensorRT ``version`` gets ``precision``: "builder_flags" (10.x) or "strongly_typed" (>= 11)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    parsed = parse_version(version)
    if parsed[:2] < MIN_TENSORRT:
        raise ValueError(f"TensorRT {version} is older than {'.'.join(map(str, MIN_TENSORRT))}, "
                         "the oldest this SDK supports (JetPack 6)")
    return "strongly_typed" if parsed[:2] >= STRONGLY_TYPED_FROM else "builder_flags"


def onnx_precision(version: str, precision: str) -> str:
    """Which ONNX file (by precision) to build from: fp32 on 10.x, the requested one on >= 11."""
    return "fp32" if precision_mode(version, precision) == "builder_flags" else precision


def runtime_precision(manifest: Manifest, version: str) -> str:
    """The precision to build engines in at run time: the manifest's, raised to fp16 where this
    TensorRT can build fp16 from what the export holds (10.x from the fp32 ONNX with the FP16
    flag, >= 11 from fp16 ONNX files). The shipped default holds fp32 ONNX only, so a Jetson
    (TensorRT 10.3) still gets fp16 engines."""
    if manifest.precision == "fp16":
        return "fp16"
    has_fp16 = all("fp16" in stage.onnx for stage in manifest.stages.values())
    return "fp16" if has_fp16 or precision_mode(version, "fp16") == "builder_flags" else "fp32"


def stage_onnx(manifest: Manifest, stage: str, version: str, precision: str, plugin: bool) -> Path:
    """The ONNX file an engine of ``stage`` is built from: :func:`onnx_precision`'s file, or in plugin
    mode its ``"<precision>-plugin"`` variant where the export wrote one (stages with attention)."""
    key = onnx_precision(version, precision)
    if plugin and f"{key}-plugin" in manifest.stages[stage].onnx:
        key = f"{key}-plugin"
    return manifest.onnx_path(stage, key)


def stage_profile(manifest: Manifest, stage: str) -> Profile:
    """The profile every engine of ``stage`` is built and looked up with (export and runtime alike,
    so that an engine the export built is found current by the runtime's cache)."""
    return build_profile(manifest.stages[stage], manifest.max_vocab)


def build_profile(stage: StageEntry, max_vocab: int, max_batch: int = 1, max_prompts: int = 256) -> Profile:
    """The optimization profile of ``stage``: {input: {"min", "opt", "max"}} for every input with a
    dynamic axis ("batch" 1..max_batch, "vocab" 1..max_vocab, "prompts" 1..max_prompts)."""
    for label, value in (("max_vocab", max_vocab), ("max_batch", max_batch), ("max_prompts", max_prompts)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    ranges = {"batch": (1, 1, max_batch), "vocab": (1, min(OPT_VOCAB, max_vocab), max_vocab),
              "prompts": (1, min(OPT_PROMPTS, max_prompts), max_prompts)}
    profile: Profile = {}
    for spec in stage.inputs:
        if all(isinstance(d, int) for d in spec.shape):
            continue
        dims: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
        for d in spec.shape:
            if isinstance(d, int):
                low = opt = high = d
            elif d in ranges:
                low, opt, high = ranges[d]
            else:
                raise ValueError(f"stage {stage.name!r} input {spec.name!r} has unknown dynamic axis {d!r} "
                                 f"(known: {', '.join(DYNAMIC_AXES)})")
            dims["min"].append(low)
            dims["opt"].append(opt)
            dims["max"].append(high)
        profile[spec.name] = dims
    return profile


def engine_is_current(entry: EngineEntry, tensorrt_version: str, compute_capability: str, onnx_hash: str,
                      precision: str, profile: Profile) -> tuple[bool, str]:
    """(True, "up to date") when ``entry`` was built for exactly these; else (False, what changed)."""
    if entry.tensorrt_version != tensorrt_version:
        return False, f"built for TensorRT {entry.tensorrt_version}, this is {tensorrt_version}"
    if entry.compute_capability != compute_capability:
        return False, (f"built for a GPU of compute capability {entry.compute_capability}, "
                       f"this one is {compute_capability}")
    if entry.precision != precision:
        return False, f"built for {entry.precision}, {precision} was asked for"
    if entry.profile != profile:
        names = sorted(set(entry.profile) | set(profile))
        changed = [n for n in names if entry.profile.get(n) != profile.get(n)]
        details = "; ".join(f"{n}: {entry.profile.get(n)} -> {profile.get(n)}" for n in changed)
        return False, f"built for other input shapes ({details})"
    if entry.key != engine_key(tensorrt_version, compute_capability, onnx_hash, precision, profile):
        return False, "built from another ONNX file (its hash changed)"
    return True, "up to date"


def _parser_errors(parser: Any) -> list[str]:
    """One line per parser error: node index, name, operator, then TensorRT's description."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = f"node #{error.node()}" if error.node() >= 0 else "the graph"
        if error.node_name():
            where += f" {error.node_name()!r}"
        if error.node_operator():
            where += f" ({error.node_operator()})"
        lines.append(f"  {where}: {error.desc()}")
    return lines


def _register_plugin(version: str) -> None:
    try:
        from kernels.trt_plugin import plugin_supported, register_plugin
    except ImportError as error:
        raise EngineBuildError(f"plugin mode needs kernels/ from the avss_sdk source tree ({error})") from error
    if not plugin_supported(version):
        raise EngineBuildError(f"the avss::FusedCrossAttention plugin needs TensorRT >= 10.9 (AOT plugins); "
                               f"this is {version}: export without the plugin (plain attention) instead")
    try:
        register_plugin()
    except FileNotFoundError as error:
        raise EngineBuildError(str(error)) from error


def _set_profile(builder: Any, network: Any, config: Any, profile: Profile) -> None:
    """Add ``profile`` to ``config`` after checking it against the network's inputs."""
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    dynamic = {name for name, shape in inputs.items() if -1 in shape}
    if set(profile) - set(inputs):
        raise EngineBuildError(f"profile names inputs the ONNX does not have: {sorted(set(profile) - set(inputs))} "
                               f"(inputs: {sorted(inputs)})")
    if dynamic - set(profile):
        raise EngineBuildError(f"inputs with dynamic axes have no profile: {sorted(dynamic - set(profile))}")
    optimization_profile = builder.create_optimization_profile()
    for name, dims in profile.items():
        low, opt, high = dims["min"], dims["opt"], dims["max"]
        shape = inputs[name]
        consistent = (len(low) == len(opt) == len(high) == len(shape)
                      and all(a <= b <= c for a, b, c in zip(low, opt, high))
                      and all(s == -1 or a == c == s for s, a, c in zip(shape, low, high)))
        if not consistent:
            raise EngineBuildError(f"profile for input {name!r} (min {low}, opt {opt}, max {high}) does not fit "
                                   f"its ONNX shape {shape} (-1 = dynamic)")
        optimization_profile.set_shape(name, low, opt, high)
    if config.add_optimization_profile(optimization_profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {profile}")


def _timing_cache(config: Any, path: Path | None, log: Callable[[str], None]) -> None:
    """Load the timing cache at ``path`` (if any) into ``config``, or start an empty one."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"timing cache {path} is unusable (another TensorRT version or GPU?); starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, profile: Profile,
                 workspace_gb: float = 2.0, timing_cache_path: str | Path | None = None, plugin: bool = False,
                 log: Callable[[str], None] = print, relative_to: str | Path | None = None) -> EngineEntry:
    """Parse ``onnx_path``, build the engine, write it (atomically, with its checksum sidecar) to
    ``engine_path``, update the timing cache, and return its manifest :class:`EngineEntry`
    (``file`` relative to ``relative_to`` when given). Pick ``onnx_path`` with :func:`onnx_precision`."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX file {onnx_path} does not exist")
    if workspace_gb <= 0:
        raise ValueError(f"workspace_gb must be positive, got {workspace_gb}")
    trt = import_tensorrt()
    version = str(trt.__version__)
    mode = precision_mode(version, precision)
    capability = compute_capability()
    if plugin:
        _register_plugin(version)

    errors: list[str] = []

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, message: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                errors.append(message)
                log(f"TensorRT error: {message}")
            elif severity == trt.ILogger.Severity.WARNING:
                log(f"TensorRT warning: {message}")

    logger = _Logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if mode == "strongly_typed" else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(f"TensorRT {version} cannot parse {onnx_path}:\n" + "\n".join(_parser_errors(parser)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if mode == "builder_flags" and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    _set_profile(builder, network, config, profile)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    _timing_cache(config, cache_path, log)

    how = "BuilderFlag.FP16 on the fp32 graph" if mode == "builder_flags" and precision == "fp16" else mode
    log(f"building {engine_path.name} from {onnx_path.name}: TensorRT {version}, {precision} ({how}), "
        f"GPU sm {capability}, workspace {workspace_gb:g} GiB")
    start = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = "\n".join(f"  {e}" for e in errors) or "  (no error message from TensorRT)"
        raise EngineBuildError(f"TensorRT {version} failed to build {onnx_path}:\n{detail}")
    write_engine(engine_path, bytes(plan))
    if cache_path is not None:
        write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    log(f"built {engine_path} in {time.monotonic() - start:.0f} s")
    file = str(engine_path.resolve().relative_to(Path(relative_to).resolve())) if relative_to else str(engine_path)
    return EngineEntry(file=file, precision=precision, tensorrt_version=version, compute_capability=capability,
                       profile=profile, key=engine_key(version, capability, file_hash(onnx_path), precision, profile))
