"""Export each stage of an SSP-OV checkpoint to ONNX, FP32 and FP16, and check every file.

One ONNX file per stage of DESIGN.md (``flow``, ``image_encoder``, ``audio_encoder``,
``text_encoder``, ``vta``, ``mask_decoder``), exported with ``torch.onnx.export(dynamo=True)``
(its optimizer folds constants and removes dead nodes). Batch is dynamic everywhere, the
vocabulary size K in ``vta`` and ``mask_decoder`` and the number of prompts in
``text_encoder``. Every file is then checked three ways before it is accepted:

* ``onnx.checker`` (full check, shapes inferred);
* every node's op type against TensorRT 10.3's ONNX operator support
  (``avss_sdk/export/tensorrt_ops.py``): an unsupported node fails the export with its name;
* ONNX Runtime against PyTorch on the same inputs, within :data:`TOLERANCES`, at two
  vocabulary sizes (a shape other than the one traced, so a dynamic axis that was
  specialised is caught).

The FP16 variant is strongly typed: the precision is in the graph (FP16 weights and
activations, FP32 graph inputs and outputs, casts at the edges), with the numerically
fragile ops kept in FP32 (:data:`FP32_OPS`: normalisations, softmax, exp/log, reductions).
``mask_decoder`` stays FP32 as a whole (:data:`FP32_STAGES`): it ends in per-pixel
log-probabilities, and it is a small share of a frame's FLOPs.

With ``plugin=True`` each cross-attention of ``vta`` and ``mask_decoder`` is additionally
exported as an ``avss::FusedCrossAttention`` node (``<stage>.<precision>-plugin.onnx``) for
TensorRT's plugin path; ONNX Runtime cannot run those, so their check is structural (one
node per attention, same inputs and outputs as the plain file).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from avss_sdk.media import SAMPLE_RATE
from avss_sdk.modeling.attention import ONNX_DOMAIN, ONNX_OP, export_as_plugin, onnx_translation_table
from avss_sdk.modeling.flow import FLOW_STRIDE
from avss_sdk.modeling.checkpoint import load_model, resolve_checkpoint
from avss_sdk.modeling.ssp_ov import SSPOV, ModelConfig
from avss_sdk.postprocess import FOREGROUND_THRESHOLD
from avss_sdk.preprocess import IMAGE_MEAN, IMAGE_STD, LOG_MEL_SAMPLES, MEL_BANDS, MEL_FRAMES
from avss_sdk.runtime.manifest import (Manifest, ModelInfo, Postprocess, Preprocess, StageEntry, TensorSpec, TextSection,
                                       file_hash)

OPSET = 18
# Ops that stay FP32 in the FP16 graph: their range or accumulation needs it.
FP32_OPS = ["LayerNormalization", "Softmax", "LogSoftmax", "ReduceL2", "ReduceSum", "ReduceMean", "Exp", "Log",
            "Pow", "Sqrt"]
# Stages whose FP16 variant is their FP32 file (see the module docstring).
FP32_STAGES = ("mask_decoder",)
# Largest |ONNX Runtime - PyTorch| accepted per stage output, relative to the output's own scale
# (max |PyTorch|, at least 1): FP32 differs only by summation order; FP16 keeps ~3 decimal digits
# per op, and a stage chains dozens of them.
TOLERANCES = {"fp32": 1e-4, "fp16": 3e-2}
EXAMPLE_VOCAB = (5, 17)  # traced K, and a second K checked against PyTorch
DYNAMIC_LIMITS = {"batch": 64, "vocab": 4096, "prompts": 8192}


class ExportCheckError(RuntimeError):
    """An exported stage failed a check (checker, operator support, or ONNX Runtime parity)."""


@dataclass(frozen=True)
class StageExport:
    """One stage to export: the module, its named inputs (with dynamic axes) and outputs."""

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[str]
    make_inputs: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
    uses_attention: bool = False


class _FlowStage(nn.Module):
    def __init__(self, model: SSPOV) -> None:
        super().__init__()
        self.flow = model.flow

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return self.flow(previous, current)


def stage_exports(model: SSPOV) -> list[StageExport]:
    """The six stages of ``model`` with their tensor names and example-input makers (batch 2)."""
    config = model.config
    size, grid = config.image_size, config.image_size // 8
    hidden, embed, audio = config.hidden_dim, model.text_encoder.embed_dim, config.audio_dim
    context = model.text_encoder.context_length
    batch = 2

    def image(g: torch.Generator) -> torch.Tensor:
        return torch.rand(batch, 3, size, size, generator=g) * 2 - 1

    def unit(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        return nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)

    def features(g: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, hidden, grid, grid, generator=g)

    def tokens(count: int, g: torch.Generator) -> torch.Tensor:
        prompts = [f"a photo of a {w}." for w in ("dog", "guitar", "person speaking", "alarm clock", "tuba")]
        ids = model.text_encoder.tokenize([prompts[i % len(prompts)] for i in range(count)])
        return ids.cpu()

    def spec(name: str, *shape: int | str, dtype: str = "float32") -> TensorSpec:
        return TensorSpec(name, tuple(shape), dtype)

    return [
        StageExport("flow", _FlowStage(model),
                    [spec("previous", "batch", 3, size, size), spec("current", "batch", 3, size, size)],
                    ["flow"], lambda k, g: (image(g), image(g))),
        StageExport("image_encoder", model.image_encoder, [spec("image", "batch", 3, size, size)],
                    ["mask_features", "dense_embedding"], lambda k, g: (image(g),)),
        StageExport("audio_encoder", model.audio_encoder, [spec("log_mel", "batch", MEL_FRAMES, MEL_BANDS)],
                    ["audio_embedding"], lambda k, g: (torch.randn(batch, MEL_FRAMES, MEL_BANDS, generator=g) - 3,)),
        StageExport("text_encoder", model.text_encoder, [spec("token_ids", "prompts", context, dtype="int64")],
                    ["text_embedding"], lambda k, g: (tokens(k, g),)),
        StageExport("vta", model.vta,
                    [spec("mask_features", "batch", hidden, grid, grid), spec("class_embeddings", "vocab", embed),
                     spec("scene_embedding", "batch", embed)],
                    ["aligned_features"], lambda k, g: (features(g), unit((k, embed), g), unit((batch, embed), g)),
                    uses_attention=True),
        StageExport("mask_decoder", model.mask_decoder,
                    [spec("aligned_features", "batch", hidden, grid, grid),
                     spec("dense_embedding", "batch", embed, grid, grid),
                     spec("flow", "batch", 2, grid, grid), spec("audio_embedding", "batch", audio),
                     spec("class_embeddings", "vocab", embed)],
                    ["pixel_logits", "masks", "class_logits", "sounding"],
                    lambda k, g: (features(g), torch.randn(batch, embed, grid, grid, generator=g),
                                  torch.randn(batch, 2, grid, grid, generator=g) * 3,
                                  torch.randn(batch, audio, generator=g), unit((k, embed), g)),
                    uses_attention=True),
    ]


def _dynamic_shapes(stage: StageExport) -> tuple[dict[int, torch.export.Dim], ...]:
    dims = {name: torch.export.Dim(name, min=1, max=limit) for name, limit in DYNAMIC_LIMITS.items()}
    return tuple({axis: dims[size] for axis, size in enumerate(t.shape) if isinstance(size, str)}
                 for t in stage.inputs)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's dynamo path prints progress and warnings per export; keep the CLI's output readable."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def export_stage(stage: StageExport, path: Path, plugin: bool = False) -> onnx.ModelProto:
    """Trace ``stage`` to ``path`` (FP32, opset :data:`OPSET`, dynamic axes named as in its specs)."""
    args = stage.make_inputs(EXAMPLE_VOCAB[0], torch.Generator().manual_seed(0))
    kwargs = dict(input_names=[t.name for t in stage.inputs], output_names=stage.outputs, opset_version=OPSET,
                  dynamo=True, dynamic_shapes=_dynamic_shapes(stage), optimize=True, verbose=False)
    with _quiet_exporter(), torch.no_grad():
        if plugin:
            with export_as_plugin():
                program = torch.onnx.export(stage.module, args, custom_translation_table=onnx_translation_table(),
                                            **kwargs)
        else:
            program = torch.onnx.export(stage.module, args, **kwargs)
    model = program.model_proto
    _name_dynamic_axes(model, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return model


def _name_dynamic_axes(model: onnx.ModelProto, stage: StageExport) -> None:
    """Give graph inputs the manifest's axis names (the exporter names them s0, s1, ...)."""
    for value, spec in zip(model.graph.input, stage.inputs):
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):
            if isinstance(size, str):
                dim.dim_param = size


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The strongly typed FP16 variant: FP16 compute, :data:`FP32_OPS` and graph I/O in FP32.

    onnxconverter-common's converter does the graph rewrite (casts at every precision
    boundary, initializers converted, value infos updated) that would otherwise be ours to keep.
    """
    from onnxconverter_common.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight that underflows FP16
        return convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS)


def output_specs(model: onnx.ModelProto, stage: StageExport) -> list[TensorSpec]:
    """The outputs' shapes as the graph declares them, dynamic axes named like the inputs'."""
    rename = _symbol_names(model, stage)
    specs = []
    for value in model.graph.output:
        dims = []
        for dim in value.type.tensor_type.shape.dim:
            dims.append(dim.dim_value if dim.HasField("dim_value") else rename.get(dim.dim_param, dim.dim_param))
        specs.append(TensorSpec(value.name, tuple(dims), _DTYPES[value.type.tensor_type.elem_type]))
    return specs


_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
           onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool"}


def _symbol_names(model: onnx.ModelProto, stage: StageExport) -> dict[str, str]:
    """Output shapes may use the exporter's symbols (s0, s77, "s77 + 1"): map plain ones to axis names."""
    exported = onnx.shape_inference.infer_shapes(model)
    rename = {}
    for value, spec in zip(exported.graph.input, stage.inputs):
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):
            if isinstance(size, str) and dim.dim_param:
                rename[dim.dim_param] = size
    return rename


def check_stage(stage: StageExport, path: Path, precision: str) -> float:
    """Run every check on one exported file; returns the worst relative ONNX Runtime/PyTorch difference."""
    from avss_sdk.export.tensorrt_ops import UnsupportedOperatorError, check_tensorrt_ops

    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportCheckError(f"{path.name}: onnx.checker: {error}") from error
    try:
        check_tensorrt_ops(model)
    except UnsupportedOperatorError as error:
        raise ExportCheckError(f"{path.name}: {error}") from error
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for k in EXAMPLE_VOCAB:
        args = stage.make_inputs(k, torch.Generator().manual_seed(k))
        with torch.no_grad():
            expected = stage.module(*args)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {t.name: a.numpy() for t, a in zip(stage.inputs, args)})
        for name, want, have in zip(stage.outputs, expected, got):
            want = want.numpy()
            if want.shape != have.shape:
                raise ExportCheckError(f"{path.name}: output {name} has shape {have.shape} in ONNX Runtime, "
                                       f"{want.shape} in PyTorch (K={k})")
            error = float(np.abs(want - have).max() / max(1.0, float(np.abs(want).max())))
            if not error <= TOLERANCES[precision]:  # also catches NaN
                raise ExportCheckError(f"{path.name}: output {name} differs from PyTorch by {error:.2e} "
                                       f"(relative), tolerance {TOLERANCES[precision]:.0e} (K={k})")
            worst = max(worst, error)
    return worst


def check_plugin_stage(plain: onnx.ModelProto, plugin: onnx.ModelProto, path: Path) -> int:
    """The plugin file has the plain file's I/O, no plain attention left, and one plugin node per attention."""
    from avss_sdk.export.tensorrt_ops import check_tensorrt_ops

    nodes = [n for n in plugin.graph.node if (n.domain, n.op_type) == (ONNX_DOMAIN, ONNX_OP)]
    io = lambda m: ([i.name for i in m.graph.input], [o.name for o in m.graph.output])  # noqa: E731
    if not nodes or io(plain) != io(plugin):
        raise ExportCheckError(f"{path.name}: expected {ONNX_DOMAIN}::{ONNX_OP} nodes and the plain file's I/O")
    check_tensorrt_ops(plugin)
    return len(nodes)


def export_model(checkpoint: str | Path, out_dir: str | Path, max_vocab: int = 256, precision: str = "fp16",
                 plugin: bool = False, fp16: bool = True, log: Callable[[str], None] = print) -> Manifest:
    """Export, check and describe every stage of ``checkpoint`` in ``out_dir``; returns the saved manifest.

    Writes ``onnx/<stage>.fp32.onnx``, ``onnx/<stage>.fp16.onnx`` (unless ``fp16`` is False;
    the engine precision is then fp32), ``-plugin`` variants of the attention stages with
    ``plugin``, ``tokenizer.json`` and ``manifest.json`` (with no engines:
    ``avss-build-engines`` adds them where TensorRT is present).
    """
    precision = precision if fp16 else "fp32"
    from avss_sdk.export.tokenizer_json import write_tokenizer_json

    checkpoint = resolve_checkpoint(checkpoint)
    model, payload = load_model(checkpoint)
    out_dir = Path(out_dir)
    stages: dict[str, StageEntry] = {}
    for stage in stage_exports(model):
        files: dict[str, str] = {}
        fp32_path = out_dir / "onnx" / f"{stage.name}.fp32.onnx"
        plain = export_stage(stage, fp32_path)
        files["fp32"] = fp32_path.relative_to(out_dir).as_posix()
        report = [f"fp32 {check_stage(stage, fp32_path, 'fp32'):.1e}"]
        if stage.name in FP32_STAGES and fp16:
            files["fp16"] = files["fp32"]
        elif fp16:
            fp16_path = fp32_path.with_name(f"{stage.name}.fp16.onnx")
            onnx.save(to_fp16(plain), str(fp16_path))
            files["fp16"] = fp16_path.relative_to(out_dir).as_posix()
            report.append(f"fp16 {check_stage(stage, fp16_path, 'fp16'):.1e}")
        if plugin and stage.uses_attention:
            plugin_path = fp32_path.with_name(f"{stage.name}.fp32-plugin.onnx")
            exported = export_stage(stage, plugin_path, plugin=True)
            count = check_plugin_stage(plain, exported, plugin_path)
            files["fp32-plugin"] = plugin_path.relative_to(out_dir).as_posix()
            if stage.name in FP32_STAGES and fp16:
                files["fp16-plugin"] = files["fp32-plugin"]
            elif fp16:
                plugin_path = fp32_path.with_name(f"{stage.name}.fp16-plugin.onnx")
                onnx.save(to_fp16(exported), str(plugin_path))
                check_plugin_stage(plain, onnx.load(str(plugin_path)), plugin_path)
                files["fp16-plugin"] = plugin_path.relative_to(out_dir).as_posix()
            report.append(f"{count} plugin nodes")
        stages[stage.name] = StageEntry(stage.name, files, stage.inputs, output_specs(plain, stage))
        log(f"  {stage.name:<14} exported and checked; ONNX Runtime vs PyTorch (relative): {', '.join(report)}")

    text = model.text_encoder
    write_tokenizer_json(config_text_model(payload), out_dir / "tokenizer.json", text.context_length)
    no_scene = torch.nn.functional.normalize(text.no_scene.detach(), dim=0)
    manifest = Manifest(
        root=out_dir,
        model=ModelInfo("ssp_ov", file_hash(checkpoint),
                        Path(os.path.relpath(checkpoint.resolve(), out_dir.resolve())).as_posix(), payload["config"]),
        precision=precision, max_vocab=max_vocab,
        preprocess=Preprocess(model.config.image_size, FLOW_STRIDE, IMAGE_MEAN, IMAGE_STD, SAMPLE_RATE, MEL_BANDS,
                              MEL_FRAMES, LOG_MEL_SAMPLES),
        postprocess=Postprocess(float(payload.get("foreground_threshold", FOREGROUND_THRESHOLD)),
                                payload.get("guided_filter")),
        text=TextSection("tokenizer.json", text.context_length, text.embed_dim, tuple(text.category_templates),
                         text.scene_template, tuple(round(float(x), 7) for x in no_scene)),
        stages=stages,
        engines={"built": False, "reason": "ONNX export only"},
    )
    manifest.check_stages()
    manifest.save()  # records each ONNX file's sha256
    return manifest


def config_text_model(payload: dict) -> str:
    """The open_clip model name of a checkpoint's text tower (its tokenizer travels with the export)."""
    return str(payload["config"].get("text_model", ModelConfig.text_model))

