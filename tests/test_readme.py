"""The README tells a new user the truth: the CI's system packages and commands, nothing outside the project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def ci_packages() -> set[str]:
    """The Debian packages .ci/run installs (its apt-get install line, continuation lines included)."""
    command = re.search(r"apt-get install ((?:[^\n]*\\\n)*[^\n]*)", CI).group(1)
    return {word for word in command.replace("\\\n", " ").split() if not word.startswith(("-", ">"))}


def test_the_readme_apt_line_is_the_ci_list():
    readme = re.search(r"`apt-get install ([^`]+)`", README).group(1).split()
    assert set(readme) == ci_packages() and len(readme) == len(set(readme))
    assert {"pulseaudio", "libglib2.0-0", "libportaudio2"} <= set(readme)


def test_the_readme_test_command_is_what_ci_runs():
    readme = next(line for line in README.splitlines() if line.startswith("pip install torch=="))
    ci = next(line for line in CI.splitlines() if line.startswith("pip install"))
    quiet_pip = ci.replace("pip install -q ", "pip install ")  # CI quiets pip, not pytest
    assert readme == quiet_pip, (readme, ci)
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme


def test_the_readme_stays_inside_the_project():
    for outside in ("../", "DESIGN.md", " lent ", "lent to", "this issue", "session"):
        assert outside not in README, outside
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        assert link.startswith("http") or (ROOT / link).exists(), link
    assert (ROOT / "docs" / "design.md").is_file() and "docs/design.md" in README


def test_one_number_of_training_clips():
    clips = {int(n) for n in re.findall(r"--split train --clips (\d+)", README)}
    clips |= {int(n) for n in re.findall(r"\b(\d+) (?:training )?clips, base classes", README)}
    assert len(clips) == 1, clips
