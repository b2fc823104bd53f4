"""Turn a trained checkpoint into everything the runtime needs, for the machine this runs on.

    avss-build-engines --checkpoint default --out engines/
    python export/build_engines.py ...            (the same, from a source checkout)

1. Exports each stage to ONNX (FP32 and FP16) and checks every file: onnx.checker,
   TensorRT 10.3's operator support, ONNX Runtime against PyTorch (:mod:`avss_sdk.export.export_onnx`).
2. Writes ``tokenizer.json`` and ``manifest.json``: the ONNX Runtime backend runs from these alone.
3. Where TensorRT and a GPU are present, builds one engine per stage (optimization profiles
   for batch and vocabulary size, a persisted timing cache, precision by TensorRT version)
   and records them in the manifest. An engine already in DIR that still matches (TensorRT
   version, GPU, ONNX hash, precision, profile) is kept; one that does not is rebuilt, and
   the message says why.
4. With ``--int8 --calibration DATA``, also writes INT8 QDQ files of the per-frame convolution
   stages calibrated on DATA's SynthAVS frames, and keeps each stage INT8 only where its labels
   still agree with FP32 (:mod:`avss_sdk.export.quantize_int8`; the manifest's ``int8`` section
   says which).
5. With ``--triton DIR``, also writes a Triton Inference Server model repository.

Exit status: 0 everything asked for was built; 3 the ONNX files and the manifest were
written but no engines (TensorRT or a GPU is missing; use ``--onnx-only`` to ask for just
that and get 0); 1 an export check failed; 2 bad input (missing or foreign checkpoint, bad option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avss_sdk.export.quantize_int8 import add_int8_options, calibration_methods, check_int8_options
from avss_sdk.runtime.manifest import PRECISIONS, Manifest, ManifestError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_NO_ENGINES = 0, 1, 2, 3


def build_engines(manifest: Manifest, previous: Manifest | None, precision: str, workspace_gb: float,
                  plugin: bool, log=print) -> str | None:
    """Build (or keep, where still current) one engine per stage into ``manifest``; None, or why not.
    With ``plugin``, the stages with attention get plugin engines where this TensorRT and GPU can
    have them (else plain ones, and a one-line reason); the kernel's PTX is compiled here, by the
    local nvcc, into the engines folder."""
    from avss_sdk.runtime import tensorrt_build as build
    from avss_sdk.runtime import tensorrt_plugin
    from avss_sdk.runtime.tensorrt_common import TensorRTUnavailable, compute_capability, tensorrt_version

    version = tensorrt_version()
    if version is None:
        return "TensorRT is not installed (pip install tensorrt, or JetPack on Jetson)"
    try:
        capability = compute_capability()
    except (RuntimeError, TensorRTUnavailable) as error:
        return f"no usable CUDA GPU ({error})"
    engines = manifest.root / "engines"
    if plugin:
        plugin, reason = build.plugin_choice(manifest, version, capability)
        if reason is not None:
            log(f"  {reason}")
    ptx = None
    if plugin:
        try:
            ptx = tensorrt_plugin.ensure_ptx(engines, log=log)
        except tensorrt_plugin.KernelBuildError as error:
            log(f"  plain TensorRT engines instead of the fused-attention plugin: {error}")
            plugin = False
    cache = build.TensorRTEngineCache(log)
    for name in manifest.stages:
        uses_plugin = build.stage_uses_plugin(manifest.stages[name].onnx, plugin)
        onnx_path = build.stage_onnx(manifest, name, version, precision, uses_plugin)
        old = previous.stages[name].engine if previous is not None else None
        if old is not None:  # the engine this directory already holds: kept if still current for this export
            manifest.stages[name].engine = old
            path, reason = cache.select(manifest, name, precision, version, capability, engines, uses_plugin)
            if path is not None:
                log(f"  {name:<14} engine up to date: {old.file}")
                continue
            log(f"  {name:<14} {reason}: rebuilding from {onnx_path.name}")
        suffix = "-plugin" if uses_plugin else ""
        manifest.stages[name].engine = build.build_engine(
            onnx_path, engines / f"{name}.{precision}{suffix}.engine", precision, build.stage_profile(manifest, name),
            workspace_gb, engines / "timing.cache", ptx if uses_plugin else None, log, relative_to=manifest.root)
    manifest.engines = {"built": True, "reason": f"TensorRT {version}, compute capability {capability}"}
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export an SSP-OV checkpoint to checked ONNX files, a manifest and (where TensorRT and a GPU "
        "are present) TensorRT engines, one per stage.",
        epilog="Exit status: 0 done; 3 ONNX and manifest only (no TensorRT/GPU; --onnx-only makes that 0); "
        "1 a check failed; 2 bad input.")
    parser.add_argument("--checkpoint", default="default",
                        help="'default' (the shipped model) or a checkpoint file (default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (manifest.json, onnx/, engines/)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default: %(default)s)")
    parser.add_argument("--max-vocab", type=int, default=256,
                        help="largest vocabulary the engines accept (default: %(default)s)")
    parser.add_argument("--workspace", type=float, default=2.0, metavar="GB",
                        help="TensorRT builder workspace in GiB (default: %(default)s)")
    parser.add_argument("--plugin", action="store_true",
                        help="also export the cross-attentions as avss::FusedCrossAttention nodes and build the "
                        "engines with the CUDA plugin (TensorRT >= 10.9)")
    parser.add_argument("--triton", type=Path, metavar="DIR", help="also write a Triton model repository here")
    parser.add_argument("--onnx-only", action="store_true", help="export and check ONNX only; build no engines")
    parser.add_argument("--no-fp16-onnx", action="store_true",
                        help="export FP32 ONNX only (half the size; engines are then FP32): how the package's "
                        "default model is shipped")
    parser.add_argument("--int8", action="store_true",
                        help="also write INT8 QDQ files (TensorRT explicit quantization and ONNX Runtime CPU) of the "
                        "flow, image and audio encoders, calibrated on --calibration")
    add_int8_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    if args.int8 and args.calibration is None:
        parser.error("--int8 needs --calibration DATA (a SynthAVS root: python train/make_synth.py ...)")
    if args.calibration is not None and not args.int8:
        parser.error("--calibration is only used with --int8")
    check_int8_options(parser, args)
    if args.max_vocab < 1 or args.max_vocab > 4096:
        parser.error(f"--max-vocab must be between 1 and 4096, got {args.max_vocab}")
    if args.workspace <= 0:
        parser.error(f"--workspace must be positive, got {args.workspace}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = (lambda message: None) if args.quiet else print
    try:
        from avss_sdk.export.export_onnx import ExportCheckError, export_model
        from avss_sdk.modeling.checkpoint import CheckpointError
    except ImportError as error:
        print(f"error: the export needs PyTorch and ONNX ({error}): install torch first (see the README), "
              f"then pip install -e \".[train]\" (or 'avss_sdk[train]')", file=sys.stderr)
        return EXIT_BAD_INPUT

    try:
        previous = Manifest.load(args.out)
    except ManifestError:
        previous = None
    log(f"exporting {args.checkpoint} to {args.out}")
    try:
        manifest = export_model(args.checkpoint, args.out, args.max_vocab, args.precision, args.plugin,
                                not args.no_fp16_onnx, log)
    except (FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportCheckError as error:
        print(f"error: export check failed: {error}", file=sys.stderr)
        return EXIT_CHECK_FAILED

    if args.int8:
        from avss_sdk.export.quantize_int8 import QuantizationError, quantize_model

        try:
            quantize_model(manifest, args.calibration, args.calibration_split, args.calibration_clips,
                           args.int8_check_clips, args.int8_min_agreement, log,
                           keep_rejected=args.int8_keep_rejected, methods=calibration_methods(args))
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except QuantizationError as error:
            print(f"error: int8 check failed: {error}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        manifest.save()

    status = EXIT_OK
    if args.onnx_only:
        manifest.engines = {"built": False, "reason": "--onnx-only"}
    else:
        try:
            reason = build_engines(manifest, previous, manifest.precision, args.workspace, args.plugin, log)
        except Exception as error:  # a TensorRT build error: keep the checked ONNX and manifest usable
            reason = f"engine build failed: {error}"
        if reason is not None:
            manifest.engines = {"built": False, "reason": reason}
            print(f"no TensorRT engines were built: {reason}.\n"
                  f"The ONNX files and {args.out / 'manifest.json'} are written and checked; the ONNX Runtime "
                  f"backend runs from them.", file=sys.stderr)
            status = EXIT_NO_ENGINES
    manifest.save()
    log(f"wrote {manifest.root / 'manifest.json'}")
    if args.triton is not None:
        from avss_sdk.export.triton_repository import TritonExportError, write_triton_repository

        backend = "tensorrt" if manifest.engines["built"] else "onnxruntime"
        try:
            write_triton_repository(manifest, args.triton, backend, manifest.precision)
        except TritonExportError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        log(f"wrote a Triton model repository ({backend}) to {args.triton}")
    return status


if __name__ == "__main__":
    sys.exit(main())
