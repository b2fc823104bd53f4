"""Generate one split of SynthAVS-OV, the procedural open-vocabulary AVSS benchmark.

Run it for train, then val, then test into the same --out folder to build one dataset:
metadata.csv gains that split's rows, and rerunning a split with the same seed replaces
its rows (and clips) instead of duplicating them. Same arguments give identical files.

    python train/make_synth.py --out data/synthavs --split train --clips 2000 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import sys
from pathlib import Path
from typing import Callable


from tqdm import tqdm

from avss_sdk.data.synthavs.writer import generate_clip, write_dataset_files


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, which must be > 0 (a clean error otherwise)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Layout: OUT/metadata.csv, OUT/label2idx.json, OUT/ov_split.json, "
        "OUT/synth/<split>-<seed>-<index>/{frames,labels_semantic,flow,flow_bwd}/<i>.*, "
        "audio.wav, scene.txt, clip.json. Train scenes contain only base categories.",
    )
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created if missing)")
    p.add_argument("--split", required=True, choices=["train", "val", "test"], help="which split to generate")
    p.add_argument("--clips", required=True, type=_positive(int), help="number of clips")
    p.add_argument("--seed", required=True, type=int, help="random seed (>= 0); part of each clip's uid")
    p.add_argument("--frames", type=_positive(int), default=10, help="frames per clip (default 10)")
    p.add_argument("--fps", type=_positive(float), default=5.0, help="frame rate (default 5)")
    p.add_argument("--size", type=int, default=224, help="frame width = height in pixels, >= 32 (default 224)")
    p.add_argument("--workers", type=_positive(int), default=1, help="worker processes (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.size < 32:
        parser.error(f"--size must be >= 32, got {args.size}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    make = functools.partial(generate_clip, args.out, args.split, args.seed,
                             frames=args.frames, fps=args.fps, size=args.size)
    bar = dict(total=args.clips, desc=f"{args.split} clips", unit="clip")
    if args.workers == 1:
        rows = [make(i) for i in tqdm(range(args.clips), **bar)]
    else:
        with multiprocessing.Pool(args.workers) as pool:
            rows = list(tqdm(pool.imap(make, range(args.clips)), **bar))
    write_dataset_files(args.out, args.split, args.seed, rows)
    print(f"wrote {len(rows)} {args.split} clips to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
