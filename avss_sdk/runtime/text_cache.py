"""Text embeddings cached in memory and on disk, keyed by model hash and prompt.

A vocabulary change embeds only the prompts never seen before by this model; everything
else comes from memory or, after a restart, from an SQLite file per model hash under the
cache directory. SQLite gives atomic, crash-safe writes and safe concurrent readers
(several streams, several processes) without a lock file of our own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def default_cache_dir() -> Path:
    """``$AVSS_SDK_CACHE``, else ``$XDG_CACHE_HOME/avss_sdk``, else ``~/.cache/avss_sdk``."""
    if os.environ.get("AVSS_SDK_CACHE"):
        return Path(os.environ["AVSS_SDK_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "avss_sdk"


class TextEmbeddingCache:
    """``embed(prompts, encode)`` -> [N, D] float32, calling ``encode`` only for prompts not cached.

    ``directory=None`` uses :func:`default_cache_dir`; ``persist=False`` keeps it in memory only.
    Thread-safe. A cache file that cannot be read (corrupt, read-only disk) is reported once
    and the cache goes on in memory: embeddings can always be recomputed.
    """

    def __init__(self, model_hash: str, embed_dim: int, directory: str | os.PathLike | None = None,
                 persist: bool = True) -> None:
        self.model_hash = model_hash
        self.embed_dim = embed_dim
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.path: Path | None = None
        self.disk_error: str | None = None
        if persist:
            self.path = Path(directory or default_cache_dir()) / "text" / f"{model_hash}.sqlite"
            self._disk(self._create)

    def _create(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS embeddings (prompt TEXT PRIMARY KEY, vector BLOB NOT NULL)")

    def _disk(self, action: Callable[[sqlite3.Connection], object]) -> object:
        """Run ``action`` in one transaction on the cache file; on failure note why and go on in memory."""
        if self.path is None or self.disk_error is not None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.path, timeout=10) as db:
                return action(db)
        except (sqlite3.Error, OSError) as error:
            self.disk_error = f"text-embedding cache {self.path} unusable ({error}); caching in memory only"
            return None

    def _load(self, prompts: list[str]) -> dict[str, np.ndarray]:
        def read(db: sqlite3.Connection) -> dict[str, np.ndarray]:
            found = {}
            for start in range(0, len(prompts), 500):  # SQLite's bound-parameter limit
                chunk = prompts[start:start + 500]
                rows = db.execute(f"SELECT prompt, vector FROM embeddings WHERE prompt IN ({','.join('?' * len(chunk))})",
                                  chunk)
                for prompt, blob in rows:
                    vector = np.frombuffer(blob, np.float32)
                    if vector.shape == (self.embed_dim,):
                        found[prompt] = vector
            return found

        return self._disk(read) or {}

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
                    raise ValueError(f"text encoder returned {vectors.shape}, expected {(len(new), self.embed_dim)}")
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
