"""Build TensorRT engines from the manifest's ONNX files and keep them matched to this machine.

For TensorRT 10.3 through 11.x. Used by the export (``avss-build-engines``) and by the
runtime's :class:`TensorRTEngineCache`, which rebuilds what no longer matches; the engines
are run by :mod:`avss_sdk.runtime.tensorrt_backend`, and both share
:mod:`avss_sdk.runtime.tensorrt_common` (versions, the GPU, engine files).

Precision, by TensorRT version (:func:`precision_mode`, a pure function of the version):

* 10.x ("builder_flags"): parse the **fp32** ONNX into a weakly typed network; fp16 sets
  ``BuilderFlag.FP16`` and TensorRT picks FP16 kernels where it finds them faster; fp32
  also clears ``BuilderFlag.TF32`` so fp32 engines match the ONNX Runtime reference.
* 11 and later ("strongly_typed"): the FP16/INT8 builder flags are gone; the network is
  created ``STRONGLY_TYPED`` from the ONNX of the requested precision (the export's fp16
  ONNX holds the types), so TensorRT follows the types in the file.

The fused-attention plugin (:mod:`avss_sdk.runtime.tensorrt_plugin`): where the export wrote
``-plugin`` ONNX variants and TensorRT >= 10.9 can embed the kernel, :func:`plugin_choice`
picks plugin engines for the stages with attention, else the plain engines with a one-line
reason. Every engine entry records whether it embeds the plugin, and the cache key holds it.

Engines are cached by :func:`avss_sdk.runtime.manifest.engine_key` of TensorRT version, GPU
compute capability, ONNX file hash, precision, profile and plugin; :func:`engine_is_current`
says in words what changed when one of them did.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from avss_sdk.errors import AvssError
from avss_sdk.fileio import file_hash, write_atomic
from avss_sdk.runtime import tensorrt_plugin
from avss_sdk.runtime.manifest import PRECISIONS, EngineEntry, Manifest, StageEntry, engine_key
from avss_sdk.runtime.tensorrt_plugin import stage_uses_plugin
from avss_sdk.runtime.tensorrt_common import (
    MIN_TENSORRT,
    STRONGLY_TYPED_FROM,
    EngineFileError,
    check_engine_file,
    compute_capability,
    format_version,
    import_tensorrt,
    parse_version,
    record_path,
    tensorrt_version,
    write_engine,
)

DYNAMIC_AXES = ("batch", "vocab", "prompts")
OPT_VOCAB = 16
OPT_PROMPTS = 16

Profile = dict[str, dict[str, list[int]]]


class EngineBuildError(AvssError, RuntimeError):
    """TensorRT could not parse the ONNX or build the engine; the message says where and why."""


def precision_mode(version: str, precision: str) -> str:
    """How TensorRT ``version`` gets ``precision``: "builder_flags" (10.x) or "strongly_typed" (>= 11)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    parsed = parse_version(version)
    if parsed[:2] < MIN_TENSORRT:
        raise ValueError(f"TensorRT {version} is older than {format_version(MIN_TENSORRT)}, "
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


def plugin_choice(manifest: Manifest, version: str | None, capability: str) -> tuple[bool, str | None]:
    """(True, None) to build and run plugin engines, (False, None) when the export has none to
    offer, (False, why not in one line) when it has but this TensorRT or GPU cannot have them."""
    offered = any(stage_uses_plugin(stage.onnx, True) or (stage.engine is not None and stage.engine.plugin)
                  for stage in manifest.stages.values())
    if not offered:
        return False, None
    reason = tensorrt_plugin.plugin_unavailable_reason(version, capability)
    if reason is not None:
        return False, f"plain TensorRT engines instead of the fused-attention plugin: {reason}"
    return True, None


def stage_onnx(manifest: Manifest, stage: str, version: str, precision: str, plugin: bool) -> Path:
    """The ONNX file an engine of ``stage`` is built from: :func:`onnx_precision`'s file, or in plugin
    mode its ``"<precision>-plugin"`` variant where the export wrote one (stages with attention)."""
    key = onnx_precision(version, precision)
    if stage_uses_plugin(manifest.stages[stage].onnx, plugin) and f"{key}-plugin" in manifest.stages[stage].onnx:
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
                      precision: str, profile: Profile, plugin: bool = False) -> tuple[bool, str]:
    """(True, "up to date") when ``entry`` was built for exactly these; else (False, what changed)."""
    if entry.plugin != plugin:
        return False, ("built with the fused-attention plugin, a plain engine is wanted" if entry.plugin
                       else "built without the fused-attention plugin, a plugin engine is wanted")
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
    if entry.key != engine_key(tensorrt_version, compute_capability, onnx_hash, precision, profile, plugin):
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


def _register_plugin(version: str, ptx_path: Path) -> None:
    try:
        tensorrt_plugin.register_plugin(ptx_path)
    except tensorrt_plugin.KernelBuildError as error:
        raise EngineBuildError(f"cannot build a plugin engine: {error}; build the plain engines instead") from None


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
                 workspace_gb: float = 2.0, timing_cache_path: str | Path | None = None,
                 plugin_ptx: str | Path | None = None, log: Callable[[str], None] = print,
                 relative_to: str | Path | None = None) -> EngineEntry:
    """Parse ``onnx_path``, build the engine, write it (atomically, with its checksum sidecar) to
    ``engine_path``, update the timing cache, and return its manifest :class:`EngineEntry`
    (``file`` relative to ``relative_to`` when given). Pick ``onnx_path`` with :func:`stage_onnx`.
    ``plugin_ptx``: the kernel's PTX (:func:`avss_sdk.runtime.tensorrt_plugin.ensure_ptx`) for an
    ONNX with ``avss::FusedCrossAttention`` nodes; the engine then embeds it."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX file {onnx_path} does not exist")
    if workspace_gb <= 0:
        raise ValueError(f"workspace_gb must be positive, got {workspace_gb}")
    trt = import_tensorrt()
    version = str(trt.__version__)
    mode = precision_mode(version, precision)
    capability = compute_capability()
    if plugin_ptx is not None:
        _register_plugin(version, Path(plugin_ptx))

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
    if plugin_ptx is not None:
        how += ", fused-attention plugin"
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
    plugin = plugin_ptx is not None
    return EngineEntry(file=file, precision=precision, tensorrt_version=version, compute_capability=capability,
                       profile=profile, key=engine_key(version, capability, file_hash(onnx_path), precision, profile,
                                                       plugin), plugin=plugin)


class TensorRTEngineCache:
    """Engines for every stage of a manifest that match this machine, rebuilt when they do not.

    A stage's engine is reused when :func:`engine_is_current` finds its recorded TensorRT
    version, GPU, ONNX hash, precision, profile and plugin unchanged (the manifest's own engine
    first, then one in ``cache_dir``, recorded in ``<engine>.json``); anything else is rebuilt
    from the stage's ONNX into ``cache_dir``, with a message saying what changed.
    """

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def ensure(self, manifest: Manifest, precision: str, workspace_gb: float, plugin: bool,
               cache_dir: str | os.PathLike) -> dict[str, tuple[Path, bool]]:
        """{stage: (engine path, whether it embeds the plugin)} for every stage, building into
        ``cache_dir`` what is missing or stale. With ``plugin`` (see :func:`plugin_choice`), the
        stages with attention get plugin engines; where the kernel's PTX cannot be compiled here,
        plain ones, with a one-line reason."""
        version = tensorrt_version()
        if version is None:
            import_tensorrt()  # raises with the install hint
        capability = compute_capability()
        cache_dir = Path(cache_dir)
        engines = {}
        for name in manifest.stages:
            uses_plugin = stage_uses_plugin(manifest.stages[name].onnx, plugin)
            path, reason = self.select(manifest, name, precision, version, capability, cache_dir, uses_plugin)
            ptx = None
            if path is None and uses_plugin:
                try:
                    ptx = tensorrt_plugin.ensure_ptx(cache_dir, log=self.log)
                except tensorrt_plugin.KernelBuildError as error:
                    self.log(f"{name}: a plain engine instead of the fused-attention plugin: {error}")
                    uses_plugin = False
                    path, reason = self.select(manifest, name, precision, version, capability, cache_dir, False)
            if path is None:
                onnx_path = stage_onnx(manifest, name, version, precision, uses_plugin)
                self.log(f"{name}: {reason}: rebuilding from {onnx_path}")
                path = cache_dir / f"{name}.{precision}{'-plugin' if uses_plugin else ''}.engine"
                entry = build_engine(onnx_path, path, precision, stage_profile(manifest, name), workspace_gb,
                                     cache_dir / "timing.cache", ptx, self.log)
                entry.file = path.name
                write_atomic(record_path(path), (json.dumps(asdict(entry), indent=2) + "\n").encode("utf-8"))
            engines[name] = (path, uses_plugin)
        return engines

    def select(self, manifest: Manifest, stage: str, precision: str, version: str, capability: str,
               cache_dir: str | os.PathLike, plugin: bool = False) -> tuple[Path | None, str]:
        """(engine path, "up to date") for a usable engine of ``stage`` built for ``version``,
        ``capability`` and ``plugin`` (the manifest's own first, then ``cache_dir``'s), else (None, why not)."""
        uses_plugin = stage_uses_plugin(manifest.stages[stage].onnx, plugin)
        onnx_hash = file_hash(stage_onnx(manifest, stage, version, precision, uses_plugin))
        profile = stage_profile(manifest, stage)
        candidates = []
        entry = manifest.stages[stage].engine
        if entry is not None:
            candidates.append((entry, manifest.path(entry.file)))
        cached = Path(cache_dir) / f"{stage}.{precision}{'-plugin' if uses_plugin else ''}.engine"
        record = record_path(cached)
        if record.is_file():
            try:
                candidates.append((EngineEntry(**json.loads(record.read_text(encoding="utf-8"))), cached))
            except (TypeError, ValueError) as error:
                self.log(f"{stage}: ignoring unreadable engine record {record} ({error})")
        reason = "no engine built yet"
        for entry, path in candidates:
            current, reason = engine_is_current(entry, version, capability, onnx_hash, precision, profile,
                                                uses_plugin)
            if current:
                try:
                    check_engine_file(path)
                except EngineFileError as error:
                    current, reason = False, str(error)
            if current:
                return path, reason
        return None, reason
