"""ONNX export of fused_cross_attention: plain pattern (runs in ONNX Runtime) and plugin node."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from avss_sdk.modeling.attention import (
    ONNX_DOMAIN,
    ONNX_OP,
    export_as_plugin,
    fused_cross_attention,
    key_padding_to_additive,
    onnx_translation_table,
)


class TinyCrossAttention(torch.nn.Module):
    """Pixels attend to prompt tokens, like VTA, once without a mask and once with one; no other
    MatMul in the graph. One export covers both kinds of attention node."""

    def forward(self, q, k, v, mask):
        return fused_cross_attention(q * 2.0, k, v) + 1.0, fused_cross_attention(q * 3.0, k, v, mask) + 1.0


def _example():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 2, 40, 32, generator=g), torch.randn(1, 2, 7, 32, generator=g), \
        torch.randn(1, 2, 7, 32, generator=g)
    mask = torch.zeros(1, 1, 40, 7)
    mask[..., 3, :] = float("-inf")  # an all-masked row
    mask[..., 5, 2:] = float("-inf")
    return (q, k, v, mask)


def _export(module, args, path, plugin: bool) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if plugin:
            with export_as_plugin():
                torch.onnx.export(module, args, str(path), dynamo=True, verbose=False,
                                  custom_translation_table=onnx_translation_table())
        else:
            torch.onnx.export(module, args, str(path), dynamo=True, verbose=False)
    return onnx.load(str(path))


def test_plain_export_runs_in_onnxruntime(tmp_path):
    args = _example()
    model = _export(TinyCrossAttention(), args, tmp_path / "plain.onnx", plugin=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 4 and ops.count("Softmax") == 2  # two attentions
    assert not any(n.domain == ONNX_DOMAIN for n in model.graph.node)
    sess = ort.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    unmasked, masked = sess.run(None, feeds)
    expected = [t.numpy() for t in TinyCrossAttention()(*args)]
    for out, want in zip((unmasked, masked), expected):
        assert not np.isnan(out).any()
        np.testing.assert_allclose(out, want, atol=1e-5)
    np.testing.assert_array_equal(masked[:, :, 3], 1.0)  # all-masked row: 0 + 1
    assert not np.allclose(masked, unmasked)


def test_plugin_export_emits_one_custom_node_per_attention(tmp_path):
    model = _export(TinyCrossAttention(), _example(), tmp_path / "plugin.onnx", plugin=True)
    custom = [n for n in model.graph.node if n.domain == ONNX_DOMAIN]
    assert len(custom) == 2
    for node, with_mask in zip(custom, (False, True)):
        assert node.op_type == ONNX_OP and len(node.input) == 4 and len(node.output) == 1
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["scale"] == pytest.approx(1 / np.sqrt(32))
        assert attrs["has_mask"] == int(with_mask)
        assert attrs["plugin_namespace"] == b"avss" and attrs["plugin_version"] == b"1"
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"MatMul", "Softmax"}
    assert any(o.domain == ONNX_DOMAIN and o.version == 1 for o in model.opset_import)


def test_plugin_mode_eager_matches_plain():
    args = _example()
    plain = TinyCrossAttention()(*args)
    with export_as_plugin():
        routed = TinyCrossAttention()(*args)
    torch.testing.assert_close(routed, plain)


def test_plugin_mode_is_scoped():
    from avss_sdk.modeling import attention

    with export_as_plugin():
        assert attention._PLUGIN_MODE
    assert not attention._PLUGIN_MODE


def test_key_padding_to_additive():
    kpm = torch.tensor([[False, True, False], [True, True, True]])
    add = key_padding_to_additive(kpm)
    assert add.shape == (2, 1, 1, 3)
    assert torch.equal(torch.isinf(add[:, 0, 0]), kpm)
    q = torch.randn(2, 1, 4, 32)
    k = torch.randn(2, 1, 3, 32)
    out = fused_cross_attention(q, k, k, add)
    assert torch.all(out[1] == 0) and not torch.isnan(out).any()
