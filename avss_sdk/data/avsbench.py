"""Reader for the AVSBench-semantic release layout, which SynthAVS-OV also writes.

Layout (AVSBench-semantic)::

    ROOT/metadata.csv            vid,uid,s_min,s_sec,a_obj,split,label
    ROOT/label2idx.json          {"background": 0, "accordion": 1, ...}
    ROOT/<label>/<uid>/frames/{i}.jpg
    ROOT/<label>/<uid>/labels_rgb/{i}.png         colour labels (official bit palette)
    ROOT/<label>/<uid>/labels_semantic/{i}.png    or class-index labels (SynthAVS)
    ROOT/<label>/<uid>/audio.wav

``label`` is the subset: ``v1s`` (single source, 5 frames; train clips annotated on
frame 0 only), ``v1m`` (multi source, 5 frames) and ``v2`` (10 frames). AVSBench pairs
frame i with audio second i; here every frame's audio is the window that *ends* at its
timestamp (the runtime is causal), so frame i of AVSBench gets the timestamp i + 1 s
and the same second of audio. SynthAVS adds ``clip.json`` (frame timestamps and more),
``scene.txt``, ground-truth flow and ``ov_split.json`` (its base / novel classes);
without ``ov_split.json`` the AVSBench-OV split of OV-AVSS is used.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from avss_sdk.media import SAMPLE_RATE, WINDOW_SECONDS, audio_window, read_audio
from avss_sdk.metrics import IGNORE_INDEX

SUBSET_FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}
AVSBENCH_NUM_CLASSES = 71

# AVSBench-OV (OV-AVSS): these 30 classes are novel, the other 40 are base.
AVSBENCH_OV_NOVEL = (
    "accordion", "axe", "bassoon", "cello", "clarinet", "clipper", "emergency-car", "erhu",
    "flute", "frying-food", "guzheng", "handpan", "harmonica", "harp", "leopard", "marimba",
    "mower", "pipa", "saw", "saxophone", "sitar", "sorna", "tabla", "tank", "trombone",
    "tuba", "ukulele", "utv", "violin", "wolf",
)  # fmt: skip

METADATA_COLUMNS = ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label")


def avsbench_palette(num_classes: int = AVSBENCH_NUM_CLASSES) -> np.ndarray:
    """The official colour of each class index: index j's bits spread over R, G, B (PASCAL VOC style)."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, bit = index, 7
        while value:
            for channel in range(3):
                palette[index, channel] |= ((value >> channel) & 1) << bit
            value >>= 3
            bit -= 1
    return palette


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow [H, W, 2] in pixels -> (height, width), nearest neighbour, vectors rescaled to the new pixels."""
    if flow.shape[:2] == tuple(size):
        return flow
    scale = np.array([size[1] / flow.shape[1], size[0] / flow.shape[0]], dtype=np.float32)
    return cv2.resize(flow, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) * scale


def decode_color_label(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colour label [H, W, 3] (RGB) to class indices [H, W].

    Colours outside the palette become background, as in the official loader (an
    arg-max over all-false matches).
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    order = np.argsort(keys)
    position = np.clip(np.searchsorted(keys[order], codes), 0, len(keys) - 1)
    found = keys[order][position] == codes
    return np.where(found, order[position], 0).astype(np.uint8)


@dataclass(frozen=True)
class ClipRecord:
    """One row of ``metadata.csv``: where a clip lives and what sounds in it."""

    uid: str
    subset: str
    split: str
    audible: tuple[str, ...]
    directory: Path


@dataclass
class Clip:
    """A clip's frames, labels, audio and (SynthAVS only) flow and scene text."""

    uid: str
    subset: str
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    labels: np.ndarray  # [T, H, W] uint8 class indices; IGNORE_INDEX where unannotated
    label_valid: np.ndarray  # [T] bool: frames whose labels count
    audio: np.ndarray  # [S] float32 mono at sample_rate
    sample_rate: int
    frame_times: np.ndarray  # [T] seconds into ``audio`` at which each frame is shown
    audible: tuple[str, ...]  # class names that sound in the clip (a_obj)
    scene: str | None = None
    flow: np.ndarray | None = None  # [T, H, W, 2] frame t-1 -> t on frame t-1's grid
    flow_backward: np.ndarray | None = None  # [T, H, W, 2] frame t -> t-1 on frame t's grid
    info: dict = field(default_factory=dict)  # clip.json (SynthAVS: objects, motion, sound intervals)

    def audio_window(self, index: int, seconds: float = WINDOW_SECONDS) -> np.ndarray:
        """The audio of frame ``index``: the ``seconds`` that end at its timestamp."""
        return audio_window(self.audio, float(self.frame_times[index]), self.sample_rate, seconds)


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _numbered_files(directory: Path, suffix: str) -> list[Path]:
    """``0.png, 1.png, ... 10.png`` in numeric order (a plain sort puts 10 before 2)."""
    files = [p for p in directory.glob(f"*{suffix}") if p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


class AVSSDataset:
    """Clips of one split of an AVSBench-semantic-layout dataset (AVSBench or SynthAVS-OV).

    Args:
        root: the dataset folder holding ``metadata.csv`` and ``label2idx.json``.
        split: ``train``, ``val`` or ``test``.
        subsets: keep only these subsets (``v1s``, ``v1m``, ``v2``, ``synth``); all by default.
        size: resize frames, labels and flow to (height, width); native size if None.
        audible_only: OV-AVSS's rule: ground-truth pixels of classes that are not in the
            clip's ``a_obj`` count as background.
        classes: ``"base"`` keeps only clips whose audible classes are all base classes
            (training in the open-vocabulary setting) and ignores any novel pixel left.
        load_flow: read ground-truth flow where the dataset has it.
        sample_rate: audio is resampled to this rate.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        subsets: tuple[str, ...] | None = None,
        size: tuple[int, int] | None = None,
        audible_only: bool = False,
        classes: Literal["all", "base"] = "all",
        load_flow: bool = True,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.size = size
        self.audible_only = audible_only
        self.load_flow = load_flow
        self.sample_rate = sample_rate
        if classes not in ("all", "base"):
            raise ValueError(f"classes must be 'all' or 'base', got {classes!r}")

        self.class_names = self._read_label2idx()
        self.class_index = {name: i for i, name in enumerate(self.class_names)}
        self.base_ids, self.novel_ids = self._read_ov_split()
        self.palette = avsbench_palette(max(len(self.class_names), AVSBENCH_NUM_CLASSES))
        self.records = self._read_metadata(subsets)
        if classes == "base":
            novel = {self.class_names[i] for i in self.novel_ids}
            self.records = [r for r in self.records if not novel.intersection(r.audible)]
        self._ignored_ids = np.array(self.novel_ids if classes == "base" else [], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def _read_label2idx(self) -> list[str]:
        path = self.root / "label2idx.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {self.root} an AVSBench-semantic style dataset?")
        mapping = json.loads(path.read_text(encoding="utf-8"))
        names = sorted(mapping, key=mapping.get)
        if [mapping[n] for n in names] != list(range(len(names))):
            raise ValueError(f"{path}: class indices must be 0..{len(names) - 1} without gaps")
        return names

    def _read_ov_split(self) -> tuple[list[int], list[int]]:
        path = self.root / "ov_split.json"
        if path.is_file():
            split = json.loads(path.read_text(encoding="utf-8"))
            base_names, novel_names = split["base"], split["novel"]
        else:
            novel_names = [n for n in AVSBENCH_OV_NOVEL if n in self.class_index]
            base_names = [n for n in self.class_names[1:] if n not in set(novel_names)]
        unknown = [n for n in (*base_names, *novel_names) if n not in self.class_index]
        if unknown:
            raise ValueError(f"{path}: classes not in label2idx.json: {unknown}")
        return [self.class_index[n] for n in base_names], [self.class_index[n] for n in novel_names]

    def _read_metadata(self, subsets: tuple[str, ...] | None) -> list[ClipRecord]:
        path = self.root / "metadata.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"uid", "a_obj", "split", "label"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path} lacks the columns {sorted(missing)}")
            rows = [row for row in reader if row["split"] == self.split]
        records = []
        unknown: set[str] = set()
        for row in rows:
            if subsets is not None and row["label"] not in subsets:
                continue
            audible = tuple(name for name in row["a_obj"].split("_") if name)
            unknown.update(name for name in audible if name not in self.class_index)
            records.append(
                ClipRecord(row["uid"], row["label"], row["split"], audible, self.root / row["label"] / row["uid"])
            )
        if unknown:
            warnings.warn(f"{path}: a_obj names not in label2idx.json are ignored: {sorted(unknown)}", stacklevel=3)
        return records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Clip:
        record = self.records[index]
        frame_files = _numbered_files(record.directory / "frames", ".jpg")
        if not frame_files:
            raise FileNotFoundError(f"no frames in {record.directory / 'frames'}")
        frames = np.stack([self._resize(_read_rgb(p), cv2.INTER_LINEAR) for p in frame_files])
        labels, label_valid = self._read_labels(record, len(frame_files), frames.shape[1:3])

        info_path = record.directory / "clip.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        frame_times = np.asarray(info.get("frame_times", np.arange(1, len(frame_files) + 1)), dtype=np.float64)
        scene_path = record.directory / "scene.txt"
        scene = scene_path.read_text(encoding="utf-8").strip() if scene_path.is_file() else None

        return Clip(
            uid=record.uid,
            subset=record.subset,
            frames=frames,
            labels=labels,
            label_valid=label_valid,
            audio=read_audio(record.directory / "audio.wav", self.sample_rate),
            sample_rate=self.sample_rate,
            frame_times=frame_times,
            audible=record.audible,
            scene=scene,
            flow=self._read_flow(record.directory / "flow", len(frame_files)),
            flow_backward=self._read_flow(record.directory / "flow_bwd", len(frame_files)),
            info=info,
        )

    def _resize(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        if self.size is None or image.shape[:2] == tuple(self.size):
            return image
        return cv2.resize(image, (self.size[1], self.size[0]), interpolation=interpolation)

    def _read_labels(self, record: ClipRecord, num_frames: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.full((num_frames, *shape), IGNORE_INDEX, dtype=np.uint8)
        valid = np.zeros(num_frames, dtype=bool)
        rgb_dir, index_dir = record.directory / "labels_rgb", record.directory / "labels_semantic"
        colour = rgb_dir.is_dir()
        for path in _numbered_files(rgb_dir if colour else index_dir, ".png"):
            t = int(path.stem)
            if t >= num_frames:
                continue
            if colour:
                label = decode_color_label(_read_rgb(path), self.palette)
            else:
                label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if label is None or label.ndim != 2:
                    raise ValueError(f"{path} is not a single-channel class-index PNG")
            labels[t] = self._resize(label, cv2.INTER_NEAREST)
            valid[t] = True
        if record.subset == "v1s" and record.split == "train":
            labels[1:] = IGNORE_INDEX  # v1s training clips are annotated on frame 0 only
            valid[1:] = False
        if self.audible_only:
            keep = [0, *(self.class_index[n] for n in record.audible if n in self.class_index)]
            outside = ~np.isin(labels, [*keep, IGNORE_INDEX]) & valid[:, None, None]
            labels[outside] = 0
        if self._ignored_ids.size:
            labels[np.isin(labels, self._ignored_ids)] = IGNORE_INDEX
        return labels, valid

    def _read_flow(self, directory: Path, num_frames: int) -> np.ndarray | None:
        if not self.load_flow or not directory.is_dir():
            return None
        from avss_sdk.data.synthavs.flow_png import read_flow_png

        flows = []
        for t in range(num_frames):
            flow = read_flow_png(directory / f"{t}.png")
            flows.append(resize_flow(flow, tuple(self.size)) if self.size is not None else flow)
        return np.stack(flows)
