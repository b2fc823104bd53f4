"""Build the fused cross-attention kernel with the local nvcc.

``python -m kernels.build`` compiles for the GPU of this machine; ``--all`` compiles
cubins for every supported architecture plus compute_75 PTX into one fatbin. Either way
``kernels/build/`` receives:

* ``fused_cross_attention.fatbin``: what the cuda-python launcher loads;
* ``fused_cross_attention.ptx``: compute_75 PTX, as the TensorRT AOT plugin embeds it.

The source is ``avss_sdk/runtime/cuda/fused_cross_attention.cu``: it lives in the package so
that a pip-installed SDK can compile the plugin's PTX on the device
(:func:`avss_sdk.runtime.tensorrt_plugin.ensure_ptx`); this folder builds, benchmarks and
tests that one copy. nvcc is found and asked for its architectures by the same functions.

Always the *local* nvcc: a Jetson on JetPack 6 has CUDA 12.6, whose driver cannot load
code from a newer toolkit. The PTX carries the ISA version of the nvcc that wrote it, so
build it with a toolkit no newer than the driver of the machine that runs the engine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from avss_sdk.runtime.tensorrt_plugin import KERNEL_SOURCE as SOURCE
from avss_sdk.runtime.tensorrt_plugin import NVCC_FLAGS, PTX_ARCH, PTX_NAME, find_nvcc, supported_archs
from avss_sdk.runtime.tensorrt_plugin import KernelBuildError as BuildError

__all__ = ["ALL_ARCHS", "BuildError", "DEFAULT_OUT", "FATBIN_NAME", "PTX_ARCH", "PTX_NAME", "SOURCE", "build",
           "find_nvcc", "local_arch", "main", "supported_archs"]

KERNEL_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = KERNEL_DIR / "build"
FATBIN_NAME = "fused_cross_attention.fatbin"
ALL_ARCHS = (75, 80, 86, 87, 89, 90, 100, 110, 120)


def local_arch() -> int:
    """Compute capability of GPU 0, via cuda-python, else nvidia-smi."""
    try:
        from cuda.bindings import driver

        err, = driver.cuInit(0)
        if err == driver.CUresult.CUDA_SUCCESS:
            err, dev = driver.cuDeviceGet(0)
            attr = driver.CUdevice_attribute
            _, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
            _, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
            if err == driver.CUresult.CUDA_SUCCESS:
                return major * 10 + minor
    except Exception:  # cuda-python missing, or no libcuda: try nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            major, minor = out.stdout.strip().splitlines()[0].split(".")
            return int(major) * 10 + int(minor)
    raise BuildError("no CUDA GPU found on this machine: use --all or --arch to cross-compile")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def build(archs: list[int], out_dir: Path = DEFAULT_OUT, nvcc: str | None = None,
          jobs: int | None = None, verbose: bool = False) -> dict:
    """Compile cubins for ``archs`` (in parallel) and compute_75 PTX; pack a fatbin.

    Returns {"fatbin": path, "ptx": path, "archs": built archs, "ptx_arch": int}. Architectures the nvcc does not know
    are dropped with a warning (an older toolkit used for an older driver).
    """
    nvcc = find_nvcc(nvcc)
    known = supported_archs(nvcc)
    dropped = [a for a in archs if a not in known]
    if dropped:
        print(f"warning: {nvcc} cannot compile for sm_{', sm_'.join(map(str, dropped))}; skipped",
              file=sys.stderr)
    archs = [a for a in archs if a in known]
    if not archs:
        raise BuildError("none of the requested architectures is supported by " + nvcc)
    ptx_arch = PTX_ARCH if PTX_ARCH in known else min(known)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmpdir = Path(tmp)
        cmds = {a: [nvcc, *NVCC_FLAGS, f"-arch=sm_{a}", "-cubin", "-o",
                    str(tmpdir / f"sm_{a}.cubin"), str(SOURCE)] for a in archs}
        ptx_tmp = tmpdir / PTX_NAME
        cmds["ptx"] = [nvcc, *NVCC_FLAGS, f"-arch=compute_{ptx_arch}", "-ptx", "-o",
                       str(ptx_tmp), str(SOURCE)]
        if verbose:
            for c in cmds.values():
                print(" ".join(c))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for f in [pool.submit(_run, c) for c in cmds.values()]:
                f.result()
        fatbin_tmp = tmpdir / FATBIN_NAME
        fatbinary = str(Path(nvcc).resolve().parent / "fatbinary")
        images = [f"--image3=kind=elf,sm={a},file={tmpdir / f'sm_{a}.cubin'}" for a in archs]
        images.append(f"--image3=kind=ptx,sm={ptx_arch},file={ptx_tmp}")
        _run([fatbinary, "--64", "--compress-all", f"--create={fatbin_tmp}", *images])
        result = {"fatbin": out_dir / FATBIN_NAME, "ptx": out_dir / PTX_NAME}
        os.replace(fatbin_tmp, result["fatbin"])
        os.replace(ptx_tmp, result["ptx"])
    return {**result, "archs": archs, "ptx_arch": ptx_arch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build kernels/src/fused_cross_attention.cu into a fatbin (for the "
                    "cuda-python launcher) and compute_75 PTX (for the TensorRT AOT plugin).",
        epilog="Examples: 'python -m kernels.build' (this machine's GPU); "
               "'python -m kernels.build --all -j 2' (sm_" + ", sm_".join(map(str, ALL_ARCHS))
               + " + compute_75 PTX, as in CI).")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--all", action="store_true",
                        help="every supported architecture instead of the local GPU's")
    target.add_argument("--arch", type=int, action="append", metavar="CC",
                        help="compute capability to build for, e.g. 87 (repeatable)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--nvcc", help="nvcc to use (default: $CUDA_HOME/bin, PATH, /usr/local/cuda)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="parallel nvcc processes (default: CPU count)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the nvcc commands")
    args = parser.parse_args(argv)
    try:
        archs = list(ALL_ARCHS) if args.all else (args.arch or [local_arch()])
        t0 = time.perf_counter()
        paths = build(archs, args.out, args.nvcc, args.jobs, args.verbose)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"built {paths['fatbin']} (sm_{', sm_'.join(map(str, paths['archs']))} + compute_"
          f"{paths['ptx_arch']} PTX) and {paths['ptx']} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
