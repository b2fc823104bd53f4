"""SynthAVS-OV generator: categories, split hygiene, flow, audio, labels, determinism, CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from avss_sdk.data.synthavs import (
    BASE,
    CATEGORIES,
    NOVEL,
    category_by_name,
    generate_clip,
    label2idx,
    partials,
    read_flow_png,
    render_clip,
    sample_scene,
    write_dataset_files,
    write_flow_png,
)
from avss_sdk.data.synthavs.categories import COLOURS, SHAPES
from avss_sdk.data.synthavs.render import object_mask
from avss_sdk.data.synthavs.scene import BACKGROUND_COLOURS
from avss_sdk.media import SAMPLE_RATE
from avss_sdk.data.synthavs.writer import clip_rng

REPO = Path(__file__).resolve().parents[1]
SIZE, FRAMES, CLIPS = 96, 6, 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset: CLIPS clips of each split, seed 0, 96 px, 6 frames."""
    out = tmp_path_factory.mktemp("synth")
    for split in ("train", "val", "test"):
        rows = [generate_clip(out, split, 0, i, frames=FRAMES, size=SIZE) for i in range(CLIPS)]
        write_dataset_files(out, split, 0, rows)
    return out


def _metadata(out: Path) -> list[dict[str, str]]:
    with open(out / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _clips(out: Path, split: str) -> list[Path]:
    return [out / "synth" / r["uid"] for r in _metadata(out) if r["split"] == split]


def _rerender(clip: Path):
    """The clip's scene and rendering, rebuilt from its uid through the public API."""
    split, seed, index = clip.name.split("-")
    scene = sample_scene(clip_rng(split, int(seed), int(index)), split, FRAMES, 5.0, SIZE)
    return scene, render_clip(scene)


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768


def _lab(rgb: tuple[int, int, int]) -> np.ndarray:
    px = np.array([[rgb]], np.float32) / 255
    return cv2.cvtColor(px, cv2.COLOR_RGB2Lab)[0, 0]


def _mel(f: float) -> float:
    return 1127.0 * np.log1p(f / 700.0)


# ---------------------------------------------------------------- categories


def test_categories_are_compositional_with_fixed_base_novel_split() -> None:
    names = [c.name for c in CATEGORIES]
    assert len(names) >= 48 and len(set(names)) == len(names)
    assert all("_" not in n for n in names)
    assert {(c.colour, c.shape) for c in CATEGORIES} == {(a, b) for a in COLOURS for b in SHAPES}
    assert all(c.name == f"{c.colour} {c.shape}" for c in CATEGORIES)
    assert 0.55 <= len(BASE) / len(CATEGORIES) <= 0.65
    assert {c.name for c in BASE}.isdisjoint(c.name for c in NOVEL)
    base_words = {w for c in BASE for w in c.name.split()}
    assert base_words == set(COLOURS) | set(SHAPES)  # novel names compose seen words
    assert label2idx() == {"background": 0, **{c.name: i + 1 for i, c in enumerate(CATEGORIES)}}
    # look and sound both identify the category
    assert len({(c.rgb, c.shape) for c in CATEGORIES}) == len(CATEGORIES)
    assert len({(c.f0, c.timbre) for c in CATEGORIES}) == len(CATEGORIES)


def test_colours_and_fundamentals_are_well_separated() -> None:
    labs = [_lab(rgb) for rgb, _ in COLOURS.values()]
    for i in range(len(labs)):
        for j in range(i + 1, len(labs)):
            assert np.linalg.norm(labs[i] - labs[j]) > 40
    object_chroma = [np.hypot(*lab[1:]) for lab in labs]
    background_chroma = [np.hypot(*_lab(rgb)[1:]) for rgb in BACKGROUND_COLOURS.values()]
    assert min(object_chroma) > 35 > 15 > max(background_chroma)
    band = (_mel(7500) - _mel(125)) / 65  # spacing of the 64 log-mel band centres
    f0s = sorted(f0 for _, f0 in COLOURS.values())
    assert 125 < f0s[0] and f0s[-1] < 7500
    assert min(np.diff([_mel(f) for f in f0s])) > 2 * band
    assert all(f < 7500 for c in CATEGORIES for f, _ in partials(c))


def test_flow_png_round_trip(tmp_path: Path) -> None:
    flow = np.random.default_rng(0).uniform(-40, 40, (7, 9, 2)).astype(np.float32)
    write_flow_png(tmp_path / "f.png", flow)
    back = read_flow_png(tmp_path / "f.png")
    assert back.shape == (7, 9, 2) and back.dtype == np.float32
    assert np.abs(back - flow).max() <= 1 / 128 + 1e-6


# ---------------------------------------------------------------- splits


def test_train_split_contains_no_novel_category_anywhere(dataset: Path) -> None:
    novel_idx = {c.index for c in NOVEL}
    novel_pairs = [f"{c.colour} {c.shape}" for c in NOVEL]  # also a prefix of the plural
    for clip in _clips(dataset, "train"):
        labels = {int(v) for i in range(FRAMES)
                  for v in np.unique(cv2.imread(str(clip / "labels_semantic" / f"{i}.png"), 0))}
        assert labels.isdisjoint(novel_idx)
        meta = json.loads((clip / "clip.json").read_text())
        assert all(not category_by_name(o["category"]).novel for o in meta["objects"])
        text = (clip / "scene.txt").read_text(encoding="utf-8")
        assert not any(p in text for p in novel_pairs), text
    for row in _metadata(dataset):
        if row["split"] == "train" and row["a_obj"]:
            assert all(not category_by_name(n).novel for n in row["a_obj"].split("_"))


def test_val_and_test_contain_base_and_novel(dataset: Path) -> None:
    for split in ("val", "test"):
        sounding = set()
        for row in _metadata(dataset):
            if row["split"] == split and row["a_obj"]:
                sounding |= {category_by_name(n).novel for n in row["a_obj"].split("_")}
        assert sounding == {False, True}, split


def test_dataset_files(dataset: Path) -> None:
    assert json.loads((dataset / "label2idx.json").read_text()) == label2idx()
    ov = json.loads((dataset / "ov_split.json").read_text())
    assert ov == {"base": [c.name for c in BASE], "novel": [c.name for c in NOVEL]}
    rows = _metadata(dataset)
    assert list(rows[0]) == ["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"]
    assert len(rows) == 3 * CLIPS and len({r["uid"] for r in rows}) == 3 * CLIPS
    clip = dataset / "synth" / rows[0]["uid"]
    img = cv2.imread(str(clip / "frames" / "0.jpg"))
    assert img.shape == (SIZE, SIZE, 3)
    assert cv2.imread(str(clip / "labels_semantic" / "0.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    meta = json.loads((clip / "clip.json").read_text())
    assert meta["audio_offset"] == 0.96 and len(meta["frame_times"]) == FRAMES
    audio = _read_wav(clip / "audio.wav")
    assert len(audio) / SAMPLE_RATE >= meta["frame_times"][-1] + 1 / meta["fps"] - 1e-6
    assert meta["frame_times"][0] == pytest.approx(0.96)
    assert len((clip / "scene.txt").read_text(encoding="utf-8").splitlines()) == 1


# ---------------------------------------------------------------- flow


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def _warp(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    x2 = np.round(xs + flow[ys, xs, 0]).astype(int)
    y2 = np.round(ys + flow[ys, xs, 1]).astype(int)
    keep = (x2 >= 0) & (x2 < mask.shape[1]) & (y2 >= 0) & (y2 < mask.shape[0])
    out = np.zeros_like(mask)
    out[y2[keep], x2[keep]] = True
    return out


def test_flow_moves_object_pixels_onto_the_same_object(tmp_path: Path) -> None:
    """Warp each unoccluded moving object by the stored flow (at 224 px: at small sizes
    nearest-pixel rounding along the thin crescent's long edge alone costs > 10 % IoU)."""
    size, frames, checked = 224, 4, 0
    one_px = np.ones((3, 3), np.uint8)
    for i in range(8):
        generate_clip(tmp_path, "val", 1, i, frames=frames, size=size)
        clip = tmp_path / "synth" / f"val-1-{i:05d}"
        scene = sample_scene(clip_rng("val", 1, i), "val", frames, 5.0, size)
        r = render_clip(scene)
        fwd = [read_flow_png(clip / "flow" / f"{t}.png") for t in range(frames)]
        bwd = [read_flow_png(clip / "flow_bwd" / f"{t}.png") for t in range(frames)]
        assert not fwd[0].any() and not bwd[0].any()
        for t in range(1, frames):
            assert not fwd[t][r.instances[t - 1] < 0].any()  # static background
            assert not bwd[t][r.instances[t] < 0].any()
            for k, obj in enumerate(scene.objects):
                prev, cur = r.instances[t - 1] == k, r.instances[t] == k
                if not obj.moving:
                    assert not fwd[t][prev].any() and not bwd[t][cur].any()
                    continue
                if not (prev.sum() == object_mask(obj, t - 1, size).sum()
                        and cur.sum() == object_mask(obj, t, size).sum()):
                    continue  # occluded: its pixels have nowhere visible to land
                for src, dst, flow in ((prev, cur, fwd[t]), (cur, prev, bwd[t])):
                    warped = _warp(src, flow)
                    near = cv2.dilate(dst.astype(np.uint8), one_px).astype(bool)
                    assert (warped & near).sum() > 0.98 * warped.sum()
                    # closing fills the 1-px holes that splatting a rotated grid leaves
                    warped = cv2.morphologyEx(warped.astype(np.uint8), cv2.MORPH_CLOSE, one_px).astype(bool)
                    assert _iou(warped, dst) > 0.88, (clip.name, t, obj.category.name)
                checked += 1
    assert checked >= 5


# ---------------------------------------------------------------- audio


def _tone_contrast(audio: np.ndarray, t0: float, t1: float, f: float) -> float:
    """Mean power in a narrow band at f over the median power of its neighbourhood."""
    seg = audio[int(t0 * SAMPLE_RATE) : int(t1 * SAMPLE_RATE)]
    power = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 4 * SAMPLE_RATE)) ** 2
    freqs = np.fft.rfftfreq(4 * SAMPLE_RATE, 1 / SAMPLE_RATE)
    half = 0.01 * f + 10
    band = power[np.abs(freqs - f) <= half]
    around = power[(np.abs(freqs - f) > 0.07 * f) & (np.abs(freqs - f) < 0.15 * f)]
    return float(band.mean() / np.median(around))


def test_sounding_objects_are_heard_and_silent_ones_are_not(dataset: Path) -> None:
    heard = silent_checked = 0
    for clip in _clips(dataset, "val") + _clips(dataset, "test"):
        audio = _read_wav(clip / "audio.wav")
        objects = json.loads((clip / "clip.json").read_text())["objects"]
        loud = [category_by_name(o["category"]) for o in objects if o["sound_interval"]]
        for o in objects:
            cat = category_by_name(o["category"])
            if o["sound_interval"]:
                on, off = o["sound_interval"]
                if off - on >= 0.3:
                    for f, w in partials(cat):
                        if w >= 0.3:  # the template's strong partials are all present
                            assert _tone_contrast(audio, on + 0.02, off - 0.02, f) > 6, (clip.name, cat.name, f)
                    heard += 1
            elif cat.colour not in {c.colour for c in loud} and not any(
                abs(np.log(cat.f0 / f)) < 0.05 for c in loud for f, _ in partials(c)
            ):
                assert _tone_contrast(audio, 0.0, len(audio) / SAMPLE_RATE, cat.f0) < 3, (clip.name, cat.name)
                silent_checked += 1
    assert heard >= 5 and silent_checked >= 3


# ---------------------------------------------------------------- labels


def test_labels_mark_only_sounding_objects_and_flags_follow_intervals(dataset: Path) -> None:
    for row in _metadata(dataset):
        clip = dataset / "synth" / row["uid"]
        meta = json.loads((clip / "clip.json").read_text())
        scene, r = _rerender(clip)
        for o in meta["objects"]:
            if o["sound_interval"] is None:
                assert not any(o["sounding"])
            else:
                on, off = o["sound_interval"]
                assert o["sounding"] == [on <= t < off for t in meta["frame_times"]]
                assert any(o["sounding"])
        names = []
        for o in meta["objects"]:
            if any(o["sounding"]) and o["category"] not in names:
                names.append(o["category"])
        assert row["a_obj"] == "_".join(names)
        for i in range(FRAMES):
            label = cv2.imread(str(clip / "labels_semantic" / f"{i}.png"), 0)
            for k, o in enumerate(meta["objects"]):
                visible = r.instances[i] == k
                expected = category_by_name(o["category"]).index if o["sounding"][i] else 0
                assert (label[visible] == expected).all()
            assert (label[r.instances[i] < 0] == 0).all()


def test_scene_statistics() -> None:
    """Over many sampled scenes: counts, twins, moving/still sounders, onsets, SNR."""
    seen = {"still_sounder": 0, "moving_sounder": 0, "starts": 0, "stops": 0, "twin": 0, "overlap": 0}
    n_obj, n_snd, snrs = set(), set(), []
    for i in range(300):
        s = sample_scene(clip_rng("test", 7, i), "test", 10, 5.0, 224)
        loud = [o for o in s.objects if o.sound_interval]
        n_obj.add(len(s.objects))
        n_snd.add(len(loud))
        snrs.append(s.snr_db)
        for o in loud:
            seen["moving_sounder" if o.moving else "still_sounder"] += 1
            seen["starts"] += o.sound_interval[0] > 0
            seen["stops"] += o.sound_interval[1] < s.audio_duration
            twins = [q for q in s.objects if q.sound_interval is None and q.category == o.category]
            if twins:
                seen["twin"] += 1
                assert o.moving and not any(q.moving for q in twins)
        for a in range(len(s.objects)):
            for b in range(a + 1, len(s.objects)):
                p, q = s.objects[a], s.objects[b]
                gap = np.linalg.norm(p.centres - q.centres, axis=1).min()
                seen["overlap"] += gap < p.radius + q.radius
    assert n_obj == {1, 2, 3, 4} and n_snd == {0, 1, 2, 3}
    assert min(snrs) >= 0 and max(snrs) <= 30 and max(snrs) - min(snrs) > 20
    assert all(v >= 10 for v in seen.values()), seen


# ---------------------------------------------------------------- determinism, CLI


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    trees = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        rows = [generate_clip(tmp_path / name, "val", seed, i, frames=4, size=64) for i in range(3)]
        write_dataset_files(tmp_path / name, "val", seed, rows)
        trees.append(_tree(tmp_path / name))
    assert trees[0] == trees[1]
    a = {k.split("/", 2)[-1]: v for k, v in trees[0].items() if k.startswith("synth/")}
    c = {k.split("/", 2)[-1]: v for k, v in trees[2].items() if k.startswith("synth/")}
    assert a.keys() == c.keys() and a != c


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train" / "make_synth.py"), *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def test_cli_builds_one_dataset_and_reruns_replace_rows(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    common = ["--out", str(out), "--seed", "0", "--size", "64", "--frames", "3"]
    for split, workers in (("train", "1"), ("val", "2"), ("test", "1")):
        res = _cli("--split", split, "--clips", "3", "--workers", workers, *common)
        assert res.returncode == 0, res.stderr
    rows = _metadata(out)
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"] * 3 + ["test"] * 3
    assert all((out / "synth" / r["uid"] / "clip.json").exists() for r in rows)
    assert _cli("--split", "val", "--clips", "2", *common).returncode == 0
    rows = _metadata(out)
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"] * 2 + ["test"] * 3
    assert not (out / "synth" / "val-0-00002").exists()
    assert not any(p.name.startswith(".") for p in (out / "synth").iterdir())
    bad = _cli("--split", "dev", "--clips", "3", *common)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    bad = _cli("--split", "val", "--clips", "-1", *common)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- the reader

def test_synthavs_reads_through_the_avsbench_reader(dataset: Path) -> None:
    from avss_sdk.data.avsbench import AVSSDataset

    data = AVSSDataset(dataset, "test")
    assert len(data) == CLIPS
    assert data.class_names[1:] == [c.name for c in CATEGORIES]
    assert {data.class_names[i] for i in data.novel_ids} == {c.name for c in NOVEL}
    clip = data[0]
    scene, rendered = _rerender(dataset / "synth" / clip.uid)
    assert clip.frames.shape == (FRAMES, SIZE, SIZE, 3) and clip.label_valid.all()
    assert np.array_equal(clip.labels, rendered.labels)
    assert np.allclose(clip.flow, rendered.flow_fwd, atol=1 / 64)
    assert np.allclose(clip.flow_backward, rendered.flow_bwd, atol=1 / 64)
    assert np.allclose(clip.frame_times, scene.frame_times)
    assert clip.audio.shape[0] == round(scene.audio_duration * SAMPLE_RATE)
    assert clip.scene == (dataset / "synth" / clip.uid / "scene.txt").read_text().strip()
    # Every frame has a full causal window: frame 0's ends 0.96 s into the audio.
    assert clip.audio_window(0).shape == (int(0.96 * SAMPLE_RATE),)
    assert np.array_equal(clip.audio_window(0), clip.audio[: int(0.96 * SAMPLE_RATE)])


def test_leftovers_of_a_killed_run_are_cleaned_up(tmp_path: Path) -> None:
    rows = [generate_clip(tmp_path, "val", 9, 0, frames=2, size=48)]
    killed = [tmp_path / "synth" / ".tmp-val-9-00001-4242", tmp_path / "synth" / ".old-val-9-00000-4242"]
    other_seed = tmp_path / "synth" / ".tmp-val-8-00000-4242"
    for folder in (*killed, other_seed):
        (folder / "frames").mkdir(parents=True)
    write_dataset_files(tmp_path, "val", 9, rows)
    assert not any(folder.exists() for folder in killed)
    assert other_seed.exists()  # another (split, seed) may still be running
    assert (tmp_path / "synth" / "val-9-00000" / "audio.wav").is_file()
