"""INT8 static quantization of the per-frame convolution stages, calibrated on SynthAVS frames.

    avss-build-engines --checkpoint default --out engines/ --int8 --calibration data/synthavs
    python -m avss_sdk.export.quantize_int8 engines/ --calibration data/synthavs   # an existing export

For each stage of :data:`INT8_STAGES` the FP32 export is quantized with ONNX Runtime's
static QDQ quantizer (activation ranges over the stage's real inputs, collected by running
the FP32 pipeline over calibration clips), per-channel int8 weights, into two files from
the same calibration:

* ``onnx/<stage>.int8.onnx``: TensorRT's explicit quantization (QuantizeLinear /
  DequantizeLinear pairs, int8 activations with zero point 0, per-channel weight scales),
  checked by :func:`check_explicit_quantization` and TensorRT 10.3's operator list;
* ``onnx/<stage>.int8_cpu.onnx``: what ONNX Runtime runs on a CPU: uint8 activations with
  a zero point, so a ReLU6 folds into the quantized range and every convolution becomes
  one u8 x s8 kernel (VNNI). ONNX Runtime cannot fold a ReLU6 between symmetric int8
  Q/DQ pairs, so it runs the TensorRT file slower than FP32.

Each stage is then judged on held-out clips: the whole pipeline runs with that stage alone
in INT8 against the FP32 pipeline, and the share of pixels whose label is unchanged,
among those either pipeline calls a sounding object, must reach ``min_agreement``. Every
calibrator of :data:`CALIBRATION_METHODS` (MinMax, percentile, entropy ranges) is judged and the
stage keeps the one that agrees best (``int8.stages[stage].method``). A stage below the
agreement is quantized again with its first and last weight layers (:func:`end_layers`: where
rounding errors enter and where they reach the outputs) kept in float, with every calibrator
(the best one whole is not always the best one so), and judged again;
the manifest lists those layers (``int8.stages[stage].float_layers``). A stage below the
agreement both ways stays FP32, and the manifest says so (``int8.stages[stage].use``, a typed
:class:`avss_sdk.runtime.manifest.Int8Section`) and keeps only the INT8 files of the stages
that passed (the others are deleted unless ``keep_rejected``: only benchmarks read them). The other
stages stay FP32 throughout: ``vta`` and ``mask_decoder`` are attention and
log-probabilities and a small share of a frame; ``text_encoder`` runs only on vocabulary
changes.

The module imports neither torch nor onnx at its top (the command-line helpers are shared
with ``avss-build-engines``, which must explain a missing training install itself); the
quantization needs ``onnx`` and ``onnxruntime`` (``avss_sdk[train]``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from avss_sdk.errors import AvssError
from avss_sdk.runtime.manifest import (CALIBRATION_METHODS, INT8_FILES, Int8Calibration, Int8Section, Int8Stage,
                                       Manifest, ManifestError)

INT8_STAGES = ("flow", "image_encoder", "audio_encoder")
# The share of object pixels whose label a stage in INT8 must keep. At 0.97 the stage-7 image encoder
# passed (98.0 % on its 12 check clips) yet cost 1.01 novel mIoU on 500 test clips, over the 1 point
# the INT8 goal allows; its flow and audio encoder keep 99.8 % or more and cost nothing measurable. The
# reading is noisy too: the same image encoder keeps 97.3 % on val clips 24-71 and 96.1 % on 36-83.
MIN_AGREEMENT = 0.985
CALIBRATION_CLIPS = 24
CHECK_CLIPS = 12
# How activation ranges are read off the calibration frames (ONNX Runtime's calibrators): "minmax"
# takes the extremes; "percentile" clips the top 1e-4 of |values| and "entropy" picks the range
# whose histogram keeps the smallest KL divergence, which both give the bulk of the values finer
# steps. No one of them suits every stage (benchmarks/results/int8-calibration-cpu.md), so each stage
# is judged with each and keeps the best.
ORT_CALIBRATORS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
PERCENTILE = 99.99
# Weight bits of the files ONNX Runtime runs on a CPU, but for depthwise convolutions (quantize_file says
# why not 8); TensorRT's stay 8. The manifest records it (Int8Calibration.cpu_weight_bits).
CPU_WEIGHT_BITS = 7

if TYPE_CHECKING:
    import onnx


class QuantizationError(AvssError, RuntimeError):
    """Calibration data that cannot be used, or a quantized file that fails a check."""


@dataclass(frozen=True)
class Agreement:
    """Label agreement of a pipeline with the FP32 one over held-out frames."""

    pixels: float  # share of all pixels with the same label
    objects: float  # share of pixels either pipeline labels as a sounding object that have the same label
    frames: int


def _quiet_quantizer() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process goes to the root logger


class _Recorder:
    """A backend wrapper that keeps a copy of every input each stage receives."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.description = backend.description
        self.inputs: dict[str, list[dict[str, np.ndarray]]] = {}

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs.setdefault(stage, []).append({k: np.array(v) for k, v in inputs.items()})
        return self.backend.run(stage, inputs)

    def close(self) -> None:
        self.backend.close()


def _dataset(data: Path, split: str, needed: int):
    """``data``'s ``split`` (an ``AVSSDataset``), ValueError unless it holds ``needed`` clips."""
    from avss_sdk.data.avsbench import AVSSDataset

    dataset = AVSSDataset(data, split, load_flow=False)
    if len(dataset) < needed:
        raise ValueError(f"{data} has {len(dataset)} {split} clips; calibration and its check need "
                         f"{needed} (make more with train/make_synth.py --split {split})")
    return dataset


def check_calibration(data: str | Path, split: str, clips: int, check_clips: int) -> None:
    """ValueError unless ``data``'s ``split`` holds ``clips`` calibration and ``check_clips`` check clips
    (cheap: the metadata only; callers check before a long export)."""
    if clips < 1 or check_clips < 1:
        raise ValueError(f"calibration and check clips must be at least 1, got {clips} and {check_clips}")
    _dataset(Path(data), split, clips + check_clips)


def _clips(data: Path, split: str, first: int, count: int) -> Iterator:
    dataset = _dataset(data, split, first + count)
    for index in range(first, first + count):
        yield dataset[index], dataset.class_names[1:]


def _segment_clip(segmenter, clip) -> list[np.ndarray]:
    from avss_sdk.preprocess import LOG_MEL_SECONDS

    segmenter.reset()
    return [segmenter.segment(clip.frames[i], clip.audio_window(i, LOG_MEL_SECONDS)).labels
            for i in range(len(clip.frames))]


def collect_inputs(manifest: Manifest, data: Path, split: str, clips: int) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every input each stage receives while the FP32 pipeline segments ``clips`` clips of ``data``."""
    from avss_sdk.segmenter import Segmenter

    segmenter = Segmenter(manifest.root, backend="onnxruntime", precision="fp32", log=lambda m: None)
    recorder = _Recorder(segmenter.backend)
    segmenter.backend = recorder
    for clip, words in _clips(data, split, 0, clips):
        if segmenter.vocab != words:
            segmenter.set_vocab(words)
        _segment_clip(segmenter, clip)
    segmenter.close()
    return recorder.inputs


WEIGHT_LAYERS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def end_layers(model: "onnx.ModelProto") -> list[str]:
    """Names of the weight layers (:data:`WEIGHT_LAYERS`) next to the graph's inputs or outputs, in graph order.

    A layer is next to an input when a graph input reaches it through no other weight layer,
    and next to an output when it reaches a graph output so.
    """
    consumers: dict[str, list] = {}
    producer: dict[str, object] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node

    def leads_to(names, targets: set[str], forward: bool) -> bool:
        """Whether ``names`` lead to ``targets`` through no weight layer (forward: to consumers, else producers)."""
        stack, seen = list(names), set()
        while stack:
            name = stack.pop()
            if name in targets:
                return True
            nodes = consumers.get(name, []) if forward else [producer[name]] if name in producer else []
            for node in nodes:
                if node.op_type not in WEIGHT_LAYERS and id(node) not in seen:
                    seen.add(id(node))
                    stack += node.output if forward else node.input
        return False

    inputs = {value.name for value in model.graph.input}
    outputs = {value.name for value in model.graph.output}
    return [node.name for node in model.graph.node if node.op_type in WEIGHT_LAYERS
            and (leads_to(node.output, outputs, True) or leads_to(node.input, inputs, False))]


def quantize_file(fp32: Path, out: Path, samples: list[dict[str, np.ndarray]], for_tensorrt: bool,
                  keep_float: tuple[str, ...] = (), method: str = "minmax") -> None:
    """Static QDQ quantization of ``fp32`` into ``out``, calibrated on ``samples`` with ``method`` (one of
    :data:`CALIBRATION_METHODS`), per-channel weights; the nodes named in ``keep_float`` stay float.

    The CPU file (``for_tensorrt`` false) has :data:`CPU_WEIGHT_BITS`-bit weights wherever ONNX
    Runtime multiplies them in its GEMM: on an x86 CPU without VNNI that is AVX2's ``vpmaddubsw``,
    which adds pairs of u8 x s8 products into 16 bits and saturates with full 8-bit weights
    (ONNX Runtime's quantization guide; on this project's image encoder, 83 % of object pixels
    kept their label instead of 99 %). 255 x 64 x 2 fits, so 7-bit weights give the same sums on
    every CPU. Depthwise convolutions keep 8 bits: their kernel widens to 16 bits before it
    multiplies and adds into 32 (:func:`depthwise_weights`).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    _quiet_quantizer()
    overrides = {} if for_tensorrt else \
        {name: [{"axis": 0, "reduce_range": False}] for name in depthwise_weights(onnx.load(str(fp32)))}
    # Ranges are merged every `flush` samples to bound memory; ONNX Runtime's calibrator fails
    # ("No data is collected") when the sample count is a multiple of it.
    flush = 16
    while len(samples) % flush == 0 and flush > 2:
        flush -= 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
        quantize_static(str(fp32), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        reduce_range=not for_tensorrt,  # 7 bits: ONNX Runtime's reduced range
                        calibrate_method=getattr(CalibrationMethod, ORT_CALIBRATORS[method]),
                        nodes_to_exclude=list(keep_float),
                        extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True,
                                       # TensorRT dequantizes int8 only: biases stay float in its file
                                       "QuantizeBias": not for_tensorrt,
                                       "CalibMaxIntermediateOutputs": flush, "CalibPercentile": PERCENTILE,
                                       "TensorQuantOverrides": overrides})
    tmp.replace(out)


def depthwise_weights(model: "onnx.ModelProto") -> list[str]:
    """The weights of the depthwise convolutions (one input channel per group): ONNX Runtime runs those
    with its depthwise kernel, not its GEMM, so their 8-bit products never saturate."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1 and len(node.input) > 1 \
                and weights.get(node.input[1], (0, 0))[1:2] == (1,):
            names.append(node.input[1])
    return names


def check_explicit_quantization(model: onnx.ModelProto) -> int:
    """TensorRT's rules for an explicitly quantized graph; returns the number of per-channel weights.

    Every QuantizeLinear / DequantizeLinear is int8 with zero point 0, and at least one
    weight is dequantized per output channel (a 1-D scale). Raises :class:`QuantizationError`.
    """
    from onnx import numpy_helper

    from avss_sdk.export.tensorrt_ops import UnsupportedOperatorError, check_tensorrt_ops

    try:
        check_tensorrt_ops(model)
    except UnsupportedOperatorError as error:
        raise QuantizationError(str(error)) from error
    constants = {t.name: t for t in model.graph.initializer}
    per_channel = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in constants:
            raise QuantizationError(f"{node.name}: {node.op_type} without a constant zero point")
        zero = numpy_helper.to_array(constants[node.input[2]])
        if zero.dtype != np.int8 or np.any(zero != 0):
            raise QuantizationError(f"{node.name}: zero point must be int8 0 for TensorRT, got {zero.dtype} "
                                    f"{zero.ravel()[:3]}")
        scale = constants.get(node.input[1])
        if node.op_type == "DequantizeLinear" and node.input[0] in constants and scale is not None \
                and len(scale.dims) == 1 and scale.dims[0] > 1:
            per_channel += 1
    if per_channel == 0:
        raise QuantizationError("no weight is quantized per channel")
    return per_channel


def agreement(reference: list[np.ndarray], labels: list[np.ndarray]) -> Agreement:
    """How many pixels keep their label (:class:`Agreement`); ``reference`` is the FP32 pipeline's."""
    same = total = same_objects = objects = 0
    for want, have in zip(reference, labels):
        equal = want == have
        either = (want > 0) | (have > 0)
        same += int(equal.sum())
        total += equal.size
        same_objects += int((equal & either).sum())
        objects += int(either.sum())
    return Agreement(same / max(total, 1), same_objects / objects if objects else 1.0, len(reference))


def label_agreement(manifest: Manifest, int8_stages: tuple[str, ...], data: Path, split: str, first: int,
                    clips: int, reference: list[np.ndarray] | None = None) -> tuple[Agreement, list[np.ndarray]]:
    """Labels of the pipeline with ``int8_stages`` in INT8 against the FP32 pipeline's on ``clips`` clips.

    Returns the agreement and the FP32 labels (pass them back as ``reference`` to skip that run).
    """
    from avss_sdk.runtime.backends import OnnxRuntimeBackend
    from avss_sdk.segmenter import Segmenter

    def run(precision: str, stages: tuple[str, ...]) -> list[np.ndarray]:
        segmenter = Segmenter(manifest.root, backend="onnxruntime", precision="fp32", log=lambda m: None)
        if stages:
            segmenter.backend.close()
            segmenter.backend = OnnxRuntimeBackend(manifest, precision, int8_stages=stages)
        labels = []
        for clip, words in _clips(data, split, first, clips):
            if segmenter.vocab != words:
                segmenter.set_vocab(words)
            labels += _segment_clip(segmenter, clip)
        segmenter.close()
        return labels

    if reference is None:
        reference = run("fp32", ())
    return agreement(reference, run("int8", int8_stages)), reference


def _drop_int8_files(manifest: Manifest, stage: str) -> None:
    """Forget (and delete) the stage's INT8 files: what a stage that stays FP32 keeps of the INT8 step."""
    entry = manifest.stages[stage]
    for key in INT8_FILES:
        file = entry.onnx.pop(key, None)
        entry.sha256.pop(key, None)
        if file is not None:
            manifest.path(file).unlink(missing_ok=True)


def copy_fp32_export(source: str | Path, into: Path) -> Manifest:
    """A copy of the export at ``source`` under ``into`` with its FP32 files only, whatever INT8 it holds
    (its checkpoint named by absolute path): somewhere to quantize without touching ``source``."""
    import json
    import shutil

    source = Path(source).resolve()
    shutil.copytree(source, into, ignore=shutil.ignore_patterns("*.int8*.onnx"))
    values = json.loads((into / "manifest.json").read_text())
    values["model"]["checkpoint"] = str((source / values["model"]["checkpoint"]).resolve())
    values.pop("int8", None)
    for stage in values["stages"].values():
        stage["onnx"], stage["sha256"] = {"fp32": stage["onnx"]["fp32"]}, {"fp32": stage["sha256"]["fp32"]}
    (into / "manifest.json").write_text(json.dumps(values))
    return Manifest.load(into)


def write_int8_files(manifest: Manifest, stage: str, samples: list[dict[str, np.ndarray]], method: str,
                     keep_float: tuple[str, ...] = ()) -> int:
    """Quantize ``stage``'s FP32 file into both INT8 files (:data:`INT8_FILES`), calibrated with ``method`` on
    ``samples``, and enter them in ``manifest`` (in memory); the TensorRT file's per-channel weight count."""
    import onnx

    from avss_sdk.fileio import file_hash

    fp32 = manifest.onnx_path(stage, "fp32")
    for key in INT8_FILES:
        out = fp32.with_name(f"{stage}.{key}.onnx")
        quantize_file(fp32, out, samples, for_tensorrt=key == "int8", keep_float=keep_float, method=method)
        manifest.stages[stage].onnx[key] = out.relative_to(manifest.root).as_posix()
        manifest.stages[stage].sha256[key] = file_hash(out, length=64)
    return check_explicit_quantization(onnx.load(str(manifest.onnx_path(stage, "int8"))))


def quantize_model(manifest: Manifest, data: str | Path, split: str = "val", clips: int = CALIBRATION_CLIPS,
                   check_clips: int = CHECK_CLIPS,
                   min_agreement: float = MIN_AGREEMENT, log: Callable[[str], None] = print,
                   stages: tuple[str, ...] = INT8_STAGES, keep_rejected: bool = False,
                   methods: tuple[str, ...] = CALIBRATION_METHODS) -> Int8Section:
    """Write both INT8 files of each of ``stages`` (some of :data:`INT8_STAGES`), judge each, record it in ``manifest.int8``.

    Calibrates on the first ``clips`` clips of ``data``'s ``split`` and judges on the next
    ``check_clips``. Each stage is quantized whole with each calibrator of ``methods`` and
    keeps the one whose labels agree best; below ``min_agreement`` every calibrator is tried
    again with the end layers in float, and the best of those is kept. The manifest (on disk: an FP32 export the segmenter loads;
    saved again by the caller) gets the files of the accepted stages under
    ``stages[stage].onnx`` with their sha256, and ``int8`` (:class:`Int8Section`). The INT8
    files of a stage that stays FP32 are deleted unless ``keep_rejected`` (for benchmarks that
    time every INT8 file). INT8 files of an earlier run are replaced.
    """
    import onnx

    data = Path(data)
    unknown = sorted(set(stages) - set(INT8_STAGES))
    if unknown or not stages:
        raise ValueError(f"INT8 stages must be some of {INT8_STAGES}, got {list(stages)}")
    unknown = sorted(set(methods) - set(CALIBRATION_METHODS))
    if unknown or not methods:
        raise ValueError(f"calibration methods must be some of {CALIBRATION_METHODS}, got {list(methods)}")
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"the minimum agreement is a share in [0, 1], got {min_agreement}")
    check_calibration(data, split, clips, check_clips)  # before anything is changed
    for stage in manifest.stages:
        _drop_int8_files(manifest, stage)  # an earlier run's files and verdicts go
    manifest.int8 = None
    manifest.save()  # the segmenters below load the FP32 export from disk
    log(f"  int8: calibrating on {clips} {split} clips of {data} (CPU files: {CPU_WEIGHT_BITS}-bit GEMM weights, "
        "which AVX2 without VNNI multiplies without saturating)")
    samples = collect_inputs(manifest, data, split, clips)
    reference = None

    def write(stage: str, method: str, keep_float: tuple[str, ...]) -> None:
        weights = write_int8_files(manifest, stage, samples[stage], method, keep_float)
        kept = f", {len(keep_float)} end layers in float" if keep_float else ""
        log(f"  {stage:<14} int8 QDQ written ({method} ranges, {weights} per-channel weights{kept}; "
            "TensorRT 10.3 operator check passed)")

    def judge(stage: str, method: str, keep_float: tuple[str, ...]) -> Int8Stage:
        nonlocal reference
        write(stage, method, keep_float)
        result, reference = label_agreement(manifest, (stage,), data, split, clips, check_clips, reference)
        verdict = Int8Stage(result.objects >= min_agreement, round(result.pixels, 5), round(result.objects, 5),
                            keep_float, method)
        log(f"  {stage:<14} INT8 ({method}{', end layers float' if keep_float else ''}) labels agree with FP32 on "
            f"{100 * result.pixels:.2f} % of pixels, {100 * result.objects:.1f} % of object pixels")
        return verdict

    verdicts: dict[str, Int8Stage] = {}
    for stage in stages:
        tried = [judge(stage, method, ()) for method in methods]
        verdict = max(tried, key=lambda v: v.objects)  # the first of equals: methods' order breaks ties
        if not verdict.use:
            log(f"  {stage:<14} retrying with the end layers in float")
            ends = tuple(end_layers(onnx.load(str(manifest.onnx_path(stage, "fp32")))))
            tried = [judge(stage, method, ends) for method in methods]
            verdict = max(tried, key=lambda v: v.objects)
        if verdict is not tried[-1]:
            write(stage, verdict.method, verdict.float_layers)  # the files on disk are the last attempt's
        verdicts[stage] = verdict
        log(f"  {stage:<14} {'INT8 with ' + verdict.method + ' ranges' if verdict.use else 'stays FP32'}")
        if not verdict.use and not keep_rejected:
            _drop_int8_files(manifest, stage)
    manifest.int8 = Int8Section(Int8Calibration(data.name, split, clips, len(samples[stages[0]]), ",".join(methods),
                                                    CPU_WEIGHT_BITS),
                                min_agreement, check_clips, verdicts)
    return manifest.int8


def main(argv: list[str] | None = None) -> int:
    """Add INT8 files to an existing export in place (what ``avss-build-engines --int8`` does after exporting)."""
    import argparse

    parser = argparse.ArgumentParser(description="Add INT8 QDQ files to an export directory (manifest.json "
                                     "and its FP32 ONNX), calibrated on SynthAVS frames.")
    parser.add_argument("export", type=Path, help="directory with manifest.json (e.g. avss_sdk/models/default)")
    add_int8_options(parser, required=True)
    args = parser.parse_args(argv)
    check_int8_options(parser, args)
    try:
        manifest = Manifest.load(args.export)
        quantize_model(manifest, args.calibration, args.calibration_split, args.calibration_clips,
                       args.int8_check_clips, args.int8_min_agreement, keep_rejected=args.int8_keep_rejected,
                       methods=calibration_methods(args))
    except (ManifestError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except QuantizationError as error:
        print(f"error: int8 check failed: {error}", file=sys.stderr)
        return 1
    manifest.save()
    print(f"wrote {manifest.root / 'manifest.json'}")
    return 0


def add_int8_options(parser, required: bool = False) -> None:
    """The INT8 step's options (calibration data, split and size, the check), shared by the commands that run it."""
    parser.add_argument("--calibration", type=Path, metavar="DATA", required=required,
                        help="SynthAVS (or AVSBench-semantic) root whose frames calibrate the INT8 ranges")
    parser.add_argument("--calibration-split", default="val", choices=["train", "val", "test"],
                        help="split of --calibration to use (default: %(default)s; never the test seeds)")
    parser.add_argument("--calibration-clips", type=int, default=CALIBRATION_CLIPS, metavar="N",
                        help="clips that calibrate the ranges (default: %(default)s)")
    parser.add_argument("--int8-check-clips", type=int, default=CHECK_CLIPS, metavar="N",
                        help="further clips on which each INT8 stage's labels are compared with FP32 "
                        "(default: %(default)s)")
    parser.add_argument("--int8-min-agreement", type=float, default=MIN_AGREEMENT, metavar="SHARE",
                        help="share of object pixels whose label INT8 must keep for a stage to run in INT8 "
                        "(default: %(default)s)")
    parser.add_argument("--int8-calibrator", choices=["best", *CALIBRATION_METHODS], default="best",
                        help="how activation ranges are calibrated: one calibrator, or each stage judged with "
                        "every one and keeping the best (default: %(default)s)")
    parser.add_argument("--int8-keep-rejected", action="store_true",
                        help="keep the INT8 files of stages that stay FP32 (for benchmarks; nothing else reads them)")


def calibration_methods(args) -> tuple[str, ...]:
    """The calibrators ``--int8-calibrator`` asks for."""
    return CALIBRATION_METHODS if args.int8_calibrator == "best" else (args.int8_calibrator,)


def check_int8_options(parser, args) -> None:
    """``parser.error`` (exit 2, one line) for INT8 options out of range."""
    if args.calibration_clips < 1 or args.int8_check_clips < 1:
        parser.error("--calibration-clips and --int8-check-clips must be at least 1")
    if not 0.0 <= args.int8_min_agreement <= 1.0:
        parser.error(f"--int8-min-agreement must be between 0 and 1, got {args.int8_min_agreement}")


if __name__ == "__main__":
    sys.exit(main())
