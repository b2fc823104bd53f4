"""Atomic file writes and file hashes: the one implementation every part of the SDK uses.

Torch-free and dependency-free, so both the runtime (manifests, engines, caches) and the
training side (checkpoints, datasets, the export) can import it without pulling in each other.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_BLOCK = 1 << 20


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename:
    readers see the old file or the new one, never a half-written one. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it an ordinary file's mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_atomic` for UTF-8 text."""
    return write_atomic(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """The full sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's sha256: model hashes and cache keys."""
    return sha256_file(path)[:length]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
