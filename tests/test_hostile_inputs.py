"""Hostile files and odd inputs: each fails at once with a clear SDK error, never a crash or a wrong answer.

Manifests with bad sections, ONNX files changed or swapped, a broken text cache, audio of
every dtype and layout, frames of no size, words that are not text, a camera OpenCV would
crash on, a server that never answers, a vocabulary job cancelled by close(), and
leftovers of a killed training run. The models are the shipped default model, run by
ONNX Runtime (and torch where the fallback is the point).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

import avss_sdk
from avss_sdk.capture import CameraError, CameraSource, CaptureError, FileSource, MicrophoneError
from avss_sdk.errors import ClosedError, InputError
from avss_sdk.media import as_mono
from avss_sdk.runtime.backends import BackendError, OnnxRuntimeBackend, make_backend
from avss_sdk.runtime.manifest import Manifest, ManifestError
from avss_sdk.runtime.text_cache import TextCacheError, TextEmbeddingCache
from avss_sdk.segmenter import DEFAULT_ENGINES, Segmenter
from avss_sdk.stream import Stream, StreamError
from avss_sdk.vocab import VocabularyError, clean_scene, clean_vocabulary

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_clip.mp4"
SILENT = lambda message: None  # noqa: E731  (the SDK's log, silenced)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def segmenter(cache) -> Segmenter:
    with Segmenter(vocab=["dog", "guitar"], backend="onnxruntime", cache_dir=cache, log=SILENT) as loaded:
        yield loaded


def model_copy(tmp_path: Path, copy: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """The default model's directory re-created in ``tmp_path``: ONNX files linked (``copy``: copied)."""
    out = tmp_path / "model"
    (out / "onnx").mkdir(parents=True)
    for onnx in (DEFAULT_ENGINES / "onnx").iterdir():
        target = out / "onnx" / onnx.name
        shutil.copyfile(onnx, target) if onnx.name.split(".")[0] in copy else target.symlink_to(onnx)
    (out / "tokenizer.json").symlink_to(DEFAULT_ENGINES / "tokenizer.json")
    values = json.loads((DEFAULT_ENGINES / "manifest.json").read_text())
    values["model"]["checkpoint"] = str((DEFAULT_ENGINES / values["model"]["checkpoint"]).resolve())
    return out, values


def write(out: Path, values: dict) -> Path:
    (out / "manifest.json").write_text(json.dumps(values))
    return out


# --- the manifest -------------------------------------------------------------------------

def _set(path: str, value):
    def change(values: dict) -> None:
        *keys, leaf = path.split(".")
        node = values
        for key in keys:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(leaf) if leaf.isdigit() else leaf] = value
    return change


INT8_VERDICT = {"use": True, "pixels": 0.99, "objects": 0.98}
INT8_SECTION = {"calibration": {"data": "synthavs", "split": "val", "clips": 24, "frames": 240, "method": "minmax"},
                "min_agreement": 0.97, "check_clips": 12, "stages": {"flow": {**INT8_VERDICT, "use": False}}}

BAD_MANIFESTS = {
    "image size 0": (_set("preprocess.image_size", 0), "image_size must be a positive int"),
    "image size text": (_set("preprocess.image_size", "192"), "image_size must be a positive int"),
    "hash climbs out": (_set("model.hash", "../../outside"), "model.hash must be"),
    "hash absolute": (_set("model.hash", "/tmp/x"), "model.hash must be"),
    "other sample rate": (_set("preprocess.sample_rate", 22050), "this runtime prepares"),
    "other mel bands": (_set("preprocess.mel_bands", 80), "other preprocessing"),
    "other image mean": (_set("preprocess.image_mean", [0.485, 0.456, 0.406]), "image_mean"),
    "stride not dividing": (_set("preprocess.flow_stride", 7), "not a multiple"),
    "unknown preprocess key": (_set("preprocess.crop", 0.9), "unknown keys"),
    "template with a field": (_set("text.category_templates", ["a photo of a {0}."]), "exactly one"),
    "template without slot": (_set("text.scene_template", "a scene."), "exactly one"),
    "short no-scene embedding": (_set("text.no_scene_embedding", [0.1] * 3), "no_scene_embedding"),
    "threshold above 1": (_set("postprocess.foreground_threshold", 2), "foreground_threshold"),
    "guided filter radius 0": (_set("postprocess.guided_filter", {"radius": 0, "eps": 0.01, "subsample": 1}),
                               "radius must be an integer"),
    "guided filter text": (_set("postprocess.guided_filter", "r8"), "guided_filter"),
    "precision int8": (_set("precision", "int8"), "precision"),
    "input renamed": (_set("stages.flow.inputs.0.name", "prev"), "this runtime expects"),
    "image of another size": (_set("stages.image_encoder.inputs.0.shape", ["batch", 3, 224, 224]), "expected"),
    "embedding of another size": (_set("stages.vta.inputs.1.shape", ["vocab", 64]), "expected"),
    "tensors disagree": (_set("stages.vta.outputs.0.shape", ["batch", 64, 24, 24]), "in stage"),
    "no sha256": (_set("stages.flow.sha256", {}), "records no sha256"),
    "sha256 not hex": (_set("stages.flow.sha256", {"fp32": "z" * 64}), "records no sha256"),
    "stages not a mapping": (_set("stages", []), "stages"),
    "int8 not a mapping": (_set("int8", []), "int8 is missing or not a mapping"),
    "int8 stage used without files": (_set("int8", {**INT8_SECTION, "stages": {"vta": INT8_VERDICT}}),
                                      r"int8.stages.vta is used, but stages.vta.onnx has no \['int8', 'int8_cpu'\]"),
    "int8 unknown stage": (_set("int8", {**INT8_SECTION, "stages": {"decoder": INT8_VERDICT}}), "unknown stages"),
    "int8 use not a bool": (_set("int8", {**INT8_SECTION, "stages": {"vta": {**INT8_VERDICT, "use": "yes"}}}),
                            "true or false"),
    "int8 float layers not names": (_set("int8", {**INT8_SECTION, "stages": {"flow": {**INT8_VERDICT, "use": False,
                                                                                    "float_layers": "conv"}}}),
                                    "list of layer names"),
    "int8 share above 1": (_set("int8", {**INT8_SECTION, "stages": {"vta": {**INT8_VERDICT, "pixels": 1.5}}}),
                           "share in"),
    "int8 calibration split": (_set("int8", {**INT8_SECTION, "calibration": {**INT8_SECTION["calibration"],
                                                                              "split": "holdout"}}), "split"),
    "int8 without stages": (_set("int8", {**INT8_SECTION, "stages": {}}), "at least one"),
    "int8 unknown calibrator": (_set("int8", {**INT8_SECTION, "calibration": {**INT8_SECTION["calibration"],
                                                                               "method": "minmax,kl"}}),
                                r"some of \('minmax', 'percentile', 'entropy'\), got \['kl'\]"),
    "int8 weight bits": (_set("int8", {**INT8_SECTION, "calibration": {**INT8_SECTION["calibration"],
                                                                        "cpu_weight_bits": 4}}),
                         "cpu_weight_bits must be 7 or 8, got 4"),
    "int8 weight bits text": (_set("int8", {**INT8_SECTION, "calibration": {**INT8_SECTION["calibration"],
                                                                             "cpu_weight_bits": "7"}}),
                              "cpu_weight_bits must be 7 or 8, got '7'"),
    "int8 stage calibrator": (_set("int8", {**INT8_SECTION, "stages": {"flow": {**INT8_VERDICT, "use": False,
                                                                              "method": "mse"}}}),
                              "stage method must be one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_fails_at_load_with_what_is_wrong(case, tmp_path):
    change, message = BAD_MANIFESTS[case]
    out, values = model_copy(tmp_path)
    change(values)
    with pytest.raises(ManifestError, match=message):
        Manifest.load(write(out, values)).check_stages()  # as the segmenter loads it


def test_the_segmenter_checks_the_stages_before_loading_a_backend(tmp_path):
    out, values = model_copy(tmp_path)
    values["stages"]["mask_decoder"]["outputs"][0]["name"] = "logits"
    with pytest.raises(ManifestError, match="this runtime expects"):
        Segmenter(engines=write(out, values), vocab=["dog"], log=SILENT)


def test_the_model_hash_never_names_a_file_outside_the_cache(tmp_path):
    with pytest.raises(TextCacheError, match="hex"):
        TextEmbeddingCache("../../escaped", 4, tmp_path / "cache")
    assert not (tmp_path / "escaped.sqlite").exists() and not list(tmp_path.rglob("*.sqlite"))


def test_an_onnx_file_changed_in_place_is_named_at_load(tmp_path):
    out, values = model_copy(tmp_path, copy=("flow",))
    write(out, values)
    manifest = Manifest.load(out)
    OnnxRuntimeBackend(manifest, cache_dir=tmp_path / "cache").close()  # checked and remembered
    memo = json.loads((tmp_path / "cache" / "onnx_sha256.json").read_text())
    flow = str((out / "onnx" / "flow.fp32.onnx").resolve())
    assert memo[flow][2] == values["stages"]["flow"]["sha256"]["fp32"]
    data = bytearray((out / "onnx" / "flow.fp32.onnx").read_bytes())
    data[-100] ^= 0xFF  # a weight byte: same size, loads fine, other output
    (out / "onnx" / "flow.fp32.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"flow\.fp32\.onnx has changed since the export"):
        OnnxRuntimeBackend(manifest, cache_dir=tmp_path / "cache")


def keep_flow_fp32(values: dict) -> None:
    """The manifest's INT8 verdict for flow turned off (its FP32 entry is the one these tests swap)."""
    if "flow" in values.get("int8", {}).get("stages", {}):
        values["int8"]["stages"]["flow"]["use"] = False


def test_one_stage_swapped_for_another_is_found_at_load(tmp_path):
    out, values = model_copy(tmp_path)
    flow, vta = values["stages"]["flow"], values["stages"]["vta"]
    flow["onnx"], flow["sha256"] = vta["onnx"], vta["sha256"]  # the manifest vouches for the wrong file
    keep_flow_fp32(values)
    manifest = Manifest.load(write(out, values))
    with pytest.raises(ManifestError, match=r"vta\.fp32\.onnx has inputs .* another stage's file"):
        OnnxRuntimeBackend(manifest, cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_auto_falls_back_when_a_backend_fails_to_load(tmp_path):
    """ONNX Runtime refuses the swapped file; "auto" goes on to torch, which has the checkpoint."""
    pytest.importorskip("torch")
    out, values = model_copy(tmp_path)
    values["stages"]["flow"]["onnx"] = values["stages"]["vta"]["onnx"]
    values["stages"]["flow"]["sha256"] = values["stages"]["vta"]["sha256"]
    keep_flow_fp32(values)
    manifest = Manifest.load(write(out, values))
    messages = []
    backend = make_backend(manifest, "auto", tmp_path / "cache", log=messages.append)
    assert backend.name == "torch"
    assert "onnxruntime:" in messages[0] and "another stage's file" in messages[0]
    with pytest.raises(ManifestError):
        make_backend(manifest, "onnxruntime", tmp_path / "cache")
    values["model"]["checkpoint"] = "missing.pt"
    with pytest.raises(BackendError, match="no backend can run here"):
        make_backend(Manifest.load(write(out, values)), "auto", tmp_path / "cache", log=SILENT)


# --- the text cache -------------------------------------------------------------------------

def _unit(prompts: list[str]) -> np.ndarray:
    angles = np.array([len(p) for p in prompts], np.float32) / 10
    return np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)


def test_the_text_cache_recomputes_damaged_vectors_and_reports_once(tmp_path):
    import sqlite3

    messages, calls = [], []

    def encode(prompts):
        calls.append(list(prompts))
        return _unit(prompts)

    TextEmbeddingCache("ab12", 3, tmp_path).embed(["a dog", "a cat", "a bird"], encode)
    path = tmp_path / "text" / "ab12.sqlite"
    with sqlite3.connect(path) as db:  # right lengths, wrong contents
        db.execute("UPDATE embeddings SET vector = ? WHERE prompt = 'a dog'", (np.full(3, np.nan, np.float32).tobytes(),))
        db.execute("UPDATE embeddings SET vector = ? WHERE prompt = 'a cat'", (np.full(3, 7, np.float32).tobytes(),))
        db.execute("UPDATE embeddings SET vector = ? WHERE prompt = 'a bird'", (b"12345",))
    cache = TextEmbeddingCache("ab12", 3, tmp_path, log=messages.append)
    vectors = cache.embed(["a dog", "a cat", "a bird"], encode)
    np.testing.assert_allclose(vectors, _unit(["a dog", "a cat", "a bird"]), rtol=1e-6)
    assert calls[-1] == ["a bird", "a cat", "a dog"] and cache.dropped == 3 and len(messages) == 1
    calls.clear()
    TextEmbeddingCache("ab12", 3, tmp_path, log=messages.append).embed(["a dog", "a cat", "a bird"], encode)
    assert calls == [] and len(messages) == 1  # the recomputed rows replaced the damaged ones


def test_the_text_cache_rebuilds_a_file_of_another_schema(tmp_path):
    import sqlite3

    path = tmp_path / "text" / "ab12.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE embeddings (prompt TEXT, other INTEGER)")
    messages = []
    cache = TextEmbeddingCache("ab12", 3, tmp_path, log=messages.append)
    assert cache.embed(["a dog"], _unit).shape == (1, 3) and cache.disk_error is None
    assert len(messages) == 1 and "rebuilt" in messages[0]
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(TextCacheError, match="non-finite"):
        cache.embed(["a fish"], lambda prompts: np.full((len(prompts), 3), np.nan, np.float32))


# --- audio -----------------------------------------------------------------------------------

def test_audio_in_every_usual_form_is_read_as_what_it_sounds_like():
    rng = np.random.default_rng(0)
    voice = (0.5 * rng.standard_normal(16000)).clip(-1, 1).astype(np.float32)
    silence = np.zeros_like(voice)
    np.testing.assert_allclose(as_mono(np.stack([voice, silence], axis=1)), voice / 2, atol=1e-7)  # [N, 2]
    np.testing.assert_allclose(as_mono(np.stack([voice, silence])), voice / 2, atol=1e-7)  # [2, N]
    pcm16 = (voice * 32767).astype(np.int16)
    np.testing.assert_allclose(as_mono(pcm16), voice, atol=1e-4)
    np.testing.assert_allclose(as_mono(pcm16.astype(np.int32) << 16), voice, atol=1e-4)
    np.testing.assert_allclose(as_mono(voice.astype(np.float64).tolist()), voice, atol=1e-7)
    resampled = as_mono(np.sin(2 * np.pi * 440 * np.arange(44100) / 44100), sample_rate=44100)
    assert resampled.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # the same tone, at 16 kHz


@pytest.mark.parametrize("audio, message", [
    (None, "array of samples"),
    ("noise.wav", "array of samples"),
    (np.full(100, np.nan, np.float32), "NaN"),
    (np.full(100, np.inf), "NaN or infinite"),
    (np.full(100, 12000.0, np.float32), "peak"),
    (np.zeros(100, np.int64), "int16/int32 PCM"),
    (np.zeros(100, np.complex64), "int16/int32 PCM"),
    (np.zeros(100, bool), "int16/int32 PCM"),
    (np.zeros((3, 3), np.float32), "cannot tell channels"),
    (np.zeros((40, 30), np.float32), "cannot tell channels"),
    (np.zeros((2, 2, 100), np.float32), "shape"),
    (np.array(["a", "b"]), "int16/int32 PCM"),
])
def test_audio_that_cannot_be_read_is_refused_with_what_was_expected(audio, message):
    with pytest.raises(InputError, match=message):
        as_mono(audio)


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, True, 10**9])
def test_a_bad_sample_rate_is_refused(rate):
    with pytest.raises(InputError, match="sample_rate"):
        as_mono(np.zeros(100, np.float32), sample_rate=rate)


def test_segment_hears_stereo_and_pcm_as_the_same_sound(segmenter):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    sound = (0.3 * rng.standard_normal(15600)).astype(np.float32)
    labels = []
    for audio in (sound, np.stack([sound, sound], 1), np.round(sound * 32767).astype(np.int16)):
        segmenter.reset()
        labels.append(segmenter.segment(frame, audio).labels)
    np.testing.assert_array_equal(labels[0], labels[1])
    assert (labels[0] == labels[2]).mean() > 0.999  # 16-bit rounding only


# --- frames, words, closing -------------------------------------------------------------------

@pytest.mark.parametrize("image", [np.zeros((0, 0, 3), np.uint8), np.zeros((0, 64, 3), np.uint8),
                                   np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32),
                                   np.zeros((64, 64, 4), np.uint8), None, "frame.png"])
def test_frames_that_are_not_rgb_images_are_refused(segmenter, image):
    with pytest.raises(InputError, match="RGB uint8 frame"):
        segmenter.segment(image, np.zeros(100, np.float32))


@pytest.mark.parametrize("words, message", [
    (["dog", "\u200b\u200d"], "blank"),
    (["dog", "\u00ad"], "blank"),
    (["\ud800dog"], "lone surrogate"),
    (["dog\x00"], "control character"),
    (np.array([["dog", "cat"]]), "array of"),
    (np.array([1, 2]), "array of"),
    (None, "no vocabulary"),
    (iter(()), "empty"),
])
def test_words_that_are_not_usable_text_are_refused(words, message):
    with pytest.raises(VocabularyError, match=message):
        clean_vocabulary(words)


def test_scene_text_is_checked_like_words():
    assert clean_scene("  a  band\tplaying ") == "a band playing" and clean_scene(" ") is None
    with pytest.raises(VocabularyError, match="surrogate"):
        clean_scene("a \udfff band")
    with pytest.raises(VocabularyError, match="blank"):
        clean_scene("\u200b")


def test_a_numpy_vocabulary_is_taken_as_its_words(segmenter):
    segmenter.set_vocab(np.array(["dog", "guitar"]))
    assert segmenter.vocab == ["dog", "guitar"] and all(type(w) is str for w in segmenter.vocab)


def test_an_empty_vocabulary_is_refused_at_once_as_the_stream_does(tmp_path):
    for make in (lambda: Segmenter(vocab=[]), lambda: Stream(source=DEMO, vocab=[])):
        with pytest.raises(VocabularyError, match="empty"):
            make()


def test_a_closed_segmenter_says_so(cache):
    closed = Segmenter(vocab=["dog"], backend="onnxruntime", cache_dir=cache, log=SILENT)
    closed.close()
    closed.close()
    with pytest.raises(ClosedError, match="closed"):
        closed.segment(np.zeros((32, 32, 3), np.uint8), np.zeros(100, np.float32))
    with pytest.raises(ClosedError):
        closed.set_vocab(["cat"])


def test_every_sdk_error_is_an_avss_error():
    for error in (InputError, ClosedError, VocabularyError, ManifestError, BackendError, CaptureError,
                  CameraError, MicrophoneError, StreamError, TextCacheError):
        assert issubclass(error, avss_sdk.AvssError)


# --- sources -----------------------------------------------------------------------------------

@pytest.mark.parametrize("camera", [-1, -2, 2**31, True, 1.5, ""])
def test_a_camera_opencv_cannot_take_is_refused_before_it_sees_it(camera):
    with pytest.raises(CameraError, match="a camera is an index"):
        CameraSource(camera)
    with pytest.raises(CameraError, match="a camera is an index"):
        Stream(camera=camera, vocab=["dog"])  # before the model loads


def test_live_demo_refuses_a_negative_camera_and_a_vocabulary_of_no_words():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, message in ((["--camera", "-1", "--vocab", "dog"], "a camera is an index"),
                          (["--vocab", ","], "has no words")):
        done = subprocess.run([sys.executable, str(ROOT / "samples" / "live_demo.py"), "--headless", "--frames", "1",
                               *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_microphone_given_with_a_file_is_used_not_ignored(segmenter, tmp_path):
    with pytest.raises(MicrophoneError, match="not found"):
        Stream(source=DEMO, mic=999, vocab=["dog"], segmenter=segmenter)
    with pytest.raises(StreamError, match="two audio sources"):
        Stream(source=DEMO, mic=0, audio=str(tmp_path / "other.wav"), vocab=["dog"], segmenter=segmenter)


def test_a_server_that_never_answers_is_a_timeout_in_words():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(CaptureError, match=r"no answer from the server within 0\.5 s") as raised:
            FileSource(f"http://127.0.0.1:{server.getsockname()[1]}/clip.mp4", timeout=0.5)
        assert "Immediate exit" not in str(raised.value) and time.monotonic() - started < 10
    finally:
        for connection, _ in accepted:
            connection.close()
        server.close()


def test_close_cancels_a_running_vocabulary_job(segmenter):
    """4000 new words are 250 text-encoder calls; close() returns after the one in progress.

    The bound is relative to one call measured here (16 new words), so a busy machine does
    not make it fail: waiting for the job would take about 250 of them.
    """
    started = time.monotonic()
    segmenter.prepare_vocab([f"probe {uuid.uuid4().hex[:12]}" for _ in range(16)])
    one_call = time.monotonic() - started
    words = [f"thing {uuid.uuid4().hex[:12]}" for _ in range(4000)]
    stream = Stream(source=DEMO, vocab=["dog"], segmenter=segmenter)
    future = stream.set_vocab(words)
    deadline = time.monotonic() + 20
    while not future.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # inside the text encoder by now
    started = time.monotonic()
    stream.close()
    closing = time.monotonic() - started
    assert future.done() and isinstance(future.exception(), CancelledError)
    assert closing < 5 * one_call + 0.5, (closing, one_call)
    assert f"a photo of a {words[-1]}." not in segmenter.text_cache
    assert segmenter.segment(np.zeros((32, 32, 3), np.uint8), np.zeros(100, np.float32)).vocab == ["dog"]


# --- training leftovers and its command line ----------------------------------------------------

def test_a_resumed_run_removes_orphans_and_does_not_repeat_log_lines(tmp_path):
    pytest.importorskip("torch")
    from avss_sdk.training.trainer import _drop_log_after, _remove_orphan_checkpoints

    run = tmp_path / "run"
    run.mkdir()
    orphan, live = run / ".last.pt.4194305.tmp", run / f".last.pt.{os.getpid()}.tmp"
    for path in (orphan, live):
        path.write_bytes(b"half a checkpoint")
    _remove_orphan_checkpoints(run)
    assert not orphan.exists() and live.exists()  # a running writer's file stays
    log = run / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    _drop_log_after(log, 5)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_train_refuses_a_value_of_the_wrong_type_in_one_line(tmp_path):
    pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    load_config = script.load_config
    for override, message in (("optim.steps=abc", "optim.steps must be a whole number"),
                              ("model.use_vta=maybe", "model.use_vta must be true or false"),
                              ("optim.lr=fast", "lr must be a number"), ("log_every=1.5", "log_every must be")):
        with pytest.raises(SystemExit, match=message):
            load_config(None, [override])
    done = subprocess.run([sys.executable, str(ROOT / "train" / "train.py"), "--out", str(tmp_path / "run"),
                           "--set", "optim.steps=abc"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert done.returncode != 0 and "optim.steps must be a whole number" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_damaged_checkpoints_are_one_line_errors_not_tracebacks(tmp_path):
    torch = pytest.importorskip("torch")
    from avss_sdk.modeling.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, load_model

    head = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    damaged = {"no config": {**head, "model": {}}, "numbers as weights": {**head, "config": {}, "model": {"a": 1}},
               "unbuildable config": {**head, "config": {"hidden_dim": "wide"}, "model": {}},
               "negative size": {**head, "config": {"hidden_dim": -4}, "model": {}}}
    for name, payload in damaged.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(CheckpointError, match="damaged|cannot build"):
            load_model(path)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_stats.py"), "--checkpoint",
                           str(tmp_path / "no config.pt")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "is damaged" in done.stderr + done.stdout
