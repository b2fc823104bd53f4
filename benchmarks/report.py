"""What every benchmark's report shares: the machine line and where the table goes."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from avss_sdk.fileio import write_atomic


def machine() -> str:
    """CPU model, core count, Python and ONNX Runtime versions: the context a timing needs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def publish(text: str, out: Path | None) -> None:
    """Print the report and, where ``out`` is given, write it there (atomically: a killed run keeps the last one)."""
    text = text.rstrip("\n") + "\n"
    print(text, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, text.encode("utf-8"))
