"""avss_sdk/runtime/tensorrt_build.py, tensorrt_backend.py and tensorrt_common.py.

Everything that needs no TensorRT runs everywhere: version and precision selection, profiles,
cache keys and reasons, engine-file checks, the cache's reuse decision, and the errors when
TensorRT or a GPU is missing (real here). The build-and-run test needs TensorRT and a GPU and
is skipped, saying so, without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from avss_sdk.runtime.manifest import (
    EngineEntry,
    Manifest,
    ManifestError,
    ModelInfo,
    Postprocess,
    Preprocess,
    StageEntry,
    TensorSpec,
    TextSection,
    engine_key,
    file_hash,
)
from avss_sdk.runtime.tensorrt_backend import TensorRTStage
from avss_sdk.runtime.tensorrt_build import (
    EngineBuildError,
    TensorRTEngineCache,
    build_engine,
    build_profile,
    engine_is_current,
    onnx_precision,
    precision_mode,
    stage_onnx,
    stage_profile,
)
from avss_sdk.runtime.tensorrt_common import (
    EngineFileError,
    TensorRTUnavailable,
    check_engine_file,
    compute_capability,
    import_tensorrt,
    parse_version,
    sidecar_path,
    tensorrt_version,
    write_engine,
)

TRT = tensorrt_version()


def _gpu() -> str | None:
    try:
        return compute_capability()
    except TensorRTUnavailable:
        return None


# -- version and precision selection (pure) ---------------------------------------------------

@pytest.mark.parametrize("text, parsed", [("10.3.0.30", (10, 3, 0, 30)), ("10.3.0", (10, 3, 0)), ("11.0", (11, 0)),
                                          ("10.3.0.post1", (10, 3, 0)), (" 10.7.0 ", (10, 7, 0)),
                                          ("11.2.0-rc1", (11, 2, 0))])
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed


@pytest.mark.parametrize("text", ["", "10", "ten.three", "10.x", "v10.3", "10..3", None])
def test_parse_version_refuses_non_versions(text):
    with pytest.raises(ValueError, match="not a TensorRT version"):
        parse_version(text)


@pytest.mark.parametrize("version, mode", [("10.3.0.30", "builder_flags"), ("10.7.0.23", "builder_flags"),
                                           ("10.15.1", "builder_flags"), ("11.0.0.1", "strongly_typed"),
                                           ("11.4.1", "strongly_typed"), ("12.0", "strongly_typed")])
def test_precision_mode(version, mode):
    assert precision_mode(version, "fp16") == mode
    assert precision_mode(version, "fp32") == mode


def test_onnx_precision_follows_the_mode():
    assert onnx_precision("10.3.0", "fp16") == "fp32"  # fp16 through BuilderFlag.FP16
    assert onnx_precision("11.0.0", "fp16") == "fp16"  # strongly typed: the types are in the ONNX
    assert onnx_precision("11.0.0", "fp32") == "fp32"


def test_precision_mode_refuses_old_versions_and_bad_precisions():
    with pytest.raises(ValueError, match="older than 10.3"):
        precision_mode("10.2.0", "fp16")
    with pytest.raises(ValueError, match="older than 10.3"):
        precision_mode("8.6.1", "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_mode("10.3.0", "int8")
    with pytest.raises(ValueError, match="not a TensorRT version"):
        precision_mode("latest", "fp16")


# -- profiles and cache keys -------------------------------------------------------------------

def _mask_decoder() -> StageEntry:
    return StageEntry("mask_decoder", {"fp32": "onnx/mask_decoder.fp32.onnx"},
                      [TensorSpec("features", ("batch", 64, 28, 28), "float32"),
                       TensorSpec("class_embeddings", ("vocab", 512), "float32"),
                       TensorSpec("audio", (1, 128), "float32")],
                      [TensorSpec("logits", ("batch", "vocab", 112, 112), "float32")])


def test_build_profile_from_manifest_shapes():
    profile = build_profile(_mask_decoder(), max_vocab=256)
    assert profile == {"features": {"min": [1, 64, 28, 28], "opt": [1, 64, 28, 28], "max": [1, 64, 28, 28]},
                       "class_embeddings": {"min": [1, 512], "opt": [16, 512], "max": [256, 512]}}
    assert "audio" not in profile  # static inputs need no profile
    small = build_profile(_mask_decoder(), max_vocab=8, max_batch=4)
    assert small["class_embeddings"]["opt"] == [8, 512]
    assert small["features"]["max"][0] == 4
    text = StageEntry("text_encoder", {}, [TensorSpec("tokens", ("prompts", 77), "int64")], [])
    assert build_profile(text, 16, max_prompts=1000)["tokens"] == {"min": [1, 77], "opt": [16, 77], "max": [1000, 77]}


def test_build_profile_refuses_unknown_axes_and_bad_limits():
    stage = StageEntry("vta", {}, [TensorSpec("x", ("frames", 3), "float32")], [])
    with pytest.raises(ValueError, match="unknown dynamic axis 'frames'"):
        build_profile(stage, 16)
    with pytest.raises(ValueError, match="max_vocab must be a positive int"):
        build_profile(_mask_decoder(), 0)


def _entry(**changes) -> EngineEntry:
    values = dict(version="10.3.0", capability="8.7", onnx_hash="abc123", precision="fp16",
                  profile=build_profile(_mask_decoder(), 256))
    values.update(changes)
    key = engine_key(values["version"], values["capability"], values["onnx_hash"], values["precision"],
                     values["profile"])
    return EngineEntry("engines/mask_decoder.fp16.engine", values["precision"], values["version"],
                       values["capability"], values["profile"], key)


def test_engine_is_current_says_what_changed():
    profile = build_profile(_mask_decoder(), 256)
    entry = _entry()
    assert engine_is_current(entry, "10.3.0", "8.7", "abc123", "fp16", profile) == (True, "up to date")
    assert engine_is_current(entry, "10.7.0", "8.7", "abc123", "fp16", profile) == (
        False, "built for TensorRT 10.3.0, this is 10.7.0")
    ok, reason = engine_is_current(entry, "10.3.0", "8.9", "abc123", "fp16", profile)
    assert not ok and "compute capability 8.7, this one is 8.9" in reason
    ok, reason = engine_is_current(entry, "10.3.0", "8.7", "abc123", "fp32", profile)
    assert not ok and reason == "built for fp16, fp32 was asked for"
    ok, reason = engine_is_current(entry, "10.3.0", "8.7", "abc123", "fp16", build_profile(_mask_decoder(), 64))
    assert not ok and "class_embeddings" in reason and "[256, 512]" in reason and "[64, 512]" in reason
    ok, reason = engine_is_current(entry, "10.3.0", "8.7", "def456", "fp16", profile)
    assert not ok and "another ONNX file" in reason


def test_profile_survives_the_manifest_json_round_trip():
    entry = _entry()
    loaded = EngineEntry(**json.loads(json.dumps(entry.__dict__)))
    assert engine_is_current(loaded, "10.3.0", "8.7", "abc123", "fp16", build_profile(_mask_decoder(), 256))[0]


# -- engine files ------------------------------------------------------------------------------

def test_check_engine_file(tmp_path):
    engine = tmp_path / "flow.fp16.engine"
    with pytest.raises(EngineFileError, match="does not exist"):
        check_engine_file(engine)
    engine.write_bytes(b"")
    with pytest.raises(EngineFileError, match="0 bytes: too small"):
        check_engine_file(engine)
    plan = os.urandom(8192)
    engine.write_bytes(plan)
    with pytest.raises(EngineFileError, match="no checksum file flow.fp16.engine.sha256"):
        check_engine_file(engine)
    write_engine(engine, plan)
    check_engine_file(engine)
    assert sidecar_path(engine).read_text().endswith("  flow.fp16.engine\n")  # sha256sum -c format
    engine.write_bytes(plan[:5000])  # truncated after the checksum was written
    with pytest.raises(EngineFileError, match="truncated or altered"):
        check_engine_file(engine)
    engine.write_bytes(plan[:100] + b"x" + plan[101:])
    with pytest.raises(EngineFileError, match="truncated or altered"):
        check_engine_file(engine)
    sidecar_path(engine).write_text("nonsense\n")
    with pytest.raises(EngineFileError, match="malformed"):
        check_engine_file(engine)


def test_corrupt_engine_is_refused_before_tensorrt(tmp_path):
    engine = tmp_path / "vta.fp16.engine"
    write_engine(engine, os.urandom(4096))
    engine.write_bytes(engine.read_bytes()[:2048])
    with pytest.raises(EngineFileError, match="truncated or altered"):
        TensorRTStage(engine)


# -- without TensorRT / without a GPU (the real state of CI machines) --------------------------

@pytest.mark.skipif(TRT is not None, reason=f"TensorRT {TRT} is installed")
def test_missing_tensorrt_is_a_clear_error(tmp_path):
    with pytest.raises(TensorRTUnavailable, match="pip install tensorrt"):
        import_tensorrt()
    engine = tmp_path / "flow.fp32.engine"
    write_engine(engine, os.urandom(4096))
    with pytest.raises(TensorRTUnavailable, match="onnxruntime"):
        TensorRTStage(engine)
    onnx_file = tmp_path / "flow.onnx"
    onnx.save(_tiny_model(), onnx_file)
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        build_engine(onnx_file, tmp_path / "x.engine", "fp32", {}, 1.0, None, False, print)


def test_missing_onnx_is_a_build_error(tmp_path):
    with pytest.raises(EngineBuildError, match="does not exist"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "x.engine", "fp32", {}, 1.0, None, False, print)


@pytest.mark.skipif(_gpu() is not None, reason="a CUDA GPU is present")
def test_no_gpu_is_a_clear_error():
    with pytest.raises(TensorRTUnavailable, match="no usable CUDA GPU"):
        compute_capability()


# -- the cache's decision, with real files -----------------------------------------------------

def _tiny_model(dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """y = softmax(x @ w): x [vocab, 8] (dynamic vocab), w a constant [8, 4]."""
    w = helper.make_tensor("w", dtype, [8, 4], np.linspace(-1, 1, 32, dtype=np.float32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                               helper.make_node("Softmax", ["h"], ["y"], name="sm", axis=-1)], "tiny",
                              [helper.make_tensor_value_info("x", dtype, ["vocab", 8])],
                              [helper.make_tensor_value_info("y", dtype, ["vocab", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _manifest(root: Path) -> Manifest:
    (root / "onnx").mkdir(parents=True)
    stages = {}
    for name in ("flow", "image_encoder", "audio_encoder", "text_encoder", "vta", "mask_decoder"):
        onnx.save(_tiny_model(), root / "onnx" / f"{name}.fp32.onnx")
        stages[name] = StageEntry(name, {"fp32": f"onnx/{name}.fp32.onnx"},
                                  [TensorSpec("x", ("vocab", 8), "float32")],
                                  [TensorSpec("y", ("vocab", 4), "float32")])
    manifest = Manifest(root, ModelInfo("tiny", "0" * 16), "fp16", 32, Preprocess(64, 8), Postprocess(0.5),
                        TextSection("tokenizer.json", 77, 4, ("{}",), "{}", (0.5,) * 4), stages)
    manifest.save()
    return manifest


def test_cache_reuses_matching_engines_and_explains_stale_ones(tmp_path):
    manifest = _manifest(tmp_path / "model")
    cache, cache_dir = TensorRTEngineCache(log=lambda message: None), tmp_path / "cache"
    path, reason = cache.select(manifest, "vta", "fp16", "10.3.0.30", "8.7", cache_dir)
    assert path is None and reason == "no engine built yet"

    # An engine recorded in the manifest, built for 10.3.0.30 on sm 8.7 from this ONNX.
    profile = stage_profile(manifest, "vta")
    onnx_hash = file_hash(manifest.onnx_path("vta", "fp32"))
    engine = tmp_path / "model" / "engines" / "vta.fp16.engine"
    write_engine(engine, os.urandom(4096))
    manifest.stages["vta"].engine = EngineEntry("engines/vta.fp16.engine", "fp16", "10.3.0.30", "8.7", profile,
                                                engine_key("10.3.0.30", "8.7", onnx_hash, "fp16", profile))
    manifest.save()
    manifest = Manifest.load(tmp_path / "model")
    assert cache.select(manifest, "vta", "fp16", "10.3.0.30", "8.7", cache_dir) == (engine, "up to date")
    assert cache.select(manifest, "vta", "fp16", "10.7.0.23", "8.7", cache_dir) == (
        None, "built for TensorRT 10.3.0.30, this is 10.7.0.23")

    # The ONNX changes: the key no longer matches.
    model = onnx.load(str(manifest.onnx_path("vta", "fp32")))
    model.graph.node[0].name = "renamed"
    onnx.save(model, manifest.onnx_path("vta", "fp32"))
    assert cache.select(manifest, "vta", "fp16", "10.3.0.30", "8.7", cache_dir)[1] == (
        "built from another ONNX file (its hash changed)")

    # A cached engine recorded next to it in cache_dir, but truncated on disk.
    cached = cache_dir / "vta.fp16.engine"
    write_engine(cached, os.urandom(4096))
    new_hash = file_hash(manifest.onnx_path("vta", "fp32"))
    record = EngineEntry(cached.name, "fp16", "10.3.0.30", "8.7", profile,
                         engine_key("10.3.0.30", "8.7", new_hash, "fp16", profile))
    (cache_dir / "vta.fp16.engine.json").write_text(json.dumps(record.__dict__))
    assert cache.select(manifest, "vta", "fp16", "10.3.0.30", "8.7", cache_dir) == (cached, "up to date")
    cached.write_bytes(cached.read_bytes()[:3000])
    path, reason = cache.select(manifest, "vta", "fp16", "10.3.0.30", "8.7", cache_dir)
    assert path is None and "truncated or altered" in reason


def test_stage_onnx_picks_the_file_for_version_precision_and_plugin(tmp_path):
    manifest = _manifest(tmp_path / "model")
    onnx.save(_tiny_model(), tmp_path / "model" / "onnx" / "vta.fp32-plugin.onnx")
    manifest.stages["vta"].onnx["fp32-plugin"] = "onnx/vta.fp32-plugin.onnx"
    assert stage_onnx(manifest, "vta", "10.3.0", "fp16", False).name == "vta.fp32.onnx"
    assert stage_onnx(manifest, "vta", "10.9.0", "fp16", True).name == "vta.fp32-plugin.onnx"
    assert stage_onnx(manifest, "flow", "10.9.0", "fp16", True).name == "flow.fp32.onnx"  # no attention


def test_cache_on_tensorrt_11_looks_for_the_fp16_onnx(tmp_path):
    manifest = _manifest(tmp_path / "model")
    with pytest.raises(ManifestError, match="no fp16 ONNX"):
        TensorRTEngineCache().select(manifest, "flow", "fp16", "11.0.0", "8.7", tmp_path / "cache")


@pytest.mark.skipif(TRT is not None and _gpu() is not None, reason="TensorRT and a GPU are present")
def test_cache_ensure_without_tensorrt_or_gpu_is_a_clear_error(tmp_path):
    manifest = _manifest(tmp_path / "model")
    with pytest.raises(TensorRTUnavailable):
        TensorRTEngineCache().ensure(manifest, "fp16", 1.0, False, tmp_path / "cache")


# -- TensorRT + GPU: build a real engine and run it --------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(TRT is None or _gpu() is None,
                    reason=f"needs TensorRT and a CUDA GPU (TensorRT: {TRT or 'not installed'}, "
                           f"GPU: {_gpu() or 'none'})")
def test_build_and_run_a_tiny_engine(tmp_path):
    onnx_file = tmp_path / "tiny.onnx"
    onnx.save(_tiny_model(), onnx_file)
    stage = StageEntry("vta", {}, [TensorSpec("x", ("vocab", 8), "float32")], [])
    profile = build_profile(stage, max_vocab=32)
    messages = []
    entry = build_engine(onnx_file, tmp_path / "tiny.engine", "fp32", profile, 0.5, tmp_path / "timing.cache",
                         None, messages.append, relative_to=tmp_path)
    assert entry.file == "tiny.engine" and entry.tensorrt_version == TRT
    assert (tmp_path / "timing.cache").stat().st_size > 0
    check_engine_file(tmp_path / "tiny.engine")
    assert engine_is_current(entry, TRT, compute_capability(), file_hash(onnx_file), "fp32", profile)[0]
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    w = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4)
    h = x @ w
    expected = np.exp(h - h.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    with TensorRTStage(tmp_path / "tiny.engine") as run:
        for vocab in (5, 1, 32):
            xs = np.resize(x, (vocab, 8))
            out = run(x=xs)["y"]
            assert out.shape == (vocab, 4)
        np.testing.assert_allclose(run(x=x)["y"], expected, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="between"):
            run(x=np.zeros((33, 8), np.float32))


def test_runtime_precision_gets_fp16_engines_from_the_shipped_fp32_export():
    from avss_sdk.runtime.tensorrt_build import runtime_precision
    from avss_sdk.segmenter import DEFAULT_ENGINES

    shipped = Manifest.load(DEFAULT_ENGINES)
    assert shipped.precision == "fp32" and "fp16" not in shipped.stages["flow"].onnx
    assert runtime_precision(shipped, "10.3.0.30") == "fp16"  # Jetson: the FP16 flag on the fp32 ONNX
    assert runtime_precision(shipped, "11.0.0") == "fp32"  # strongly typed: no fp16 file, stays fp32
