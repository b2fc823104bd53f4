"""avss-serve throughput and latency with 1, 2, 4 and 8 concurrent client streams, against in-process.

    python -m benchmarks.serve --out benchmarks/results/serve-cpu.md
    python -m benchmarks.serve --max-batch 1 8 --clients 1 4 --frames 20   # does batching pay here?

Starts a real ``avss-serve`` (PyTriton, the serving environment's interpreter: see the
README's "Serving") on loopback for each ``--max-batch`` and ``--instances`` asked for, then
for each client count runs that many streams at once (``avss_sdk.remote.run_streams``: each
a ``RemoteSegmenter`` over gRPC sending the same camera-size frames one after another, waiting
for each answer as a live client does). Reported: total frames/s over all streams, p50 / p99
request latency (client send to labels decoded) and the mean number of frames Triton batched
together. In the same run, the in-process ``Stream`` segments the same frames from a file
(decoding and pairing included) and the in-process ``Segmenter`` the decoded frames. Every
client, the server and its instances share this machine's cores.
"""

from __future__ import annotations

import argparse
import fractions
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from avss_sdk.capture import read_frames
from avss_sdk.media import read_audio
from avss_sdk.remote import run_streams
from avss_sdk.segmenter import Segmenter
from avss_sdk.serve import ServeError, ServerProcess
from avss_sdk.stream import Stream
from benchmarks.report import machine, publish
from benchmarks.stream import VOCAB

_ROOT = Path(__file__).resolve().parents[1]

CLIENTS = (1, 2, 4, 8)


def camera_clip(path: Path, count: int) -> Path:
    """The demo clip's first ``count`` frames scaled to 640x480 with its sound, as H.264 + AAC (what Stream reads)."""
    demo = _ROOT / "samples" / "demo_clip.mp4"
    images = [cv2.resize(image, (640, 480), interpolation=cv2.INTER_LINEAR) for image, _ in read_frames(demo, count)]
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


def run_clients(url: str, clients: int, pairs: list) -> dict[str, float]:
    streams = run_streams(url, [VOCAB] * clients, pairs, warm_up=True)
    wall = max(sum(seconds for _, seconds, _ in stream) for stream in streams)  # streams start together, send back to back
    answers = [answer for stream in streams for answer in stream]
    ms = np.array([seconds for _, seconds, _ in answers]) * 1000.0
    return {"fps": len(answers) / wall, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "batch": float(np.mean([batch for _, _, batch in answers]))}


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
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="client stream counts to run")
    parser.add_argument("--instances", type=int, nargs="+", default=[1], help="server --instances values to try")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[8], help="server --max-batch values to try")
    parser.add_argument("--note", default="", help="a sentence for the table's header (e.g. what else ran)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = camera_clip(Path(tmp) / "camera.mp4", args.frames)
        pairs = read_frames(path)
        load_before = os.getloadavg()[0]
        rows = [(name, dict(r, batch=float("nan"))) for name, r in in_process(path, pairs).items()]
        for instances in args.instances:
            for max_batch in args.max_batch:
                options = ("--instances", str(instances), "--max-batch", str(max_batch))
                try:
                    with ServerProcess(*options, log=Path(tmp) / "server.log") as server:
                        for clients in args.clients:
                            rows.append((f"avss-serve, {instances} instance{'s' * (instances > 1)}, max batch "
                                         f"{max_batch}, {clients} client stream{'s' * (clients > 1)} (gRPC)",
                                         run_clients(server.grpc_url, clients, pairs)))
                            print(rows[-1], file=sys.stderr, flush=True)
                except ServeError as error:
                    raise SystemExit(f"avss-serve {' '.join(options)}: {error}") from None
        load_after = os.getloadavg()[0]
    lines = [f"# avss-serve benchmark: {len(pairs)} frames at 640x480 per stream, vocabulary of {len(VOCAB)}", "",
             f"Machine: {machine()}, ONNX Runtime CPU backend, flow=model; 1-minute load average {load_before:.1f} before and {load_after:.1f} after. {args.note}".rstrip(),
             "", "| what | frames/s (all streams) | p50 latency ms | p99 latency ms | mean frames per batch |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['fps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{'' if np.isnan(r['batch']) else format(r['batch'], '.1f')} |" for name, r in rows]
    lines += ["", "Latency: per request, client send to labels decoded (the Stream row: time between results, "
              "decoding and audio pairing included). Server and clients share the machine's cores."]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
