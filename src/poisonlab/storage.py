"""How poisonlab writes and fingerprints files: the one atomic writer and the one file hash.

Every file the library stores — run artifacts, cache entries, extractors, VAEs, converted weights,
downloaded datasets — is written through :func:`atomic_path` (or :func:`write_atomic` /
:func:`atomic_dir` on top of it): the content goes to a temporary name in the destination's folder,
is flushed to disk, and is renamed over the destination with ``os.replace``. A reader sees the old
file or the whole new one, never a part; a crash leaves at most a hidden ``.<name>.*`` temporary,
which is removed on failure. Every file checked by content (pretrained weights, extractors behind a
cache key) is hashed by :func:`file_sha256`, memoised on (path, size, modification time).
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it by any means (``save_file``, ``open``), and on
    a clean exit it is fsync-ed and renamed to ``path``. On an exception nothing replaces ``path``."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # created by the writer (umask)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_path` for a folder: fill the yielded empty temporary folder; on a clean exit it
    replaces ``path`` (an existing folder there is removed first)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes (memoised on resolved path, size and modification time)."""
    p = Path(path)
    st = p.stat()
    return _sha256_of(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
