"""Training inputs: a dataset split prepared once into arrays, then batches of frames from it.

Decoding JPEGs, PNG flow and audio for every step would cost more than the model on a
CPU, so :func:`prepare_frames` reads a split once through :class:`AVSSDataset`, applies
the runtime's own preprocessing (:mod:`avss_sdk.preprocess`) and stores the result as
``.npy`` files in a cache folder (written to a temporary folder and renamed, so an
interrupted preparation is never mistaken for a finished one). Training memory-maps
them, which also scales to AVSBench's size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from avss_sdk.data.avsbench import SUBSET_FRAMES, AVSSDataset, resize_flow
from avss_sdk.metrics import IGNORE_INDEX
from avss_sdk.modeling.flow import FLOW_STRIDE, downsample_flow
from avss_sdk.preprocess import LOG_MEL_SECONDS, log_mel, normalize_image, resize_frame

CACHE_VERSION = 1


@dataclass
class FrameArrays:
    """A prepared split. Frames are padded to the longest clip; ``valid`` marks real, labelled frames."""

    frames: np.ndarray  # [N, T, S, S, 3] uint8
    labels: np.ndarray  # [N, T, S, S] uint8 dataset class ids, IGNORE_INDEX where unlabelled
    valid: np.ndarray  # [N, T] bool
    log_mel: np.ndarray  # [N, T, 96, 64] float16
    flow: np.ndarray | None  # [N, T, S/8, S/8, 2] float16 backward flow, or None (no ground truth)
    moving: np.ndarray  # [N, T] int8: 1 all sounding objects move, 0 all still, -1 mixed / unknown
    scenes: list[str | None]
    uids: list[str]
    class_names: list[str]

    def frame_index(self) -> np.ndarray:
        """[M, 2] (clip, frame) pairs of the valid frames."""
        return np.argwhere(self.valid)


def _moving_flags(info: dict, frames: int) -> np.ndarray:
    flags = np.full(frames, -1, np.int8)
    objects = info.get("objects", [])
    for t in range(frames):
        moving = {bool(o["moving"]) for o in objects if t < len(o.get("sounding", [])) and o["sounding"][t]}
        if len(moving) == 1:
            flags[t] = int(moving.pop())
    return flags


def _cache_key(dataset: AVSSDataset, size: int) -> str:
    ident = {"version": CACHE_VERSION, "root": str(Path(dataset.root).resolve()), "split": dataset.split,
             "size": size, "uids": [r.uid for r in dataset.records], "classes": dataset.class_names}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def prepare_frames(dataset: AVSSDataset, size: int, cache_dir: str | os.PathLike,
                   progress: bool = True, workers: int = 0) -> FrameArrays:
    """Prepare (or reuse from ``cache_dir``) the arrays of ``dataset`` at ``size`` x ``size``.

    ``workers`` processes decode and resize clips in parallel (0: one per CPU core, for splits
    large enough to repay starting them).
    """
    folder = Path(cache_dir) / f"{dataset.split}-{size}-{_cache_key(dataset, size)}"
    if workers == 0:
        workers = (os.cpu_count() or 1) if len(dataset) >= 64 else 1
    if not (folder / "meta.json").is_file():
        _write_cache(dataset, size, folder, progress, workers)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))

    def array(name: str) -> np.ndarray:
        return np.load(folder / f"{name}.npy", mmap_mode="r")

    return FrameArrays(frames=array("frames"), labels=array("labels"), valid=np.asarray(array("valid")),
                       log_mel=array("log_mel"), flow=array("flow") if meta["has_flow"] else None,
                       moving=np.asarray(array("moving")), scenes=meta["scenes"], uids=meta["uids"],
                       class_names=meta["class_names"])


_ARRAYS = ("frames", "labels", "log_mel", "flow")


def flow_targets(backward: np.ndarray, size: int) -> np.ndarray:
    """Exact backward flow [T, H, W, 2] of a clip -> the flow stage's training targets [T, h, w, 2]:
    resized to the model input ``size`` and average-pooled to the stage's grid (FLOW_STRIDE)."""
    full = torch.from_numpy(np.stack([resize_flow(f, (size, size)) for f in backward]))
    return downsample_flow(full.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def _write_clips(dataset: AVSSDataset, size: int, tmp: Path, indices: range) -> list[tuple[int, Any]]:
    """Decode clips ``indices`` into the open cache arrays in ``tmp``; (index, per-clip metadata) for each."""
    arrays = {name: np.load(tmp / f"{name}.npy", mmap_mode="r+") for name in _ARRAYS
              if (tmp / f"{name}.npy").is_file()}
    t = arrays["frames"].shape[1]
    done = []
    for i in indices:
        clip = dataset[i]
        k = min(len(clip.frames), t)
        for j in range(k):
            arrays["frames"][i, j] = resize_frame(clip.frames[j], size)
            arrays["labels"][i, j] = resize_frame_labels(clip.labels[j], size)
            arrays["log_mel"][i, j] = log_mel(clip.audio_window(j, LOG_MEL_SECONDS))
        if "flow" in arrays:
            arrays["flow"][i, :k] = flow_targets(clip.flow_backward[:k], size)
        done.append((i, (k, clip.label_valid[:k], _moving_flags(clip.info, k), clip.scene, clip.uid)))
    for array in arrays.values():
        array.flush()
    return done


def _write_cache(dataset: AVSSDataset, size: int, folder: Path, progress: bool, workers: int) -> None:
    if len(dataset) == 0:
        raise ValueError(f"{dataset.root}: split {dataset.split!r} has no clips")
    for stale in folder.parent.glob(f".tmp-{folder.name}-*"):  # left by a killed preparation, not a running one
        if not _process_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    tmp.mkdir(parents=True)
    first = dataset[0]
    n = len(dataset)
    t = max(SUBSET_FRAMES.get(r.subset, len(first.frames)) for r in dataset.records)
    has_flow = first.flow_backward is not None
    grid = size // FLOW_STRIDE
    mm = np.lib.format.open_memmap
    mm(tmp / "frames.npy", "w+", np.uint8, (n, t, size, size, 3)).flush()
    labels = mm(tmp / "labels.npy", "w+", np.uint8, (n, t, size, size))
    labels[:] = IGNORE_INDEX
    labels.flush()
    mm(tmp / "log_mel.npy", "w+", np.float16, (n, t, 96, 64)).flush()
    if has_flow:
        mm(tmp / "flow.npy", "w+", np.float16, (n, t, grid, grid, 2)).flush()
    valid = np.zeros((n, t), bool)
    moving = np.full((n, t), -1, np.int8)
    scenes, uids = [None] * n, [None] * n
    chunks = [range(start, min(start + 8, n)) for start in range(0, n, 8)]
    bar = tqdm(total=n, desc=f"preparing {dataset.split}", unit="clip", disable=not progress)
    # Spawned, not forked, workers: forking after torch has started its thread pool can hang.
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = (pool.imap_unordered(functools.partial(_write_clips, dataset, size, tmp), chunks) if pool
                   else (_write_clips(dataset, size, tmp, chunk) for chunk in chunks))
        for done in results:
            for i, (k, clip_valid, clip_moving, scene, uid) in done:
                valid[i, :k], moving[i, :k], scenes[i], uids[i] = clip_valid, clip_moving, scene, uid
            bar.update(len(done))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    np.save(tmp / "valid.npy", valid)
    np.save(tmp / "moving.npy", moving)
    meta = {"has_flow": has_flow, "scenes": scenes, "uids": uids, "class_names": dataset.class_names}
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    if (folder / "meta.json").is_file():  # another process prepared the same arrays meanwhile: keep its
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _process_alive(pid: str) -> bool:
    """Whether a process with this id (a cache folder's suffix) runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def resize_frame_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a class-index map (labels never blend)."""
    import cv2

    if labels.shape == (size, size):
        return labels
    return cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)


def label_lookup(class_names: list[str], vocabulary: list[str]) -> np.ndarray:
    """[256] map from dataset class ids to targets: 0 background, k + 1 for vocabulary[k], else ignore."""
    lookup = np.full(256, IGNORE_INDEX, np.int64)
    lookup[0] = 0
    position = {name: k + 1 for k, name in enumerate(vocabulary)}
    for index, name in enumerate(class_names):
        if index and name in position:
            lookup[index] = position[name]
    return lookup


@dataclass
class Batch:
    previous: torch.Tensor  # [B, 3, S, S] normalised
    current: torch.Tensor
    log_mel: torch.Tensor  # [B, 96, 64]
    targets: torch.Tensor  # [B, S, S] int64: 0 background, k + 1 vocabulary word k, IGNORE_INDEX
    flow: torch.Tensor | None  # [B, 2, S/8, S/8] ground-truth backward flow
    scenes: list[str | None]

    def to(self, device: torch.device) -> "Batch":
        move = lambda x: None if x is None else x.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.previous), move(self.current), move(self.log_mel), move(self.targets),
                     move(self.flow), self.scenes)


def make_batch(data: FrameArrays, pairs: np.ndarray, lookup: np.ndarray, flip: np.ndarray | None = None) -> Batch:
    """The frames ``pairs`` [B, 2] (clip, frame); frame t's previous frame is t - 1 (itself at t = 0).

    ``flip`` [B] bool mirrors samples horizontally (flow's x component flips sign).
    """
    clips = pairs[:, 0]
    current = np.stack([data.frames[c, t] for c, t in pairs])
    previous = np.stack([data.frames[c, max(t - 1, 0)] for c, t in pairs])
    labels = lookup[np.stack([data.labels[c, t] for c, t in pairs])]
    flow = None if data.flow is None else np.stack([data.flow[c, t] for c, t in pairs]).astype(np.float32)
    if flip is not None and flip.any():
        current[flip], previous[flip], labels[flip] = current[flip, :, ::-1], previous[flip, :, ::-1], labels[flip, :, ::-1]
        if flow is not None:
            flow[flip] = flow[flip, :, ::-1] * np.array([-1.0, 1.0], np.float32)
    mel = np.stack([data.log_mel[c, t] for c, t in pairs]).astype(np.float32)
    return Batch(
        previous=torch.from_numpy(normalize_image(previous)),
        current=torch.from_numpy(normalize_image(current)),
        log_mel=torch.from_numpy(mel),
        targets=torch.from_numpy(np.ascontiguousarray(labels)),
        flow=None if flow is None else torch.from_numpy(np.ascontiguousarray(flow.transpose(0, 3, 1, 2))),
        scenes=[data.scenes[c] for c in clips],
    )
