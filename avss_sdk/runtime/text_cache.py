"""Text embeddings cached in memory and on disk, keyed by model hash and prompt.

A vocabulary change embeds only the prompts never seen before by this model; everything
else comes from memory or, after a restart, from an SQLite file per model hash under the
cache directory. SQLite gives atomic, crash-safe writes and safe concurrent readers
(several streams, several processes) without a lock file of our own.

Nothing read back is trusted: every vector must be finite, of the model's size and of unit
length (the text encoder's embeddings are L2-normalised); one that is not is recomputed
and overwritten. A file that is not a usable cache (corrupt, another schema) is reported
once and rebuilt atomically (a fresh file renamed over it).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from avss_sdk.errors import AvssError

UNIT_TOLERANCE = 1e-2  # |norm - 1| allowed: fp16 engines round a little
SCHEMA = [("prompt", "TEXT"), ("vector", "BLOB")]


class TextCacheError(AvssError, ValueError):
    """Embeddings that cannot be cached: a text encoder that returned the wrong shape or non-finite values."""


def default_cache_dir() -> Path:
    """``$AVSS_SDK_CACHE``, else ``$XDG_CACHE_HOME/avss_sdk``, else ``~/.cache/avss_sdk``."""
    if os.environ.get("AVSS_SDK_CACHE"):
        return Path(os.environ["AVSS_SDK_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "avss_sdk"


class TextEmbeddingCache:
    """``embed(prompts, encode)`` -> [N, D] float32, calling ``encode`` only for prompts not cached.

    ``directory=None`` uses :func:`default_cache_dir`; ``persist=False`` keeps it in memory only.
    Thread-safe. A broken cache file is reported through ``log`` once and rebuilt; one that
    cannot be written (read-only disk) is reported once and the cache goes on in memory:
    embeddings can always be recomputed.
    """

    def __init__(self, model_hash: str, embed_dim: int, directory: str | os.PathLike | None = None,
                 persist: bool = True, log: Callable[[str], None] | None = None) -> None:
        if not re.fullmatch(r"[0-9a-f]{1,64}", model_hash):  # it names a file: never a path
            raise TextCacheError(f"model hash must be hex digits, got {model_hash!r}")
        self.model_hash = model_hash
        self.embed_dim = embed_dim
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._log = log or (lambda message: None)
        self.path: Path | None = None
        self.disk_error: str | None = None
        self.dropped = 0  # vectors read from disk that failed the checks
        if persist:
            self.path = Path(directory or default_cache_dir()) / "text" / f"{model_hash}.sqlite"
            self._open()

    def _open(self) -> None:
        """Make sure the file is a usable cache: create it, or rebuild it when it is broken."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.path, timeout=10) as db:
                db.execute("CREATE TABLE IF NOT EXISTS embeddings (prompt TEXT PRIMARY KEY, vector BLOB NOT NULL)")
                columns = [(row[1], row[2]) for row in db.execute("PRAGMA table_info(embeddings)")]
                check = db.execute("PRAGMA quick_check").fetchone()[0]
            if columns != SCHEMA or check != "ok":
                raise sqlite3.DatabaseError(f"not a text-embedding cache ({check if check != 'ok' else columns})")
        except sqlite3.OperationalError as error:  # locked, read-only, cannot open: not the file's fault
            self._fail(error)
        except sqlite3.DatabaseError as error:  # corrupt, not SQLite, another schema
            self._rebuild(error)
        except OSError as error:
            self._fail(error)

    def _rebuild(self, error: Exception) -> None:
        """Replace a broken cache file by an empty one, atomically; reported once."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            with sqlite3.connect(tmp) as db:
                db.execute("CREATE TABLE embeddings (prompt TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            db.close()
            os.replace(tmp, self.path)
        except (sqlite3.Error, OSError) as second:
            tmp.unlink(missing_ok=True)
            self._fail(f"{error}; rebuilding it failed too: {second}")
            return
        self._log(f"avss_sdk: text-embedding cache {self.path} was unusable ({error}); rebuilt it empty")

    def _fail(self, error: object) -> None:
        self.disk_error = f"text-embedding cache {self.path} unusable ({error}); caching in memory only"
        self._log(f"avss_sdk: {self.disk_error}")

    def _disk(self, action: Callable[[sqlite3.Connection], object]) -> object:
        """Run ``action`` in one transaction on the cache file; on failure report why once and go on in memory."""
        if self.path is None or self.disk_error is not None:
            return None
        try:
            with sqlite3.connect(self.path, timeout=10) as db:
                return action(db)
        except (sqlite3.Error, OSError) as error:
            self._fail(error)
            return None

    def _usable(self, vector: np.ndarray) -> bool:
        """Whether a vector read back is an embedding of this model: right size, finite, unit length."""
        if vector.shape != (self.embed_dim,) or not np.isfinite(vector).all():
            return False
        return abs(float(np.linalg.norm(vector)) - 1.0) <= UNIT_TOLERANCE

    def _load(self, prompts: list[str]) -> dict[str, np.ndarray]:
        def read(db: sqlite3.Connection) -> dict[str, np.ndarray]:
            found = {}
            for start in range(0, len(prompts), 500):  # SQLite's bound-parameter limit
                chunk = prompts[start:start + 500]
                rows = db.execute(f"SELECT prompt, vector FROM embeddings WHERE prompt IN ({','.join('?' * len(chunk))})",
                                  chunk)
                for prompt, blob in rows:
                    vector = np.frombuffer(blob, np.float32) if isinstance(blob, bytes) and len(blob) % 4 == 0 \
                        else np.zeros(0, np.float32)
                    if self._usable(vector):
                        found[prompt] = vector
                    else:
                        bad.append(prompt)
            return found

        bad: list[str] = []
        found = self._disk(read) or {}
        if bad:
            if not self.dropped:
                self._log(f"avss_sdk: text-embedding cache {self.path}: {len(bad)} damaged vector(s) dropped, "
                          f"recomputing them")
            self.dropped += len(bad)
        return found

    def embed(self, prompts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """[len(prompts), D] embeddings; ``encode(new_prompts)`` computes the missing ones."""
        prompts = list(prompts)
        with self._lock:
            missing = sorted({p for p in prompts if p not in self._memory})
        if missing:
            found = self._load(missing)
            new = [p for p in missing if p not in found]
            if new:
                vectors = np.asarray(encode(new), np.float32)
                if vectors.shape != (len(new), self.embed_dim):
                    raise TextCacheError(f"text encoder returned {vectors.shape}, expected "
                                         f"{(len(new), self.embed_dim)}")
                if not np.isfinite(vectors).all():
                    raise TextCacheError("the text encoder returned non-finite embeddings (a broken model file?)")
                computed = dict(zip(new, vectors))
                self._disk(lambda db: db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)",
                                                     [(p, v.tobytes()) for p, v in computed.items()]))
                found.update(computed)
            with self._lock:
                self._memory.update(found)
        with self._lock:
            return np.stack([self._memory[p] for p in prompts]) if prompts else np.zeros((0, self.embed_dim),
                                                                                         np.float32)

    def __contains__(self, prompt: str) -> bool:
        with self._lock:
            return prompt in self._memory
