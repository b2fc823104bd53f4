"""samples/show_clip.py draws a generated clip, and refuses bad arguments cleanly."""

import os
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's avss_sdk, as an installed one would be
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_draws_frames_and_flow(tmp_path):
    data = tmp_path / "synth"
    made = run("train/make_synth.py", "--out", str(data), "--split", "test", "--clips", "2",
               "--seed", "5", "--size", "64", "--frames", "4")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "clip.png"
    drawn = run("samples/show_clip.py", "--data", str(data), "--index", "1", "--out", str(out))
    assert drawn.returncode == 0, drawn.stderr
    sheet = cv2.imread(str(out))
    assert sheet.shape == (3 * 64, 4 * 64, 3)  # frames, labels, flow; 4 frames wide


def test_bad_index_and_missing_data_are_clean_errors(tmp_path):
    missing = run("samples/show_clip.py", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "label2idx.json" in missing.stderr
    assert "Traceback" not in missing.stderr
