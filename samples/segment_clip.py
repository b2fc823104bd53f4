"""Segment one clip with a trained SSP-OV checkpoint (torch) and draw what it found.

Rows: the frames; the ground truth; the prediction, both painted over dimmed frames
with a legend. The vocabulary is the dataset's, base and novel classes together, or
the words given with ``--vocab``.

    python samples/segment_clip.py --checkpoint default --data data/synthavs --index 0 --out segmented.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.modeling.checkpoint import CheckpointError, load_model
from avss_sdk.postprocess import FOREGROUND_THRESHOLD, GuidedFilter, upsampled_label_map
from avss_sdk.preprocess import LOG_MEL_SECONDS, log_mel, normalize_image, resize_frame
from avss_sdk.viz import legend, overlay


@torch.no_grad()
def segment(model, frames: np.ndarray, windows: list[np.ndarray], vocabulary: list[str],
            scene: str | None, threshold: float = FOREGROUND_THRESHOLD, guided: GuidedFilter | None = None) -> np.ndarray:
    """Label maps [T, H, W] (0 background, k + 1 for vocabulary[k]) of RGB frames [T, H, W, 3], causally,
    decided as the runtime decides (:func:`avss_sdk.postprocess.upsampled_label_map`)."""
    size = model.config.image_size
    small = np.stack([resize_frame(f, size) for f in frames])
    current = torch.from_numpy(normalize_image(small))
    previous = torch.cat([current[:1], current[:-1]])
    mel = torch.from_numpy(log_mel(np.stack(windows)))
    classes = model.text_encoder.embed_categories(vocabulary)
    scenes = model.scene_embeddings([scene] * len(frames))
    logits = model(previous, current, mel, classes, scenes).decoder.pixel_logits.numpy()
    return np.stack([upsampled_label_map(frame_logits, frames.shape[1:3], threshold, guide=guide, guided=guided)[0]
                     for frame_logits, guide in zip(logits, small)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="default", help="checkpoint file or 'default' (the shipped model)")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (holds metadata.csv)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--index", type=int, default=0, help="which clip of the split (default 0)")
    parser.add_argument("--vocab", help="comma-separated vocabulary (default: every class of the dataset)")
    parser.add_argument("--scene", action="store_true", help="give the model the clip's scene text")
    parser.add_argument("--out", type=Path, default=Path("segmented.png"))
    args = parser.parse_args(argv)
    try:
        model, payload = load_model(args.checkpoint)
        data = AVSSDataset(args.data, args.split)
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        parser.error(str(error))
    if not 0 <= args.index < len(data):
        parser.error(f"--index must be in [0, {len(data)}): the {args.split} split has {len(data)} clips")
    vocabulary = [w.strip() for w in args.vocab.split(",") if w.strip()] if args.vocab else data.class_names[1:]
    if not vocabulary:
        parser.error("--vocab is empty")
    clip = data[args.index]
    windows = [clip.audio_window(i, LOG_MEL_SECONDS) for i in range(len(clip.frames))]
    threshold = payload.get("foreground_threshold", FOREGROUND_THRESHOLD)  # calibrated when shipped
    guided = GuidedFilter.from_dict(payload.get("guided_filter"))  # chosen with the threshold
    predicted = segment(model, clip.frames, windows, vocabulary, clip.scene if args.scene else None, threshold,
                        guided)

    names = ["background", *vocabulary]
    dimmed = (clip.frames * 0.35).astype(np.uint8)
    truth = [overlay(f, l, data.class_names, alpha=0.8) for f, l in zip(dimmed, clip.labels)]
    guess = [overlay(f, p, names, alpha=0.8) for f, p in zip(dimmed, predicted)]
    rows = [np.concatenate(clip.frames, 1), np.concatenate(truth, 1), np.concatenate(guess, 1)]
    legend(rows[1], list(clip.audible) or ["(nothing sounds)"])  # legend colours come from the names
    found = sorted({names[i] for i in np.unique(predicted) if i})
    legend(rows[2], found or ["(nothing found)"])
    if not cv2.imwrite(str(args.out), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR)):
        parser.error(f"cannot write {args.out}")
    novel = {data.class_names[i] for i in data.novel_ids}
    print(f"{clip.uid}: sounding {', '.join(f'{n} (novel)' if n in novel else n for n in clip.audible) or 'nothing'}"
          f"\npredicted: {', '.join(found) or 'nothing'}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
