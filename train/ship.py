"""Make a trained checkpoint the package's default model, checkpoint and ONNX export together.

    python train/ship.py --checkpoint runs/default/model.pt --calibrate data/synthavs
    python train/ship.py --checkpoint runs/default/model.pt --calibrate data/synthavs --no-int8

Writes ``avss_sdk/models/ssp_ov_default.pt`` (weights in float16, optimiser state
dropped; the model runs in float32 after loading) with the training config and the
foreground threshold and the guided filter that refines outlines (or none), picked together on a
validation split (``--calibrate``), and its checked
FP32 ONNX export with manifest and tokenizer in ``avss_sdk/models/default/``, the
directory the torch-free runtime runs from. With calibration data (``--int8-calibration``,
by default the ``--calibrate`` data) the export also gets its INT8 files
(:mod:`avss_sdk.export.quantize_int8`: calibrated on that data's val split, each stage kept
INT8 only where its labels agree with FP32). All of it is written to a staging folder first
and moved into place only when the export (and the INT8 step) passed its checks, so the
parts never disagree: the manifest's model hash is checked against the shipped checkpoint
at the end.
``--out`` ships elsewhere (the export then goes into ``default/`` beside it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from avss_sdk.export.quantize_int8 import CALIBRATION_CLIPS, CHECK_CLIPS, calibration_methods
from avss_sdk.fileio import file_hash
from avss_sdk.modeling.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_model, save_checkpoint
from avss_sdk.runtime.manifest import CALIBRATION_METHODS, Manifest, ManifestError


def ship(checkpoint: str | Path, out: Path, calibrate: Path | None = None, log=print,
         int8: Path | None = None, int8_clips: int = CALIBRATION_CLIPS,
         int8_check_clips: int = CHECK_CLIPS, int8_methods: tuple[str, ...] = CALIBRATION_METHODS) -> Manifest:
    """Write ``out`` (float16 checkpoint) and its FP32 ONNX export in ``out.parent / "default"``, in step.

    With ``int8`` (a SynthAVS root), the export also gets INT8 files calibrated on
    ``int8_clips`` of its val clips and judged on the next ``int8_check_clips``, with each calibrator
    of ``int8_methods`` (the best one kept).
    Raises FileNotFoundError / CheckpointError for a bad checkpoint, ExportCheckError when the
    export fails its checks and QuantizationError / ValueError when the INT8 step does
    (nothing shipped is touched then), ManifestError if the shipped pair does not match at the end.
    """
    from avss_sdk.export.export_onnx import export_model
    from avss_sdk.export.quantize_int8 import check_calibration, quantize_model

    if int8 is not None:
        check_calibration(int8, "val", int8_clips, int8_check_clips)  # before the export, not after
    model, payload = load_model(checkpoint)
    extra = {key: payload[key] for key in ("step", "train_config", "vocabulary", "foreground_threshold",
                                           "guided_filter") if key in payload}
    if calibrate is not None:
        from avss_sdk.data.avsbench import AVSSDataset
        from avss_sdk.postprocess import GuidedFilter
        from avss_sdk.training.data import prepare_frames
        from avss_sdk.training.evaluate import calibrate_decision

        dataset = AVSSDataset(calibrate, split="val", classes="all", load_flow=False)
        data = prepare_frames(dataset, model.config.image_size, calibrate / "cache")
        threshold, guided, scores = calibrate_decision(model, data, dataset.base_ids, dataset.novel_ids)
        def named(pair: tuple[GuidedFilter | None, float]) -> str:
            return f"{pair[0] or 'no filter'}, {pair[1]}"

        best = sorted(scores.items(), key=lambda item: -item[1])[:5]
        log("val harmonic mIoU, best five of threshold and filter: "
            + "; ".join(f"{named(pair)}: {v:.1f}" for pair, v in best))
        plain = max((pair for pair in scores if pair[0] is None), key=scores.get)
        log(f"chose threshold {threshold} with {guided or 'no guided filter'} (best without a filter: "
            f"{named(plain)}: {scores[plain]:.1f})")
        extra["foreground_threshold"] = threshold
        extra["guided_filter"] = guided.to_dict() if guided else None

    out = Path(out)
    onnx_dir = out.parent / "default"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ship-", dir=out.parent))  # same file system: renames are atomic
    try:
        staged = staging / out.name
        save_checkpoint(staged, model, extra, half=True)
        manifest = export_model(staged, staging / "default", precision="fp32", fp16=False, log=log)
        manifest.engines = {"built": False, "reason": "--onnx-only"}
        manifest.save()
        if int8 is not None:
            quantize_model(manifest, int8, "val", int8_clips, int8_check_clips, log=log, methods=int8_methods)
            manifest.save()
        old = staging / "previous"
        if onnx_dir.exists():
            os.replace(onnx_dir, old)
        os.replace(staging / "default", onnx_dir)
        os.replace(staged, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shipped = Manifest.load(onnx_dir)
    if shipped.model_hash != file_hash(out) or shipped.path(shipped.model.checkpoint).resolve() != out.resolve():
        raise ManifestError(f"{onnx_dir} does not describe {out} (model hash {shipped.model_hash}, "
                            f"checkpoint {file_hash(out)})")
    return shipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint (e.g. runs/default/model.pt)")
    parser.add_argument("--calibrate", type=Path, metavar="DATA",
                        help="pick the foreground threshold and guided filter on DATA's val split "
                             "(stored with the model)")
    parser.add_argument("--int8-calibration", type=Path, metavar="DATA",
                        help="SynthAVS root whose val clips calibrate and judge the INT8 files "
                             "(default: the --calibrate data; INT8 runs whenever there is calibration data)")
    parser.add_argument("--no-int8", action="store_true", help="ship the FP32 export only")
    parser.add_argument("--int8-clips", type=int, default=CALIBRATION_CLIPS, metavar="N",
                        help="val clips that calibrate the INT8 ranges (default: %(default)s)")
    parser.add_argument("--int8-check-clips", type=int, default=CHECK_CLIPS, metavar="N",
                        help="further val clips on which each INT8 stage is judged (default: %(default)s)")
    parser.add_argument("--int8-calibrator", choices=["best", *CALIBRATION_METHODS], default="best",
                        help="how INT8 activation ranges are calibrated: one calibrator, or each stage judged "
                             "with every one and keeping the best (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT,
                        help=f"the checkpoint to write; its ONNX export goes into default/ beside it "
                             f"(default: {DEFAULT_CHECKPOINT})")
    args = parser.parse_args(argv)
    if args.no_int8 and args.int8_calibration is not None:
        parser.error("--no-int8 and --int8-calibration contradict each other")
    if args.int8_clips < 1 or args.int8_check_clips < 1:
        parser.error("--int8-clips and --int8-check-clips must be at least 1")
    int8 = None if args.no_int8 else args.int8_calibration or args.calibrate
    from avss_sdk.export.export_onnx import ExportCheckError
    from avss_sdk.export.quantize_int8 import QuantizationError

    try:
        manifest = ship(args.checkpoint, args.out, args.calibrate, int8=int8, int8_clips=args.int8_clips,
                        int8_check_clips=args.int8_check_clips, int8_methods=calibration_methods(args))
    except (FileNotFoundError, CheckpointError, ManifestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ExportCheckError as error:
        print(f"error: export check failed, nothing was shipped: {error}", file=sys.stderr)
        return 1
    except QuantizationError as error:
        print(f"error: INT8 check failed, nothing was shipped: {error}", file=sys.stderr)
        return 1
    int8_note = f"; INT8 stages: {', '.join(manifest.int8_stages) or 'none passed'}" if manifest.int8 else ""
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) and its ONNX export {manifest.root} "
          f"(model hash {manifest.model_hash}{int8_note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
