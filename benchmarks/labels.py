"""What the labels cost at camera resolution: preprocessing, the label map, the sounding objects and the overlay.

    python -m benchmarks.labels --out benchmarks/results/labels-cpu.md

The model's stages run at its input size (192 x 192) whatever the camera gives; the work before
and after them grows with the camera's pixels: shrinking the frame to the input size
(``Segmenter.prepare``'s preprocess), upsampling the decision to the camera's size
(``upsampled_label_map``, guided filter included), cutting out each object
(``sounding_objects``) and, where the labels are shown, tinting them onto the frame (``viz.overlay``,
what ``Result.plot`` and the demo draw every frame). This times the four on the demo clip's
frames, scaled to each camera size, with the decoder's real outputs, interleaved across sizes so
that load falls on all alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from avss_sdk.capture.file import read_frames
from avss_sdk.demo import DEMO_CLIP, demo_words
from avss_sdk.postprocess import upsampled_label_map
from avss_sdk.result import sounding_objects
from avss_sdk.segmenter import Segmenter
from avss_sdk.viz import overlay
from benchmarks.report import machine, publish

SIZES = ((640, 480), (1280, 720), (1920, 1080))


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return (time.perf_counter() - start) * 1000.0, value


def measure(frames: int, rounds: int) -> dict[tuple[int, int], dict[str, list[float]]]:
    """{camera size: {"preprocess" | "label map" | "objects" | "overlay" | "object pixels": per-frame values}}."""
    vocab, _ = demo_words()
    pairs = read_frames(DEMO_CLIP, frames)
    names = ["background", *vocab]
    times = {size: {"preprocess": [], "label map": [], "objects": [], "overlay": [], "object pixels": []}
             for size in SIZES}
    with Segmenter(vocab=vocab, backend="onnxruntime", log=lambda m: None) as segmenter:
        vocabulary = segmenter.prepare_vocab(vocab)
        decoded = []  # the decoder's output is the same at every camera size: computed once per frame
        for image, audio in pairs:
            state = segmenter.encode_image(segmenter.prepare(image, audio))
            decoded.append(segmenter.decode(state.aligned, state.encoded["dense_embedding"], state.flow,
                                            state.audio_embedding, vocabulary)[0])
        cameras = {size: [cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) for image, _ in pairs]
                   for size in SIZES}
        for round_ in range(rounds + 1):  # round 0 warms up
            for size in SIZES:
                segmenter.reset()
                for (_, audio), image, logits in zip(pairs, cameras[size], decoded):
                    state = segmenter.prepare(image, audio)
                    shape = image.shape[:2]
                    map_ms, (labels, background) = timed(lambda: upsampled_label_map(
                        logits, shape, segmenter.threshold, guide=state.small, guided=segmenter.guided))
                    objects_ms, _ = timed(lambda: sounding_objects(labels, background, vocab))
                    overlay_ms, _ = timed(lambda: overlay(image, labels, names))
                    if round_:
                        row = times[size]
                        row["preprocess"].append(state.timings["preprocess"])
                        row["label map"].append(map_ms)
                        row["objects"].append(objects_ms)
                        row["overlay"].append(overlay_ms)
                        row["object pixels"].append(100.0 * np.count_nonzero(labels) / labels.size)
            print(f"round {round_} done", file=sys.stderr)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="demo clip frames (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.rounds < 1:
        parser.error("--frames and --rounds must be at least 1")
    times = measure(args.frames, args.rounds)
    lines = ["# The labels' cost at camera resolution", "",
             f"Machine: {machine()}; the demo clip's first {args.frames} frames scaled to each size, "
             f"{args.rounds} interleaved rounds; median milliseconds per frame.", "",
             "| camera | preprocess | label map | sounding objects | overlay | object pixels (median %) |",
             "|---|---:|---:|---:|---:|---:|"]
    for (width, height), row in times.items():
        cells = [f"{statistics.median(row[k]):.2f}" for k in ("preprocess", "label map", "objects", "overlay",
                                                                   "object pixels")]
        lines.append(f"| {width}x{height} | " + " | ".join(cells) + " |")
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
