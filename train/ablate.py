"""Test the method's claims: train and evaluate SSP-OV with each idea switched off.

``python train/ablate.py`` trains every variant with ``train/configs/ablation.yaml``
(only the switch under test differs), picks each one's foreground threshold on the
val split, evaluates each on the test split with the clips' scene text (SSP's
setting), and writes a table to
``benchmarks/results/ablation.md`` (and ``.json``): base / novel / harmonic mIoU,
AVSS mIoU and F, and mIoU on frames whose sounding objects move / stand still.
Runs resume like train.py; finished variants with the same setting are not retrained
(another setting needs another ``--set out=DIR``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.fileio import write_text_atomic
from avss_sdk.modeling.checkpoint import CheckpointError, load_model, read_checkpoint
from avss_sdk.training.data import prepare_frames
from avss_sdk.training.evaluate import calibrate_decision, evaluate
from avss_sdk.training.trainer import train

from train import load_config  # train/train.py: a script's own folder is first on sys.path

VARIANTS = {
    "full": [],
    "no flow pre-mask": ["model.use_premask=false"],
    "no scene prompt": ["model.use_scene_prompt=false"],
    "no category prompt (VTA off)": ["model.use_vta=false"],
    "no post-mask loss": ["model.use_post_mask=false"],
}


def write_table(path: Path, config: str, base, split: str, rows: list[str], payload: dict) -> None:
    """Write the markdown table and the JSON (again after every variant, so a cut-short run keeps its rows)."""
    header = ["| variant | base mIoU | novel mIoU | harmonic | AVSS mIoU | AVSS F | moving base / novel | "
              "still base / novel |", "|---|---|---|---|---|---|---|---|"]
    machine = f"{platform.processor() or platform.machine()}, {platform.system()}"
    text = "\n".join([
        "# Ablation: SSP-OV with each idea switched off",
        "",
        f"`python train/ablate.py --config {config}` on SynthAVS-OV ({split} split, scene text given).",
        f"Setting: {base.model.image_size}px, {base.optim.steps} steps of batch {base.optim.batch_size}, CPU "
        f"({machine}). Each variant's foreground threshold is picked on the val split. "
        "Moving / still: frames whose sounding objects all move / all stand still.",
        "",
        *header, *rows, "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".md").write_text(text, encoding="utf-8")
    write_text_atomic(path.with_suffix(".json"), json.dumps(payload, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="train/configs/ablation.yaml")
    parser.add_argument("--data", help="dataset root (default: the config's data.root)")
    parser.add_argument("--split", default="test", help="evaluation split (default test)")
    parser.add_argument("--out", default="benchmarks/results/ablation", help="table path without extension")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    parser.add_argument("--only", action="append", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    rows, payload = [], {}
    for name, switches in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        base = load_config(args.config, args.set)
        slug = name.split(" (")[0].replace(" ", "_").replace("-", "_")
        config = load_config(args.config, [*args.set, *switches], out=str(Path(base.out) / slug))
        if args.data:
            config.data.root = args.data
        tic = time.perf_counter()
        checkpoint = Path(config.out) / "model.pt"
        if checkpoint.is_file() and read_checkpoint(checkpoint).get("train_config") != config.to_dict():
            raise SystemExit(f"{checkpoint} was trained with another setting; choose a new folder with "
                             f"--set out=DIR")
        if not checkpoint.is_file():
            checkpoint = train(config, progress=not args.quiet)
        train_seconds = time.perf_counter() - tic
        model, _ = load_model(checkpoint)
        cache = config.data.cache or Path(config.data.root) / "cache"
        val = AVSSDataset(config.data.root, split="val", classes="all", load_flow=False)
        val_data = prepare_frames(val, config.model.image_size, cache, progress=not args.quiet)
        threshold, guided, _ = calibrate_decision(model, val_data, val.base_ids, val.novel_ids,
                                                  progress=not args.quiet)
        dataset = AVSSDataset(config.data.root, split=args.split, classes="all", load_flow=False)
        data = prepare_frames(dataset, config.model.image_size, cache, progress=not args.quiet)
        result = evaluate(model, data, dataset.base_ids, dataset.novel_ids, scene_text=True, progress=not args.quiet,
                          threshold=threshold, guided=guided)
        s, m, st = result.scores, result.moving, result.still
        rows.append(f"| {name} | {s.base_miou:.1f} | {s.novel_miou:.1f} | {s.harmonic_miou:.1f} | "
                    f"{result.avss_miou:.1f} | {result.avss_fscore:.1f} | {m.base_miou:.1f} / {m.novel_miou:.1f} | "
                    f"{st.base_miou:.1f} / {st.novel_miou:.1f} |")
        payload[name] = {"switches": switches, "train_seconds": round(train_seconds), "foreground_threshold": threshold,
                         "guided_filter": guided.to_dict() if guided else None, **result.to_dict()}
        print(rows[-1], flush=True)
        write_table(Path(args.out), args.config, base, args.split, rows, payload)

    print(f"wrote {Path(args.out).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, CheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
