"""Time SynthAVS-OV generation (clips/s) with 1 and 2 worker processes; print a table.

    python -m benchmarks.synth_speed [--clips 40] [--size 224] [--frames 10] [--out benchmarks/results/synth_speed.md]

Each run writes a fresh val split into a temporary folder through the same calls as
train/make_synth.py (clip generation, then the dataset files), so it includes encoding
and disk writes.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import tempfile
import time
from pathlib import Path

from avss_sdk.data.synthavs.writer import generate_clip, write_dataset_files
from benchmarks.report import machine, publish


def time_run(workers: int, clips: int, size: int, frames: int) -> float:
    """Seconds to generate ``clips`` clips with ``workers`` processes."""
    with tempfile.TemporaryDirectory() as out:
        make = functools.partial(generate_clip, out, "val", 0, frames=frames, size=size)
        start = time.perf_counter()
        if workers == 1:
            rows = [make(i) for i in range(clips)]
        else:
            with multiprocessing.Pool(workers) as pool:
                rows = list(pool.imap(make, range(clips)))
        write_dataset_files(out, "val", 0, rows)
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    lines = [f"SynthAVS-OV generation speed: {args.clips} clips of {args.frames} frames at "
             f"{args.size}x{args.size}, 5 fps (val split)", "", f"Machine: {machine()}", "",
             "| workers | seconds | clips/s | frames/s |", "|---:|---:|---:|---:|"]
    for workers in (1, 2):
        sec = time_run(workers, args.clips, args.size, args.frames)
        lines.append(f"| {workers} | {sec:.2f} | {args.clips / sec:.1f} | {args.clips * args.frames / sec:.0f} |")
    publish("\n".join(lines), args.out)

if __name__ == "__main__":
    main()
