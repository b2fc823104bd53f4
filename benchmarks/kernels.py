"""Time the fused cross-attention kernel against torch SDPA and naive MatMul/Softmax/MatMul.

Shapes are the model's: VTA (1600 pixel tokens attend to K + 1 prompt tokens) and the
mask decoder (16-32 queries attend to 1600-6400 pixels). Times come from CUDA events on
one stream; bandwidth counts Q, K, V and the output once, FLOPs are 4 * B*H*Lq*Lk*D.
The kernel computes on CUDA cores in FP32, so its FLOP/s are compared with the FP32
(non-tensor) peak. Prints a markdown table; ``--out`` also writes it to a file:

    python -m benchmarks.kernels --out benchmarks/results/kernels-<gpu>.md   (from the repository root)

Without a GPU (or without a CUDA build of torch) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from benchmarks.report import publish
from kernels import build, launcher

# name substring (lower case) -> (FP32 TFLOP/s without tensor cores, DRAM GB/s); public specs.
PEAKS = {
    "h200": (67.0, 4800.0),
    "h100 pcie": (51.2, 2000.0),
    "h100": (67.0, 3350.0),
    "a100-sxm4-40gb": (19.5, 1555.0),
    "a100": (19.5, 2039.0),
    "l40s": (91.6, 864.0),
    "l4": (30.3, 300.0),
    "a10": (31.2, 600.0),
    "t4": (8.1, 320.0),
    "rtx 4090": (82.6, 1008.0),
    "orin": (5.3, 204.8),  # AGX Orin 64 GB at max clocks
}

VTA = [(1, h, 1600, k + 1, d) for h in (4, 8) for k in (10, 100, 256) for d in (32, 64)]
DECODER = [(1, 8, lq, lk, d) for lq in (16, 32) for lk in (1600, 6400) for d in (32, 64)]


def peaks_for(gpu_name: str) -> tuple[float, float] | None:
    """(FP32 TFLOP/s, GB/s) for a GPU name, or None when it is not in the table."""
    name = gpu_name.lower()
    for key, value in PEAKS.items():
        if key in name:
            return value
    return None


def _time_ms(fn, torch, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / iters


def run(dtype_name: str, warmup: int, iters: int) -> str:
    """Benchmark every shape; return the markdown report."""
    import torch
    import torch.nn.functional as F

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    np_dtype = {"fp16": "float16", "fp32": "float32"}[dtype_name]
    gpu = torch.cuda.get_device_name(0)
    out_dir = Path(__file__).resolve().parents[1] / "kernels" / "build" / "bench"
    fatbin = build.build([build.local_arch()], out_dir)["fatbin"]
    kernel = launcher.FusedCrossAttentionKernel(fatbin)
    peaks = peaks_for(gpu)
    stream = torch.cuda.current_stream()
    lines = [
        f"# Fused cross-attention on {gpu}",
        "",
        f"{datetime.date.today()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{dtype_name}, mean of {iters} launches after {warmup} warm-up.",
        "Peaks: " + (f"{peaks[0]} FP32 TFLOP/s, {peaks[1]} GB/s (table in benchmarks/kernels.py)"
                     if peaks else "unknown GPU, no fractions of peak"),
        "",
        "| stage | B | H | Lq | Lk | D | path | splits | fused us | SDPA us | naive us "
        "| fused GB/s | % BW | fused GFLOP/s | % FP32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, shapes in (("vta", VTA), ("decoder", DECODER)):
        for b, h, lq, lk, d in shapes:
            q = torch.randn(b, h, lq, d, device="cuda", dtype=dtype)
            k = torch.randn(b, h, lk, d, device="cuda", dtype=dtype)
            v = torch.randn(b, h, lk, d, device="cuda", dtype=dtype)
            out = torch.empty_like(q)
            scale = d ** -0.5

            def fused():
                return kernel.launch(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                     b, h, lq, lk, d, np_dtype, stream=stream.cuda_stream)

            def naive():
                return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1) @ v

            plan = fused()
            torch.cuda.synchronize()
            expected = F.scaled_dot_product_attention(q, k, v)
            err = (out.float() - expected.float()).abs().max().item()
            if err > (2e-2 if dtype == torch.float16 else 1e-4):
                raise AssertionError(f"fused kernel differs from SDPA by {err} at {(b, h, lq, lk, d)}")
            t_fused = _time_ms(fused, torch, warmup, iters)
            t_sdpa = _time_ms(lambda: F.scaled_dot_product_attention(q, k, v), torch, warmup, iters)
            t_naive = _time_ms(naive, torch, warmup, iters)
            nbytes = (2 * b * h * lq * d + 2 * b * h * lk * d) * q.element_size()
            flops = 4.0 * b * h * lq * lk * d
            gbs = nbytes / (t_fused * 1e-3) / 1e9
            gflops = flops / (t_fused * 1e-3) / 1e9
            bw = f"{100 * gbs / peaks[1]:.1f}" if peaks else "-"
            fp = f"{100 * gflops / (peaks[0] * 1e3):.1f}" if peaks else "-"
            lines.append(
                f"| {stage} | {b} | {h} | {lq} | {lk} | {d} | {plan.path} | {plan.splits} "
                f"| {t_fused * 1e3:.1f} | {t_sdpa * 1e3:.1f} | {t_naive * 1e3:.1f} "
                f"| {gbs:.0f} | {bw} | {gflops:.0f} | {fp} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args(argv)
    ok, why = launcher.gpu_available()
    if not ok:
        print(f"no GPU here ({why}): nothing to time. Run this on a machine with an NVIDIA GPU.")
        return 0
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print(f"GPU {why} found, but this torch has no CUDA: the SDPA and naive baselines "
              "need a CUDA build of torch. Nothing timed.")
        return 0
    report = run(args.dtype, args.warmup, args.iters)
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
