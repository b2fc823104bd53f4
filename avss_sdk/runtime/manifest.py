"""``manifest.json``: the one file the runtime reads to find and feed a model's stages.

Written by ``export/build_engines.py`` into its output directory, next to the ONNX files
(``onnx/<stage>.<precision>.onnx``), the tokenizer (``tokenizer.json``) and, where
TensorRT was present, the engines (``engines/<stage>.<precision>.engine``). Paths inside
are relative to the manifest's directory, so the directory can be moved or shipped (the
package ships one for its default model in ``avss_sdk/models/default``).

Layout (``format`` "avss_sdk.manifest", ``version`` 1)::

    model:        name, hash (sha256 of the checkpoint file), config (the ModelConfig dict)
    precision:    the precision engines were asked for ("fp16" or "fp32")
    max_vocab:    the largest vocabulary the engines' profiles accept
    preprocess:   image_size, image_mean, image_std, sample_rate, mel_* parameters, flow_stride
    postprocess:  foreground_threshold
    text:         tokenizer, context_length, embed_dim, category_templates, scene_template,
                  no_scene_embedding (the learned embedding used when no scene text is given)
    stages:       per stage: onnx {precision: file}, inputs and outputs [{name, shape, dtype}]
                  (a shape entry is an int or the name of a dynamic axis: "batch", "vocab",
                  "prompts"), engine (null, or file, precision, tensorrt_version,
                  compute_capability, profile, key)
    engines:      built (bool) and reason (why not, when not)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avss_sdk.errors import AvssError

MANIFEST_FORMAT = "avss_sdk.manifest"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
STAGE_NAMES = ("flow", "image_encoder", "audio_encoder", "text_encoder", "vta", "mask_decoder")
PRECISIONS = ("fp32", "fp16")
DTYPES = ("float32", "float16", "int64", "int32", "bool")


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
        return cls(str(values["name"]), tuple(values["shape"]), str(values["dtype"]))


@dataclass
class EngineEntry:
    """A built TensorRT engine and what it was built for; ``key`` is :func:`engine_key` of those."""

    file: str
    precision: str
    tensorrt_version: str
    compute_capability: str
    profile: dict[str, dict[str, list[int]]]
    key: str


@dataclass
class StageEntry:
    name: str
    onnx: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    engine: EngineEntry | None = None

    @classmethod
    def from_dict(cls, name: str, values: dict[str, Any]) -> "StageEntry":
        engine = values.get("engine")
        return cls(name, dict(values["onnx"]),
                   [TensorSpec.from_dict(t) for t in values["inputs"]],
                   [TensorSpec.from_dict(t) for t in values["outputs"]],
                   EngineEntry(**engine) if engine else None)


@dataclass
class Manifest:
    """A loaded manifest; :meth:`path` resolves its relative file names."""

    root: Path
    model: dict[str, Any]
    precision: str
    max_vocab: int
    preprocess: dict[str, Any]
    postprocess: dict[str, Any]
    text: dict[str, Any]
    stages: dict[str, StageEntry]
    engines: dict[str, Any] = field(default_factory=lambda: {"built": False, "reason": "not built"})

    @property
    def model_hash(self) -> str:
        return str(self.model["hash"])

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
            stages[name] = {"onnx": stage.onnx,
                            "inputs": [{**asdict(t), "shape": list(t.shape)} for t in stage.inputs],
                            "outputs": [{**asdict(t), "shape": list(t.shape)} for t in stage.outputs],
                            "engine": asdict(stage.engine) if stage.engine else None}
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "model": self.model,
                "precision": self.precision, "max_vocab": self.max_vocab, "preprocess": self.preprocess,
                "postprocess": self.postprocess, "text": self.text, "stages": stages, "engines": self.engines}

    def save(self, directory: str | os.PathLike | None = None) -> Path:
        """Write ``manifest.json`` atomically into ``directory`` (default: the manifest's root)."""
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
            raise ManifestError(f"no manifest at {path} (write one with: python export/build_engines.py "
                                f"--checkpoint default --out {path.parent})")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ManifestError(f"{path} is not a readable manifest: {error}") from error
        if not isinstance(values, dict) or values.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{path} is not an avss_sdk manifest")
        if values.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{path} has manifest version {values.get('version')}; "
                                f"this avss_sdk reads version {MANIFEST_VERSION} (re-run export/build_engines.py)")
        try:
            if "hash" not in values["model"]:
                raise KeyError("model.hash")
            stages = {name: StageEntry.from_dict(name, values["stages"][name]) for name in STAGE_NAMES}
            manifest = cls(path.parent, values["model"], values["precision"], int(values["max_vocab"]),
                           values["preprocess"], values["postprocess"], values["text"], stages,
                           values.get("engines", {"built": False, "reason": "not recorded"}))
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ManifestError):
                raise ManifestError(f"{path}: {error}") from None
            raise ManifestError(f"{path} is incomplete or malformed: {error!r}") from error
        for stage in stages.values():
            for file in list(stage.onnx.values()) + ([stage.engine.file] if stage.engine else []):
                if not manifest.path(file).is_file():
                    raise ManifestError(f"{path}: stage {stage.name!r} names {file}, which is missing")
        return manifest


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's sha256: model hashes and cache keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def engine_key(tensorrt_version: str, compute_capability: str, onnx_hash: str, precision: str,
               profile: dict[str, dict[str, list[int]]]) -> str:
    """The engine cache key: an engine is reused only when all of these match."""
    text = json.dumps([tensorrt_version, compute_capability, onnx_hash, precision, profile], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
