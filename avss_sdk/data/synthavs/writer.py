"""Writing clips and the dataset files, atomically.

Each clip is written into a temporary folder and renamed into place; metadata.csv and
the JSON files are written to a temporary file and ``os.replace``d, under an exclusive
lock, so an interrupted or concurrent run never leaves a half-written dataset.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import wave
from pathlib import Path

import cv2
import numpy as np

from avss_sdk.data.avsbench import METADATA_COLUMNS
from avss_sdk.data.synthavs.categories import BASE, NOVEL, label2idx
from avss_sdk.data.synthavs.flow_png import write_flow_png
from avss_sdk.data.synthavs.render import RenderedClip, render_clip
from avss_sdk.data.synthavs.scene import AUDIO_OFFSET, SPLITS, Scene, sample_scene, scene_text
from avss_sdk.data.synthavs.sound import synthesize_audio
from avss_sdk.fileio import write_text_atomic
from avss_sdk.media import SAMPLE_RATE

SUBSET = "synth"  # the subset folder; metadata's "label" column


def clip_uid(split: str, seed: int, index: int) -> str:
    """Unique clip id across splits and seeds, e.g. "val-3-00012"."""
    return f"{split}-{seed}-{index:05d}"


def clip_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """The clip's own random stream: independent of worker count and clip order."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _clip_json(scene: Scene) -> dict:
    return {
        "fps": scene.fps,
        "audio_offset": AUDIO_OFFSET,
        "frame_times": [round(float(t), 6) for t in scene.frame_times],
        "snr_db": scene.snr_db,
        "background": scene.background,
        "objects": [
            {
                "category": o.category.name,
                "sounding": o.sounding(scene.frame_times),
                "moving": o.moving,
                "sound_interval": None if o.sound_interval is None else list(o.sound_interval),
            }
            for o in scene.objects
        ],
    }


def write_clip(clip_dir: Path, scene: Scene, rendered: RenderedClip, audio: np.ndarray) -> None:
    """Write one clip's files into ``clip_dir`` (replacing it) via a temporary folder."""
    tmp = clip_dir.with_name(f".tmp-{clip_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("frames", "labels_semantic", "flow", "flow_bwd"):
        (tmp / sub).mkdir(parents=True)
    for i in range(scene.frames):
        bgr = cv2.cvtColor(rendered.frames[i], cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(tmp / "frames" / f"{i}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(tmp / "labels_semantic" / f"{i}.png"), rendered.labels[i])
        write_flow_png(tmp / "flow" / f"{i}.png", rendered.flow_fwd[i])
        write_flow_png(tmp / "flow_bwd" / f"{i}.png", rendered.flow_bwd[i])
    with wave.open(str(tmp / "audio.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(audio.astype("<i2").tobytes())
    (tmp / "scene.txt").write_text(scene_text(scene) + "\n", encoding="utf-8")
    (tmp / "clip.json").write_text(json.dumps(_clip_json(scene), indent=1) + "\n", encoding="utf-8")
    old = clip_dir.with_name(f".old-{clip_dir.name}-{os.getpid()}")
    if clip_dir.exists():
        os.replace(clip_dir, old)
    os.replace(tmp, clip_dir)
    shutil.rmtree(old, ignore_errors=True)


def generate_clip(
    out: str | os.PathLike, split: str, seed: int, index: int,
    frames: int = 10, fps: float = 5.0, size: int = 224,
) -> dict[str, str]:
    """Sample, render, synthesise and write clip ``index`` of (split, seed) under
    ``out/synth/``; return its metadata.csv row."""
    uid = clip_uid(split, seed, index)
    scene = sample_scene(clip_rng(split, seed, index), split, frames, fps, size)
    clip_dir = Path(out) / SUBSET / uid
    clip_dir.parent.mkdir(parents=True, exist_ok=True)
    write_clip(clip_dir, scene, render_clip(scene), synthesize_audio(scene))
    names: list[str] = []
    for obj in scene.objects:
        if any(obj.sounding(scene.frame_times)) and obj.category.name not in names:
            names.append(obj.category.name)
    return {"vid": uid, "uid": uid, "s_min": "0", "s_sec": "0", "a_obj": "_".join(names),
            "split": split, "label": SUBSET}


def write_dataset_files(out: str | os.PathLike, split: str, seed: int, rows: list[dict[str, str]]) -> None:
    """Merge ``rows`` into out/metadata.csv, replacing earlier rows of the same
    (split, seed), and (re)write label2idx.json and ov_split.json; clip folders of that
    (split, seed) that are no longer listed (an earlier, larger run) are removed, and so
    are the temporary folders of a run of it that was killed."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    prefix = clip_uid(split, seed, 0)[:-5]
    with open(root / ".metadata.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = root / "metadata.csv"
        kept = []
        if meta.exists():
            with open(meta, newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if not r["uid"].startswith(prefix)]
        merged = sorted(kept + rows, key=lambda r: (SPLITS.index(r["split"]), r["uid"]))
        text = io.StringIO()
        writer = csv.DictWriter(text, METADATA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(merged)
        write_text_atomic(meta, text.getvalue())
        write_text_atomic(root / "label2idx.json", json.dumps(label2idx(), indent=1) + "\n")
        split_names = {"base": [c.name for c in BASE], "novel": [c.name for c in NOVEL]}
        write_text_atomic(root / "ov_split.json", json.dumps(split_names, indent=1) + "\n")
        listed = {r["uid"] for r in rows}
        for stale in (root / SUBSET).glob(prefix + "*"):
            if stale.name not in listed:
                shutil.rmtree(stale)
        # Half-written (.tmp-) or half-replaced (.old-) folders left by a killed run.
        for leftover in (*(root / SUBSET).glob(f".tmp-{prefix}*"), *(root / SUBSET).glob(f".old-{prefix}*")):
            shutil.rmtree(leftover, ignore_errors=True)
