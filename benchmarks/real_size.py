"""What a user's real-size model costs on this CPU: ViT-B/32 image and text towers, 224 x 224, random weights.

    python -m benchmarks.real_size --work /tmp/real_size --out benchmarks/results/real-size-cpu.md

The same SSP-OV architecture as the default, configured like ``train/configs/clip_vit_b32.yaml``
(open_clip's ViT-B-32 as image backbone and as text tower, a 63 M-parameter text encoder;
input 224, hidden 128) with random weights: only the cost matters here. The script saves
that checkpoint, exports it with ``avss-build-engines --onnx-only --no-fp16-onnx``
(the checked ONNX files the runtime runs; skipped when ``WORK/export`` already holds it),
then times Stream(file) like ``benchmarks/speedup.py`` (today's FP32 path and the pipelined
one, interleaved: frames/s, latency, per-stage ms with their share of the CPU's GEMM peak),
lists each stage's parameters, ONNX size and GFLOPs, and times a vocabulary switch: cold
(the text encoder runs on every prompt), from the disk cache and from the memory cache.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from avss_sdk.runtime.manifest import Manifest, ManifestError
from benchmarks.report import machine, publish
from benchmarks.speedup import VARIANTS as SPEEDUP_VARIANTS, STAGES, gemm_peak, speed_table, stage_cells, stage_gflops
from benchmarks.stream import VOCAB, stream_file, vocabulary_switch

CONFIG = {"image_size": 224, "backbone": "open_clip", "text_model": "ViT-B-32", "pretrained_backbone": False,
          "hidden_dim": 128}
VARIANTS = {name: SPEEDUP_VARIANTS[name] for name in ("today: FP32, one frame at a time", "FP32, pipelined")}


def export(work: Path) -> Manifest:
    """The real-size export in ``work/export`` (made once: a random checkpoint, then the export command)."""
    out = work / "export"
    try:
        return Manifest.load(out)
    except ManifestError:
        pass
    import torch

    from avss_sdk.modeling.checkpoint import build_model, save_checkpoint
    from avss_sdk.modeling.ssp_ov import ModelConfig

    torch.manual_seed(0)
    checkpoint = work / "real_size.pt"
    save_checkpoint(checkpoint, build_model(ModelConfig.from_dict(CONFIG)).eval(), {"foreground_threshold": 0.5})
    done = subprocess.run([sys.executable, "-m", "avss_sdk.export.build_engines", "--checkpoint",
                           str(checkpoint), "--out", str(out), "--onnx-only", "--no-fp16-onnx", "--quiet"])
    if done.returncode != 0:
        raise SystemExit(f"export failed with status {done.returncode}")
    return Manifest.load(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the checkpoint and its export")
    parser.add_argument("--frames", type=int, default=60, help="frames of the stream clip (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per variant (default: %(default)s)")
    parser.add_argument("--switch-words", type=int, default=20, help="words in the timed vocabulary switch")
    parser.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.rounds < 1 or args.switch_words < 1:
        parser.error("--frames must be at least 2, --rounds and --switch-words at least 1")
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = export(args.work)
    sizes = {name: manifest.onnx_path(name).stat().st_size / 2**20 for name in manifest.stages}
    from avss_sdk.modeling.checkpoint import load_model

    model, _ = load_model(manifest.path(manifest.model.checkpoint))
    params = {name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6 for name in manifest.stages}
    del model
    peaks = {kind: gemm_peak(kind) for kind in ("fp32", "int8")}
    gflops = stage_gflops(manifest)
    with tempfile.TemporaryDirectory() as media:
        clip = stream_file(Path(media), args.frames, (640, 480))
        rows, _ = speed_table(str(manifest.root), clip, args.rounds, None, VARIANTS)
    words = [f"{w} {i}" for i, w in enumerate(VOCAB * 40)][:args.switch_words]
    switch = vocabulary_switch(str(manifest.root), "onnxruntime", words, None)
    prompts = args.switch_words * len(manifest.text.category_templates)
    base = next(iter(rows.values()))["fps"]
    lines = ["# Real-size model on this CPU: ViT-B/32 image and text towers, input 224 (random weights)", "",
             f"Machine: {machine()}", "", f"Config: {CONFIG}; roofline FP32 {peaks['fp32']:.0f} GFLOP/s.", "",
             "| stage | parameters | ONNX MiB | GFLOPs per frame |", "|---|---:|---:|---:|"]
    for name in manifest.stages:
        lines.append(f"| {name} | {params[name]:.1f} M | {sizes[name]:.1f} | "
                     + (f"{gflops[name]:.2f}" if name in gflops else "per prompt, on vocabulary change") + " |")
    lines += ["", f"Stream(file): {args.frames} frames at 640x480, vocabulary of {len(VOCAB)}, {args.rounds} "
              "interleaved rounds (median).", "",
              "| variant | frames/s | vs today | latency ms | " + " | ".join(STAGES) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(STAGES)]
    for name, row in rows.items():
        cells = stage_cells(row, gflops, peaks)
        lines.append(f"| {name} | {row['fps']:.2f} | {row['fps'] / base:.2f}x | {row['latency']:.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Vocabulary switch to {args.switch_words} new words ({prompts} prompts through the "
              f"{params['text_encoder']:.0f} M-parameter text encoder): cold **{switch['cold']:.0f} ms** "
              f"({switch['cold'] / prompts:.1f} ms a prompt), from the disk cache (a new process) {switch['disk']:.1f} ms, "
              f"from the memory cache {switch['memory']:.1f} ms."]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
