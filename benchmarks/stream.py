"""End-to-end frames per second and per-stage latency of every backend present, on the same frames.

    python -m benchmarks.stream --out benchmarks/results/stream-cpu.md

Frames are a SynthAVS clip with sound scaled to camera size (640x480), segmented one by one
with the audio window that ends at each frame, as a live stream does: preprocessing, every
stage, and the label map at frame resolution included. Each backend (and the OpenCV DIS flow
alternative) runs the same frames in this one process, so the ratios in the table compare
like with like on a noisy machine. A second table times a 100-word vocabulary switch: cold
(nothing cached), from the disk cache (a new process), and from memory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.data.synthavs import generate_clip
from avss_sdk.data.synthavs.writer import write_dataset_files
from avss_sdk.preprocess import LOG_MEL_SECONDS
from avss_sdk.runtime.backends import BACKENDS, BackendError
from avss_sdk.segmenter import Segmenter
from avss_sdk.stream import pipeline_threads
from benchmarks.report import machine, publish

STAGES = ("preprocess", "flow", "image_encoder", "audio_encoder", "vta", "mask_decoder", "postprocess")
VOCAB = ["dog", "guitar", "person speaking", "alarm clock", "violin", "cat", "car engine", "piano"]


def benchmark_frames(directory: Path, count: int, size: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` camera-size RGB frames of SynthAVS clips with their audio windows."""
    rows = [generate_clip(directory, "test", 7, i, frames=20, size=224) for i in range(max(1, count // 20))]
    write_dataset_files(directory, "test", 7, rows)
    dataset = AVSSDataset(directory, "test")
    frames, windows = [], []
    for clip in (dataset[i] for i in range(len(dataset))):
        for i in range(len(clip.frames)):
            frames.append(cv2.resize(clip.frames[i], size, interpolation=cv2.INTER_LINEAR))
            windows.append(clip.audio_window(i, LOG_MEL_SECONDS))
    return frames[:count], windows[:count]


def run_backend(segmenter: Segmenter, frames: list[np.ndarray], windows: list[np.ndarray],
                warmup: int) -> dict[str, float]:
    segmenter.reset()
    for i in range(warmup):
        segmenter.segment(frames[i], windows[i])
    segmenter.reset()
    timings = []
    start = time.perf_counter()
    for i, (frame, window) in enumerate(zip(frames, windows)):
        timings.append(segmenter.segment(frame, window, i / 25.0, i).timings)
    elapsed = time.perf_counter() - start
    row = {"fps": len(frames) / elapsed}
    for stage in (*STAGES, "total"):
        row[stage] = statistics.median(t[stage] for t in timings)
    return row


def stream_file(directory: Path, frames: int, size: tuple[int, int]) -> Path:
    """A camera-size H.264 + AAC file of one SynthAVS clip at 25 frames/s (Stream's end-to-end row)."""
    from samples.make_demo_clip import write_mp4

    row = generate_clip(directory, "test", 8, 0, frames=frames, fps=25.0, size=224)
    write_dataset_files(directory, "test", 8, [row])
    clip = AVSSDataset(directory, "test")[0]
    scaled = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in clip.frames])
    path = directory / "stream.mp4"
    write_mp4(path, scaled, clip.frame_times, clip.audio * 32767)
    return path


def run_stream(path: Path, segmenter: Segmenter) -> dict[str, float]:
    """Frames per second of ``Stream(source=path)``: decoding, pairing and segmenting every frame."""
    from avss_sdk.stream import Stream

    start = time.perf_counter()
    count = 0
    with Stream(source=str(path), segmenter=segmenter) as stream:
        for _ in stream:
            count += 1
    return {"fps": count / (time.perf_counter() - start), "frames": count}


def vocabulary_switch(engines: str | None, backend: str, words: list[str], threads: int | None) -> dict[str, float]:
    """Milliseconds to make ``words`` the vocabulary: cold, from the disk cache, from memory."""
    with tempfile.TemporaryDirectory() as cache:
        first = Segmenter(engines, vocab=["dog"], backend=backend, cache_dir=cache, threads=threads, log=lambda m: None)
        start = time.perf_counter()
        first.set_vocab(words)
        cold = time.perf_counter() - start
        second = Segmenter(engines, vocab=["dog"], backend=backend, cache_dir=cache, threads=threads,
                           log=lambda m: None)
        start = time.perf_counter()
        second.set_vocab(words)
        disk = time.perf_counter() - start
        second.set_vocab(["dog"])
        start = time.perf_counter()
        second.set_vocab(words)
        memory = time.perf_counter() - start
    return {"cold": cold * 1000, "disk": disk * 1000, "memory": memory * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Frames per second and per-stage latency of every backend present.")
    parser.add_argument("--engines", default=None, help="engine directory (default: the shipped default model)")
    parser.add_argument("--frames", type=int, default=200, help="frames timed per backend (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed frames first (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per backend (default: all)")
    parser.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        frames, windows = benchmark_frames(Path(tmp), args.frames, (args.width, args.height))
    media = Path(tempfile.mkdtemp())
    clip_path = stream_file(media, args.frames, (args.width, args.height))

    rows: dict[str, dict[str, float]] = {}
    descriptions: dict[str, str] = {}
    streamed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        for backend in BACKENDS:
            for flow in ("model", "dis"):
                try:
                    segmenter = Segmenter(args.engines, vocab=VOCAB, backend=backend, flow=flow, cache_dir=cache,
                                          threads=args.threads, log=lambda m: None)
                except BackendError as error:
                    print(f"{backend}: not measured ({str(error).splitlines()[0]})", file=sys.stderr)
                    break
                name = f"{backend}, flow={flow}"
                descriptions[name] = segmenter.backend.description
                rows[name] = run_backend(segmenter, frames, windows, args.warmup)
                if backend == "onnxruntime" and args.threads is None:
                    # What Stream(source=...) makes for itself: each session a share of the cores.
                    segmenter.close()
                    segmenter = Segmenter(args.engines, vocab=VOCAB, backend=backend, flow=flow, cache_dir=cache,
                                          threads=pipeline_threads(), log=lambda m: None)
                streamed[name] = run_stream(clip_path, segmenter)["fps"]
                segmenter.close()
                print(f"{name}: {rows[name]['fps']:.1f} frames/s", file=sys.stderr)

    words = [f"{w} {i}" for i, w in enumerate(VOCAB * 13)][:100]
    switch = vocabulary_switch(args.engines, "onnxruntime", words, args.threads)

    lines = [f"# Stream benchmark: {args.frames} frames at {args.width}x{args.height}, vocabulary of {len(VOCAB)}", "",
             f"Machine: {machine()}", "",
             "| backend | frames/s | vs torch | Stream(file) frames/s | " + " | ".join(STAGES) + " | total ms |",
             "|---|---:|---:|---:|" + "---:|" * (len(STAGES) + 1)]
    reference = rows.get("torch, flow=model", {}).get("fps")
    for name, row in rows.items():
        ratio = f"{row['fps'] / reference:.2f}x" if reference else "n/a"
        lines.append(f"| {name} | {row['fps']:.1f} | {ratio} | {streamed[name]:.1f} | "
                     + " | ".join(f"{row[s]:.1f}" for s in STAGES) + f" | {row['total']:.1f} |")
    lines += ["", "frames/s: Segmenter.segment on decoded frames; Stream(file): a SynthAVS clip of as many frames, as a camera-size H.264 + "
              "AAC file through Stream (decoding and audio pairing included, every frame; ONNX Runtime with "
              "the threads per session a pipelined Stream chooses, unless --threads). Stage columns: "
              "median milliseconds per frame. Backends: "
              + "; ".join(f"{n}: {d}" for n, d in descriptions.items() if n.endswith("model")), "",
              f"## Switching to a {len(words)}-word vocabulary (ONNX Runtime)", "",
              "| cold (text encoder) | disk cache (new process) | memory cache |", "|---:|---:|---:|",
              f"| {switch['cold']:.0f} ms | {switch['disk']:.1f} ms | {switch['memory']:.1f} ms |"]
    shutil.rmtree(media, ignore_errors=True)
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
