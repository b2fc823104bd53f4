"""Size, parameters and GFLOPs per frame of an SSP-OV checkpoint, per stage.

``python -m benchmarks.model_stats --checkpoint default --out benchmarks/results/model_stats.md``

FLOPs are counted by ``torch.utils.flop_counter`` (2 per multiply-add) for one frame at
the model's input size with a vocabulary of ``--vocab`` words; the text encoder runs
only when the vocabulary changes, so it is listed apart from the per-frame total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from avss_sdk.modeling.checkpoint import CheckpointError, load_model, resolve_checkpoint
from avss_sdk.preprocess import MEL_BANDS, MEL_FRAMES
from benchmarks.report import publish


def _gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:  # with grad on: its module tracker needs autograd
        fn()
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--vocab", type=int, default=10, help="vocabulary size K for the per-frame stages")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    try:
        model, _ = load_model(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
    size = model.config.image_size
    frame = torch.zeros(1, 3, size, size)
    mel = torch.zeros(1, MEL_FRAMES, MEL_BANDS)
    vocab = [f"word {i}" for i in range(args.vocab)]
    with torch.no_grad():
        classes = model.text_encoder.embed_categories(vocab)
        scene = model.scene_embeddings([None])
        features, dense = model.image_encoder(frame)
        flow = model.flow(frame, frame)
        audio = model.audio_encoder(mel)
        aligned = model.vta(features, classes, scene)
    tokens = model.text_encoder.tokenize(["a photo of a dog."])
    stages = {
        "flow": (model.flow, lambda: model.flow(frame, frame)),
        "image_encoder": (model.image_encoder, lambda: model.image_encoder(frame)),
        "audio_encoder": (model.audio_encoder, lambda: model.audio_encoder(mel)),
        "vta": (model.vta, lambda: model.vta(features, classes, scene)),
        "mask_decoder": (model.mask_decoder, lambda: model.mask_decoder(aligned, dense, flow, audio, classes)),
        "text_encoder (per prompt, on vocabulary change)": (model.text_encoder, lambda: model.text_encoder(tokens)),
    }
    rows, frame_params, frame_flops = [], 0, 0.0
    for name, (module, run) in stages.items():
        params = sum(p.numel() for p in module.parameters())
        gflops = _gflops(run)
        rows.append(f"| {name} | {params / 1e6:.2f} M | {gflops:.3f} |")
        if not name.startswith("text_encoder"):
            frame_params += params
            frame_flops += gflops
    path = resolve_checkpoint(args.checkpoint)
    total_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("post_mask"))
    text = "\n".join([
        f"# Model size and compute: {path.name}",
        "",
        f"Input {size}x{size}, vocabulary K = {args.vocab}. Checkpoint file: {path.stat().st_size / 2**20:.1f} MiB "
        f"(float16 weights). Parameters at inference: {total_params / 1e6:.2f} M "
        f"(the training-only post-mask head excluded).",
        "",
        "| stage | parameters | GFLOPs |",
        "|---|---|---|",
        *rows,
        f"| **per frame** (all but the text encoder) | {frame_params / 1e6:.2f} M | **{frame_flops:.3f}** |",
        "",
    ])
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
