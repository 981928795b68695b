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
>>> describe_progress("objects", 1200, 5000, 6.0)
'1,200 of 5,000 objects (24 %), 200 per s, about 19 s left'
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "report", "describe_progress"]


class Progress(Protocol):
    def __call__(self, what: str, done: int, total: int) -> None: ...


def report(progress: Progress | None, what: str, done: int, total: int) -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(what, int(done), int(total))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_progress(what: str, done: int, total: int, seconds: float) -> str:
    """One line for people: how far, how fast, how long still (at the rate so far)."""
    percent = f" ({100 * done / total:.0f} %)" if total else ""
    line = f"{done:,} of {total:,} {what}{percent}"
    if done and seconds > 0:
        rate = done / seconds
        line += f", {rate:,.0f} per s" if rate >= 10 else f", {rate:.2g} per s"
        if done < total:
            line += f", about {_duration((total - done) / rate)} left"
    return line
