"""How close each flow source comes to SynthAVS's exact flow, and what it costs on this CPU.

    python -m benchmarks.flow_accuracy --data data/unseen8102 --clips 100 --out benchmarks/results/flow-accuracy-cpu.md

``Segmenter(flow=...)`` feeds the mask decoder's pre-mask either the learned flow stage
("model") or OpenCV DIS ("dis", preset ultrafast). Both are scored here on the decoder's grid
against the target training supervises the flow stage with (the clip's exact backward flow,
resized to the model input and average-pooled by the flow stride): end-point error over all
cells and over moving cells (true motion above the pre-mask's 0.5-pixel threshold), and the
IoU of the motion mask the pre-mask is made of. DIS's finer presets are scored too, and every
source's median milliseconds per frame are measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.preprocess import normalize_image, resize_frame
from avss_sdk.segmenter import DIS_PRESET, Segmenter, dis_flow
from avss_sdk.training.data import flow_targets
from benchmarks.report import machine, publish

DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
MOTION_THRESHOLD = 0.5  # pixels: avss_sdk.modeling.flow.motion_mask's default, what the pre-mask uses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a SynthAVS-OV root with exact flow (flow_bwd)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--clips", type=int, default=100, help="clips to score (default 100)")
    parser.add_argument("--note", default="", help="a sentence for the header (e.g. what else ran)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    dataset = AVSSDataset(args.data, args.split)
    if len(dataset) == 0:
        raise SystemExit(f"{args.data}: no {args.split} clips")
    if dataset[0].flow_backward is None:
        raise SystemExit(f"{args.data}: its clips carry no exact flow (flow_bwd); a SynthAVS-OV root is needed")
    clips = min(args.clips, len(dataset))
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with Segmenter(vocab=["dog"], backend="onnxruntime", threads=1, log=lambda message: None) as segmenter:
        size, stride = segmenter.frame_size, segmenter.manifest.preprocess.flow_stride
        sources = {"learned flow stage (flow=\"model\")": None}
        sources.update({f"DIS {name}" + (' (flow="dis")' if preset == DIS_PRESET else ""):
                        cv2.DISOpticalFlow_create(preset) for name, preset in DIS_PRESETS.items()})
        errors = {name: ([], [], [0, 0]) for name in sources}  # all cells, moving cells, [motion-mask ∩, ∪]
        times: dict[str, list[float]] = {name: [] for name in sources}
        for i in range(clips):
            clip = dataset[i]
            small = [resize_frame(frame, size) for frame in clip.frames]
            normalized = [normalize_image(frame)[None] for frame in small]
            truths = flow_targets(clip.flow_backward, size)
            for t in range(1, len(small)):
                truth = truths[t]
                moving = np.linalg.norm(truth, axis=-1) > MOTION_THRESHOLD
                for name, dis in sources.items():
                    start = time.perf_counter()
                    if dis is None:
                        flow = segmenter.backend.run("flow", {"previous": normalized[t - 1],
                                                              "current": normalized[t]})["flow"]
                    else:
                        flow = dis_flow(dis, small[t - 1], small[t], stride)
                    times[name].append((time.perf_counter() - start) * 1000.0)
                    flow = flow[0].transpose(1, 2, 0)
                    error = np.linalg.norm(flow - truth, axis=-1)
                    every, on_moving, mask = errors[name]
                    every.append(float(error.mean()))
                    if moving.any():
                        on_moving.append(float(error[moving].mean()))
                    predicted = np.linalg.norm(flow, axis=-1) > MOTION_THRESHOLD
                    mask[0] += int((predicted & moving).sum())
                    mask[1] += int((predicted | moving).sum())
    frames = len(times[next(iter(times))])
    lines = [
        "# Flow sources against SynthAVS's exact flow",
        "",
        f"Machine: {machine()}; one thread each (ONNX Runtime, OpenCV). {args.note}".rstrip(),
        f"Data: {args.data} ({args.split}), {clips} clips, {frames} frame pairs at the model input "
        f"{size}x{size}, scored on the decoder's {size // stride}x{size // stride} grid. Command: "
        f"`python -m benchmarks.flow_accuracy --data {args.data} --clips {clips}`.",
        "",
        "| source | end-point error, all cells (px) | on moving cells (px) | motion-mask IoU (%) | ms per frame |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in sources:
        every, on_moving, (inter, union) = errors[name]
        lines.append(f"| {name} | {np.mean(every):.3f} | {np.mean(on_moving):.3f} | "
                     f"{100.0 * inter / max(union, 1):.1f} | {statistics.median(times[name]):.2f} |")
    lines += ["", f"Moving cells: true motion above {MOTION_THRESHOLD} px (the pre-mask's threshold). "
              "Motion mask: cells whose flow exceeds that threshold, against the true ones."]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
