"""Make a trained checkpoint the package's default model: ``python train/ship.py --checkpoint runs/default/model.pt``.

Writes ``avss_sdk/models/ssp_ov_default.pt`` (weights in float16, optimiser state
dropped; the model runs in float32 after loading) atomically, with the training
config and the foreground threshold picked on a validation split (``--calibrate``)
stored alongside the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.modeling.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_model, save_checkpoint
from avss_sdk.training.data import prepare_frames
from avss_sdk.training.evaluate import calibrate_threshold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint (e.g. runs/default/model.pt)")
    parser.add_argument("--calibrate", type=Path, metavar="DATA",
                        help="pick the foreground threshold on DATA's val split (stored with the model)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT, help=f"default: {DEFAULT_CHECKPOINT}")
    args = parser.parse_args(argv)
    try:
        model, payload = load_model(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
    extra = {key: payload[key] for key in ("step", "train_config", "vocabulary", "foreground_threshold") if key in payload}
    if args.calibrate:
        dataset = AVSSDataset(args.calibrate, split="val", classes="all", load_flow=False)
        data = prepare_frames(dataset, model.config.image_size, args.calibrate / "cache")
        threshold, scores = calibrate_threshold(model, data, dataset.base_ids, dataset.novel_ids)
        print("val harmonic mIoU by threshold: " + ", ".join(f"{t}: {v:.1f}" for t, v in scores.items()))
        extra["foreground_threshold"] = threshold
    save_checkpoint(args.out, model, extra, half=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
