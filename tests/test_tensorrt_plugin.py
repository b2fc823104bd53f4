"""The fused-attention plugin path, every decision tested without TensorRT.

Pure decisions: which TensorRT and GPU can have plugin engines (and the one-line reason when
not), which stages' engines embed the plugin, the runtime's choice from a manifest, the cache
keeping a current plugin engine and rebuilding a plain one, the manifest and cache-key round
trip. Real: the package's kernel source compiled to PTX by this machine's nvcc, and the wheel
built by pip carrying it. Registration with a real TensorRT is tested where one is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from avss_sdk.runtime import tensorrt_plugin
from avss_sdk.runtime.manifest import (EngineEntry, Manifest, ModelInfo, Postprocess, Preprocess, StageEntry,
                                       TensorSpec, TextSection, engine_key, file_hash)
from avss_sdk.runtime.tensorrt_build import TensorRTEngineCache, plugin_choice, stage_onnx, stage_profile
from avss_sdk.runtime.tensorrt_common import (
    AOT_PLUGINS_FROM,
    MIN_TENSORRT,
    PYTHON_PLUGINS_FROM,
    STRONGLY_TYPED_FROM,
    has_feature,
    record_path,
    tensorrt_version,
    write_engine,
)

ROOT = Path(__file__).resolve().parents[1]
TRT = tensorrt_version()
ENTRY_POINTS = {f"fca_{kind}_{t}_d{d}" for kind in ("short", "long", "trt") for t in ("f16", "f32")
                for d in (32, 64, 128)}


def _nvcc() -> str | None:
    try:
        return tensorrt_plugin.find_nvcc()
    except tensorrt_plugin.KernelBuildError:
        return None


# -- versions and reasons --------------------------------------------------------------------------

def test_one_minimum_version_per_feature():
    assert (MIN_TENSORRT, PYTHON_PLUGINS_FROM, AOT_PLUGINS_FROM, STRONGLY_TYPED_FROM) == (
        (10, 3), (10, 6), (10, 9), (11, 0))
    assert not has_feature("10.8.1.5", AOT_PLUGINS_FROM) and has_feature("10.9.0.34", AOT_PLUGINS_FROM)
    assert has_feature("10.6.0", PYTHON_PLUGINS_FROM) and not has_feature(None, MIN_TENSORRT)
    assert not has_feature("not-a-version", MIN_TENSORRT)


@pytest.mark.parametrize("version, capability, ptx_arch, expected", [
    ("10.9.0.34", "8.7", 75, None),
    ("11.0.0", "12.0", 75, None),
    ("10.13.3.9", "7.5", 75, None),
    ("10.3.0.30", "8.7", 75, "TensorRT 10.3.0.30: plugin engines need TensorRT >= 10.9 (AOT plugins)"),
    ("10.8.0.43", "8.7", 75, "TensorRT 10.8.0.43: plugin engines need TensorRT >= 10.9 (AOT plugins)"),
    (None, "8.7", 75, "no TensorRT: plugin engines need TensorRT >= 10.9 (AOT plugins)"),
    ("10.9.0.34", "6.1", 75, "no PTX for this GPU: the kernel's PTX targets compute_75, "
                             "this GPU has compute capability 6.1"),
    ("10.9.0.34", "8.7", None, "no PTX of the fused attention kernel (no nvcc to build it with)"),
])
def test_plugin_unavailable_reason(version, capability, ptx_arch, expected):
    assert tensorrt_plugin.plugin_unavailable_reason(version, capability, ptx_arch) == expected


def test_kernel_helpers():
    assert tensorrt_plugin.float_bits(1.0) == 0x3F800000
    assert tensorrt_plugin.kernel_name(True, 64) == "fca_trt_f16_d64"
    assert tensorrt_plugin.kernel_name(False, 32) in ENTRY_POINTS
    with pytest.raises(ValueError, match="head dim 80"):
        tensorrt_plugin.kernel_name(True, 80)
    assert tensorrt_plugin.capability_number("8.7") == 87 and tensorrt_plugin.capability_number("12.0") == 120
    assert tensorrt_plugin.ptx_target("//\n.version 9.0\n.target sm_75\n.address_size 64\n") == 75
    with pytest.raises(ValueError, match="not a PTX file"):
        tensorrt_plugin.ptx_target("MZ\x90")


def test_stage_uses_plugin():
    plain = {"fp32": "onnx/flow.fp32.onnx"}
    attention = {"fp32": "onnx/vta.fp32.onnx", "fp32-plugin": "onnx/vta.fp32-plugin.onnx"}
    assert tensorrt_plugin.stage_uses_plugin(attention, True)
    assert not tensorrt_plugin.stage_uses_plugin(attention, False)
    assert not tensorrt_plugin.stage_uses_plugin(plain, True)


# -- manifest, key and cache -----------------------------------------------------------------------

def _tiny_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["vocab", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["vocab", 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _manifest(root: Path, plugin_variants: bool) -> Manifest:
    (root / "onnx").mkdir(parents=True)
    stages = {}
    for name in ("flow", "image_encoder", "audio_encoder", "text_encoder", "vta", "mask_decoder"):
        onnx.save(_tiny_model(), root / "onnx" / f"{name}.fp32.onnx")
        files = {"fp32": f"onnx/{name}.fp32.onnx"}
        if plugin_variants and name in ("vta", "mask_decoder"):
            model = _tiny_model()
            model.graph.node[0].name = "plugin"  # another file, another hash
            onnx.save(model, root / "onnx" / f"{name}.fp32-plugin.onnx")
            files["fp32-plugin"] = f"onnx/{name}.fp32-plugin.onnx"
        stages[name] = StageEntry(name, files, [TensorSpec("x", ("vocab", 8), "float32")],
                                  [TensorSpec("y", ("vocab", 8), "float32")])
    manifest = Manifest(root, ModelInfo("tiny", "0" * 16), "fp16", 32, Preprocess(64, 8), Postprocess(0.5),
                        TextSection("tokenizer.json", 77, 4, ("{}",), "{}", (0.5,) * 4), stages)
    manifest.save()
    return manifest


def test_plugin_choice_from_the_manifest(tmp_path):
    offered = _manifest(tmp_path / "with", plugin_variants=True)
    plain = _manifest(tmp_path / "without", plugin_variants=False)
    assert plugin_choice(offered, "10.9.0.34", "8.7") == (True, None)
    assert plugin_choice(plain, "10.9.0.34", "8.7") == (False, None)  # nothing to offer: no message
    assert plugin_choice(plain, "10.3.0.30", "8.7") == (False, None)
    chosen, reason = plugin_choice(offered, "10.3.0.30", "8.7")
    assert not chosen and reason == ("plain TensorRT engines instead of the fused-attention plugin: "
                                     "TensorRT 10.3.0.30: plugin engines need TensorRT >= 10.9 (AOT plugins)")
    chosen, reason = plugin_choice(offered, "10.9.0.34", "6.1")
    assert not chosen and "no PTX for this GPU" in reason and "\n" not in reason


def test_plugin_engine_entry_round_trip_and_key(tmp_path):
    manifest = _manifest(tmp_path / "model", plugin_variants=True)
    profile = stage_profile(manifest, "vta")
    onnx_hash = file_hash(stage_onnx(manifest, "vta", "10.9.0.34", "fp16", True))
    plain_key = engine_key("10.9.0.34", "8.7", onnx_hash, "fp16", profile)
    plugin_key = engine_key("10.9.0.34", "8.7", onnx_hash, "fp16", profile, plugin=True)
    assert plain_key != plugin_key
    engine = tmp_path / "model" / "engines" / "vta.fp16-plugin.engine"
    write_engine(engine, os.urandom(4096))
    manifest.stages["vta"].engine = EngineEntry("engines/vta.fp16-plugin.engine", "fp16", "10.9.0.34", "8.7",
                                                profile, plugin_key, plugin=True)
    manifest.save()
    assert json.loads((tmp_path / "model" / "manifest.json").read_text())["stages"]["vta"]["engine"]["plugin"] is True
    loaded = Manifest.load(tmp_path / "model")
    assert loaded.stages["vta"].engine.plugin is True and loaded.stages["flow"].engine is None


def test_cache_keeps_a_current_plugin_engine_and_rebuilds_for_a_plain_one(tmp_path):
    manifest = _manifest(tmp_path / "model", plugin_variants=True)
    cache, cache_dir = TensorRTEngineCache(log=lambda message: None), tmp_path / "cache"
    profile = stage_profile(manifest, "vta")
    plugin_hash = file_hash(manifest.onnx_path("vta", "fp32-plugin"))
    engine = tmp_path / "model" / "engines" / "vta.fp16-plugin.engine"
    write_engine(engine, os.urandom(4096))
    manifest.stages["vta"].engine = EngineEntry(
        "engines/vta.fp16-plugin.engine", "fp16", "10.9.0.34", "8.7", profile,
        engine_key("10.9.0.34", "8.7", plugin_hash, "fp16", profile, plugin=True), plugin=True)
    manifest.save()
    manifest = Manifest.load(tmp_path / "model")
    # The runtime that can have the plugin keeps it (it is not judged stale and rebuilt plain).
    assert cache.select(manifest, "vta", "fp16", "10.9.0.34", "8.7", cache_dir, plugin=True) == (engine, "up to date")
    # One that cannot (fallback) wants a plain engine: the plugin one is not it.
    assert cache.select(manifest, "vta", "fp16", "10.9.0.34", "8.7", cache_dir, plugin=False) == (
        None, "built with the fused-attention plugin, a plain engine is wanted")
    # A stage without a plugin variant is plain whatever is asked.
    assert cache.select(manifest, "flow", "fp16", "10.9.0.34", "8.7", cache_dir, plugin=True) == (
        None, "no engine built yet")
    # A plain engine in the cache for a runtime that wants the plugin: rebuilt, and it says why.
    plain = cache_dir / "vta.fp16-plugin.engine"
    write_engine(plain, os.urandom(4096))
    record = EngineEntry(plain.name, "fp16", "10.9.0.34", "8.7", profile,
                         engine_key("10.9.0.34", "8.7", plugin_hash, "fp16", profile))
    record_path(plain).write_text(json.dumps(record.__dict__))
    manifest.stages["vta"].engine = None
    assert cache.select(manifest, "vta", "fp16", "10.9.0.34", "8.7", cache_dir, plugin=True) == (
        None, "built without the fused-attention plugin, a plugin engine is wanted")
    # A plugin key recorded without the flag (hand-edited) does not pass either.
    record = EngineEntry(plain.name, "fp16", "10.9.0.34", "8.7", profile,
                         engine_key("10.9.0.34", "8.7", plugin_hash, "fp16", profile), plugin=True)
    record_path(plain).write_text(json.dumps(record.__dict__))
    assert cache.select(manifest, "vta", "fp16", "10.9.0.34", "8.7", cache_dir, plugin=True)[1] == (
        "built from another ONNX file (its hash changed)")


# -- the PTX, compiled by this machine's nvcc ------------------------------------------------------

@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)")
def test_ensure_ptx_compiles_the_package_source_with_the_local_nvcc(tmp_path):
    messages = []
    path = tensorrt_plugin.ensure_ptx(tmp_path / "cache", log=messages.append)
    ptx = path.read_text()
    assert tensorrt_plugin.ptx_target(ptx) == tensorrt_plugin.PTX_ARCH
    assert {f"fca_trt_{t}_d{d}" for t in ("f16", "f32") for d in (32, 64, 128)} <= set(
        re.findall(r"\.visible \.entry (\w+)\(", ptx))
    assert len(messages) == 1 and "compute_75 PTX" in messages[0]
    assert tensorrt_plugin.ensure_ptx(tmp_path / "cache", log=messages.append) == path and len(messages) == 1
    assert tensorrt_plugin.plugin_unavailable_reason("10.9.0.34", "8.7", tensorrt_plugin.ptx_target(ptx)) is None


def test_missing_nvcc_is_a_clear_error(tmp_path):
    with pytest.raises(tensorrt_plugin.KernelBuildError, match="nvcc not found"):
        tensorrt_plugin.compile_ptx(tmp_path / "k.ptx", nvcc=str(tmp_path / "nvcc"))
    assert not (tmp_path / "k.ptx").exists()


# -- registration with a real TensorRT -------------------------------------------------------------

@pytest.mark.skipif(TRT is not None, reason=f"TensorRT {TRT} is installed")
def test_register_plugin_without_tensorrt_says_why():
    with pytest.raises(tensorrt_plugin.KernelBuildError, match="no TensorRT: plugin engines need TensorRT >= 10.9"):
        tensorrt_plugin.register_plugin()


@pytest.mark.skipif(TRT is None or not has_feature(TRT, AOT_PLUGINS_FROM),
                    reason=f"needs TensorRT >= 10.9 (installed: {TRT or 'none'})")
def test_register_plugin_with_tensorrt():
    import tensorrt as trt

    tensorrt_plugin.register_plugin()
    tensorrt_plugin.register_plugin()  # idempotent
    namespace, name = tensorrt_plugin.PLUGIN_ID.split("::")
    assert trt.get_plugin_registry().get_creator(name, "1", namespace) is not None


# -- the installed distribution --------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # Built from a copy: an in-tree build would reuse build/lib, where files deleted since can linger.
    source = tmp_path_factory.mktemp("source") / "avss_sdk"
    local = {".git", "build", "dist", "avss_sdk.egg-info", "data", "runs", ".pytest_cache"}  # at the top only
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n in local)])
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "-w", str(out), "-q"], cwd=source, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("avss_sdk-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_carries_the_kernel_and_the_plugin(wheel):
    names = set(wheel.namelist())
    assert "avss_sdk/runtime/cuda/fused_cross_attention.cu" in names
    assert "avss_sdk/runtime/tensorrt_plugin.py" in names
    assert not any(n.startswith(("kernels/", "export/", "tests/", "train/", "samples/")) for n in names)
    source = wheel.read("avss_sdk/runtime/cuda/fused_cross_attention.cu").decode()
    assert source == tensorrt_plugin.KERNEL_SOURCE.read_text() and "fca_trt_##TN##_d##D" in source


def test_wheel_installs_the_commands(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "avss-build-engines = avss_sdk.export.build_engines:main" in text
