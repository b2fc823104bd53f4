"""The AVSBench-semantic reader on a small fixture in the official layout, written here."""

import csv
import json
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from avss_sdk.data.avsbench import (
    AVSBENCH_OV_NOVEL,
    AVSSDataset,
    avsbench_palette,
    decode_color_label,
)
from avss_sdk.metrics import IGNORE_INDEX

AVSBENCH_CLASSES = (
    "background accordion airplane axe baby bassoon bell bird boat boy bus car cat cello clarinet "
    "clipper clock dog donkey drum duck elephant emergency-car erhu flute frying-food girl goose "
    "guitar gun guzheng hair-dryer handpan harmonica harp helicopter hen horse keyboard leopard lion "
    "man marimba missile-rocket motorcycle mower parrot piano pig pipa saw saxophone sheep sitar "
    "sorna squirrel tabla tank tiger tractor train trombone truck trumpet tuba ukulele utv "
    "vacuum-cleaner violin wolf woman"
).split()
INDEX = {name: i for i, name in enumerate(AVSBENCH_CLASSES)}
SIZE = (36, 48)  # native frames are not square, as in the release


def write_wav(path: Path, signal: np.ndarray, rate: int, channels: int) -> None:
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.repeat(pcm, channels).tobytes())


def write_clip(root: Path, subset: str, uid: str, seconds: int, label_maps: dict[int, np.ndarray]) -> None:
    clip = root / subset / uid
    (clip / "frames").mkdir(parents=True)
    (clip / "labels_rgb").mkdir()
    palette = avsbench_palette()
    for t in range(SUBSET_FRAMES[subset]):
        frame = np.full((*SIZE, 3), 10 * t, dtype=np.uint8)
        cv2.imwrite(str(clip / "frames" / f"{t}.jpg"), frame)
    for t, label in label_maps.items():
        cv2.imwrite(str(clip / "labels_rgb" / f"{t}.png"), cv2.cvtColor(palette[label], cv2.COLOR_RGB2BGR))
    # 44.1 kHz stereo, as the release ships: a 1 kHz tone the reader must resample to 16 kHz mono.
    rate = 44100
    time = np.arange(seconds * rate) / rate
    write_wav(clip / "audio.wav", 0.5 * np.sin(2 * np.pi * 1000 * time), rate, channels=2)


SUBSET_FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}


def label_with(*classes: str) -> np.ndarray:
    """A label map with one vertical band per class, background around them."""
    label = np.zeros(SIZE, dtype=np.uint8)
    for i, name in enumerate(classes):
        label[4:30, 4 + 10 * i : 12 + 10 * i] = INDEX[name]
    return label


@pytest.fixture(scope="module")
def avsbench_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("AVSBench-semantic")
    (root / "label2idx.json").write_text(json.dumps(INDEX))
    rows = [
        ("v1s_train", "guitar", "train", "v1s", 5, {0: label_with("guitar")}),
        ("v1s_test", "dog", "test", "v1s", 5, {t: label_with("dog") for t in range(5)}),
        ("v1m_test", "man_piano", "test", "v1m", 5, {t: label_with("man", "piano") for t in range(5)}),
        # The annotation marks a violin that the clip's a_obj does not list (OV-AVSS's rule).
        ("v2_test", "cello", "test", "v2", 10, {t: label_with("cello", "violin") for t in range(10)}),
        ("v2_train", "cello_woman", "train", "v2", 10, {t: label_with("cello", "woman") for t in range(10)}),
    ]
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for uid, a_obj, split, subset, seconds, labels in rows:
            writer.writerow([uid.split("_")[0], uid, 0, 0, a_obj, split, subset])
            write_clip(root, subset, uid, seconds, labels)
    return root


def test_palette_is_the_official_bit_palette():
    palette = avsbench_palette()
    assert palette.shape == (71, 3)
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (128, 0, 0)
    assert tuple(palette[2]) == (0, 128, 0)
    assert tuple(palette[4]) == (0, 0, 128)
    assert tuple(palette[8]) == (64, 0, 0)  # index 8's bit 3 lands one bit lower in R
    assert len({tuple(c) for c in palette}) == 71


def test_colour_labels_round_trip():
    palette = avsbench_palette()
    label = np.arange(71, dtype=np.uint8).reshape(1, 71)
    assert np.array_equal(decode_color_label(palette[label], palette), label)
    unknown = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert decode_color_label(unknown, palette)[0, 0] == 0


def test_ov_split_is_40_base_30_novel(avsbench_root):
    data = AVSSDataset(avsbench_root, "test")
    assert data.num_classes == 71
    assert len(data.base_ids) == 40 and len(data.novel_ids) == 30
    assert not set(data.base_ids) & set(data.novel_ids)
    assert 0 not in data.base_ids + data.novel_ids
    assert {data.class_names[i] for i in data.novel_ids} == set(AVSBENCH_OV_NOVEL)


def test_frames_labels_audio_and_times(avsbench_root):
    data = AVSSDataset(avsbench_root, "test")
    clips = {clip.uid: clip for clip in (data[i] for i in range(len(data)))}
    assert set(clips) == {"v1s_test", "v1m_test", "v2_test"}

    v1m = clips["v1m_test"]
    assert v1m.frames.shape == (5, *SIZE, 3) and v1m.frames.dtype == np.uint8
    assert v1m.labels.shape == (5, *SIZE)
    assert v1m.label_valid.all()
    assert set(np.unique(v1m.labels)) == {0, INDEX["man"], INDEX["piano"]}
    assert v1m.audible == ("man", "piano")
    assert np.array_equal(v1m.labels[2], label_with("man", "piano"))

    v2 = clips["v2_test"]
    assert v2.frames.shape[0] == 10 and v2.label_valid.all()
    # Frame i is shown at i + 1 s, so its causal window is AVSBench's second i.
    assert np.allclose(v2.frame_times, np.arange(1, 11))
    assert v2.audio.shape[0] == pytest.approx(10 * 16000, abs=32)
    window = v2.audio_window(0)
    assert window.shape == (int(0.96 * 16000),)
    spectrum = np.abs(np.fft.rfft(window))
    peak_hz = np.argmax(spectrum) * 16000 / window.shape[0]
    assert abs(peak_hz - 1000) < 5
    assert np.abs(window).max() == pytest.approx(0.5, abs=0.02)


def test_v1s_train_counts_frame_zero_only(avsbench_root):
    data = AVSSDataset(avsbench_root, "train", subsets=("v1s",))
    clip = data[0]
    assert clip.label_valid.tolist() == [True, False, False, False, False]
    assert (clip.labels[1:] == IGNORE_INDEX).all()
    assert INDEX["guitar"] in clip.labels[0]


def test_audible_only_rule_turns_unlisted_classes_to_background(avsbench_root):
    plain = AVSSDataset(avsbench_root, "test", subsets=("v2",))[0]
    assert INDEX["violin"] in plain.labels
    ruled = AVSSDataset(avsbench_root, "test", subsets=("v2",), audible_only=True)[0]
    assert INDEX["violin"] not in ruled.labels
    assert INDEX["cello"] in ruled.labels
    assert np.array_equal(ruled.labels == INDEX["cello"], plain.labels == INDEX["cello"])


def test_base_classes_only_drops_clips_with_novel_sound(avsbench_root):
    every = AVSSDataset(avsbench_root, "train")
    base = AVSSDataset(avsbench_root, "train", classes="base")
    assert {r.uid for r in every.records} == {"v1s_train", "v2_train"}
    assert {r.uid for r in base.records} == {"v1s_train"}  # cello is novel


def test_resize_to_model_input(avsbench_root):
    clip = AVSSDataset(avsbench_root, "test", subsets=("v1s",), size=(24, 24))[0]
    assert clip.frames.shape == (5, 24, 24, 3)
    assert clip.labels.shape == (5, 24, 24)
    assert set(np.unique(clip.labels)) <= {0, INDEX["dog"]}


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="label2idx.json"):
        AVSSDataset(tmp_path, "train")
