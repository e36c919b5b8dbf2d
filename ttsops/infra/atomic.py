"""Atomic file writes: the one implementation every writer in ttsops uses.

A file written here is at every moment either the old file or the new one, never half-written:
the bytes go to a temp file in the same directory (same filesystem, so the rename is atomic on
POSIX), are flushed and fsynced, and the temp file is renamed over the target; on any failure
(including KeyboardInterrupt) the temp file is removed and the target is untouched.

``file_lock`` is the exclusive advisory lock workers sharing a directory take around a
read-modify-write (the registry's best model, the study's parent run).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Replace ``path`` with what ``write(binary_file)`` writes, atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2, **kw: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, **kw))


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    """Replace ``dst`` with a copy of ``src`` (how best_model.pt is kept current)."""
    with open(src, "rb") as inp:
        return atomic_write(dst, lambda out: shutil.copyfileobj(inp, out, 1 << 20))


def atomic_link(src: str | Path, dst: str | Path) -> Path:
    """Replace ``dst`` with a hard link to ``src`` (a copy where the file system has no hard links): the
    file outlives ``src``'s deletion at no cost in space. FileNotFoundError if ``src`` is gone."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except FileNotFoundError:
        raise
    except OSError:  # another file system, or no hard links there
        return atomic_copy(src, dst)
    os.replace(tmp, dst)
    return dst


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
