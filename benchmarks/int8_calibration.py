"""Which INT8 calibrator keeps each stage's labels: every stage x calibrator x end layers, judged like the gate.

    python -m benchmarks.int8_calibration --engines avss_sdk/models/default --calibration data/synthavs \
        --out benchmarks/results/int8-calibration-cpu.md

Works on a copy of the export (its FP32 files; the original is not touched). For each stage of
``INT8_STAGES``, each calibrator of ``CALIBRATION_METHODS`` and with and without the stage's end
layers in float, the stage's INT8 files are written from the same calibration frames and the
pipeline with that stage alone in INT8 is compared with FP32 on the held-out clips: the numbers
``quantize_model``'s gate decides by. The gate's own choice per stage is marked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

from avss_sdk.export.quantize_int8 import (INT8_STAGES, MIN_AGREEMENT, collect_inputs, copy_fp32_export, end_layers,
                                           label_agreement, write_int8_files)
from avss_sdk.runtime.manifest import CALIBRATION_METHODS
from benchmarks.report import machine, publish


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=Path, default=Path("avss_sdk/models/default"), help="an export directory")
    parser.add_argument("--calibration", type=Path, required=True, help="SynthAVS root (its val split calibrates)")
    parser.add_argument("--clips", type=int, default=24, help="calibration clips (default: the gate's 24)")
    parser.add_argument("--check-clips", type=int, default=12, help="held-out clips judged (default: the gate's 12)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = copy_fp32_export(args.engines, Path(tmp) / "export")
        samples = collect_inputs(manifest, args.calibration, "val", args.clips)
        rows, reference = [], None
        for stage in INT8_STAGES:
            ends = tuple(end_layers(onnx.load(str(manifest.onnx_path(stage, "fp32")))))
            for method in CALIBRATION_METHODS:
                for keep_float in ((), ends):
                    write_int8_files(manifest, stage, samples[stage], method, keep_float)
                    result, reference = label_agreement(manifest, (stage,), args.calibration, "val", args.clips,
                                                        args.check_clips, reference)
                    rows.append((stage, method, bool(keep_float), result))
    best = {stage: max((r for r in rows if r[0] == stage and not r[2]), key=lambda r: r[3].objects)
            for stage in INT8_STAGES}
    lines = [
        "# INT8 calibrators: labels kept per stage",
        "",
        f"Machine: {machine()}.",
        f"Model: {manifest.model_hash}. Calibration: {args.clips} val clips of {args.calibration.name} "
        f"({len(samples[INT8_STAGES[0]])} frames); judged on the next {args.check_clips}, the pipeline with one "
        f"stage in INT8 (ONNX Runtime's CPU file) against FP32. Command: `python -m benchmarks.int8_calibration "
        f"--engines {args.engines} --calibration {args.calibration}`.",
        "",
        "| stage | calibrator | end layers | pixels same (%) | object pixels same (%) | passes the gate |",
        "|---|---|---|---:|---:|---|",
    ]
    for stage, method, ends_float, result in rows:
        chosen = " (best whole-stage)" if best[stage][:3] == (stage, method, ends_float) else ""
        lines.append(f"| {stage} | {method}{chosen} | {'float' if ends_float else 'int8'} | "
                     f"{100 * result.pixels:.2f} | {100 * result.objects:.2f} | "
                     f"{'yes' if result.objects >= MIN_AGREEMENT else 'no'} |")
    lines += ["", f"The gate needs {100 * MIN_AGREEMENT:.1f} % of object pixels. It keeps each stage's best whole-stage "
              "calibrator where that one passes, and otherwise the best calibrator with the end layers in float."]
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
