"""Where does a checkpoint's error come from? ``python train/diagnose.py --checkpoint default --data D``.

Splits the error on a SynthAVS-OV split into the parts a user sees:

* **sounding mask** (class-agnostic): IoU of "some sounding object" against the truth,
  its boundary IoU (a band of ``--band`` pixels around both edges), and the missed and
  spurious pixels by where they fall;
* **which object**: per object state, the share of the object's visible pixels labelled as
  sounding: sounding objects (moving or still), the silent twin of a sounding category,
  other silent distractors;
* **timing**: objects on the first frame after their sound starts (onset) or stops (offset)
  against steady frames;
* **words**: of the sounding pixels found, the share given the right word, base and novel.

Instance masks are re-rendered from each clip's (split, seed, index): SynthAVS is
deterministic, so the scene a clip was made from is known exactly (checked against
clip.json). The frames are segmented exactly as ``evaluate.py`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.data.synthavs import render_clip, sample_scene
from avss_sdk.data.synthavs.writer import SUBSET, clip_rng
from avss_sdk.metrics import IGNORE_INDEX
from avss_sdk.postprocess import FOREGROUND_THRESHOLD, GuidedFilter, label_map
from avss_sdk.training.data import prepare_frames, resize_frame_labels
from avss_sdk.training.evaluate import load_model_and_split, predictions

STATES = ("sounding, moving", "sounding, still", "onset (first frame on)", "offset (first frame off)",
          "silent twin of a sounding category", "silent distractor", "between its sounds")


@dataclass
class Counter:
    """Pixel counts accumulated over a split."""

    pixels: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(self, key: str, hits: int, total: int) -> None:
        self.pixels[key][0] += int(hits)
        self.pixels[key][1] += int(total)

    def share(self, key: str) -> float | None:
        hits, total = self.pixels.get(key, (0, 0))
        return None if total == 0 else 100.0 * hits / total


def clip_instances(root: Path, uid: str, size: int) -> tuple[np.ndarray, list, np.ndarray]:
    """(instances [T, size, size] int16, the scene's objects, frame times) of a SynthAVS clip, re-rendered."""
    info = json.loads((root / SUBSET / uid / "clip.json").read_text(encoding="utf-8"))
    split, seed, index = uid.split("-")
    width = cv2.imread(str(root / SUBSET / uid / "frames" / "0.jpg")).shape[1]
    scene = sample_scene(clip_rng(split, int(seed), int(index)), split, len(info["frame_times"]), info["fps"], width)
    if [o.category.name for o in scene.objects] != [o["category"] for o in info["objects"]]:
        raise SystemExit(f"error: {uid} does not re-render to its clip.json (made by another SynthAVS version?)")
    instances = render_clip(scene).instances
    resized = np.stack([resize_frame_labels(frame, size) for frame in instances])
    return resized, scene.objects, scene.frame_times


def boundary(mask: np.ndarray, band: int) -> np.ndarray:
    """Pixels of ``mask`` within ``band`` pixels of its edge."""
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    return mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def object_state(obj, on: list[bool], t: int, objects: list) -> str:
    if on[t]:
        if t > 0 and not on[t - 1]:
            return "onset (first frame on)"
        return "sounding, moving" if obj.moving else "sounding, still"
    if t > 0 and on[t - 1]:
        return "offset (first frame off)"
    if obj.sound_interval is not None:
        return "between its sounds"
    twin = any(o is not obj and o.category.name == obj.category.name and o.sound_interval is not None
               for o in objects)
    return "silent twin of a sounding category" if twin else "silent distractor"


def diagnose(model, data, dataset: AVSSDataset, threshold: float, band: int, progress: bool,
             guided: GuidedFilter | None = None) -> dict:
    """Every figure of the module docstring, as a dict."""
    root = Path(dataset.root)
    size = data.frames.shape[2]
    counts = Counter()
    rendered_clip, rendered = -1, None
    for pairs, logits, targets, guides in predictions(model, data, False, 32, progress, "diagnosing"):
        labels = label_map(logits, threshold, guides, guided)
        for (clip, t), pred, gt in zip(pairs, labels, targets):
            if clip != rendered_clip:  # frames come clip by clip: render each clip once
                rendered_clip, rendered = clip, clip_instances(root, data.uids[clip], size)
            instances, objects, times = rendered
            valid = gt != IGNORE_INDEX
            truth, found = (gt > 0) & valid, (pred > 0) & valid
            counts.add("iou", (truth & found).sum(), (truth | found).sum())
            edge_truth, edge_found = boundary(truth, band), boundary(found, band)
            counts.add("boundary iou", (edge_truth & edge_found).sum(), (edge_truth | edge_found).sum())
            inst = instances[t]
            counts.add("missed: on a sounding object", (truth & ~found).sum(), truth.sum())
            spurious = found & ~truth
            counts.add("spurious: on the background", (spurious & (inst < 0)).sum(), spurious.sum())
            counts.add("spurious: on a silent object", (spurious & (inst >= 0)).sum(), spurious.sum())
            for j, obj in enumerate(objects):
                visible = (inst == j) & valid
                if not visible.any():
                    continue
                on = obj.sounding(times)
                counts.add(object_state(obj, on, t, objects), (visible & found).sum(), visible.sum())
            right = truth & found & (pred == gt)
            for name, ids in (("base", dataset.base_ids), ("novel", dataset.novel_ids)):
                pixels = truth & found & np.isin(gt, ids)
                counts.add(f"words: {name}", (right & pixels).sum(), pixels.sum())
    return {
        "threshold": threshold, "guided_filter": str(guided) if guided else None,
        "frames": int(len(data.frame_index())), "band": band,
        "sounding mask IoU": counts.share("iou"), "sounding mask boundary IoU": counts.share("boundary iou"),
        "missed: share of sounding pixels": counts.share("missed: on a sounding object"),
        "spurious on background (share of spurious)": counts.share("spurious: on the background"),
        "spurious on silent objects (share of spurious)": counts.share("spurious: on a silent object"),
        "labelled as sounding, by object state": {state: counts.share(state) for state in STATES},
        "pixels per object state": {state: counts.pixels.get(state, [0, 0])[1] for state in STATES},
        "right word among found sounding pixels": {"base": counts.share("words: base"),
                                                   "novel": counts.share("words: novel")},
    }


def format_table(name: str, report: dict) -> str:
    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    lines = [f"## {name}", "", f"{report['frames']} frames, foreground threshold {report['threshold']}, "
             f"{report.get('guided_filter') or 'no guided filter'}, boundary band {report['band']} px, no scene text.", "", "| measure | % |", "|---|---:|",
             f"| sounding mask IoU (class-agnostic) | {cell(report['sounding mask IoU'])} |",
             f"| sounding mask boundary IoU | {cell(report['sounding mask boundary IoU'])} |",
             f"| sounding pixels missed | {cell(report['missed: share of sounding pixels'])} |",
             f"| spurious pixels on the background (share of spurious) | "
             f"{cell(report['spurious on background (share of spurious)'])} |",
             f"| spurious pixels on silent objects (share of spurious) | "
             f"{cell(report['spurious on silent objects (share of spurious)'])} |",
             "", "| object state | labelled sounding, % of its pixels | pixels |", "|---|---:|---:|"]
    for state, share in report["labelled as sounding, by object state"].items():
        lines.append(f"| {state} | {cell(share)} | {report['pixels per object state'][state]} |")
    words = report["right word among found sounding pixels"]
    lines += ["", "| words | right word, % of found sounding pixels |", "|---|---:|",
              f"| base | {cell(words['base'])} |", f"| novel | {cell(words['novel'])} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default", help="checkpoint file, or 'default' for the shipped model")
    parser.add_argument("--data", required=True, type=Path, help="a SynthAVS-OV dataset root")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--threshold", type=float, help="foreground threshold (default: the checkpoint's)")
    parser.add_argument("--no-guided-filter", action="store_true",
                        help="decide without the checkpoint's guided filter (the decoder's outlines alone)")
    parser.add_argument("--band", type=int, default=3, help="boundary band in pixels (default 3)")
    parser.add_argument("--name", help="row heading (default: the checkpoint)")
    parser.add_argument("--out", type=Path, help="append the table to this markdown file; JSON beside it")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    model, payload, dataset = load_model_and_split(args.checkpoint, args.data, args.split)
    threshold = args.threshold if args.threshold is not None else payload.get("foreground_threshold",
                                                                              FOREGROUND_THRESHOLD)
    data = prepare_frames(dataset, model.config.image_size, args.data / "cache", progress=not args.quiet)
    guided = None if args.no_guided_filter else GuidedFilter.from_dict(payload.get("guided_filter"))
    report = diagnose(model, data, dataset, threshold, args.band, not args.quiet, guided)
    name = args.name or str(args.checkpoint)
    table = format_table(f"{name} on {args.data} ({args.split}, {len(dataset)} clips)", report)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(table + "\n")
        from avss_sdk.fileio import write_atomic

        json_path = args.out.with_suffix(".json")
        previous = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {}
        write_atomic(json_path, (json.dumps({**previous, name: report}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
