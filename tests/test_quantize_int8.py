"""INT8 export: QDQ files TensorRT's explicit quantization accepts, the accuracy gate, and how the runtime picks them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from avss_sdk.runtime.backends import OnnxRuntimeBackend, saturates_8bit_weights, this_cpu_saturates_8bit_weights
from avss_sdk.runtime.manifest import Manifest, ManifestError
from avss_sdk.segmenter import DEFAULT_ENGINES
from avss_sdk.fileio import file_hash
from avss_sdk.export.quantize_int8 import (QuantizationError, agreement, check_calibration, collect_inputs,
                                           check_explicit_quantization, copy_fp32_export, depthwise_weights, end_layers,
                                           quantize_file, quantize_model)

ROOT = Path(__file__).resolve().parents[1]


def conv_model(path: Path) -> Path:
    """A float Conv + Relu with 8 output channels: something to quantize per channel."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 16, 16])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def samples(count: int = 5) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(count)]


def test_the_tensorrt_file_is_explicit_quantization_and_the_cpu_file_is_not(tmp_path):
    fp32 = conv_model(tmp_path / "conv.onnx")
    quantize_file(fp32, tmp_path / "conv.int8.onnx", samples(16), for_tensorrt=True)  # 16: a multiple of the flush
    quantize_file(fp32, tmp_path / "conv.int8_cpu.onnx", samples(), for_tensorrt=False)
    tensorrt = onnx.load(str(tmp_path / "conv.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in tensorrt.graph.node}
    assert check_explicit_quantization(tensorrt) == 1  # the conv weight, one scale per output channel
    with pytest.raises(QuantizationError, match="zero point"):
        check_explicit_quantization(onnx.load(str(tmp_path / "conv.int8_cpu.onnx")))  # uint8 activations


def weight_codes(model: onnx.ModelProto) -> np.ndarray:
    """The integer codes of the model's quantized conv weight (the int8 initializer of 8 x 3 x 3 x 3)."""
    return next(numpy_helper.to_array(t) for t in model.graph.initializer
                if t.data_type == TensorProto.INT8 and tuple(t.dims) == (8, 3, 3, 3))


def test_cpu_weights_use_seven_bits_and_tensorrt_weights_eight(tmp_path):
    """On an x86 CPU without VNNI ONNX Runtime's u8 x s8 kernel adds pairs of products into 16 bits:
    255 x 64 x 2 fits, 255 x 127 x 2 does not. TensorRT's file keeps the full symmetric range."""
    fp32 = conv_model(tmp_path / "conv.onnx")
    quantize_file(fp32, tmp_path / "conv.int8.onnx", samples(), for_tensorrt=True)
    quantize_file(fp32, tmp_path / "conv.int8_cpu.onnx", samples(), for_tensorrt=False)
    tensorrt = np.abs(weight_codes(onnx.load(str(tmp_path / "conv.int8.onnx"))).astype(np.int32))
    cpu = np.abs(weight_codes(onnx.load(str(tmp_path / "conv.int8_cpu.onnx"))).astype(np.int32))
    assert tensorrt.reshape(8, -1).max(axis=1).tolist() == [127] * 8  # per channel, the largest weight is 127
    assert cpu.reshape(8, -1).max(axis=1).tolist() == [64] * 8
    assert 255 * 2 * cpu.max() <= np.iinfo(np.int16).max < 255 * 2 * tensorrt.max()


def test_depthwise_cpu_weights_keep_eight_bits(tmp_path):
    """ONNX Runtime's depthwise kernel widens before it multiplies: only GEMM weights need the 7-bit range."""
    rng = np.random.default_rng(0)
    depthwise = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "dw")
    pointwise = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "pw")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "dw"], ["y"], pads=[1, 1, 1, 1], group=8),
         helper.make_node("Relu", ["y"], ["r"]), helper.make_node("Conv", ["r", "pw"], ["z"])],
        "mbconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 16, 16])], [depthwise, pointwise])
    fp32 = tmp_path / "mbconv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), fp32)
    assert depthwise_weights(onnx.load(str(fp32))) == ["dw"]
    inputs = [{"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)} for _ in range(5)]
    quantize_file(fp32, tmp_path / "mbconv.int8_cpu.onnx", inputs, for_tensorrt=False)
    model = onnx.load(str(tmp_path / "mbconv.int8_cpu.onnx"))
    codes = {tuple(t.dims): np.abs(numpy_helper.to_array(t).astype(np.int32)) for t in model.graph.initializer
             if t.data_type == TensorProto.INT8}
    assert codes[(8, 1, 3, 3)].reshape(8, -1).max(axis=1).tolist() == [127] * 8
    assert codes[(4, 8, 1, 1)].reshape(4, -1).max(axis=1).tolist() == [64] * 4


X86_FLAGS = "fpu sse2 ssse3 sse4_1 avx fma avx2"


@pytest.mark.parametrize("machine, flags, saturates", [
    ("x86_64", X86_FLAGS, True), ("x86_64", X86_FLAGS + " avx512f avx512_vnni", False),
    ("AMD64", X86_FLAGS + " avx_vnni", False), ("aarch64", "fp asimd asimddp", False), ("x86_64", None, False),
    ("x86_64", "fpu sse2 ssse3", False)])
def test_which_cpus_saturate_full_8bit_weights(machine, flags, saturates):
    cpuinfo = None if flags is None else f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n"
    assert saturates_8bit_weights(machine, cpuinfo) is saturates


def test_a_per_tensor_weight_is_refused(tmp_path):
    fp32 = conv_model(tmp_path / "conv.onnx")
    quantize_file(fp32, tmp_path / "conv.int8.onnx", samples(), for_tensorrt=True)
    model = onnx.load(str(tmp_path / "conv.int8.onnx"))
    for tensor in model.graph.initializer:  # collapse every per-channel scale to one value
        if tensor.data_type == TensorProto.FLOAT and len(tensor.dims) == 1 and tensor.dims[0] == 8 \
                and tensor.name.endswith("scale"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor)[:1].reshape(()), tensor.name))
    with pytest.raises(QuantizationError, match="per channel"):
        check_explicit_quantization(model)


def test_agreement_counts_all_pixels_and_object_pixels():
    want = [np.array([[0, 0, 1, 1]]), np.array([[0, 0, 0, 0]])]
    have = [np.array([[0, 2, 1, 1]]), np.array([[0, 0, 0, 0]])]
    result = agreement(want, have)
    assert result.pixels == pytest.approx(7 / 8) and result.objects == pytest.approx(2 / 3) and result.frames == 2


def fp32_export(tmp_path: Path) -> Path:
    """A copy of the shipped export with its FP32 files only, whatever INT8 the shipped one holds."""
    return copy_fp32_export(DEFAULT_ENGINES, tmp_path / "export").root


@pytest.mark.timeout(300)
def test_int8_flow_on_a_copy_of_the_default_export(tmp_path, tiny_synth):
    export = fp32_export(tmp_path)
    manifest = Manifest.load(export)
    cache = tmp_path / "cache"
    assert manifest.int8_stages == () and OnnxRuntimeBackend(manifest, "auto", cache_dir=cache).int8_stages == ()
    record = quantize_model(manifest, tiny_synth, "val", clips=1, check_clips=1, min_agreement=0.0,
                            log=lambda m: None, stages=("flow",))
    manifest.save()
    assert record.calibration.frames == 4 and record.stages["flow"].use and record.used == ("flow",)
    assert record.calibration.cpu_weight_bits == 7
    assert 0.0 <= record.stages["flow"].objects <= 1.0
    loaded = Manifest.load(export)
    assert loaded.int8_stages == ("flow",) and loaded.int8 == record
    assert set(loaded.stages["flow"].sha256) == {"fp32", "int8", "int8_cpu"}
    assert check_explicit_quantization(onnx.load(str(loaded.onnx_path("flow", "int8")))) > 0
    auto = OnnxRuntimeBackend(loaded, "auto", cache_dir=cache)
    assert auto.int8_stages == ("flow",) and "int8: flow" in auto.description
    assert OnnxRuntimeBackend(loaded, "fp32", cache_dir=cache).int8_stages == ()
    values = json.loads((export / "manifest.json").read_text())  # as an export from before 7-bit weights
    values["int8"]["calibration"]["cpu_weight_bits"] = 8
    (export / "manifest.json").write_text(json.dumps(values))
    old = OnnxRuntimeBackend(Manifest.load(export), "auto", cache_dir=cache)
    if this_cpu_saturates_8bit_weights():
        assert old.int8_stages == () and "saturate on this CPU" in old.description
    else:
        assert old.int8_stages == ("flow",) and old.fallback is None
    assert OnnxRuntimeBackend(Manifest.load(export), "int8", cache_dir=cache).int8_stages == ("flow",)  # as asked
    loaded.save()
    size, stride = loaded.preprocess.image_size, loaded.preprocess.flow_stride
    frames = np.zeros((1, 3, size, size), np.float32)
    assert auto.run("flow", {"previous": frames, "current": frames})["flow"].shape == (1, 2, size // stride,
                                                                                      size // stride)
    with pytest.raises(ValueError, match="INT8 stages"):
        quantize_model(loaded, tiny_synth, stages=("vta",))
    with pytest.raises(ValueError, match="val clips"):
        quantize_model(loaded, tiny_synth, "val", clips=5, check_clips=5, stages=("flow",))
    (export / "onnx" / "flow.int8_cpu.onnx").unlink()
    with pytest.raises(ManifestError, match="flow.int8_cpu.onnx, which is missing"):
        Manifest.load(export)


@pytest.mark.timeout(300)
def test_each_calibrator_is_judged_and_the_files_hold_the_best_ones_ranges(tmp_path, tiny_synth):
    manifest = Manifest.load(fp32_export(tmp_path))
    lines: list[str] = []
    record = quantize_model(manifest, tiny_synth, "val", clips=1, check_clips=1, min_agreement=0.0,
                            log=lines.append, stages=("audio_encoder",), methods=("entropy", "minmax"))
    manifest.save()
    judged = [line for line in lines if "labels agree with FP32" in line]
    assert [line.split("(")[1].split(")")[0] for line in judged] == ["entropy", "minmax"]
    verdict = record.stages["audio_encoder"]
    shares = [float(line.split("pixels, ")[1].split(" %")[0]) for line in judged]
    assert verdict.use and 100 * verdict.objects == pytest.approx(max(shares), abs=0.06)
    assert verdict.method == ("entropy" if shares[0] >= shares[1] else "minmax")  # ties keep the first
    assert record.calibration.method == "entropy,minmax" and Manifest.load(manifest.root).int8 == record
    # The files on disk are the chosen calibrator's, whichever was written last.
    samples = collect_inputs(manifest, tiny_synth, "val", 1)["audio_encoder"]
    again = tmp_path / "again.int8.onnx"
    quantize_file(manifest.onnx_path("audio_encoder", "fp32"), again, samples, for_tensorrt=True, method=verdict.method)
    assert file_hash(again, length=64) == manifest.stages["audio_encoder"].sha256["int8"]
    with pytest.raises(ValueError, match="calibration methods"):
        quantize_model(manifest, tiny_synth, "val", clips=1, check_clips=1, stages=("flow",), methods=("kl",))


def test_calibration_data_is_checked_before_anything_runs(tiny_synth, tmp_path):
    check_calibration(tiny_synth, "val", 1, 1)  # the tiny set has 2 val clips
    with pytest.raises(ValueError, match="has 2 val clips; calibration and its check need 36"):
        check_calibration(tiny_synth, "val", 24, 12)
    with pytest.raises(ValueError, match="at least 1"):
        check_calibration(tiny_synth, "val", 0, 1)


def test_build_engines_int8_options_are_checked():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "export/build_engines.py", "--out", "unused", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout, not an installed one

    assert "--int8 needs --calibration" in run("--int8").stderr
    assert "only used with --int8" in run("--calibration", "data").stderr
    assert run("--int8", "--calibration", "d", "--int8-min-agreement", "2").returncode == 2
    assert "invalid choice: 'kl'" in run("--int8", "--calibration", "d", "--int8-calibrator", "kl").stderr


def chain_model(path: Path) -> Path:
    """x -> conv a -> relu -> conv b -> relu -> conv c -> y, and conv b -> conv d -> z: a and c, d are end layers."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), f"w{n}") for n in "abcd"]
    conv = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["ya"], name="a", **conv), helper.make_node("Relu", ["ya"], ["ra"]),
             helper.make_node("Conv", ["ra", "wb"], ["yb"], name="b", **conv), helper.make_node("Relu", ["yb"], ["rb"]),
             helper.make_node("Conv", ["rb", "wc"], ["y"], name="c", **conv),
             helper.make_node("Conv", ["yb", "wd"], ["z"], name="d", **conv)]
    shape = [1, 4, 8, 8]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "yz"], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def float_weight_convs(model: onnx.ModelProto) -> set[str]:
    """Names of the convolutions that read a float weight itself (no DequantizeLinear before it)."""
    floats = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] in floats}


def test_end_layers_are_those_next_to_an_input_or_an_output(tmp_path):
    assert end_layers(onnx.load(str(chain_model(tmp_path / "chain.onnx")))) == ["a", "c", "d"]
    assert end_layers(onnx.load(str(conv_model(tmp_path / "conv.onnx")))) == [""]  # one unnamed conv: both ends


def test_layers_kept_float_read_their_weights_unquantized(tmp_path):
    fp32 = chain_model(tmp_path / "chain.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    quantize_file(fp32, tmp_path / "chain.int8.onnx", feeds, for_tensorrt=True, keep_float=("a", "c", "d"))
    model = onnx.load(str(tmp_path / "chain.int8.onnx"))
    assert float_weight_convs(model) == {"a", "c", "d"}  # b's weight comes dequantized from int8, per channel
    assert check_explicit_quantization(model) == 1


@pytest.mark.timeout(300)
def test_a_stage_below_the_agreement_is_tried_again_with_its_end_layers_float(tmp_path, tiny_synth):
    manifest = Manifest.load(fp32_export(tmp_path))
    lines: list[str] = []
    # Agreement 1.0: every object pixel of the check clip must keep its label, which INT8 does not do.
    record = quantize_model(manifest, tiny_synth, "val", clips=1, check_clips=1, min_agreement=1.0,
                            log=lines.append, stages=("flow",), keep_rejected=True, methods=("minmax",))
    manifest.save()
    verdict = record.stages["flow"]
    assert any("retrying with the end layers in float" in line for line in lines)
    assert verdict.float_layers == tuple(end_layers(onnx.load(str(manifest.onnx_path("flow", "fp32")))))
    assert not verdict.use and record.used == ()
    kept = onnx.load(str(manifest.onnx_path("flow", "int8")))  # the retry's file, kept for benchmarks
    assert float_weight_convs(kept) == set(verdict.float_layers)
    assert Manifest.load(manifest.root).int8 == record  # float_layers survive the manifest's round trip
