"""avss_sdk/export/tensorrt_ops.py: the TensorRT 10.3 operator check on real (tiny) ONNX graphs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from avss_sdk.export.tensorrt_ops import (
    SUPPORTED_OPS_FILE,
    UnsupportedOperatorError,
    check_tensorrt_ops,
    find_unsupported,
    load_supported_ops,
    restrictions_used,
)

ROOT = Path(__file__).resolve().parents[1]


def _model(nodes, inputs, outputs, opset=17, functions=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("avss", 1), helper.make_opsetid("custom", 1)]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def _vi(name, shape=(2, 3), dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_list_has_the_basics_and_not_stft():
    ops = load_supported_ops()
    for op in ("MatMul", "Softmax", "Conv", "Resize", "Gather", "Concat", "Einsum"):
        assert op in ops
    for op in ("STFT", "DFT", "MelWeightMatrix", "Attention", "Unique"):
        assert op not in ops
    assert "initializer" in ops["ReduceMean"]  # restrictions are kept
    assert SUPPORTED_OPS_FILE.read_text().startswith("#")


def test_supported_graph_passes():
    model = _model([helper.make_node("MatMul", ["a", "b"], ["c"], name="mm"),
                    helper.make_node("Softmax", ["c"], ["y"], name="sm", axis=-1)],
                   [_vi("a"), _vi("b", (3, 3))], [_vi("y")])
    onnx.checker.check_model(model)
    check_tensorrt_ops(model)
    assert find_unsupported(model) == []


def test_stft_and_custom_nodes_are_all_named():
    stft = helper.make_node("STFT", ["signal", "step"], ["spec"], name="audio_stft")
    custom = helper.make_node("Frobnicate", ["a"], ["f"], name="mystery", domain="custom")
    unnamed = helper.make_node("Unique", ["a"], ["u"])
    model = _model([stft, custom, unnamed, helper.make_node("Relu", ["a"], ["r"], name="ok")],
                   [_vi("signal", (1, 160, 1)), _vi("step", (), TensorProto.INT64), _vi("a")],
                   [_vi("spec", (1, 1, 1, 2)), _vi("f"), _vi("u", (6,)), _vi("r")])
    with pytest.raises(UnsupportedOperatorError) as info:
        check_tensorrt_ops(model)
    message = str(info.value)
    assert "3 node(s)" in message
    assert "'audio_stft' (ai.onnx::STFT)" in message
    assert "'mystery' (custom::Frobnicate)" in message
    assert "'<unnamed #2>' (ai.onnx::Unique)" in message
    assert "'ok'" not in message
    assert [o.op_type for o in info.value.offenders] == ["STFT", "Frobnicate", "Unique"]
    assert isinstance(info.value, ValueError)


def test_plugin_node_passes_unless_refused():
    node = helper.make_node("FusedCrossAttention", ["q", "k", "v", "m"], ["o"], name="vta_attn",
                            domain="avss", scale=0.125, has_mask=0)
    model = _model([node], [_vi(n, (1, 2, 4, 32)) for n in "qkv"] + [_vi("m", (1, 1, 1, 1))],
                   [_vi("o", (1, 2, 4, 32))])
    check_tensorrt_ops(model)
    with pytest.raises(UnsupportedOperatorError, match="'vta_attn' \\(avss::FusedCrossAttention\\)"):
        check_tensorrt_ops(model, plugin_ops=set())


def test_subgraphs_are_searched():
    then_graph = helper.make_graph([helper.make_node("DFT", ["a"], ["t"], name="inner_dft")],
                                   "then", [], [_vi("t")])
    else_graph = helper.make_graph([helper.make_node("Identity", ["a"], ["e"], name="inner_id")],
                                   "else", [], [_vi("e")])
    cond = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)
    model = _model([cond], [_vi("c", (), TensorProto.BOOL), _vi("a")], [_vi("y")])
    offenders = find_unsupported(model)
    assert len(offenders) == 1
    assert offenders[0].name == "inner_dft"
    assert "If branch.then_branch" in offenders[0].where


def test_local_function_body_is_checked_not_its_call():
    body = [helper.make_node("STFT", ["x", "s"], ["y"], name="fn_stft")]
    function = helper.make_function("custom", "MyMel", ["x", "s"], ["y"], body,
                                    [helper.make_opsetid("", 17)])
    call = helper.make_node("MyMel", ["signal", "step"], ["spec"], name="call", domain="custom")
    model = _model([call], [_vi("signal", (1, 160, 1)), _vi("step", (), TensorProto.INT64)],
                   [_vi("spec", (1, 1, 1, 2))], functions=[function])
    offenders = find_unsupported(model)
    assert [(o.name, o.op_type) for o in offenders] == [("fn_stft", "STFT")]
    assert offenders[0].where == "function custom::MyMel"


def test_restrictions_used_notes_limited_ops():
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    model = _model([helper.make_node("ReduceMean", ["a", "axes"], ["y"], name="rm")],
                   [_vi("a")], [_vi("y", (2, 1))], opset=18)
    model.graph.initializer.append(axes)
    assert "initializer" in restrictions_used(model)["ReduceMean"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "avss_sdk.export.tensorrt_ops", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_exit_codes(tmp_path):
    good = _model([helper.make_node("Relu", ["a"], ["y"], name="r")], [_vi("a")], [_vi("y")])
    bad = _model([helper.make_node("STFT", ["s", "t"], ["y"], name="the_stft")],
                 [_vi("s", (1, 160, 1)), _vi("t", (), TensorProto.INT64)], [_vi("y", (1, 1, 1, 2))])
    onnx.save(good, tmp_path / "good.onnx")
    onnx.save(bad, tmp_path / "bad.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not a protobuf \x00\x01")
    result = _cli(str(tmp_path / "good.onnx"))
    assert result.returncode == 0, result.stderr
    assert "ok for TensorRT 10.3" in result.stdout
    result = _cli(str(tmp_path / "good.onnx"), str(tmp_path / "bad.onnx"))
    assert result.returncode == 1
    assert "'the_stft' (ai.onnx::STFT)" in result.stdout
    for unreadable in ("missing.onnx", "junk.onnx"):
        result = _cli(str(tmp_path / unreadable))
        assert result.returncode == 2 and "cannot read" in result.stderr
        assert "Traceback" not in result.stderr
