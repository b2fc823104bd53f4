"""Stream(file) frames/s of the sped-up path against today's FP32 path, INT8 quality, and the CPU's roofline.

    python -m benchmarks.speedup --eval-data data/unseen8101 --out benchmarks/results/speedup-cpu.md

In one process, on the same camera-size (640x480) H.264 + AAC SynthAVS clip:

* **Variants**, run in interleaved rounds (a shared machine's load hits all alike; the
  table gives each variant's median round): today's path (FP32 stages, one frame at a
  time, ONNX Runtime's threads), FP32 with the stage threads of ``avss_sdk.pipeline``, the default
  (the INT8 stages the export accepted, pipelined; also with every core per session instead of
  the share a pipelined Stream gives each, ``avss_sdk.stream.pipeline_threads``) and every INT8
  file the export holds (pipelined; only where it holds more than the accepted ones:
  ``--int8-keep-rejected`` at export).
  Columns: Stream(file) frames/s, speed-up, median latency (frame read to result), label
  agreement with today's path (all pixels, and pixels either calls a sounding object) on
  the stream clip and on the demo clip, and per stage the median milliseconds with the
  share of the CPU's measured GEMM peak those milliseconds mean (stage FLOPs / time / peak;
  INT8 stages against the INT8 peak).
* **Roofline**: GEMM throughput of this CPU through ONNX Runtime, FP32 MatMul and u8 x s8
  MatMulInteger (VNNI), 512 x 512 x 512, all cores, the best of 3 s of runs.
* **Quality** (``--eval-data``): base / novel / harmonic mIoU of each precision variant on
  ``--eval-clips`` test clips, the whole vocabulary, frame by frame (``Segmenter``), and its
  label agreement with FP32 there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from avss_sdk.demo import DEMO_CLIP, demo_words
from avss_sdk.runtime.backends import OnnxRuntimeBackend
from avss_sdk.runtime.manifest import Manifest
from avss_sdk.segmenter import DEFAULT_ENGINES, Segmenter
from avss_sdk.stream import pipeline_threads
from benchmarks.report import machine, publish
from benchmarks.stream import VOCAB, stream_file

STAGES = ("preprocess", "flow", "image_encoder", "audio_encoder", "vta", "mask_decoder", "postprocess")
MODEL_STAGES = ("flow", "image_encoder", "audio_encoder", "vta", "mask_decoder")
QUIET: Callable[[str], None] = lambda message: None  # noqa: E731


# --- roofline ----------------------------------------------------------------------------------


def gemm_peak(kind: str, size: int = 512, seconds: float = 3.0, threads: int | None = None) -> float:
    """GFLOP/s (multiply-adds count 2) of a size^3 GEMM in ONNX Runtime, "fp32" or "int8" (u8 x s8): the best of
    the runs in ``seconds`` (a run takes milliseconds, so on a shared machine some get the cores to themselves)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if kind == "fp32":
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        types, out = (TensorProto.FLOAT, TensorProto.FLOAT), TensorProto.FLOAT
        feeds = {"a": np.random.default_rng(0).standard_normal((size, size), np.float32),
                 "b": np.random.default_rng(1).standard_normal((size, size), np.float32)}
    else:
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        types, out = (TensorProto.UINT8, TensorProto.INT8), TensorProto.INT32
        feeds = {"a": np.random.default_rng(0).integers(0, 255, (size, size), np.uint8),
                 "b": np.random.default_rng(1).integers(-127, 127, (size, size), np.int8)}
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info(n, t, [size, size])
                                               for n, t in zip("ab", types)],
                              [helper.make_tensor_value_info("c", out, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    start, best = time.perf_counter(), float("inf")
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9  # the best run: what the cores sustain when they are ours


def stage_gflops(manifest: Manifest, vocab: int = len(VOCAB)) -> dict[str, float]:
    """GFLOPs of each per-frame stage of the manifest's checkpoint (torch's FLOP counter), or {} without torch."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from avss_sdk.modeling.checkpoint import load_model
        from avss_sdk.preprocess import MEL_BANDS, MEL_FRAMES
    except ImportError:
        return {}
    model, _ = load_model(manifest.path(manifest.model.checkpoint))
    size = model.config.image_size
    frame, mel = torch.zeros(1, 3, size, size), torch.zeros(1, MEL_FRAMES, MEL_BANDS)
    with torch.no_grad():
        classes = model.text_encoder.embed_categories([f"word {i}" for i in range(vocab)])
        scene = model.scene_embeddings([None])
        features, dense = model.image_encoder(frame)
        flow, audio = model.flow(frame, frame), model.audio_encoder(mel)
        aligned = model.vta(features, classes, scene)
    calls = {"flow": lambda: model.flow(frame, frame), "image_encoder": lambda: model.image_encoder(frame),
             "audio_encoder": lambda: model.audio_encoder(mel), "vta": lambda: model.vta(features, classes, scene),
             "mask_decoder": lambda: model.mask_decoder(aligned, dense, flow, audio, classes)}
    result = {}
    for name, call in calls.items():
        with FlopCounterMode(display=False) as counter:
            call()
        result[name] = counter.get_total_flops() / 1e9
    return result


# --- variants ------------------------------------------------------------------------------------


def make_segmenter(engines: str | None, variant: str, vocab: list[str], threads: int | None) -> Segmenter:
    """A segmenter for ``variant``: "fp32", "default" (precision auto) or "int8-all" (every INT8 file)."""
    segmenter = Segmenter(engines, vocab=vocab, backend="onnxruntime", threads=threads, log=QUIET,
                          precision="fp32" if variant in ("fp32", "fp32-seq") else "auto")
    if variant == "int8-all":
        manifest = segmenter.manifest
        every = tuple(s for s in manifest.stages if "int8_cpu" in manifest.stages[s].onnx)
        segmenter.backend.close()
        segmenter.backend = OnnxRuntimeBackend(manifest, "int8", threads=threads, int8_stages=every)
    return segmenter


# ONNX Runtime threads per session of a variant: None for --threads (default: ONNX Runtime's, every
# core); the pipelined rows get what a pipelined Stream gives the segmenter it makes.
VARIANTS = {  # name: (segmenter variant, pipelined, threads per session)
    "today: FP32, one frame at a time": ("fp32-seq", False, None),
    "FP32, pipelined": ("fp32", True, pipeline_threads()),
    "default: INT8 where accurate, pipelined": ("default", True, pipeline_threads()),
    "default, pipelined, every core per session": ("default", True, None),
    "INT8 every stage, pipelined": ("int8-all", True, pipeline_threads()),
}


def run_stream(path: Path, segmenter: Segmenter, pipeline: bool) -> tuple[float, float, list]:
    """Frames/s of Stream(source=path), the process's CPU milliseconds per frame (every thread: decoding,
    stages, ONNX Runtime's pools) and its results (every frame)."""
    from avss_sdk.stream import Stream

    start, cpu = time.perf_counter(), time.process_time()
    with Stream(source=str(path), segmenter=segmenter, pipeline=pipeline) as stream:
        results = list(stream)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    return len(results) / wall, 1000 * cpu / len(results), results


def agreement(reference: list[np.ndarray], labels: list[np.ndarray]) -> tuple[float, float]:
    """(share of pixels with the same label, the same among pixels either labels as an object)."""
    same = total = same_objects = objects = 0
    for want, have in zip(reference, labels, strict=True):
        equal, either = want == have, (want > 0) | (have > 0)
        same, total = same + int(equal.sum()), total + equal.size
        same_objects, objects = same_objects + int((equal & either).sum()), objects + int(either.sum())
    return same / total, (same_objects / objects if objects else 1.0)


def quality(engines: str | None, data: Path, clips: int, variants: list[str], threads: int | None) -> dict:
    """mIoU of each precision variant on ``clips`` test clips and its label agreement with FP32.

    Scored as ``train/evaluate.py --runtime`` scores (``evaluate_runtime``): labels and truth
    resized to the model's input size, so the FP32 row is the README's runtime figure.
    """
    from avss_sdk.data.avsbench import AVSSDataset
    from avss_sdk.metrics import OVMeter
    from avss_sdk.preprocess import LOG_MEL_SECONDS
    from avss_sdk.training.data import resize_frame_labels

    dataset = AVSSDataset(data, "test", load_flow=False)
    clips = min(clips, len(dataset))
    words = dataset.class_names[1:]
    segmenters = {v: make_segmenter(engines, v, words, threads) for v in variants}
    size = next(iter(segmenters.values())).frame_size
    meters = {v: OVMeter(len(dataset.class_names), dataset.base_ids, dataset.novel_ids) for v in variants}
    labels: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    for index in range(clips):
        clip = dataset[index]
        for segmenter in segmenters.values():
            segmenter.reset()
        for i in range(len(clip.frames)):
            window = clip.audio_window(i, LOG_MEL_SECONDS)
            truth = resize_frame_labels(clip.labels[i], size) if clip.label_valid[i] else None
            for variant, segmenter in segmenters.items():
                predicted = segmenter.segment(clip.frames[i], window, float(clip.frame_times[i]), i).labels
                if truth is not None:
                    meters[variant].update(resize_frame_labels(predicted.astype(np.uint8), size), truth)
                labels[variant].append(predicted)
        if (index + 1) % 50 == 0:
            print(f"quality: {index + 1}/{clips} clips", file=sys.stderr)
    out = {}
    for variant in variants:
        scores = meters[variant].compute()
        out[variant] = {"base": 100 * scores.base_miou, "novel": 100 * scores.novel_miou,
                        "harmonic": 100 * scores.harmonic_miou,
                        "agreement": agreement(labels[variants[0]], labels[variant]), "clips": clips}
    return out


def stage_cells(row: dict, gflops: dict[str, float], peaks: dict[str, float]) -> list[str]:
    """Each stage's median ms with its share of the CPU's measured GEMM peak (INT8 stages against the INT8 peak)."""
    cells = []
    for stage in STAGES:
        ms = row["stages"][stage]
        if stage in gflops and ms > 0:
            peak = peaks["int8" if stage in row.get("int8", ()) else "fp32"]
            cells.append(f"{ms:.1f} ({100 * gflops[stage] / (ms / 1000) / peak:.0f} %)")
        else:
            cells.append(f"{ms:.1f}")
    return cells


def speed_table(engines: str | None, clip: Path, rounds: int, threads: int | None,
                variants: dict[str, tuple[str, bool, int | None]]) -> tuple[dict, dict]:
    """Interleaved rounds of every variant on ``clip`` and the demo clip: fps, latency, stages, agreement."""
    segmenters = {name: make_segmenter(engines, v, VOCAB, own or threads) for name, (v, _, own) in variants.items()}
    fps: dict[str, list[float]] = {name: [] for name in variants}
    cpu_ms: dict[str, list[float]] = {name: [] for name in variants}
    timings: dict[str, list[dict]] = {name: [] for name in variants}
    labels: dict[str, list[np.ndarray]] = {}
    for round_ in range(rounds + 1):  # round 0 warms up every variant
        for name, (_, pipelined, _) in variants.items():
            rate, cpu, got = run_stream(clip, segmenters[name], pipelined)
            # Keep only what the table needs: every round's results with their frames and masks
            # would pile up gigabytes in this process and slow the rounds after them.
            if round_:
                fps[name].append(rate)
                cpu_ms[name].append(cpu)
                timings[name].extend(r.timings for r in got)
            else:
                labels[name] = [r.labels for r in got]
            del got
        print(f"round {round_}: " + ", ".join(f"{n.split(':')[0]} {f[-1]:.1f}" for n, f in fps.items() if f),
              file=sys.stderr)
    demo = {}
    if DEMO_CLIP.is_file():
        for name, segmenter in segmenters.items():
            words = segmenter.vocab
            segmenter.set_vocab(demo_words()[0])
            demo[name] = [r.labels for r in run_stream(DEMO_CLIP, segmenter, variants[name][1])[2]]
            segmenter.set_vocab(words)
    first = next(iter(variants))
    rows = {}
    for name in variants:
        rows[name] = {
            "fps": statistics.median(fps[name]), "rounds": fps[name], "cpu_ms": statistics.median(cpu_ms[name]),
            "busy": statistics.median(c * f / 1000 for c, f in zip(cpu_ms[name], fps[name])),
            # The ratio within each round, whose variants ran minutes apart at most: steadier than the
            # ratio of medians when the machine's speed drifts between rounds.
            "paired": statistics.median(f / t for f, t in zip(fps[name], fps[first])),
            "latency": statistics.median(t["latency"] for t in timings[name]),
            "stages": {s: statistics.median(t[s] for t in timings[name]) for s in STAGES},
            "agree": agreement(labels[first], labels[name]),
            "agree_demo": agreement(demo[first], demo[name]) if demo else None,
            "description": segmenters[name].backend.description,
            "int8": getattr(segmenters[name].backend, "int8_stages", ()),
        }
    for segmenter in segmenters.values():
        segmenter.close()
    return rows, fps


def format_tables(rows: dict, peaks: dict[str, float], gflops: dict[str, float], quality_rows: dict | None,
                  args: argparse.Namespace, title: str) -> str:
    first = next(iter(rows))
    base = rows[first]["fps"]
    lines = [f"# {title}", "", f"Machine: {machine()}", "",
             f"Roofline (ONNX Runtime GEMM 512^3, all cores, best run of 3 s): FP32 **{peaks['fp32']:.0f} GFLOP/s**, "
             f"INT8 (u8 x s8) **{peaks['int8']:.0f} GOP/s**.", "",
             f"Stream(file): {args.frames} frames at {args.width}x{args.height}, vocabulary of {len(VOCAB)}, "
             f"{args.rounds} interleaved rounds (median round shown).", "",
             "| variant | Stream(file) frames/s | vs today | vs today, per round | wall ms / frame "
             "| CPU ms / frame (cores busy) | latency ms | labels = today (all / object px), "
             "SynthAVS clip | same, demo clip | " + " | ".join(STAGES) + " |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES)]
    for name, row in rows.items():
        cells = stage_cells(row, gflops, peaks)
        demo = row["agree_demo"]
        lines.append(f"| {name} | {row['fps']:.1f} | {row['fps'] / base:.2f}x | {row['paired']:.2f}x | "
                     f"{1000 / row['fps']:.1f} | "
                     f"{row['cpu_ms']:.1f} ({row['busy']:.2f}) | {row['latency']:.0f} | "
                     f"{100 * row['agree'][0]:.2f} / {100 * row['agree'][1]:.1f} % | "
                     + (f"{100 * demo[0]:.2f} / {100 * demo[1]:.1f} %" if demo else "n/a") + " | "
                     + " | ".join(cells) + " |")
    lines += ["", "Stage cells: median ms per frame (share of the CPU's GEMM peak: stage FLOPs / time / peak, "
              "INT8 stages against the INT8 peak). With the pipeline, stages of consecutive frames run at the "
              "same time, so they add up to more than a frame's share of the wall clock. vs today, per round: the "
              "median over rounds of the ratio within a round. CPU ms / frame: the "
              "process's CPU time (every thread) over the frames, and cores busy: CPU time / wall time, so "
              "twice today's frames/s on N cores needs CPU ms / frame <= N / 2 x today's wall ms / frame at "
              "full use. Latency: from reading a frame to its result. Frames/s per round: "
              + "; ".join(f"{n.split(':')[0]}: {', '.join(f'{x:.1f}' for x in r['rounds'])}" for n, r in rows.items()),
              "", "Backends: " + "; ".join(f"{n.split(':')[0]}: {r['description']}" for n, r in rows.items())]
    if gflops:
        lines += ["", "Stage GFLOPs per frame: " + ", ".join(f"{s} {g:.3f}" for s, g in gflops.items())]
    if quality_rows:
        clips = next(iter(quality_rows.values()))["clips"]
        lines += ["", f"## Quality: SynthAVS-OV test, {clips} clips ({args.eval_data}), whole vocabulary", "",
                  "| precision | base mIoU | novel mIoU | harmonic | labels = FP32 (all / object px) |",
                  "|---|---:|---:|---:|---:|"]
        for name, q in quality_rows.items():
            lines.append(f"| {name} | {q['base']:.2f} | {q['novel']:.2f} | {q['harmonic']:.2f} | "
                         f"{100 * q['agreement'][0]:.2f} / {100 * q['agreement'][1]:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=None, help="export directory (default: the shipped default model)")
    parser.add_argument("--frames", type=int, default=200, help="frames of the stream clip (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads per session of the rows not pipelined as Stream pipelines them "
                             "(default: ONNX Runtime's, every core)")
    parser.add_argument("--eval-data", type=Path,
                        help="SynthAVS root whose test split measures mIoU per precision (e.g. data/unseen8101)")
    parser.add_argument("--eval-clips", type=int, default=500,
                        help="the first N test clips for mIoU (default: %(default)s)")
    parser.add_argument("--title", default="Speed-up on this CPU: Stream(file), INT8, roofline")
    parser.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.rounds < 1 or args.eval_clips < 1:
        parser.error("--frames must be at least 2, --rounds and --eval-clips at least 1")

    manifest = Manifest.load(args.engines if args.engines else DEFAULT_ENGINES)
    with_files = {name for name, stage in manifest.stages.items() if "int8_cpu" in stage.onnx}
    # "every INT8 file" differs from the default only where the export kept rejected stages' files
    # (--int8-keep-rejected): the shipped default keeps only the accepted ones.
    variants = {name: spec for name, spec in VARIANTS.items()
                if spec[0] != "int8-all" or with_files - set(manifest.int8_stages)}
    peaks = {kind: gemm_peak(kind) for kind in ("fp32", "int8")}
    print(f"GEMM peak: {peaks}", file=sys.stderr)
    gflops = stage_gflops(manifest)
    with tempfile.TemporaryDirectory() as media:
        clip = stream_file(Path(media), args.frames, (args.width, args.height))
        rows, _ = speed_table(args.engines, clip, args.rounds, args.threads, variants)
    quality_rows = None
    if args.eval_data:
        names = {"fp32": "FP32", "default": "default (INT8 where accurate)", "int8-all": "INT8 every stage"}
        chosen = [v for v in names if v != "int8-all" or "INT8 every stage, pipelined" in variants]
        measured = quality(args.engines, args.eval_data, args.eval_clips, chosen, args.threads)
        quality_rows = {names[v]: q for v, q in measured.items()}
    text = format_tables(rows, peaks, gflops, quality_rows, args, args.title)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
