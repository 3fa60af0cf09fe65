"""What both caches (processed tables, `data/store.py`; text vectors, `encoders/cache.py`) do to trust an entry.

* A digest of an entry's bytes, written with it and checked on every read: ``xxh3_128`` (xxhash, installed
  with ``datasets``: several GB/s) or, without it, ``blake2b``. A digest is ``"<algorithm>:<hex>"``, so an
  entry stays checkable whichever of the two wrote it.
* Temp names that carry their writer (``w<pid>h<host hash>``), so that the leftovers of a killed writer can
  be swept: a temp whose writer ran on this host and is gone, or any temp older than an hour.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterable

STALE_SECONDS = 3600.0  # a temp older than this is a dead writer's, whoever wrote it
_TAG = re.compile(r"-w(\d+)h([0-9a-f]{8})-")


def _hasher(algorithm: str) -> Any:
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    if algorithm == "blake2b":
        return hashlib.blake2b(digest_size=16)
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def _default_algorithm() -> str:
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "blake2b"
    return "xxh3_128"


def digest_bytes(*chunks: bytes | memoryview, algorithm: str | None = None) -> str:
    """``"<algorithm>:<hex>"`` of the concatenated `chunks`."""
    algorithm = algorithm or _default_algorithm()
    hasher = _hasher(algorithm)
    for chunk in chunks:
        hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


def digest_file(path: Path, algorithm: str | None = None) -> str:
    """``"<algorithm>:<hex>"`` of a file's bytes (read in 4 MiB blocks)."""
    algorithm = algorithm or _default_algorithm()
    hasher = _hasher(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            hasher.update(block)
    return f"{algorithm}:{hasher.hexdigest()}"


def matches(expected: str, actual_of: Any) -> bool:
    """Whether `expected` (a digest) equals ``actual_of(algorithm)``; False for an unknown or unavailable
    algorithm (the entry cannot be checked, so it is not trusted)."""
    algorithm, _, _ = str(expected).partition(":")
    try:
        return actual_of(algorithm) == expected
    except (ValueError, ImportError):
        return False


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def writer_tag() -> str:
    """``-w<pid>h<host hash>-``: put it in a temp's name so that `sweep` knows whose it is."""
    return f"-w{os.getpid()}h{_host()}-"


def _writer_gone(name: str) -> bool:
    """True when `name` carries the tag of a writer on this host that is no longer running."""
    match = _TAG.search(name)
    if match is None or match[2] != _host():
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive, another user's; or not a pid
        return False
    return False


def stale(path: Path, max_age: float = STALE_SECONDS) -> bool:
    """A temp file or folder left by a killed writer: its writer is gone, or it is older than `max_age`."""
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return _writer_gone(path.name) or age > max_age


def sweep(paths: Iterable[Path], max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the `stale` ones of `paths` (files or folders); returns what was removed. Errors are ignored:
    a read-only cache keeps its leftovers, which harm nothing but space."""
    import shutil

    removed = []
    for path in paths:
        if not stale(path, max_age):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed
