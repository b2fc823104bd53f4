"""The ``--triton`` model repository, loaded by a real Triton Inference Server (the one in nvidia-pytriton).

That build has the Python backend only (no ONNX Runtime, no TensorRT backend), so:

1. The repository exactly as exported (the shipped model, ``backend="onnxruntime"``) is
   loaded: the server parses every ``config.pbtxt`` and gets as far as looking for the
   ``onnxruntime`` backend library, which is the only reason it gives for each stage. A
   negative control (one config with a syntax error) shows that a bad config fails earlier,
   with another reason.
2. The same repository with each stage's ``platform`` line swapped for ``backend: "python"``
   and a stand-in ``model.py`` that runs that stage's own ``model.onnx`` with ONNX Runtime:
   every other line is the export's (names, types, dims, the ensemble and its wiring), and
   the server loads all of it, validates the ensemble against the stage configs, and runs
   the ensemble ``avss_ssp_ov`` and ``text_encoder``; outputs equal in-process ONNX Runtime.

Not checked here: the ``onnxruntime_onnx`` and ``tensorrt_plan`` platforms themselves (those
backends are not in this build) and the TensorRT repository (no engines without TensorRT).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import tritonclient.http as tritonclient_http

from avss_sdk.preprocess import log_mel, normalize_image, resize_frame
from avss_sdk.segmenter import DEFAULT_ENGINES, Segmenter
from avss_sdk.serve import free_port
from avss_sdk.export.triton_repository import ENSEMBLE_NAME, write_triton_repository

STAND_IN = '''
import json
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Runs this stage's model.onnx with ONNX Runtime (the test's stand-in for the onnxruntime backend)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.session = onnxruntime.InferenceSession(str(Path(__file__).parent / "model.onnx"),
                                                    providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            values = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(self.outputs, values)]))
        return responses
'''


@pytest.fixture(scope="module")
def triton(serve_python, tmp_path_factory):
    """A function that runs tritonserver on a repository and waits for it: (client, repository index, log)."""
    facts = subprocess.run(
        [str(serve_python), "-c", "import os, sysconfig, pytriton; "
         "print(os.path.dirname(pytriton.__file__)); print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    package, libdir = Path(facts[0]), facts[1]
    server_dir = package / "tritonserver"
    # The wheel keeps one Python backend stub per Python version; the backend wants it beside itself.
    backends = tmp_path_factory.mktemp("backends")
    (backends / "python").mkdir()
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (backends / "python" / name).symlink_to(server_dir / "backends" / "python" / name)
    (backends / "python" / "triton_python_backend_stub").symlink_to(
        server_dir / "python_backend_stubs" / "3.11" / "triton_python_backend_stub")
    env = dict(os.environ, LD_LIBRARY_PATH=f"{libdir}:{package.parent / 'nvidia_pytriton.libs'}",
               PATH=f"{serve_python.parent}:{os.environ['PATH']}")  # the stub's Python: the serving environment's
    running = []

    def start(repo: Path, expect_ready: set[str]):
        port = free_port()
        log = repo.parent / f"{repo.name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(server_dir / "bin" / "tritonserver"), f"--model-repository={repo}",
                 f"--backend-directory={backends}", "--http-address=127.0.0.1", f"--http-port={port}",
                 "--grpc-address=127.0.0.1", f"--grpc-port={free_port()}", "--allow-metrics=false",
                 "--exit-on-error=false", "--strict-model-config=true", "--exit-timeout-secs=5"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        running.append(process)
        client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"tritonserver exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                index = client.get_model_repository_index()
                states = {m["name"]: m.get("state") for m in index}
                if client.is_server_live() and all(states.get(name) == "READY" for name in expect_ready):
                    return client, index, log
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"models {sorted(expect_ready)} not ready in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    yield start
    for process in running:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from avss_sdk.runtime.manifest import Manifest

    manifest = Manifest.load(DEFAULT_ENGINES)
    return manifest, write_triton_repository(manifest, tmp_path_factory.mktemp("as_exported") / "repo",
                                             backend="onnxruntime")


def test_the_exported_configs_parse_and_only_the_backend_is_missing(triton, exported, tmp_path):
    manifest, repo = exported
    _, index, log = triton(repo, expect_ready=set())
    reasons = {m["name"]: m.get("reason", "") for m in index}
    for stage in manifest.stages:
        assert "unable to find backend library for backend 'onnxruntime'" in reasons[stage], reasons[stage]
    assert "failed to read text proto" not in log.read_text()

    broken = shutil.copytree(repo, tmp_path / "broken")
    config = broken / "vta" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [", "dims: ", 1))
    _, index, log = triton(broken, expect_ready=set())
    assert f"failed to read text proto from {config}" in log.read_text()  # a bad config fails here, earlier
    assert "state" not in {m["name"]: m for m in index}["vta"]


def test_the_repository_with_stand_in_stages_loads_and_runs_the_ensemble(triton, exported, tmp_path):
    manifest, repo = exported
    stand_in = shutil.copytree(repo, tmp_path / "stand_in")
    for stage in manifest.stages:
        config = stand_in / stage / "config.pbtxt"
        text = config.read_text()
        assert text.count('platform: "onnxruntime_onnx"') == 1
        config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
        (stand_in / stage / "1" / "model.py").write_text(STAND_IN)
    client, _, _ = triton(stand_in, expect_ready={*manifest.stages, ENSEMBLE_NAME})

    rng = np.random.default_rng(0)
    frames = [normalize_image(resize_frame(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), 192))[None]
              for _ in range(2)]
    with Segmenter(vocab=["dog", "guitar", "bell"], precision="fp32") as segmenter:  # the repository's files
        words = segmenter.prepare_vocab(["dog", "guitar", "bell"])
        feeds = {"previous": frames[0], "current": frames[1], "image": frames[1],
                 "log_mel": log_mel(rng.standard_normal(15360).astype(np.float32) * 0.1)[None],
                 "class_embeddings": words.embeddings,
                 "scene_embedding": segmenter.prepare_scene(None).embedding[None].astype(np.float32)}
        inputs = []
        for name, array in feeds.items():
            tensor = tritonclient_http.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, np.float32))
            inputs.append(tensor)
        served = client.infer(ENSEMBLE_NAME, inputs)
        run = segmenter.backend.run
        flow = run("flow", {"previous": feeds["previous"], "current": feeds["current"]})["flow"]
        encoded = run("image_encoder", {"image": feeds["image"]})
        heard = run("audio_encoder", {"log_mel": feeds["log_mel"]})["audio_embedding"]
        aligned = run("vta", {"mask_features": encoded["mask_features"], "class_embeddings": words.embeddings,
                              "scene_embedding": feeds["scene_embedding"]})["aligned_features"]
        expected = run("mask_decoder", {"aligned_features": aligned, "dense_embedding": encoded["dense_embedding"],
                                        "flow": flow, "audio_embedding": heard,
                                        "class_embeddings": words.embeddings})
        for spec in manifest.stages["mask_decoder"].outputs:
            np.testing.assert_allclose(served.as_numpy(spec.name), expected[spec.name], rtol=1e-4, atol=1e-5)
        assert served.as_numpy("pixel_logits").shape[1] == 4  # K + 1 for three words

        tokens = segmenter.tokenizer(["a photo of a dog."])
        text_input = tritonclient_http.InferInput("token_ids", list(tokens.shape), "INT64")
        text_input.set_data_from_numpy(tokens.astype(np.int64))
        np.testing.assert_allclose(client.infer("text_encoder", [text_input]).as_numpy("text_embedding"),
                                   run("text_encoder", {"token_ids": tokens})["text_embedding"], rtol=1e-4, atol=1e-5)
