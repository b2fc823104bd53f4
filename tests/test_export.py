"""export/build_engines.py on the shipped default: checked ONNX per stage, manifest, tokenizer, Triton.

One export (FP32 + FP16, plugin variants, Triton repository) is shared by the module; the
ONNX Runtime / PyTorch comparison here is independent of the export's own check: other
inputs, and the vocabulary sizes at both ends of the engines' range.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from avss_sdk.modeling.attention import ONNX_DOMAIN, ONNX_OP
from avss_sdk.modeling.open_clip_import import import_open_clip
from avss_sdk.modeling.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint
from avss_sdk.runtime.manifest import STAGE_NAMES, Manifest, ManifestError, file_hash
from avss_sdk.segmenter import DEFAULT_ENGINES
from avss_sdk.tokenizer import ClipTokenizer
from avss_sdk.export.build_engines import EXIT_BAD_INPUT, EXIT_NO_ENGINES, main
from avss_sdk.export.export_onnx import TOLERANCES, stage_exports
from avss_sdk.export.tensorrt_ops import check_tensorrt_ops

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    triton = tmp_path_factory.mktemp("triton") / "repo"
    status = main(["--checkpoint", "default", "--out", str(out), "--plugin", "--triton", str(triton), "--quiet"])
    return out, triton, status


@pytest.fixture(scope="module")
def model(default_model):
    return default_model[0]


def test_without_tensorrt_exports_checked_onnx_and_says_no_engines(exported):
    out, _, status = exported
    assert status == EXIT_NO_ENGINES  # TensorRT is not installable here: documented exit status 3
    manifest = Manifest.load(out)
    assert manifest.engines["built"] is False and "TensorRT is not installed" in manifest.engines["reason"]
    assert set(manifest.stages) == set(STAGE_NAMES)
    assert manifest.model_hash == file_hash(DEFAULT_CHECKPOINT)
    for stage in manifest.stages.values():
        assert stage.engine is None
        for variant in ("fp32", "fp16"):
            proto = onnx.load(str(manifest.onnx_path(stage.name, variant)))
            assert proto.opset_import[0].version >= 17
            onnx.checker.check_model(proto, full_check=True)
            check_tensorrt_ops(proto)  # no op TensorRT 10.3 cannot parse


def test_onnxruntime_reproduces_pytorch_for_every_stage(exported, model):
    manifest = Manifest.load(exported[0])
    for stage in stage_exports(model):
        for precision in ("fp32", "fp16"):
            session = ort.InferenceSession(str(manifest.onnx_path(stage.name, precision)),
                                           providers=["CPUExecutionProvider"])
            for vocab_size in (1, 256):  # one session, both ends of the dynamic vocabulary axis
                args = stage.make_inputs(vocab_size, torch.Generator().manual_seed(100 + vocab_size))
                with torch.no_grad():
                    expected = stage.module(*args)
                expected = expected if isinstance(expected, tuple) else (expected,)
                got = session.run(None, {t.name: a.numpy() for t, a in zip(stage.inputs, args)})
                for want, have in zip(expected, got):
                    want = want.numpy()
                    assert have.shape == want.shape, (stage.name, precision, vocab_size)
                    scale = max(1.0, float(np.abs(want).max()))
                    assert np.abs(want - have).max() / scale <= TOLERANCES[precision], (stage.name, precision)


def test_fp16_variant_is_strongly_typed_with_fragile_ops_in_fp32(exported):
    manifest = Manifest.load(exported[0])
    proto = onnx.load(str(manifest.onnx_path("image_encoder", "fp16")))
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # casts at the edges
    text = onnx.shape_inference.infer_shapes(onnx.load(str(manifest.onnx_path("text_encoder", "fp16"))))
    types = {v.name: v.type.tensor_type.elem_type for v in text.graph.value_info}
    norms = [n for n in text.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norms and all(types.get(n.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in norms)
    # The mask decoder (log-probabilities) is FP32 in both variants.
    assert manifest.stages["mask_decoder"].onnx["fp16"] == manifest.stages["mask_decoder"].onnx["fp32"]


def test_manifest_describes_dynamic_axes_and_preprocessing(exported):
    manifest = Manifest.load(exported[0])
    vta = {t.name: t.shape for t in manifest.stages["vta"].inputs}
    assert vta["class_embeddings"] == ("vocab", 128)
    assert manifest.stages["mask_decoder"].outputs[0].shape == ("batch", "vocab + 1", 24, 24)
    assert manifest.stages["text_encoder"].inputs[0].dtype == "int64"
    assert manifest.preprocess.image_size == 192 and manifest.preprocess.log_mel_samples == 15600
    # the threshold ship.py calibrated, carried from the checkpoint into the manifest
    assert manifest.postprocess.foreground_threshold == read_checkpoint(DEFAULT_CHECKPOINT)["foreground_threshold"]
    assert len(manifest.text.no_scene_embedding) == manifest.text.embed_dim


def test_plugin_variants_have_one_plugin_node_per_attention(exported):
    manifest = Manifest.load(exported[0])
    for stage, attentions in (("vta", 1), ("mask_decoder", 4)):  # vta: 1; decoder: 2 layers x (cross + self)
        proto = onnx.load(str(manifest.path(manifest.stages[stage].onnx["fp32-plugin"])))
        nodes = [n for n in proto.graph.node if (n.domain, n.op_type) == (ONNX_DOMAIN, ONNX_OP)]
        assert len(nodes) == attentions
    decoder = manifest.stages["mask_decoder"].onnx
    assert decoder["fp16-plugin"] == decoder["fp32-plugin"]  # FP32 as a whole, like its plain file
    assert manifest.onnx_path("vta", "fp16-plugin").is_file()
    vta = onnx.load(str(manifest.path(manifest.stages["vta"].onnx["fp32-plugin"])))
    assert not any(n.op_type == "Softmax" for n in vta.graph.node)  # its only softmax was the attention's


def test_tokenizer_travels_with_the_export_and_matches_open_clip(exported):
    tokenizer = ClipTokenizer.from_file(exported[0] / "tokenizer.json")
    reference = import_open_clip().get_tokenizer("avss-text-tiny", context_length=tokenizer.context_length)
    texts = ["a photo of a dog.", "the sound of a Person  Speaking.", "un réveil qui sonne", "电吉他", "a " * 60]
    np.testing.assert_array_equal(tokenizer(texts), reference(texts).numpy())


def test_triton_repository_has_every_stage_and_the_ensemble(exported):
    _, triton, _ = exported
    for stage in STAGE_NAMES:
        config = (triton / stage / "config.pbtxt").read_text()
        assert 'platform: "onnxruntime_onnx"' in config and (triton / stage / "1" / "model.onnx").is_file()
    assert "ensemble_scheduling" in (triton / "avss_ssp_ov" / "config.pbtxt").read_text()


def test_rerun_keeps_the_directory_valid_and_bad_checkpoints_are_clear_errors(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert main(["--checkpoint", str(foreign), "--out", str(tmp_path / "x"), "--quiet"]) == EXIT_BAD_INPUT
    assert "not an SSP-OV checkpoint" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x"), "--quiet"]) == EXIT_BAD_INPUT
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--max-vocab", "0"])


def test_cli_runs_as_a_script_with_help():
    done = subprocess.run([sys.executable, str(ROOT / "export" / "build_engines.py"), "--help"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--max-vocab" in done.stdout and "Exit status" in done.stdout


def test_shipped_default_export_matches_the_shipped_checkpoint():
    manifest = Manifest.load(DEFAULT_ENGINES)
    assert manifest.model_hash == file_hash(DEFAULT_CHECKPOINT), (
        "avss_sdk/models/default is stale: python export/build_engines.py --checkpoint default "
        "--out avss_sdk/models/default --onnx-only --no-fp16-onnx")
    assert manifest.path(manifest.model.checkpoint).resolve() == DEFAULT_CHECKPOINT.resolve()


def test_manifest_errors_are_clear(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not a readable manifest"):
        Manifest.load(tmp_path)
    values = json.loads((DEFAULT_ENGINES / "manifest.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(DEFAULT_ENGINES, copy)
    (copy / "manifest.json").write_text(json.dumps({**values, "version": 99}))
    with pytest.raises(ManifestError, match="version 99"):
        Manifest.load(copy)
    (copy / "manifest.json").write_text(json.dumps(values))
    (copy / "onnx" / "vta.fp32.onnx").unlink()
    with pytest.raises(ManifestError, match="vta.fp32.onnx, which is missing"):
        Manifest.load(copy)
    del values["stages"]["flow"]
    (copy / "manifest.json").write_text(json.dumps(values))
    with pytest.raises(ManifestError, match="incomplete or malformed"):
        Manifest.load(copy)
