"""avss-serve throughput and latency with 1, 2, 4 and 8 concurrent client streams, against in-process.

    python benchmarks/serve.py --out benchmarks/results/serve-cpu.md

Starts a real ``avss-serve`` (PyTriton, the serving environment's interpreter: see the
README's "Serving") on loopback, then for each client count runs that many streams at once,
each a ``RemoteSegmenter`` over gRPC sending the same camera-size frames one after another
(a stream waits for each answer, as a live client does). Reported: total frames/s over all
streams, and p50 / p99 request latency (client send to labels decoded). In the same run, the
in-process ``Stream`` segments the same frames from a file (decoding and pairing included)
and the in-process ``Segmenter`` the decoded frames. Every client, the server and its
instances share this machine's cores.
"""

from __future__ import annotations

import argparse
import fractions
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np

from avss_sdk.capture import FileSource
from avss_sdk.media import read_audio
from avss_sdk.remote import RemoteSegmenter
from avss_sdk.segmenter import Segmenter
from avss_sdk.stream import Stream

_ROOT = Path(__file__).resolve().parents[1]

VOCAB = ["dog", "guitar", "person speaking", "alarm clock", "violin", "cat", "car engine", "piano"]
CLIENTS = (1, 2, 4, 8)
SERVE_PYTHON = Path(os.environ.get("AVSS_SERVE_PYTHON", Path.home() / ".cache/avss_sdk/serve-env/bin/python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def camera_clip(path: Path, count: int) -> Path:
    """The demo clip's first ``count`` frames scaled to 640x480 with its sound, as H.264 + AAC (what Stream reads)."""
    demo = _ROOT / "samples" / "demo_clip.mp4"
    with FileSource(demo) as source:
        images = []
        while len(images) < count and (frame := source.read()) is not None:
            images.append(cv2.resize(frame.image, (640, 480), interpolation=cv2.INTER_LINEAR))
    track = read_audio(demo)[: int(round(len(images) / 10 * 16000))]
    with av.open(str(path), "w") as out:
        video = out.add_stream("h264", rate=10)
        video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
        sound = out.add_stream("aac", rate=16000, layout="mono")
        for k, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        for start in range(0, track.size, 1024):
            frame = av.AudioFrame.from_ndarray(track[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, start, fractions.Fraction(1, 16000)
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return path


def decoded(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with FileSource(path) as source:
        pairs = []
        while (frame := source.read()) is not None:
            pairs.append((frame.image, source.window(frame.timestamp)))
    return pairs


def start_server(instances: int, log: Path) -> tuple[subprocess.Popen, str]:
    http, grpc = free_port(), free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([str(SERVE_PYTHON), "-m", "avss_sdk.serve", "--http-port", str(http),
                                    "--grpc-port", str(grpc), "--instances", str(instances)],
                                   cwd=_ROOT, env=dict(os.environ, PYTHONPATH=str(_ROOT)), stdout=out,
                                   stderr=subprocess.STDOUT)
    import tritonclient.http

    client = tritonclient.http.InferenceServerClient(f"127.0.0.1:{http}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if client.is_model_ready("avss_ssp_ov"):
                return process, f"grpc://127.0.0.1:{grpc}"
        except Exception:  # not listening yet
            pass
        time.sleep(0.25)
    stop_server(process)
    raise SystemExit(f"avss-serve did not start:\n{log.read_text()[-2000:]}")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def run_clients(url: str, clients: int, pairs: list) -> dict[str, float]:
    latencies: list[float] = []
    lock, barrier, errors = threading.Lock(), threading.Barrier(clients + 1), []

    def client() -> None:
        try:
            with RemoteSegmenter(url, vocab=VOCAB) as remote:
                remote.segment(*pairs[0])  # warm-up: connection and server-side stream state
                barrier.wait(timeout=120)
                mine = []
                for image, audio in pairs:
                    start = time.perf_counter()
                    remote.segment(image, audio)
                    mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)
        except Exception as error:  # reported by the caller
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=300)
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{clients} clients: {errors[0]}")
    ms = np.array(latencies) * 1000.0
    return {"fps": len(latencies) / wall, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def in_process(path: Path, pairs: list) -> dict[str, dict[str, float]]:
    out = {}
    with Segmenter(vocab=VOCAB) as segmenter:
        segmenter.segment(*pairs[0])
        segmenter.reset()
        times = []
        start = time.perf_counter()
        for image, audio in pairs:
            t = time.perf_counter()
            segmenter.segment(image, audio)
            times.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
        ms = np.array(times) * 1000.0
        out["in-process Segmenter"] = {"fps": len(pairs) / wall, "p50": float(np.percentile(ms, 50)),
                                       "p99": float(np.percentile(ms, 99))}
        with Stream(source=path, vocab=VOCAB, segmenter=segmenter) as stream:
            times, start, last = [], time.perf_counter(), time.perf_counter()
            for _ in stream:
                now = time.perf_counter()
                times.append(now - last)
                last = now
            wall = time.perf_counter() - start
        ms = np.array(times) * 1000.0
        out["in-process Stream(file)"] = {"fps": len(times) / wall, "p50": float(np.percentile(ms, 50)),
                                          "p99": float(np.percentile(ms, 99))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="frames each client stream sends (default 60)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1], help="server model instances to try")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = camera_clip(Path(tmp) / "camera.mp4", args.frames)
        pairs = decoded(path)
        load_before = os.getloadavg()[0]
        rows = list(in_process(path, pairs).items())
        for instances in args.instances:
            process, url = start_server(instances, Path(tmp) / "server.log")
            try:
                for clients in CLIENTS:
                    rows.append((f"avss-serve, {instances} instance{'s' * (instances > 1)}, {clients} "
                                 f"client stream{'s' * (clients > 1)} (gRPC)", run_clients(url, clients, pairs)))
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                stop_server(process)
        load_after = os.getloadavg()[0]
    import onnxruntime

    lines = [f"# avss-serve benchmark: {len(pairs)} frames at 640x480 per stream, vocabulary of {len(VOCAB)}", "",
             f"Machine: {platform.processor() or platform.machine()}, AMD EPYC, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, ONNX Runtime CPU backend, "
             f"flow=model; 1-minute load average {load_before:.1f} before and {load_after:.1f} after (other jobs "
             "shared the machine)", "",
             "| what | frames/s (all streams) | p50 latency ms | p99 latency ms |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['fps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} |" for name, r in rows]
    lines += ["", "Latency: per request, client send to labels decoded (the Stream row: time between results, "
              "decoding and audio pairing included). Server and clients share the machine's cores."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
