"""How long operations tell how far they are: a callback ``progress(what, done, total)``.

``what`` names the current step ("objects", "image files" ...), ``done`` of
``total`` items of that step are finished. Callers show it (a progress bar, a
log line); the operation never depends on it, and a callback that raises
aborts the operation like any error (so a caller can cancel through it).

>>> seen = []
>>> report(lambda *a: seen.append(a), "objects", 5, 10)
>>> report(None, "objects", 10, 10)
>>> seen
[('objects', 5, 10)]
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "report"]


class Progress(Protocol):
    def __call__(self, what: str, done: int, total: int) -> None: ...


def report(progress: Progress | None, what: str, done: int, total: int) -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(what, int(done), int(total))
