"""Files that outlive a crash: locks the system releases, files written whole or not at all.

Imports and the features flow both keep a journal of what a dead run must undo
and a lock that says whether its writer is still alive; both use these two.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["file_lock", "write_atomically", "write_json_atomically", "write_text_atomically"]


@contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); yields whether it got
    it (always True when ``blocking``). The system releases it when the process dies.

    >>> import tempfile
    >>> lock = Path(tempfile.mkdtemp()) / "locks" / "a.lock"
    >>> with file_lock(lock) as got:
    ...     got, lock.exists()
    (True, True)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` fill a temporary file next to ``path``, then put it in place whole,
    on disk (file and folder entry) before returning. The temporary file is
    ``path`` + ``.tmp``; a failed ``write`` may leave it behind, never ``path`` half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (see :func:`write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` whole or not at all (see
    :func:`write_text_atomically`)."""
    write_text_atomically(path, json.dumps(data))
