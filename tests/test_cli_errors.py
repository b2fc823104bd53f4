"""Command-line failures a new user meets are one ``error:`` line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_build_engines_in_a_runtime_only_install_says_to_install_the_training_extras(tmp_path):
    """With torch unimportable (the runtime-only install), exporting explains what to install."""
    code = ("import runpy, sys\nsys.modules['torch'] = None\n"
            f"sys.argv = ['build_engines.py', '--out', {str(tmp_path / 'engines')!r}]\n"
            "runpy.run_path('export/build_engines.py', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "torch" in errors[0] and ".[train]" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "engines").exists()
