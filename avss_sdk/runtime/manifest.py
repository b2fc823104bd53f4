"""``manifest.json``: the one file the runtime reads to find and feed a model's stages.

Written by ``avss-build-engines`` (:mod:`avss_sdk.export.build_engines`) into its output directory, next to the ONNX files
(``onnx/<stage>.<precision>.onnx``), the tokenizer (``tokenizer.json``) and, where
TensorRT was present, the engines (``engines/<stage>.<precision>.engine``). Paths inside
are relative to the manifest's directory, so the directory can be moved or shipped (the
package ships one for its default model in ``avss_sdk/models/default``).

Layout (``format`` "avss_sdk.manifest", ``version`` 1)::

    model:        name, hash (hex digits of the checkpoint's sha256: also a cache file name),
                  checkpoint (relative path, or null), config (the ModelConfig dict)
    precision:    the precision engines were asked for ("fp16" or "fp32")
    max_vocab:    the largest vocabulary the engines' profiles accept
    preprocess:   image_size, image_mean, image_std, sample_rate, mel_* parameters, flow_stride
    postprocess:  foreground_threshold, guided_filter (null, or radius, eps and subsample of the
                  filter that refines P(object) with the input frame as guide)
    text:         tokenizer, context_length, embed_dim, category_templates, scene_template,
                  no_scene_embedding (the learned embedding used when no scene text is given)
    stages:       per stage: onnx {precision: file}, sha256 {precision: sha256 of that file},
                  inputs and outputs [{name, shape, dtype}]
                  (a shape entry is an int or the name of a dynamic axis: "batch", "vocab",
                  "prompts"), engine (null, or file, precision, tensorrt_version,
                  compute_capability, profile, key, plugin)
    engines:      built (bool) and reason (why not, when not)
    int8:         (only after an INT8 step: ``avss-build-engines --int8``) calibration (data, split,
                  clips, frames, method), min_agreement, check_clips, stages: {stage: {use, pixels,
                  objects, float_layers, method}}: whether the stage's INT8 files (onnx keys "int8" for
                  TensorRT, "int8_cpu" for ONNX Runtime on a CPU) are used, their label agreement with
                  FP32, the layers they keep in float and the calibrator of their ranges

Every section is typed and checked when the manifest is made or loaded (a hex model hash,
positive sizes, preprocessing equal to this runtime's, ``str.format``-safe templates, a
sha256 for every ONNX file); :meth:`Manifest.check_stages`, which the segmenter calls at
load, checks the stages' tensors against what the runtime feeds (names, shapes from the
preprocess and text sections, one shape for a tensor handed from stage to stage). A
mismatch is a :class:`ManifestError` at load, never a wrong answer or a failure at the
first frame. :func:`check_onnx_file` checks an ONNX file's sha256
before a backend loads it, once per file version (remembered in the cache directory).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avss_sdk.errors import AvssError, InputError
from avss_sdk.media import SAMPLE_RATE
from avss_sdk.postprocess import GuidedFilter
from avss_sdk.preprocess import IMAGE_MEAN, IMAGE_STD, LOG_MEL_SAMPLES, MEL_BANDS, MEL_FRAMES
from avss_sdk.fileio import file_hash, write_atomic  # noqa: F401  (file_hash: part of this module's API)

MANIFEST_FORMAT = "avss_sdk.manifest"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
STAGE_NAMES = ("flow", "image_encoder", "audio_encoder", "text_encoder", "vta", "mask_decoder")
PRECISIONS = ("fp32", "fp16")
INT8_FILES = ("int8", "int8_cpu")  # a stage's INT8 ONNX keys: TensorRT explicit quantization, ONNX Runtime on a CPU
SPLITS = ("train", "val", "test")
DTYPES = ("float32", "float16", "int64", "int32", "bool")
# The tensors the runtime feeds and reads, stage by stage: an export must name them so.
STAGE_IO = {
    "flow": (("previous", "current"), ("flow",)),
    "image_encoder": (("image",), ("mask_features", "dense_embedding")),
    "audio_encoder": (("log_mel",), ("audio_embedding",)),
    "text_encoder": (("token_ids",), ("text_embedding",)),
    "vta": (("mask_features", "class_embeddings", "scene_embedding"), ("aligned_features",)),
    "mask_decoder": (("aligned_features", "dense_embedding", "flow", "audio_embedding", "class_embeddings"),
                     ("pixel_logits", "masks", "class_logits", "sounding")),
}
MODEL_HASH = re.compile(r"[0-9a-f]{8,64}")
SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(AvssError, ValueError):
    """A manifest that is missing, unreadable, from another program or version, or inconsistent."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a stage: its name, its shape (ints and dynamic axis names) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TensorSpec":
        if values.get("dtype") not in DTYPES:
            raise ManifestError(f"tensor {values.get('name')!r} has unknown dtype {values.get('dtype')!r}")
        shape = values["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, str) or _positive_int(d) for d in shape):
            raise ManifestError(f"tensor {values.get('name')!r} has shape {shape!r}: expected a list of "
                                f"positive ints and dynamic axis names")
        return cls(_string(values["name"], "tensor name"), tuple(shape), str(values["dtype"]))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _int(value: Any, what: str) -> int:
    if not _positive_int(value):
        raise ManifestError(f"{what} must be a positive int, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _template(value: Any, what: str) -> str:
    """A prompt template: a string with exactly one ``{}`` and no other braces (``str.format`` safe)."""
    value = _string(value, what)
    if value.count("{}") != 1 or "{" in value.replace("{}", "") or "}" in value.replace("{}", ""):
        raise ManifestError(f"{what} must hold exactly one '{{}}' and no other braces, got {value!r}")
    return value


def _section(values: dict[str, Any], name: str, parent: str = "") -> dict[str, Any]:
    section = values.get(name)
    if not isinstance(section, dict):
        raise ManifestError(f"is incomplete or malformed: {parent}{name} is missing or not a mapping")
    return section


@dataclass(frozen=True)
class ModelInfo:
    """Which model: its name, ``hash`` (hex: a cache file name), checkpoint (relative path) and config."""

    name: str
    hash: str
    checkpoint: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.hash, str) or not MODEL_HASH.fullmatch(self.hash):
            raise ManifestError(f"model.hash must be 8 to 64 lowercase hex digits, got {self.hash!r}")
        if self.checkpoint is not None:
            _string(self.checkpoint, "model.checkpoint")
        if not isinstance(self.config, dict):
            raise ManifestError(f"model.config must be a mapping, got {type(self.config).__name__}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelInfo":
        return cls(_string(values.get("name"), "model.name"), values.get("hash"), values.get("checkpoint"),
                   values.get("config", {}))


@dataclass(frozen=True)
class Preprocess:
    """What a frame and its audio become before the first stage; all but the sizes must match this runtime."""

    image_size: int
    flow_stride: int
    image_mean: tuple[float, ...] = IMAGE_MEAN
    image_std: tuple[float, ...] = IMAGE_STD
    sample_rate: int = SAMPLE_RATE
    mel_bands: int = MEL_BANDS
    mel_frames: int = MEL_FRAMES
    log_mel_samples: int = LOG_MEL_SAMPLES

    def __post_init__(self) -> None:
        _int(self.image_size, "preprocess.image_size")
        _int(self.flow_stride, "preprocess.flow_stride")
        if self.image_size % self.flow_stride:
            raise ManifestError(f"preprocess.image_size {self.image_size} is not a multiple of "
                                f"preprocess.flow_stride {self.flow_stride}")
        runtime = {"image_mean": IMAGE_MEAN, "image_std": IMAGE_STD, "sample_rate": SAMPLE_RATE,
                   "mel_bands": MEL_BANDS, "mel_frames": MEL_FRAMES, "log_mel_samples": LOG_MEL_SAMPLES}
        for key, expected in runtime.items():
            value = getattr(self, key)
            if isinstance(expected, tuple):
                value = tuple(_number(v, f"preprocess.{key}") for v in value) \
                    if isinstance(value, (list, tuple)) else value
            if value != expected:
                raise ManifestError(f"preprocess.{key} is {getattr(self, key)!r}, but this runtime prepares "
                                    f"inputs with {expected!r}: the model was exported for other preprocessing")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Preprocess":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ManifestError(f"preprocess has unknown keys {unknown}")
        if "image_size" not in values or "flow_stride" not in values:
            raise ManifestError("preprocess needs image_size and flow_stride")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class Postprocess:
    """The label decision: a pixel is an object where its foreground probability, refined by the
    guided filter where there is one, exceeds the threshold."""

    foreground_threshold: float
    guided_filter: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        value = _number(self.foreground_threshold, "postprocess.foreground_threshold")
        if not 0.0 <= value <= 1.0:
            raise ManifestError(f"postprocess.foreground_threshold must be in [0, 1], got {value}")
        try:
            GuidedFilter.from_dict(self.guided_filter)
        except InputError as error:
            raise ManifestError(f"postprocess.guided_filter: {error}") from None

    @property
    def guided(self) -> GuidedFilter | None:
        """The guided filter, or None for none."""
        return GuidedFilter.from_dict(self.guided_filter)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Postprocess":
        return cls(values.get("foreground_threshold"), values.get("guided_filter"))


@dataclass(frozen=True)
class TextSection:
    """The text side: tokenizer file, token length, embedding size, prompt templates, "no scene" embedding."""

    tokenizer: str
    context_length: int
    embed_dim: int
    category_templates: tuple[str, ...]
    scene_template: str
    no_scene_embedding: tuple[float, ...]

    def __post_init__(self) -> None:
        _string(self.tokenizer, "text.tokenizer")
        _int(self.context_length, "text.context_length")
        _int(self.embed_dim, "text.embed_dim")
        if not isinstance(self.category_templates, tuple) or not self.category_templates:
            raise ManifestError("text.category_templates must be a non-empty list of templates")
        for i, template in enumerate(self.category_templates):
            _template(template, f"text.category_templates[{i}]")
        _template(self.scene_template, "text.scene_template")
        if not isinstance(self.no_scene_embedding, tuple) or len(self.no_scene_embedding) != self.embed_dim:
            raise ManifestError(f"text.no_scene_embedding must be {self.embed_dim} numbers (text.embed_dim)")
        for value in self.no_scene_embedding:
            _number(value, "text.no_scene_embedding")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TextSection":
        templates, embedding = values.get("category_templates"), values.get("no_scene_embedding")
        return cls(values.get("tokenizer"), values.get("context_length"), values.get("embed_dim"),
                   tuple(templates) if isinstance(templates, list) else templates, values.get("scene_template"),
                   tuple(embedding) if isinstance(embedding, list) else embedding)


# ONNX Runtime's calibrators the INT8 step compares (avss_sdk.export.quantize_int8 explains them).
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Int8Calibration:
    """What calibrated the INT8 ranges: the data set's folder name, its split, clips and frames, the
    calibrators compared (``method``: some of :data:`CALIBRATION_METHODS`, comma-separated), and the
    bits of the CPU files' weights (``cpu_weight_bits``: 7 keeps AVX2's 16-bit sums from saturating;
    8 in exports made before that was known)."""

    data: str
    split: str
    clips: int
    frames: int
    method: str
    cpu_weight_bits: int = 8

    def __post_init__(self) -> None:
        _string(self.data, "int8.calibration.data")
        if self.split not in SPLITS:
            raise ManifestError(f"int8.calibration.split must be one of {SPLITS}, got {self.split!r}")
        _int(self.clips, "int8.calibration.clips")
        _int(self.frames, "int8.calibration.frames")
        _string(self.method, "int8.calibration.method")
        unknown = sorted(set(self.method.split(",")) - set(CALIBRATION_METHODS))
        if unknown:
            raise ManifestError(f"int8.calibration.method must name some of {CALIBRATION_METHODS}, got {unknown}")
        if type(self.cpu_weight_bits) is not int or self.cpu_weight_bits not in (7, 8):  # not a bool, float or text
            raise ManifestError(f"int8.calibration.cpu_weight_bits must be 7 or 8, got {self.cpu_weight_bits!r}")


@dataclass(frozen=True)
class Int8Stage:
    """One stage's INT8 verdict: ``use`` its INT8 files or not, and the label agreement with FP32 that decided it.

    ``pixels`` is the share of all pixels whose label is unchanged; ``objects`` the share among
    pixels either pipeline labels as a sounding object. ``float_layers``: the weight layers its
    INT8 files keep in float (the stage's first and last ones, where the whole stage in INT8
    missed the agreement); empty when every layer is quantized. ``method``: the calibrator whose
    activation ranges its INT8 files hold (one of :data:`CALIBRATION_METHODS`).
    """

    use: bool
    pixels: float
    objects: float
    float_layers: tuple[str, ...] = ()
    method: str = "minmax"

    def __post_init__(self) -> None:
        if not isinstance(self.use, bool):
            raise ManifestError(f"int8 stage use must be true or false, got {self.use!r}")
        if not isinstance(self.float_layers, (list, tuple)) or not all(isinstance(n, str) for n in self.float_layers):
            raise ManifestError(f"int8 stage float_layers must be a list of layer names, got {self.float_layers!r}")
        object.__setattr__(self, "float_layers", tuple(self.float_layers))
        if self.method not in CALIBRATION_METHODS:
            raise ManifestError(f"int8 stage method must be one of {CALIBRATION_METHODS}, got {self.method!r}")
        for name in ("pixels", "objects"):
            if not 0.0 <= _number(getattr(self, name), f"int8 stage {name}") <= 1.0:
                raise ManifestError(f"int8 stage {name} must be a share in [0, 1], got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Int8Section:
    """The INT8 step's record: its calibration, the agreement a stage needed (``min_agreement``
    of object pixels on ``check_clips`` held-out clips) and each quantized stage's verdict."""

    calibration: Int8Calibration
    min_agreement: float
    check_clips: int
    stages: dict[str, Int8Stage]

    def __post_init__(self) -> None:
        if not 0.0 <= _number(self.min_agreement, "int8.min_agreement") <= 1.0:
            raise ManifestError(f"int8.min_agreement must be a share in [0, 1], got {self.min_agreement!r}")
        _int(self.check_clips, "int8.check_clips")
        if not isinstance(self.stages, dict) or not self.stages:
            raise ManifestError("int8.stages must name at least one quantized stage")
        unknown = sorted(set(self.stages) - set(STAGE_NAMES))
        if unknown:
            raise ManifestError(f"int8.stages names unknown stages {unknown}")

    @property
    def used(self) -> tuple[str, ...]:
        """The stages that run INT8, in :data:`STAGE_NAMES` order."""
        return tuple(name for name in STAGE_NAMES if name in self.stages and self.stages[name].use)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Int8Section":
        calibration = _section(values, "calibration", "int8.")
        stages = _section(values, "stages", "int8.")
        unknown = sorted(set(calibration) - set(Int8Calibration.__dataclass_fields__))
        if unknown:
            raise ManifestError(f"int8.calibration has unknown keys {unknown}")
        return cls(Int8Calibration(**calibration), values.get("min_agreement"), values.get("check_clips"),
                   {name: Int8Stage(entry.get("use"), entry.get("pixels"), entry.get("objects"),
                                    entry.get("float_layers", ()), entry.get("method", "minmax"))
                    for name, entry in ((n, _section(stages, n, "int8.stages.")) for n in stages)})


@dataclass
class EngineEntry:
    """A built TensorRT engine and what it was built for; ``key`` is :func:`engine_key` of those."""

    file: str
    precision: str
    tensorrt_version: str
    compute_capability: str
    profile: dict[str, dict[str, list[int]]]
    key: str
    plugin: bool = False  # whether the engine embeds the avss::FusedCrossAttention plugin


@dataclass
class StageEntry:
    """One stage: its ONNX files by precision (with their sha256), its tensors, and its engine."""

    name: str
    onnx: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    engine: EngineEntry | None = None
    sha256: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, values: dict[str, Any]) -> "StageEntry":
        engine = values.get("engine")
        onnx, sha256 = dict(values["onnx"]), dict(values.get("sha256") or {})
        for key, file in onnx.items():
            _string(file, f"stage {name!r} onnx {key!r}")
            if not isinstance(sha256.get(key), str) or not SHA256.fullmatch(sha256[key]):
                raise ManifestError(f"stage {name!r} records no sha256 for its {key} ONNX file {file} "
                                    f"(re-export with export/build_engines.py)")
        return cls(name, onnx,
                   [TensorSpec.from_dict(t) for t in values["inputs"]],
                   [TensorSpec.from_dict(t) for t in values["outputs"]],
                   EngineEntry(**engine) if engine else None, sha256)


@dataclass
class Manifest:
    """A loaded manifest; :meth:`path` resolves its relative file names."""

    root: Path
    model: ModelInfo
    precision: str
    max_vocab: int
    preprocess: Preprocess
    postprocess: Postprocess
    text: TextSection
    stages: dict[str, StageEntry]
    engines: dict[str, Any] = field(default_factory=lambda: {"built": False, "reason": "not built"})
    int8: Int8Section | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ManifestError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _int(self.max_vocab, "max_vocab")
        missing = [name for name in STAGE_NAMES if name not in self.stages]
        if missing:
            raise ManifestError(f"stages {missing} are missing")
        for name in self.int8_stages:
            lacking = [key for key in INT8_FILES if key not in self.stages[name].onnx]
            if lacking:
                raise ManifestError(f"int8.stages.{name} is used, but stages.{name}.onnx has no {lacking} file")

    @property
    def model_hash(self) -> str:
        return self.model.hash

    def check_stages(self) -> None:
        """ManifestError unless the stages' tensors are those this runtime feeds and reads.

        Names as the segmenter uses them, shapes from the preprocess and text sections, and
        every tensor one stage hands to another of one shape and dtype in both.
        """
        try:
            self._check_stages()
        except ManifestError as error:
            raise ManifestError(f"{self.root / MANIFEST_NAME}: {error}") from None

    def _check_stages(self) -> None:
        size, stride = self.preprocess.image_size, self.preprocess.flow_stride
        grid = size // stride
        expected = {  # the shapes the sections fix; other tensors only have to agree from stage to stage
            "previous": ("batch", 3, size, size), "current": ("batch", 3, size, size),
            "image": ("batch", 3, size, size), "flow": ("batch", 2, grid, grid),
            "log_mel": ("batch", self.preprocess.mel_frames, self.preprocess.mel_bands),
            "token_ids": ("prompts", self.text.context_length),
            "text_embedding": ("prompts", self.text.embed_dim),
            "class_embeddings": ("vocab", self.text.embed_dim), "scene_embedding": ("batch", self.text.embed_dim),
        }
        seen: dict[str, TensorSpec] = {}
        for name, (inputs, outputs) in STAGE_IO.items():
            stage = self.stages[name]
            for kind, specs, names in (("inputs", stage.inputs, inputs), ("outputs", stage.outputs, outputs)):
                if tuple(t.name for t in specs) != names:
                    raise ManifestError(f"stage {name!r} has {kind} {[t.name for t in specs]}; "
                                        f"this runtime expects {list(names)}")
                for spec in specs:
                    want = expected.get(spec.name)
                    if want is not None and spec.shape != want:
                        raise ManifestError(f"stage {name!r} tensor {spec.name!r} has shape {list(spec.shape)}; "
                                            f"expected {list(want)} (from preprocess and text)")
                    other = seen.setdefault(spec.name, spec)
                    if (other.shape, other.dtype) != (spec.shape, spec.dtype):
                        raise ManifestError(f"tensor {spec.name!r} is {list(other.shape)} {other.dtype} in one "
                                            f"stage and {list(spec.shape)} {spec.dtype} in stage {name!r}")

    @property
    def int8_stages(self) -> tuple[str, ...]:
        """The stages whose INT8 files passed the export's accuracy check (none without an INT8 step)."""
        return self.int8.used if self.int8 is not None else ()

    def path(self, relative: str) -> Path:
        return self.root / relative

    def onnx_path(self, stage: str, precision: str = "fp32") -> Path:
        """The stage's ONNX file of ``precision`` (ManifestError if the export has none)."""
        files = self.stages[stage].onnx
        if precision not in files:
            raise ManifestError(f"{self.root / MANIFEST_NAME}: stage {stage!r} has no {precision} ONNX "
                                f"(has {sorted(files)})")
        return self.path(files[precision])

    def to_dict(self) -> dict[str, Any]:
        stages = {}
        for name, stage in self.stages.items():
            stages[name] = {"onnx": stage.onnx, "sha256": stage.sha256,
                            "inputs": [{**asdict(t), "shape": list(t.shape)} for t in stage.inputs],
                            "outputs": [{**asdict(t), "shape": list(t.shape)} for t in stage.outputs],
                            "engine": asdict(stage.engine) if stage.engine else None}
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "model": asdict(self.model),
                "precision": self.precision, "max_vocab": self.max_vocab,
                "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.preprocess).items()},
                "postprocess": asdict(self.postprocess),
                "text": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.text).items()},
                "stages": stages, "engines": self.engines, **({"int8": asdict(self.int8)} if self.int8 else {})}

    def save(self, directory: str | os.PathLike | None = None) -> Path:
        """Write ``manifest.json`` atomically into ``directory`` (default: the manifest's root).

        An ONNX file with no sha256 recorded yet gets the one of the file as it is now.
        """
        for stage in self.stages.values():
            for key, file in stage.onnx.items():
                if key not in stage.sha256:
                    stage.sha256[key] = file_hash(self.path(file), length=64)
        root = Path(directory) if directory is not None else self.root
        root.mkdir(parents=True, exist_ok=True)
        path = root / MANIFEST_NAME
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load(cls, location: str | os.PathLike) -> "Manifest":
        """Read a manifest from its directory or its file; a clear :class:`ManifestError` for anything wrong."""
        location = Path(location)
        path = location / MANIFEST_NAME if location.is_dir() or location.suffix != ".json" else location
        if not path.is_file():
            raise ManifestError(f"no manifest at {path} (write one with: avss-build-engines "
                                f"--checkpoint default --out {path.parent})")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ManifestError(f"{path} is not a readable manifest: {error}") from error
        if not isinstance(values, dict) or values.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{path} is not an avss_sdk manifest")
        if values.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{path} has manifest version {values.get('version')}; "
                                f"this avss_sdk reads version {MANIFEST_VERSION} (re-run avss-build-engines)")
        try:
            stages_values = _section(values, "stages")
            stages = {name: StageEntry.from_dict(name, _section(stages_values, name, "stages."))
                      for name in STAGE_NAMES}
            manifest = cls(path.parent, ModelInfo.from_dict(_section(values, "model")), values["precision"],
                           values["max_vocab"], Preprocess.from_dict(_section(values, "preprocess")),
                           Postprocess.from_dict(_section(values, "postprocess")),
                           TextSection.from_dict(_section(values, "text")), stages,
                           values.get("engines", {"built": False, "reason": "not recorded"}),
                           Int8Section.from_dict(_section(values, "int8")) if "int8" in values else None)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ManifestError):
                separator = " " if str(error).startswith("is incomplete") else ": "
                raise ManifestError(f"{path}{separator}{error}") from None
            raise ManifestError(f"{path} is incomplete or malformed: {error!r}") from error
        for stage in stages.values():
            for file in list(stage.onnx.values()) + ([stage.engine.file] if stage.engine else []):
                if not manifest.path(file).is_file():
                    raise ManifestError(f"{path}: stage {stage.name!r} names {file}, which is missing")
        return manifest


def check_onnx_file(manifest: Manifest, stage: str, precision: str, cache_dir: str | os.PathLike) -> Path:
    """The stage's ONNX file of ``precision`` after checking its sha256 against the manifest.

    The file is hashed once per version (path, size and modification time); a match is
    remembered in ``cache_dir/onnx_sha256.json``, so later loads only ``stat`` it. A file
    changed since the export (same size or not) is a :class:`ManifestError` naming it.
    """
    path = manifest.onnx_path(stage, precision)
    expected = manifest.stages[stage].sha256[precision]
    status = path.stat()
    version = [status.st_size, status.st_mtime_ns, expected]
    memo_path = Path(cache_dir) / "onnx_sha256.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    key = str(path.resolve())
    if memo.get(key) == version:
        return path
    actual = file_hash(path, length=64)
    if actual != expected:
        raise ManifestError(f"{path} has changed since the export: its sha256 is {actual[:16]}..., the manifest "
                            f"records {expected[:16]}... (re-export, or restore the file)")
    memo[key] = version
    try:
        write_atomic(memo_path, json.dumps(memo).encode("utf-8"))
    except OSError:
        pass  # a read-only cache only costs hashing again next time
    return path


def engine_key(tensorrt_version: str, compute_capability: str, onnx_hash: str, precision: str,
               profile: dict[str, dict[str, list[int]]], plugin: bool = False) -> str:
    """The engine cache key: an engine is reused only when all of these match. A plugin engine's
    key also holds "plugin" (a plain engine's key is what it was before plugin engines existed)."""
    fields: list[Any] = [tensorrt_version, compute_capability, onnx_hash, precision, profile]
    if plugin:
        fields.append("plugin")
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
