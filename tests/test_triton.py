"""avss_sdk/export/triton_repository.py: a Triton model repository from a manifest with real tiny ONNX files.

config.pbtxt is read back with a small parser of protobuf text format (the subset Triton
configs use), then checked: names, platforms, dims, types, and that every ensemble step maps
to tensors its model has and to ensemble tensors that exist before the step runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from avss_sdk.runtime.manifest import (EngineEntry, Manifest, ModelInfo, Postprocess, Preprocess, StageEntry, TensorSpec,
                                       TextSection)
from avss_sdk.runtime.tensorrt_common import write_engine
from avss_sdk.export.triton_repository import ENSEMBLE_NAME, TritonExportError, write_triton_repository

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"]+))')


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format -> {field: [values]} (every field a list; messages are dicts)."""
    tokens = [m.group(2) or m.group(3) or m.group(4) for m in _TOKEN.finditer(text) if not m.group(1)]
    tokens = [t for t in tokens if t]
    pos = 0

    def value(token: str):
        if token.startswith('"'):
            return token[1:-1]
        try:
            return int(token)
        except ValueError:
            return token

    def item():
        """The message or scalar at ``pos``; leaves ``pos`` after it."""
        nonlocal pos
        if tokens[pos] == "{":
            pos += 1
            parsed = message("}")
        else:
            parsed = value(tokens[pos])
        pos += 1
        return parsed

    def message(end: str | None) -> dict:
        nonlocal pos
        fields: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            items = []
            if tokens[pos] == "[":
                pos += 1
                while tokens[pos] != "]":
                    items.append(item())
                    if tokens[pos] == ",":
                        pos += 1
                pos += 1
            else:
                items.append(item())
            fields.setdefault(name, []).extend(items)
        return fields

    return message(None)


_ONNX_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def _onnx_for(stage: StageEntry, path: Path) -> None:
    """A real ONNX file with the stage's input and output names, shapes and types (Identity/Cast wiring)."""
    nodes = []
    first = stage.inputs[0].name
    for i, spec in enumerate(stage.outputs):
        nodes.append(helper.make_node("ReduceSum", [first], [f"s{i}"], keepdims=1, name=f"sum{i}"))
        nodes.append(helper.make_node("Cast", [f"s{i}"], [spec.name], to=_ONNX_TYPES[spec.dtype], name=f"cast{i}"))
    info = lambda s: helper.make_tensor_value_info(s.name, _ONNX_TYPES[s.dtype], list(s.shape))  # noqa: E731
    graph = helper.make_graph(nodes, stage.name, [info(s) for s in stage.inputs], [info(s) for s in stage.outputs])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _spec(name, *shape, dtype="float32"):
    return TensorSpec(name, tuple(shape), dtype)


def _stages() -> dict[str, StageEntry]:
    """The stage I/O of export/export_onnx.py at a toy size (64 px, grid 8, dims 16)."""
    io = {
        "flow": ([_spec("previous", "batch", 3, 64, 64), _spec("current", "batch", 3, 64, 64)],
                 [_spec("flow", "batch", 2, 8, 8)]),
        "image_encoder": ([_spec("image", "batch", 3, 64, 64)],
                          [_spec("mask_features", "batch", 16, 8, 8), _spec("dense_embedding", "batch", 16, 8, 8)]),
        "audio_encoder": ([_spec("log_mel", "batch", 96, 64)], [_spec("audio_embedding", "batch", 16)]),
        "text_encoder": ([_spec("token_ids", "prompts", 77, dtype="int64")], [_spec("text_embedding", "prompts", 16)]),
        "vta": ([_spec("mask_features", "batch", 16, 8, 8), _spec("class_embeddings", "vocab", 16),
                 _spec("scene_embedding", "batch", 16)], [_spec("aligned_features", "batch", 16, 8, 8)]),
        "mask_decoder": ([_spec("aligned_features", "batch", 16, 8, 8), _spec("dense_embedding", "batch", 16, 8, 8),
                          _spec("flow", "batch", 2, 8, 8), _spec("audio_embedding", "batch", 16),
                          _spec("class_embeddings", "vocab", 16)],
                         [_spec("pixel_logits", "batch", "vocab", 8, 8), _spec("masks", "batch", 4, 8, 8),
                          _spec("class_logits", "batch", 4, "vocab"), _spec("sounding", "batch", 4)]),
    }
    return {name: StageEntry(name, {"fp32": f"onnx/{name}.fp32.onnx"}, inputs, outputs)
            for name, (inputs, outputs) in io.items()}


@pytest.fixture
def manifest(tmp_path) -> Manifest:
    root = tmp_path / "model"
    stages = _stages()
    for stage in stages.values():
        _onnx_for(stage, root / stage.onnx["fp32"])
    result = Manifest(root, ModelInfo("tiny", "0" * 16), "fp32", 16, Preprocess(64, 8), Postprocess(0.5),
                      TextSection("tokenizer.json", 77, 16, ("{}",), "{}", (0.25,) * 16), stages)
    result.save()
    return Manifest.load(root)


def _configs(repo: Path) -> dict[str, dict]:
    return {p.parent.name: parse_pbtxt(p.read_text()) for p in repo.glob("*/config.pbtxt")}


def test_onnxruntime_repository(manifest, tmp_path):
    repo = write_triton_repository(manifest, tmp_path / "repo", backend="onnxruntime")
    configs = _configs(repo)
    assert set(configs) == set(manifest.stages) | {ENSEMBLE_NAME}
    for name, stage in manifest.stages.items():
        config = configs[name]
        assert config["name"] == [name] and config["platform"] == ["onnxruntime_onnx"]
        assert config["max_batch_size"] == [0]
        assert [t["name"][0] for t in config["input"]] == [s.name for s in stage.inputs]
        assert [t["name"][0] for t in config["output"]] == [s.name for s in stage.outputs]
        model_file = repo / name / "1" / "model.onnx"
        assert model_file.read_bytes() == manifest.onnx_path(name).read_bytes()
        onnx.checker.check_model(onnx.load(str(model_file)))
    tokens = configs["text_encoder"]["input"][0]
    assert tokens["data_type"] == ["TYPE_INT64"] and tokens["dims"] == [-1, 77]
    logits = configs["mask_decoder"]["output"][0]
    assert logits["name"] == ["pixel_logits"] and logits["data_type"] == ["TYPE_FP32"]
    assert logits["dims"] == [-1, -1, 8, 8]


def test_ensemble_wiring(manifest, tmp_path):
    repo = write_triton_repository(manifest, tmp_path / "repo", backend="onnxruntime")
    configs = _configs(repo)
    ensemble = configs[ENSEMBLE_NAME]
    assert ensemble["platform"] == ["ensemble"] and (repo / ENSEMBLE_NAME / "1").is_dir()
    inputs = {t["name"][0] for t in ensemble["input"]}
    assert inputs == {"previous", "current", "image", "log_mel", "class_embeddings", "scene_embedding"}
    assert {t["name"][0] for t in ensemble["output"]} == {"pixel_logits", "masks", "class_logits", "sounding"}
    steps = ensemble["ensemble_scheduling"][0]["step"]
    assert [s["model_name"][0] for s in steps] == ["flow", "image_encoder", "audio_encoder", "vta", "mask_decoder"]
    available = set(inputs)
    for step in steps:
        model = configs[step["model_name"][0]]
        model_inputs = {t["name"][0] for t in model["input"]}
        model_outputs = {t["name"][0] for t in model["output"]}
        mapped_in = {m["key"][0]: m["value"][0] for m in step["input_map"]}
        assert set(mapped_in) == model_inputs  # every model input fed
        assert set(mapped_in.values()) <= available  # from tensors that exist by then
        mapped_out = {m["key"][0]: m["value"][0] for m in step["output_map"]}
        assert set(mapped_out) <= model_outputs
        available |= set(mapped_out.values())
    assert {t["name"][0] for t in ensemble["output"]} <= available
    class_embeddings = next(t for t in ensemble["input"] if t["name"] == ["class_embeddings"])
    assert class_embeddings["dims"] == [-1, 16] and class_embeddings["data_type"] == ["TYPE_FP32"]


def test_tensorrt_repository_needs_engines_and_copies_them(manifest, tmp_path):
    with pytest.raises(TritonExportError, match="has no TensorRT engine"):
        write_triton_repository(manifest, tmp_path / "repo", backend="tensorrt")
    assert not (tmp_path / "repo").exists()  # nothing half-written
    for name, stage in manifest.stages.items():
        write_engine(manifest.root / "engines" / f"{name}.fp16.engine", os.urandom(2048))
        stage.engine = EngineEntry(f"engines/{name}.fp16.engine", "fp16", "10.3.0.30", "8.7", {}, "0" * 16)
    repo = write_triton_repository(manifest, tmp_path / "repo", backend="tensorrt")
    configs = _configs(repo)
    for name in manifest.stages:
        assert configs[name]["platform"] == ["tensorrt_plan"]
        assert configs[name]["instance_group"][0]["kind"] == ["KIND_GPU"]
        plan = repo / name / "1" / "model.plan"
        assert plan.read_bytes() == (manifest.root / "engines" / f"{name}.fp16.engine").read_bytes()


def test_mismatched_tensors_are_refused(manifest, tmp_path):
    vta = manifest.stages["vta"]
    vta.inputs[1] = _spec("class_embeddings", "vocab", 32)  # mask_decoder says 16
    with pytest.raises(TritonExportError, match="class_embeddings"):
        write_triton_repository(manifest, tmp_path / "repo", backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        write_triton_repository(manifest, tmp_path / "repo", backend="torch")


def test_external_data_is_copied(manifest, tmp_path):
    path = manifest.onnx_path("audio_encoder")
    model = onnx.load(str(path))
    weight = helper.make_tensor("w", TensorProto.FLOAT, [256], np.arange(256, dtype=np.float32).tolist())
    model.graph.initializer.append(weight)
    onnx.save(model, str(path), save_as_external_data=True, location="audio_encoder.weights", size_threshold=0)
    repo = write_triton_repository(manifest, tmp_path / "repo", backend="onnxruntime")
    copied = onnx.load(str(repo / "audio_encoder" / "1" / "model.onnx"))  # loads its external data
    assert np.array_equal(onnx.numpy_helper.to_array(copied.graph.initializer[-1]), np.arange(256))
