"""avss-serve on a real Triton Inference Server (PyTriton), queried over HTTP and gRPC on loopback.

The server runs as its own process (``python -m avss_sdk.serve``) with the interpreter of
the serving environment (numpy < 2, see the README's "Serving"): ``$AVSS_SERVE_PYTHON``,
else ``~/.cache/avss_sdk/serve-env/bin/python`` (what ``.ci/run`` creates). Clients are
this process (numpy 2) through ``RemoteSegmenter`` and raw ``tritonclient`` requests. A
second server holds requests for a batch (``--batch-delay-ms``) so that requests sent at
once are batched together on any machine, and runs two pipelines (``--instances 2``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tritonclient.grpc as tritonclient_grpc
import tritonclient.http as tritonclient_http

from avss_sdk.capture import read_frames
from avss_sdk.remote import RemoteSegmenter, ServerError, run_streams
from avss_sdk.segmenter import Segmenter, VocabularyError
from avss_sdk.serve import BATCH_REFUSED, ServeError, ServerProcess, free_port, stop_on_signals
from avss_sdk.stream import Stream

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_clip.mp4"
DEMO_INFO = json.loads(DEMO.with_suffix(".json").read_text())
DEMO_WORDS = DEMO_INFO["vocab"]
OTHER_WORDS = ["pink triangle", "dog", "purple square"]
IDLE_TIMEOUT = 4.0  # seconds; well above a frame's time on a busy 2-core machine


@pytest.fixture(scope="module")
def server(serve_python, tmp_path_factory):
    """A real avss-serve on random loopback ports (dynamic batching of up to 4 frames, no batch delay);
    yields (http_url, grpc_url)."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    try:
        with ServerProcess("--idle-timeout", str(IDLE_TIMEOUT), "--max-batch", "4", python=serve_python,
                           log=log) as running:
            yield running.http_url, running.grpc_url
    except ServeError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def frames():
    """The first 4 frames of the demo clip with the audio windows that end at them."""
    return read_frames(DEMO, 4)


@pytest.fixture(scope="module")
def local():
    """In-process reference results: {tuple(words): [Result per frame]} computed lazily."""
    cache: dict = {}

    def results(words, frames):
        key = (tuple(words), len(frames))
        if key not in cache:
            with Segmenter(vocab=words) as segmenter:
                cache[key] = [segmenter.segment(image, audio) for image, audio in frames]
        return cache[key]

    return results


def assert_same(remote, reference) -> None:
    assert remote.vocab == reference.vocab
    np.testing.assert_array_equal(remote.labels, reference.labels)
    assert [(o.label, o.box) for o in remote.objects] == [(o.label, o.box) for o in reference.objects]
    np.testing.assert_allclose([o.score for o in remote.objects], [o.score for o in reference.objects], rtol=1e-5)
    for o in remote.objects:
        np.testing.assert_array_equal(o.mask, remote.labels == o.class_index + 1)


def raw_request(url: str, image, audio, words, parameters=None, image_dtype="UINT8"):
    """One frame (a batch of one) through plain tritonclient (no SDK): the response, or its exception."""
    client_module = tritonclient_grpc if url.startswith("grpc") else tritonclient_http
    client = client_module.InferenceServerClient(url.split("://")[1])
    try:
        vocab = np.array([[w.encode() for w in words]], dtype=np.object_).reshape(1, len(words))
        inputs = []
        for name, array, dtype in (("image", image[None], image_dtype), ("audio", audio[None], "FP32"),
                                   ("vocab", vocab, "BYTES")):
            tensor = client_module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer("avss_ssp_ov", inputs, parameters=parameters)
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_labels_equal_the_in_process_segmenter(server, frames, local, protocol):
    url = server[0] if protocol == "http" else server[1]
    reference = local(DEMO_WORDS, frames)
    assert any(r.objects for r in reference), "the demo clip should show sounding objects"
    with RemoteSegmenter(url, vocab=DEMO_WORDS) as remote:
        for (image, audio), expected in zip(frames, reference):
            assert_same(remote.segment(image, audio), expected)


def test_scene_text_reaches_the_server_and_can_be_switched_off(server, frames):
    with Segmenter(vocab=DEMO_WORDS, scene=DEMO_INFO["scene"]) as here, \
            RemoteSegmenter(server[1], vocab=DEMO_WORDS, scene=DEMO_INFO["scene"]) as there:
        for image, audio in frames[:2]:
            assert_same(there.segment(image, audio), here.segment(image, audio))
        here.set_scene(None)
        there.set_scene(None)
        assert there.scene is None
        assert_same(there.segment(*frames[2]), here.segment(*frames[2]))


def test_stream_with_server_argument_matches_the_in_process_stream(server, frames):
    # over HTTP: set_vocab runs in the stream's worker thread (tritonclient.http's client is per thread)
    with Stream(source=DEMO, vocab=DEMO_WORDS) as here, Stream(source=DEMO, vocab=DEMO_WORDS, server=server[0]) as there:
        assert there.backend_name == f"triton {server[0]}"
        for _ in range(3):
            assert_same(next(there), next(here))
        there.set_vocab(OTHER_WORDS).result(timeout=60)
        assert next(there).vocab == OTHER_WORDS
        assert there.set_scene("  a  street ").result(timeout=60) == "a street"


def test_concurrent_streams_with_different_vocabularies_do_not_mix(server, frames, local):
    streams = run_streams(server[1], [DEMO_WORDS, OTHER_WORDS], frames)
    for words, answers in zip([DEMO_WORDS, OTHER_WORDS], streams):
        for (remote, _, _), reference in zip(answers, local(words, frames)):
            assert_same(remote, reference)


@pytest.fixture(scope="module")
def batching_server(serve_python, tmp_path_factory):
    """An avss-serve whose Triton holds a request up to 5 s for more (batches of 3), run by two pipelines
    (--instances 2): requests sent at once are batched together, whatever the machine's load."""
    log = tmp_path_factory.mktemp("serve") / "batching.log"
    try:
        with ServerProcess("--max-batch", "3", "--batch-delay-ms", "5000", "--instances", "2", python=serve_python,
                           log=log) as running:
            yield running.http_url, running.grpc_url
    except ServeError as error:
        pytest.fail(str(error))


def at_once(*sends):
    """Run the callables at the same time; their results (an exception for one that raised)."""
    with ThreadPoolExecutor(len(sends)) as pool:
        futures = [pool.submit(send) for send in sends]
        return [f.exception(timeout=120) or f.result() for f in futures]


def test_streams_batched_together_do_not_mix_and_equal_the_in_process_segmenter(batching_server, frames, local):
    # Same shapes, so Triton batches the three; the reversed list swaps labels if streams mix. The two
    # pipelines share each batch: one runs the two DEMO_WORDS frames as a batch, the other the third.
    words = [DEMO_WORDS, DEMO_WORDS[::-1], DEMO_WORDS]
    clients = [RemoteSegmenter(url) for url in (batching_server[1], batching_server[0], batching_server[1])]
    for client, w in zip(clients, words):
        client.use(vocabulary=w)  # no early embedding request: it would wait 5 s alone for a batch
    for t, (image, audio) in enumerate(frames[:2]):  # a first frame (no flow) and one with flow
        got = at_once(*[lambda c=c: c.segment(image, audio) for c in clients])
        assert [c.last_batch for c in clients] == [3, 3, 3], got
        for remote, w in zip(got, words):
            assert_same(remote, local(w, frames[:2])[t])
    for client in clients:
        client.close()


def test_a_bad_request_batched_with_a_good_one_fails_only_itself(batching_server, frames, local):
    image, audio = frames[0]
    with RemoteSegmenter(batching_server[1]) as good:
        good.use(vocabulary=DEMO_WORDS)
        bad, fine = at_once(lambda: raw_request(batching_server[1], image, audio, ["dog", "   "]),
                            lambda: good.segment(image, audio))
    assert isinstance(bad, Exception) and "blank" in str(bad)
    assert BATCH_REFUSED in str(bad)  # batched with the good one, which was refused too and sent again
    assert_same(fine, local(DEMO_WORDS, frames)[0])  # a first frame: the refused try left no stream state
    assert good.last_batch == 1  # the second try ran alone


def test_a_killed_clients_stream_state_is_dropped(server, frames):
    image, audio = frames[0]
    script = (
        "import sys, numpy as np, tritonclient.http as h\n"
        f"c = h.InferenceServerClient({server[0].split('://')[1]!r})\n"
        f"image = np.zeros({[1, *image.shape]}, np.uint8); audio = np.zeros((1, 16000), np.float32)\n"
        "vocab = np.array([[b'dog']], dtype=np.object_)\n"
        "for i in range(1000):\n"
        "    inputs = [h.InferInput('image', list(image.shape), 'UINT8'), h.InferInput('audio', [1, 16000], 'FP32'),\n"
        "              h.InferInput('vocab', [1, 1], 'BYTES')]\n"
        "    for t, a in zip(inputs, (image, audio, vocab)): t.set_data_from_numpy(a)\n"
        "    c.infer('avss_ssp_ov', inputs, parameters={'stream': 'doomed'})\n"
        "    if i == 2: print('sent', flush=True)\n"
    )
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "sent"
    finally:
        client.kill()
        client.wait(10)
    alive = raw_request(server[0], image, audio, ["dog"], {"stream": "doomed"})
    assert alive.as_numpy("stream_frame")[0, 0] >= 3  # the dead client's stream was still there
    time.sleep(IDLE_TIMEOUT + 0.5)
    fresh = raw_request(server[0], image, audio, ["dog"], {"stream": "doomed"})
    assert fresh.as_numpy("stream_frame")[0, 0] == 0  # dropped after the idle timeout: a new stream
    once = raw_request(server[1], image, audio, ["dog"])  # no stream id: a one-frame stream
    assert once.as_numpy("stream_frame")[0, 0] == 0


def test_bad_requests_get_errors_and_the_server_keeps_serving(server, frames, local):
    image, audio = frames[0]
    with pytest.raises(Exception, match="(?i)data.?type|datatype|unexpected"):
        raw_request(server[0], image.astype(np.float32), audio, DEMO_WORDS, image_dtype="FP32")
    with pytest.raises(Exception):
        raw_request(server[1], image, audio, [])
    remote = RemoteSegmenter(server[1], vocab=DEMO_WORDS)
    with pytest.raises(ServerError, match="too large") as error:
        remote.segment(np.zeros((4097, 2, 3), np.uint8), audio)
    assert "\n" not in str(error.value)
    with pytest.raises(Exception, match="blank"):
        raw_request(server[0], image, audio, ["dog", "   "])  # what a client without the SDK's checks can send
    with pytest.raises(VocabularyError):
        remote.set_vocab([])
    assert_same(remote.segment(image, audio), local(DEMO_WORDS, frames)[0])


def test_client_errors_are_one_line():
    with pytest.raises(ValueError, match="http://host:port"):
        RemoteSegmenter("ftp://127.0.0.1:1")
    with pytest.raises(ServerError):
        RemoteSegmenter(f"http://127.0.0.1:{free_port()}", vocab=["dog"])


def test_stop_shuts_down_a_server_that_inherited_sigint_ignored(serve_python, tmp_path):
    """A server started from a background job (or anything that ignores SIGINT) inherits SIGINT
    ignored; stop() still shuts it down in order (SIGTERM) and it exits cleanly, even when the signal
    comes the moment Triton says the model is ready (PyTriton may still be connecting to it then)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        running = ServerProcess(python=serve_python, log=tmp_path / "server.log").start()
    finally:
        signal.signal(signal.SIGINT, previous)
    running.stop()
    assert running.process.returncode == 0, (running.process.returncode, running._log_tail())


def test_a_server_terminated_while_it_starts_exits_cleanly(serve_python, tmp_path):
    """SIGTERM while Triton starts and loads the model: the server finishes starting, then shuts
    Triton down in order."""
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(serve_python), "-m", "avss_sdk.serve", "--http-port", str(free_port()),
                                    "--grpc-port", str(free_port())], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 120
    while "avss_sdk: backend" not in log.read_text(errors="replace"):  # the pipeline is built: Triton starts next
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0, log.read_text()[-3000:]


def test_stop_on_signals_sets_a_flag_then_interrupts():
    """The first SIGTERM or SIGINT only sets the flag; a second one raises KeyboardInterrupt; the
    handlers before come back after, and a SIGINT inherited ignored stays ignored."""
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises in this thread as soon as the signal arrives
    assert signal.getsignal(signal.SIGTERM) is before
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.wait(0.5)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous_int)


def test_serve_refuses_numpy_2_in_one_line():
    assert int(np.__version__.split(".")[0]) >= 2  # the main environment (opencv-python 5 needs numpy 2)
    done = subprocess.run([sys.executable, "-m", "avss_sdk.serve", "--http-port", str(free_port())], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "numpy < 2" in done.stderr
