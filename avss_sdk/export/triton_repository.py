"""Write a Triton Inference Server model repository for an exported model.

``write_triton_repository(manifest, "triton_models", backend="tensorrt")`` lays out::

    triton_models/
      flow/config.pbtxt            flow/1/model.plan        (or model.onnx for onnxruntime)
      image_encoder/ ...  audio_encoder/ ...  vta/ ...  mask_decoder/ ...  text_encoder/ ...
      avss_ssp_ov/config.pbtxt     avss_ssp_ov/1/           (the per-frame ensemble)

Every stage is one model (``max_batch_size: 0`` and explicit dims, -1 for the dynamic axes,
names, types and shapes from the manifest). The ensemble ``avss_ssp_ov`` runs one frame:
flow, image_encoder, audio_encoder, vta, mask_decoder, wired by tensor name (a step's input
is the earlier step's output of the same name, otherwise an ensemble input); its inputs are
the frames, the log-mel window, ``class_embeddings`` and ``scene_embedding``, its outputs the
mask decoder's. ``text_encoder`` stays a separate model: it runs when the vocabulary changes,
and its embeddings are fed to the ensemble.

TensorRT plans only load in a Triton whose TensorRT version and GPU match the engine's
(``tensorrt_version`` and ``compute_capability`` in the manifest).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from avss_sdk.runtime.manifest import Manifest, StageEntry, TensorSpec

ENSEMBLE_NAME = "avss_ssp_ov"
ENSEMBLE_STAGES = ("flow", "image_encoder", "audio_encoder", "vta", "mask_decoder")
PLATFORMS = {"tensorrt": ("tensorrt_plan", "model.plan"), "onnxruntime": ("onnxruntime_onnx", "model.onnx")}
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                "bool": "TYPE_BOOL"}


class TritonExportError(ValueError):
    """The manifest cannot be turned into a repository (missing engine, inconsistent tensors)."""


def _dims(spec: TensorSpec) -> str:
    return ", ".join(str(d) if isinstance(d, int) else "-1" for d in spec.shape)


def _tensor(spec: TensorSpec, name: str | None = None) -> str:
    return (f"  {{\n    name: \"{name or spec.name}\"\n    data_type: {TRITON_TYPES[spec.dtype]}\n"
            f"    dims: [ {_dims(spec)} ]\n  }}")


def _io_block(kind: str, specs: list[TensorSpec]) -> str:
    return f"{kind} [\n" + ",\n".join(_tensor(s) for s in specs) + "\n]\n"


def stage_config(stage: StageEntry, platform: str) -> str:
    """config.pbtxt of one stage model (TensorRT plans pinned to the GPU; ONNX where Triton puts it)."""
    gpu = "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]\n" if platform == "tensorrt_plan" else ""
    return (f"name: \"{stage.name}\"\nplatform: \"{platform}\"\nmax_batch_size: 0\n"
            + _io_block("input", stage.inputs) + _io_block("output", stage.outputs) + gpu)


def _same(a: TensorSpec, b: TensorSpec) -> bool:
    return a.dtype == b.dtype and len(a.shape) == len(b.shape) and all(
        x == y or isinstance(x, str) or isinstance(y, str) for x, y in zip(a.shape, b.shape))


def ensemble_config(manifest: Manifest) -> str:
    """config.pbtxt of the per-frame ensemble, wiring the stages by tensor name."""
    produced: dict[str, TensorSpec] = {}
    inputs: dict[str, TensorSpec] = {}
    steps = []
    for name in ENSEMBLE_STAGES:
        stage = manifest.stages[name]
        lines = [f"    {{\n      model_name: \"{name}\"\n      model_version: -1"]
        for spec in stage.inputs:
            source = produced.get(spec.name) or inputs.setdefault(spec.name, spec)
            if not _same(source, spec):
                raise TritonExportError(f"stage {name!r} input {spec.name!r} {spec.dtype}{list(spec.shape)} does not "
                                        f"match the tensor of that name {source.dtype}{list(source.shape)}")
            lines.append(f"      input_map {{\n        key: \"{spec.name}\"\n        value: \"{spec.name}\"\n      }}")
        for spec in stage.outputs:
            if spec.name in produced or spec.name in inputs:
                raise TritonExportError(f"stage {name!r} output {spec.name!r} is already a tensor of the ensemble")
            produced[spec.name] = spec
            lines.append(f"      output_map {{\n        key: \"{spec.name}\"\n        value: \"{spec.name}\"\n      }}")
        steps.append("\n".join(lines) + "\n    }")
    outputs = manifest.stages["mask_decoder"].outputs
    return (f"name: \"{ENSEMBLE_NAME}\"\nplatform: \"ensemble\"\nmax_batch_size: 0\n"
            + _io_block("input", list(inputs.values())) + _io_block("output", outputs)
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def _external_data_files(onnx_path: Path) -> list[Path]:
    """Files an ONNX model keeps its weights in (external data), relative to its folder."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    locations = {entry.value for tensor in model.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    return [Path(location) for location in sorted(locations)]


def _model_file(manifest: Manifest, stage: StageEntry, backend: str, precision: str) -> Path:
    if backend == "tensorrt":
        if stage.engine is None:
            raise TritonExportError(f"stage {stage.name!r} has no TensorRT engine in {manifest.root}: build the "
                                    "engines first (avss-build-engines) or use backend='onnxruntime'")
        return manifest.path(stage.engine.file)
    return manifest.onnx_path(stage.name, precision)


def write_triton_repository(manifest: Manifest, out_dir: str | Path, backend: str = "tensorrt",
                            precision: str | None = None) -> Path:
    """Write the repository into ``out_dir`` (created; existing model folders are replaced) and return it.

    ``precision`` picks the ONNX files for ``backend="onnxruntime"`` (default: the manifest's
    precision if exported, else fp32); TensorRT uses the manifest's engines."""
    if backend not in PLATFORMS:
        raise ValueError(f"backend must be one of {sorted(PLATFORMS)}, got {backend!r}")
    platform, file_name = PLATFORMS[backend]
    if precision is None:
        precision = manifest.precision if manifest.precision in manifest.stages["flow"].onnx else "fp32"
    out_dir = Path(out_dir)
    files = {name: _model_file(manifest, stage, backend, precision) for name, stage in manifest.stages.items()}
    for name, stage in manifest.stages.items():
        for spec in stage.inputs + stage.outputs:
            if spec.dtype not in TRITON_TYPES:
                raise TritonExportError(f"stage {name!r} tensor {spec.name!r} has dtype {spec.dtype}, which has "
                                        "no Triton type here")
    ensemble = ensemble_config(manifest)  # fails before anything is written
    for name, stage in manifest.stages.items():
        model_dir = out_dir / name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(stage_config(stage, platform), encoding="utf-8")
        shutil.copyfile(files[name], model_dir / "1" / file_name)
        if backend == "onnxruntime":
            for extra in _external_data_files(files[name]):
                (model_dir / "1" / extra).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(files[name].parent / extra, model_dir / "1" / extra)
    ensemble_dir = out_dir / ENSEMBLE_NAME
    if ensemble_dir.exists():
        shutil.rmtree(ensemble_dir)
    (ensemble_dir / "1").mkdir(parents=True)  # Triton wants a version folder, empty for ensembles
    (ensemble_dir / "config.pbtxt").write_text(ensemble, encoding="utf-8")
    return out_dir
