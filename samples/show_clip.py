"""Draw one clip of an AVSBench-style dataset (SynthAVS-OV or AVSBench-semantic) as a picture.

Rows: the frames as they are; the sounding objects' ground truth painted over dimmed
frames, with a legend; the ground-truth motion (flow direction as hue, speed as
brightness) where the dataset has it. A quick way to see what a model must learn.

    python samples/show_clip.py --data data/synthavs --split test --index 0 --out clip.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.viz import legend, overlay


def flow_picture(flow: np.ndarray, max_speed: float) -> np.ndarray:
    """Flow [H, W, 2] as RGB: hue is the direction, brightness the speed."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    hsv = np.zeros((*flow.shape[:2], 3), dtype=np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(255 * magnitude / max(max_speed, 1e-6), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (holds metadata.csv)")
    parser.add_argument("--split", default="test", help="train, val or test (default test)")
    parser.add_argument("--index", type=int, default=0, help="which clip of the split (default 0)")
    parser.add_argument("--out", type=Path, default=Path("clip.png"), help="PNG to write (default clip.png)")
    args = parser.parse_args(argv)

    try:
        data = AVSSDataset(args.data, args.split)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if not 0 <= args.index < len(data):
        parser.error(f"--index must be in [0, {len(data)}): the {args.split} split has {len(data)} clips")
    clip = data[args.index]

    dimmed = (clip.frames * 0.35).astype(np.uint8)
    painted = [overlay(frame, labels, data.class_names, alpha=0.8) for frame, labels in zip(dimmed, clip.labels)]
    rows = [np.concatenate(clip.frames, axis=1), np.concatenate(painted, axis=1)]
    legend(rows[1], list(clip.audible) or ["(nothing sounds)"])
    if clip.flow is not None:
        fastest = float(np.abs(clip.flow).max())
        rows.append(np.concatenate([flow_picture(f, fastest) for f in clip.flow], axis=1))
    sheet = np.concatenate(rows, axis=0)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        parser.error(f"cannot write {args.out}")
    print(f"{clip.uid}: {clip.scene or ''}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
