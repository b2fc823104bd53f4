"""Fixtures shared by the whole test run: built once per session, not once per module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def serve_python() -> Path:
    """The serving environment's interpreter (PyTriton, numpy < 2): ``$AVSS_SERVE_PYTHON``, else the
    one ``.ci/run`` creates; the test is skipped, saying so, where there is none."""
    from avss_sdk.serve import serve_python as find

    python = find()
    if not python.is_file():
        pytest.skip(f"no serving environment at {python} (PyTriton with numpy < 2): create it as .ci/run does, "
                    f"or set AVSS_SERVE_PYTHON")
    return python


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A SynthAVS-OV dataset small enough for CPU training tests: 64 px, 4 frames, 6 / 2 / 3 clips."""
    from avss_sdk.data.synthavs import generate_clip
    from avss_sdk.data.synthavs.writer import write_dataset_files

    out = tmp_path_factory.mktemp("tiny_synth")
    for split, clips in (("train", 6), ("val", 2), ("test", 3)):
        rows = [generate_clip(out, split, 0, i, frames=4, size=64) for i in range(clips)]
        write_dataset_files(out, split, 0, rows)
    return out


@pytest.fixture(scope="session")
def default_model() -> tuple[Any, dict]:
    """(the shipped checkpoint's model in eval mode, its payload), loaded once. Read-only: a test
    that changes the model must build its own."""
    from avss_sdk.modeling.checkpoint import load_model

    return load_model("default")
