"""Does a batch pay on this backend? Each frame stage run once on B frames against B runs on one frame.

    python -m benchmarks.batch_stages --out benchmarks/results/batch-stages-cpu.md

What ``avss-serve`` batches across streams (flow, image encoder, audio encoder; VTA and mask
decoder per vocabulary) on the shipped model with the default backend, on random inputs of
the model's size. The two ways are interleaved, ``--rounds`` times each, and the medians
reported, so load from other jobs falls on both alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from avss_sdk.segmenter import Segmenter
from benchmarks.inputs import frames, stage_inputs
from benchmarks.report import machine, publish


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8], help="batch sizes (default 2 4 8)")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds per stage and size (default 12)")
    parser.add_argument("--note", default="", help="a sentence for the header (e.g. what else ran)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    with Segmenter(vocab=["dog", "guitar", "person speaking", "piano"]) as segmenter:
        inputs = stage_inputs(segmenter, segmenter.vocab, max(args.batch))
        run = segmenter.backend.run
        stages = {stage: (lambda rows, stage=stage: run(stage, frames(inputs[stage], rows)))
                  for stage in ("flow", "image_encoder", "audio_encoder", "vta")}
        load_before = os.getloadavg()[0]
        rows_out = []
        for batch in args.batch:
            for name, stage in stages.items():
                stage(slice(0, batch))
                single, batched = [], []
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    for k in range(batch):
                        stage(slice(k, k + 1))
                    single.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    stage(slice(0, batch))
                    batched.append(time.perf_counter() - start)
                one, many = np.median(single) * 1000.0, np.median(batched) * 1000.0
                rows_out.append((batch, name, one, many))
                print(rows_out[-1], file=sys.stderr, flush=True)
        backend = segmenter.backend_name
    load_after = os.getloadavg()[0]
    lines = [f"# One batched run against single runs per stage ({backend})", "",
             f"Machine: {machine()}; {args.rounds} interleaved rounds, medians; 1-minute load average "
             f"{load_before:.1f} before and {load_after:.1f} after. {args.note}".rstrip(), "",
             "| batch | stage | B single runs ms | one batched run ms | batched / single |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {b} | {name} | {one:.1f} | {many:.1f} | {many / one:.2f} |" for b, name, one, many in rows_out]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
