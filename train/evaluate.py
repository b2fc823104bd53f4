"""Evaluate an SSP-OV checkpoint: ``python train/evaluate.py --checkpoint default --data D --split test``.

Prints and (with ``--json``) writes base / novel / harmonic mIoU, AVSS mIoU and F, a
per-class table, and the moving / still breakdown, with scene text and without it
(the runtime's default), unless ``--scene-text`` picks one.

``--runtime onnxruntime`` scores the torch-free runtime instead (``Segmenter`` on an
export, ``--engines``, default the shipped one; ``--flow model`` or ``dis``), frame by
frame as a stream would, without scene text: the figure to hold against the torch one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.fileio import write_text_atomic
from avss_sdk.modeling.checkpoint import resolve_checkpoint
from avss_sdk.postprocess import FOREGROUND_THRESHOLD, GuidedFilter
from avss_sdk.training.data import prepare_frames
from avss_sdk.training.evaluate import (EvaluationResult, SplitScores, evaluate, evaluate_runtime,
                                       load_model_and_split)


def format_result(name: str, result: EvaluationResult) -> str:
    s, m, st = result.scores, result.moving, result.still
    return "\n".join([
        f"{name}: {s.frames} frames",
        f"  base mIoU {s.base_miou:6.2f}   novel mIoU {s.novel_miou:6.2f}   harmonic {s.harmonic_miou:6.2f}",
        f"  AVSS mIoU {result.avss_miou:6.2f}   AVSS F {result.avss_fscore:6.2f}",
        f"  moving sources ({m.frames} frames): {breakdown(m)}",
        f"  still sources  ({st.frames} frames): {breakdown(st)}",
    ])


def breakdown(scores: SplitScores) -> str:
    """A breakdown's base and novel mIoU; "n/a" when no frame fell into it (not a misleading 0.00)."""
    if scores.frames == 0:
        return "base    n/a  novel    n/a"
    return f"base {scores.base_miou:6.2f}  novel {scores.novel_miou:6.2f}"


def format_classes(result: EvaluationResult) -> str:
    rows = [f"  {'class':<20} {'split':<6} {'IoU':>6}"]
    for row in result.per_class:
        iou = "   n/a" if row["iou"] is None else f"{row['iou']:6.2f}"
        rows.append(f"  {row['class']:<20} {row['split']:<6} {iou}")
    return "\n".join(rows)


def write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def evaluate_with_runtime(args: argparse.Namespace) -> int:
    """``--runtime``: base / novel / harmonic mIoU of ``Segmenter`` on the split."""
    from avss_sdk.errors import AvssError
    from avss_sdk.segmenter import Segmenter

    try:
        dataset = AVSSDataset(args.data, split=args.split, classes="all", load_flow=False)
        segmenter = Segmenter(args.engines, backend=args.runtime, flow=args.flow, precision=args.precision,
                              log=lambda message: None)
    except (FileNotFoundError, ValueError, AvssError) as error:
        raise SystemExit(f"error: {error}") from None
    if len(dataset) == 0:
        raise SystemExit(f"error: {args.data} has no clips in split {args.split!r}")
    with segmenter:
        s = evaluate_runtime(segmenter, dataset, segmenter.manifest.preprocess.image_size,
                             progress=not args.quiet)
        name = f"runtime {segmenter.backend.description}, flow {args.flow}"
    print(f"{name}: {s.frames} frames\n  base mIoU {s.base_miou:6.2f}   novel mIoU {s.novel_miou:6.2f}   "
          f"harmonic {s.harmonic_miou:6.2f}")
    if args.json:
        write_json(args.json, {"engines": args.engines or "default", "data": str(args.data), "split": args.split,
                               "runtime": segmenter.backend.description, "flow": args.flow, "scores": asdict(s)})
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default", help="checkpoint file, or 'default' for the shipped model")
    parser.add_argument("--data", required=True, help="dataset root (SynthAVS-OV or AVSBench-semantic layout)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--scene-text", choices=["both", "given", "none"], default="both",
                        help="evaluate with the clips' scene descriptions, without, or both (default)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--cache", help="prepared-array cache folder (default DATA/cache)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--runtime", choices=["auto", "onnxruntime", "tensorrt"],
                        help="score the torch-free runtime with this backend instead of the checkpoint")
    parser.add_argument("--engines", help="with --runtime: the export folder (default: the shipped model)")
    parser.add_argument("--flow", choices=["model", "dis"], default="model", help="with --runtime: the flow source")
    parser.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                        help="with --runtime onnxruntime: auto (the default: the INT8 stages the export accepted, "
                        "on a CPU), fp32 or int8")
    parser.add_argument("--no-guided-filter", action="store_true",
                        help="decide on the decoder's upsampled output alone, without the checkpoint's guided filter")
    args = parser.parse_args(argv)
    if args.runtime and args.no_guided_filter:
        parser.error("--no-guided-filter applies to the checkpoint's evaluation; the runtime follows its manifest")
    if args.runtime:
        return evaluate_with_runtime(args)

    model, payload, dataset = load_model_and_split(args.checkpoint, args.data, args.split)
    data = prepare_frames(dataset, model.config.image_size, args.cache or Path(args.data) / "cache",
                          progress=not args.quiet)
    threshold = payload.get("foreground_threshold", FOREGROUND_THRESHOLD)
    guided = None if args.no_guided_filter else GuidedFilter.from_dict(payload.get("guided_filter"))
    print(f"foreground threshold {threshold}, {guided or 'no guided filter'}")
    modes = {"both": [True, False], "given": [True], "none": [False]}[args.scene_text]
    results = {}
    for scene_text in modes:
        name = "with_scene_text" if scene_text else "without_scene_text"
        tic = time.perf_counter()
        result = evaluate(model, data, dataset.base_ids, dataset.novel_ids, scene_text, args.batch_size,
                          progress=not args.quiet, threshold=threshold, guided=guided)
        print(format_result(name.replace("_", " "), result) + f"\n  ({time.perf_counter() - tic:.0f} s)")
        results[name] = result.to_dict()
    print(format_classes(result))
    if args.json:
        write_json(args.json, {"checkpoint": str(resolve_checkpoint(args.checkpoint)), "data": str(args.data),
                               "split": args.split, "image_size": model.config.image_size,
                               "threads": torch.get_num_threads(), "foreground_threshold": threshold,
                               "guided_filter": guided.to_dict() if guided else None,
                               "results": results})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
