"""A checkpoint is data: a planted pickle that would run a command never runs, from any entry point.

Every program that loads checkpoints goes through ``read_checkpoint``; these tests plant a
file whose unpickling would create a marker file and check, entry point by entry point,
that the marker never appears and the program says what is wrong instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from avss_sdk.modeling.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, load_model, read_checkpoint

ROOT = Path(__file__).resolve().parent.parent


class _RunsCommand:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> Path:
    """A file that looks like an SSP-OV checkpoint and would run ``touch marker`` when unpickled."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": {}, "model": {},
               "step": 1, "optimizer": _RunsCommand(marker)}
    torch.save(payload, path)
    return path


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    return plant(tmp_path / "hostile.pt", marker), marker


def test_the_planted_file_does_run_code_when_unpickled(hostile):
    """The control: the payload is real, so the tests below would see it if it ran."""
    path, marker = hostile
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_read_checkpoint_and_load_model_refuse_it(hostile):
    path, marker = hostile
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_model(path)
    assert not marker.exists()


def test_export_model_refuses_it(hostile, tmp_path):
    from avss_sdk.export.export_onnx import export_model

    path, marker = hostile
    with pytest.raises(CheckpointError):
        export_model(path, tmp_path / "export")
    assert not marker.exists()


def test_torch_backend_refuses_a_planted_checkpoint_behind_a_manifest(tmp_path):
    """A manifest whose recorded hash matches the planted file: the hash check passes, the load must not."""
    import avss_sdk
    from avss_sdk.runtime.manifest import file_hash

    shipped = ROOT / "avss_sdk" / "models" / "default"
    export = tmp_path / "export"
    shutil.copytree(shipped, export)
    marker = tmp_path / "code-ran"
    checkpoint = plant(tmp_path / "model.pt", marker)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["model"]["checkpoint"] = "../model.pt"
    manifest["model"]["hash"] = file_hash(checkpoint)
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(avss_sdk.AvssError):
        avss_sdk.Segmenter(vocab=["cat"], engines=export, backend="torch")
    assert not marker.exists()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVSS_SDK_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


TINY_TRAIN = ["--set", "model.image_size=64", "--set", "optim.steps=2", "--set", "optim.batch_size=2"]

ENTRY_POINTS = {
    "evaluate": lambda ckpt, tmp: ["train/evaluate.py", "--checkpoint", ckpt, "--data", str(tmp / "data")],
    "build_engines": lambda ckpt, tmp: ["export/build_engines.py", "--checkpoint", ckpt, "--out", str(tmp / "e"),
                                        "--onnx-only", "--quiet"],
    "ship": lambda ckpt, tmp: ["train/ship.py", "--checkpoint", ckpt, "--out", str(tmp / "shipped.pt")],
    "segment_clip": lambda ckpt, tmp: ["samples/segment_clip.py", "--checkpoint", ckpt, "--data", str(tmp / "data")],
    "model_stats": lambda ckpt, tmp: ["benchmarks/model_stats.py", "--checkpoint", ckpt],
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_command_line_entry_points_refuse_it(name, hostile, tmp_path):
    path, marker = hostile
    done = _run([str(ROOT / a) if a.endswith(".py") else a for a in ENTRY_POINTS[name](str(path), tmp_path)],
                tmp_path)
    assert not marker.exists(), f"{name} ran the planted command"
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "could run code" in done.stderr + done.stdout


def test_training_does_not_resume_from_a_planted_last_checkpoint(tmp_path, tiny_synth):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "code-ran"
    plant(run / "last.pt", marker)
    done = _run([str(ROOT / "train" / "train.py"), "--out", str(run), "--quiet", *TINY_TRAIN,
                 "--set", f"data.root={tiny_synth}"], tmp_path)
    assert not marker.exists()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "could run code" in done.stderr + done.stdout


def test_ablation_does_not_read_a_planted_model(tmp_path):
    marker = tmp_path / "code-ran"
    variant = tmp_path / "ablation" / "full" / "seed0"
    variant.mkdir(parents=True)
    plant(variant / "model.pt", marker)
    done = _run([str(ROOT / "train" / "ablate.py"), "--config", str(ROOT / "train/configs/ablation.yaml"), "--only", "full", "--seeds", "0", "--quiet", "--out", str(tmp_path / "table"),
                 "--set", f"out={tmp_path / 'ablation'}", "--data", str(tmp_path / "data")], tmp_path)
    assert not marker.exists()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "could run code" in done.stderr + done.stdout
