"""Two exports of a model side by side: median milliseconds of each frame stage, interleaved runs.

    git archive HEAD~1 avss_sdk/models | tar -x -C /tmp/before     # the export before a change
    python -m benchmarks.export_ab /tmp/before/avss_sdk/models/default --out benchmarks/results/export-ab-cpu.md

What a change to a stage's code costs or saves once exported: export A (the argument) against
B (``--engines``, default: the shipped model), both FP32 on ONNX Runtime, one frame of the
model's size with a vocabulary of 8, at one thread per session (as a pipelined ``Stream`` on 2
cores runs them) and at ONNX Runtime's default. Each round runs A's stage then B's, so load from
other jobs falls on both alike; stage inputs come from A's own stages on one random frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from avss_sdk.segmenter import Segmenter
from benchmarks.inputs import stage_inputs
from benchmarks.report import machine, publish
from benchmarks.stream import VOCAB

STAGES = ("flow", "image_encoder", "audio_encoder", "vta", "mask_decoder")


def compare(a: str, b: str | None, threads: int | None, rounds: int, runs: int) -> dict[str, tuple[float, float]]:
    """{stage: (A ms, B ms)}: medians over ``rounds`` of ``runs`` runs each, A and B interleaved."""
    segmenters = [Segmenter(engines, backend="onnxruntime", precision="fp32", threads=threads, log=lambda m: None)
                  for engines in (a, b)]
    try:
        inputs = stage_inputs(segmenters[0], VOCAB)
        times: dict[str, tuple[list[float], list[float]]] = {stage: ([], []) for stage in STAGES}
        for round_ in range(rounds + 1):  # round 0 warms up
            for stage in STAGES:
                for segmenter, measured in zip(segmenters, times[stage]):
                    start = time.perf_counter()
                    for _ in range(runs):
                        segmenter.backend.run(stage, inputs[stage])
                    if round_:
                        measured.append((time.perf_counter() - start) * 1000.0 / runs)
        return {stage: (statistics.median(ta), statistics.median(tb)) for stage, (ta, tb) in times.items()}
    finally:
        for segmenter in segmenters:
            segmenter.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="export directory A (e.g. the export before a change)")
    parser.add_argument("--engines", help="export directory B (default: the shipped default model)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=20, help="runs of a stage per round (default: %(default)s)")
    parser.add_argument("--note", default="", help="a sentence for the header (e.g. what changed)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    lines = ["# Two exports stage by stage (FP32, ONNX Runtime)", "",
             f"Machine: {machine()}. A: `{args.a}`; B: `{args.engines or 'the shipped default model'}`. "
             f"Median ms per run over {args.rounds} interleaved rounds of {args.runs} runs. {args.note}".rstrip(), "",
             "| threads per session | stage | A ms | B ms | B / A |", "|---|---|---:|---:|---:|"]
    for threads in (1, None):
        for stage, (ms_a, ms_b) in compare(args.a, args.engines, threads, args.rounds, args.runs).items():
            lines.append(f"| {threads or 'default'} | {stage} | {ms_a:.2f} | {ms_b:.2f} | {ms_b / ms_a:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
