"""Training on CPU: the loss falls, a killed run resumes to the same weights, evaluation and CLIs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avss_sdk.fileio import file_hash
from avss_sdk.modeling.checkpoint import build_model, read_checkpoint, save_checkpoint
from avss_sdk.modeling.ssp_ov import ModelConfig
from avss_sdk.postprocess import GUIDED_FILTER_CANDIDATES, GuidedFilter
from avss_sdk.runtime.manifest import Manifest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.image_size=64", "model.hidden_dim=32", "model.audio_dim=32", "model.pretrained_backbone=false",
        "model.num_queries=4", "model.decoder_layers=1", "model.heads=2", "model.flow_width=8",
        "optim.batch_size=4", "optim.warmup_steps=2", "optim.mask_size=32", "optim.threads=1", "log_every=1"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tiny_synth) -> Path:
    return tiny_synth


def _cmd(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train" / script), *args]


def _train_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    sets = [*TINY, f"data.root={data}", f"optim.steps={steps}", *extra]
    return _cmd("train.py", "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)])


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory) -> Path:
    """One 40-step run of train.py: the loss test reads its log, the evaluation, shipping and
    sample tests its model.pt (one training process instead of four)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = _run(_train_args(synth, out, 40, "optim.lr=2e-3"))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_loss_falls(trained):
    out = trained
    losses = [r["loss"] for r in _log(out)]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    final = read_checkpoint(out / "model.pt")
    assert final["step"] == 40 and final["vocabulary"]  # base vocabulary recorded with the model


def test_killed_run_resumes_to_the_same_weights(synth, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra = ("checkpoint_every=2",)
    assert _run(_train_args(synth, straight, 12, *extra)).returncode == 0

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_train_args(synth, killed, 12, *extra), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        log = killed / "log.jsonl"
        if log.is_file() and any(json.loads(line)["step"] >= 3 for line in log.read_text().splitlines()):
            proc.send_signal(signal.SIGKILL)  # a hard kill: no chance to save anything
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    step_at_kill = read_checkpoint(killed / "last.pt")["step"]
    assert 2 <= step_at_kill < 12
    orphan = killed / ".last.pt.4194305.tmp"  # what a kill mid-write leaves (no such process)
    orphan.write_bytes(b"half a checkpoint")

    resumed = _run(_train_args(synth, killed, 12, *extra))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {killed} from step {step_at_kill}" in resumed.stdout
    assert not list(killed.glob(".*.tmp"))
    assert [r["step"] for r in _log(killed)] == list(range(1, 13))  # replayed steps logged once
    a = read_checkpoint(straight / "model.pt")["model"]
    b = read_checkpoint(killed / "model.pt")["model"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name


def test_warm_start_keeps_the_weights_and_may_only_add_the_heard_gate(synth, tmp_path):
    first, second, wrong = tmp_path / "first", tmp_path / "second", tmp_path / "wrong"
    assert _run(_train_args(synth, first, 2)).returncode == 0
    # A learning rate of ~0: the warm-started run's weights are the first run's, plus the new gate.
    result = _run(_train_args(synth, second, 1, f"init={first / 'model.pt'}", "model.use_heard_gate=true",
                              "optim.lr=1e-12", "optim.weight_decay=0"))
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = read_checkpoint(first / "model.pt")["model"], read_checkpoint(second / "model.pt")["model"]
    assert set(b) - set(a) == {"mask_decoder.heard_weight"}
    for name in a:
        if a[name].is_floating_point() and "running" not in name:  # batch-norm statistics move in train mode
            assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name
    refused = _run(_train_args(synth, wrong, 1, f"init={first / 'model.pt'}", "model.hidden_dim=16"))
    assert refused.returncode != 0 and "another model config (['hidden_dim'] differ)" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_cache_prepared_by_worker_processes_equals_the_serial_one(synth, tmp_path):
    from avss_sdk.data.avsbench import AVSSDataset
    from avss_sdk.training.data import prepare_frames

    dataset = AVSSDataset(synth, split="train", classes="base", load_flow=True)
    serial = prepare_frames(dataset, 32, tmp_path / "serial", progress=False, workers=1)
    parallel = prepare_frames(dataset, 32, tmp_path / "parallel", progress=False, workers=2)
    for name in ("frames", "labels", "log_mel", "flow", "valid", "moving"):
        assert np.array_equal(np.asarray(getattr(serial, name)), np.asarray(getattr(parallel, name))), name
    assert serial.scenes == parallel.scenes and serial.uids == parallel.uids
    assert len(serial.uids) == len(dataset) and serial.valid.any()


def test_cache_preparation_leaves_a_running_preparations_folder_alone(synth, tmp_path):
    """Two evaluations of one split at once: neither deletes the other's half-written arrays."""
    from avss_sdk.data.avsbench import AVSSDataset
    from avss_sdk.training.data import prepare_frames

    dataset = AVSSDataset(synth, split="val", classes="all", load_flow=True)
    first = prepare_frames(dataset, 32, tmp_path / "cache", progress=False, workers=1)
    name = Path(first.frames.filename).parent.name
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        try:
            killed = tmp_path / "cache" / f".tmp-{name}-{ended.pid}"
            busy = tmp_path / "cache" / f".tmp-{name}-{running.pid}"
            killed.mkdir()
            busy.mkdir()
            shutil.rmtree(tmp_path / "cache" / name)  # prepared again: the stale folders are looked at
            again = prepare_frames(dataset, 32, tmp_path / "cache", progress=False, workers=1)
            assert not killed.exists() and busy.exists()
            assert np.array_equal(np.asarray(again.frames), np.asarray(first.frames))
        finally:
            running.kill()


def test_evaluate_cli_writes_all_metrics(synth, trained, tmp_path):
    out = trained
    report = tmp_path / "eval.json"
    result = _run(_cmd("evaluate.py", "--checkpoint", str(out / "model.pt"), "--data", str(synth),
                       "--split", "test", "--json", str(report), "--quiet"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "base mIoU" in result.stdout and "novel mIoU" in result.stdout
    payload = json.loads(report.read_text())
    for mode in ("with_scene_text", "without_scene_text"):
        scores = payload["results"][mode]
        assert scores["scores"]["frames"] == 12
        for key in ("base_miou", "novel_miou", "harmonic_miou"):
            assert 0 <= scores["scores"][key] <= 100
        assert 0 <= scores["avss_miou"] <= 100 and 0 <= scores["avss_fscore"] <= 100
        assert {row["split"] for row in scores["per_class"]} == {"base", "novel"}


def test_ship_writes_checkpoint_and_onnx_in_step_and_calibrates_the_threshold(synth, tmp_path):
    """ship.py replaces a shipped checkpoint and its ONNX export together, as a new default would be,
    with the INT8 step on the calibration data; a failed ship touches neither; evaluation and both
    runtime backends use what was shipped."""
    import shutil

    from avss_sdk.segmenter import DEFAULT_ENGINES, Segmenter

    run, shipped = tmp_path / "run", tmp_path / "models" / "model.pt"
    onnx = shipped.parent / "default"
    shutil.copytree(DEFAULT_ENGINES, onnx)  # what is there before: another model's export
    shipped.write_bytes(b"the previous checkpoint")
    first = (file_hash(shipped), file_hash(onnx / "manifest.json"))
    torch.manual_seed(0)  # shipping needs a model, not a trained one: an untrained tiny one is enough
    tiny = ModelConfig(image_size=64, hidden_dim=32, audio_dim=32, pretrained_backbone=False, num_queries=4,
                       decoder_layers=1, heads=2, flow_width=8)
    save_checkpoint(run / "model.pt", build_model(tiny), {"step": 0})
    result = _run(_cmd("ship.py", "--checkpoint", str(run / "model.pt"), "--calibrate", str(synth),
                       "--int8-clips", "1", "--int8-check-clips", "1", "--int8-calibrator", "minmax",
                       "--out", str(shipped)), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = read_checkpoint(shipped)
    assert all(v.dtype != torch.float32 for v in payload["model"].values())  # stored as float16
    threshold = payload["foreground_threshold"]
    assert 0 < threshold < 1 and "val harmonic mIoU, best five of threshold and filter" in result.stdout
    assert f"chose threshold {threshold} with " in result.stdout
    assert "(best without a filter: no filter, 0." in result.stdout
    guided = payload["guided_filter"]  # chosen with the threshold: a filter's settings, or None
    assert guided is None or GuidedFilter.from_dict(guided) in GUIDED_FILTER_CANDIDATES
    manifest = Manifest.load(onnx)  # replaced with the checkpoint, in step
    assert file_hash(shipped) != first[0] and file_hash(onnx / "manifest.json") != first[1]
    assert manifest.model_hash == file_hash(shipped) and manifest.postprocess.foreground_threshold == threshold
    assert manifest.postprocess.guided_filter == guided
    assert manifest.path(manifest.model.checkpoint).resolve() == shipped.resolve()
    assert not [p for p in shipped.parent.iterdir() if p.name.startswith(".ship-")]  # no staging left behind
    assert manifest.int8 is not None and manifest.int8.calibration.clips == 1  # the INT8 step ran on --calibrate
    assert set(manifest.int8.stages) == {"flow", "image_encoder", "audio_encoder"}
    assert manifest.int8.calibration.method == "minmax" and {v.method for v in manifest.int8.stages.values()} == {"minmax"}
    int8_files = {p.name for p in (onnx / "onnx").glob("*.int8*.onnx")}
    assert int8_files == {f"{s}.{k}.onnx" for s in manifest.int8_stages for k in ("int8", "int8_cpu")}

    shipped_files = (file_hash(shipped), file_hash(onnx / "onnx" / "vta.fp32.onnx"))
    done = _run(_cmd("ship.py", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(shipped)))
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert (file_hash(shipped), file_hash(onnx / "onnx" / "vta.fp32.onnx")) == shipped_files

    report = tmp_path / "eval.json"
    assert _run(_cmd("evaluate.py", "--checkpoint", str(shipped), "--data", str(synth), "--json", str(report),
                     "--scene-text", "none", "--quiet")).returncode == 0
    assert json.loads(report.read_text())["foreground_threshold"] == threshold
    for backend in ("onnxruntime", "torch"):
        with Segmenter(onnx, vocab=["red star"], backend=backend, cache_dir=tmp_path / "cache",
                       log=lambda m: None) as segmenter:
            labels = segmenter.segment(np.zeros((64, 64, 3), np.uint8), np.zeros(15600, np.float32)).labels
        assert labels.shape == (64, 64)


def test_evaluate_cli_scores_the_torch_free_runtime(synth, tmp_path):
    report = tmp_path / "runtime.json"
    result = _run(_cmd("evaluate.py", "--runtime", "onnxruntime", "--flow", "dis", "--precision", "fp32",
                       "--data", str(synth), "--json", str(report), "--quiet"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"runtime onnxruntime \S+ \(CPUExecutionProvider, fp32\), flow dis: 12 frames", result.stdout)
    payload = json.loads(report.read_text())
    assert payload["runtime"].endswith("(CPUExecutionProvider, fp32)") and payload["scores"]["frames"] == 12


def test_ablate_writes_a_table_over_seeds_and_reuses_finished_runs(synth, tmp_path):
    sets = [*TINY, f"data.root={synth}", "optim.steps=2", f"out={tmp_path / 'runs'}"]
    out = tmp_path / "ablation"
    ablate = _cmd("ablate.py", "--only", "full", "--only", "no flow pre-mask", "--out", str(out), "--quiet",
                  *[a for s in sets for a in ("--set", s)])
    result = _run([*ablate, "--seeds", "0", "1"])
    assert result.returncode == 0, result.stderr[-2000:]
    table = (out.with_suffix(".md")).read_text()
    assert re.search(r"\| full \| 0, 1 \| [\d.]+ \([\d.]+-[\d.]+\) \|", table), table
    assert "| no flow pre-mask | 0, 1 |" in table and "no scene prompt" not in table
    assert re.search(r"\| no flow pre-mask \| [+-][\d.]+ \([+-][\d.]+, [+-][\d.]+: (same sign on every seed|signs differ)\) \|",
                     table), table
    payload = json.loads(out.with_suffix(".json").read_text())
    runs = payload["no flow pre-mask"]
    assert sorted(runs) == ["0", "1"]
    assert runs["1"]["train_config"]["model"]["use_premask"] is False and runs["1"]["train_config"]["optim"]["seed"] == 1
    first = tmp_path / "runs" / "no_flow_pre_mask" / "seed0"
    stamps = {p.name: p.stat().st_mtime_ns for p in (first / "model.pt", first / "ablation_result.json")}
    again = _run([*ablate, "--seeds", "0"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (first / "model.pt", first / "ablation_result.json")} == stamps
    assert "(one seed)" in out.with_suffix(".md").read_text()
    bad = _run([*ablate, "--seeds", "0", "0"])
    assert bad.returncode != 0 and "--seeds must be distinct" in bad.stderr


def test_segment_clip_sample_and_model_stats(synth, trained, tmp_path):
    run = trained
    picture = tmp_path / "seg.png"
    result = _run([sys.executable, str(ROOT / "samples" / "segment_clip.py"), "--checkpoint", str(run / "model.pt"),
                   "--data", str(synth), "--index", "1", "--out", str(picture)])
    assert result.returncode == 0, result.stderr[-2000:]
    import cv2

    image = cv2.imread(str(picture))
    assert image.shape == (3 * 64, 4 * 64, 3)  # frames, truth, prediction x 4 frames
    bad_vocab = _run([sys.executable, str(ROOT / "samples" / "segment_clip.py"), "--checkpoint", str(run / "model.pt"),
                      "--data", str(synth), "--vocab", " , "])
    assert bad_vocab.returncode != 0 and "--vocab is empty" in bad_vocab.stderr
    stats = _run([sys.executable, str(ROOT / "benchmarks" / "model_stats.py"), "--checkpoint", str(run / "model.pt")])
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert "| image_encoder |" in stats.stdout and "**per frame**" in stats.stdout


def test_cli_errors_are_clear(synth, tmp_path):
    bad_key = _run(_cmd("train.py", "--set", "model.hidden_dims=3", "--out", str(tmp_path / "x")))
    assert bad_key.returncode != 0 and "unknown keys in 'model'" in bad_key.stderr
    assert "Traceback" not in bad_key.stderr
    missing = _run(_cmd("evaluate.py", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(synth)))
    assert missing.returncode != 0 and "checkpoint not found" in missing.stderr
    not_a_model = tmp_path / "other.pt"
    torch.save({"weights": 1}, not_a_model)
    other = _run(_cmd("evaluate.py", "--checkpoint", str(not_a_model), "--data", str(synth)))
    assert other.returncode != 0 and "not an SSP-OV checkpoint" in other.stderr
    assert "Traceback" not in other.stderr
    assert _run(_cmd("train.py", "--help")).returncode == 0


def test_avsbench_layout_trains_without_ground_truth_flow(avsbench_root, tmp_path):
    """AVSBench-semantic (no flow files) prepares and trains on its base classes: photometric flow loss."""
    from avss_sdk.data.avsbench import AVSSDataset
    from avss_sdk.training.data import prepare_frames

    data = prepare_frames(AVSSDataset(avsbench_root, "train", classes="base", load_flow=True), 64, tmp_path / "cache",
                          progress=False)
    assert data.flow is None and data.uids == ["v1s_train"]  # v2_train sounds a novel class: dropped
    assert data.valid[0].tolist() == [True, False, False, False, False]  # v1s train: frame 0 only
    out = tmp_path / "run"
    result = _run(_train_args(avsbench_root, out, 3, "data.cache=" + str(tmp_path / "cache")))
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(r["flow"] > 0 for r in _log(out))  # the photometric loss is what trains the flow here


from test_avsbench_reader import avsbench_root  # noqa: E402,F401  (the official-layout fixture)


def test_torchrun_distributed_data_parallel_on_cpu(synth, tmp_path):
    """Two processes (gloo on CPU: the same DistributedDataParallel path GPUs take with nccl)."""
    out = tmp_path / "ddp"
    train_args = _train_args(synth, out, 2)[1:]  # drop the interpreter: torchrun runs the script
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           *train_args]
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(out / "model.pt")["step"] == 2
    assert len(_log(out)) == 2  # only rank 0 logs


def test_evaluate_says_n_a_for_a_breakdown_without_frames():
    import importlib.util

    from avss_sdk.training.evaluate import SplitScores

    spec = importlib.util.spec_from_file_location("evaluate_cli", ROOT / "train" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.breakdown(SplitScores(0.0, 0.0, 0.0, 0)) == "base    n/a  novel    n/a"
    assert cli.breakdown(SplitScores(50.0, 25.0, 33.3, 4)) == "base  50.00  novel  25.00"
