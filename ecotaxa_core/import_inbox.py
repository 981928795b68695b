"""The import inbox: what a manager may import from the dashboard.

Instruments or people put bundles (folders or ``.zip`` files, EcoTaxa TSV or
class folders) under ``home/imports`` (:attr:`Settings.imports_dir`); the
project page lists them and starts the import flow on the one chosen. A name
from a page is never a path: it must be one of the inbox's own entries, so no
file elsewhere on the server can be reached (``..``, absolute paths and links
that lead out are refused).

>>> from pathlib import Path
>>> inbox_entry(Path("/data/imports"), "../secret")
Traceback (most recent call last):
...
ecotaxa_core.import_inbox.NotInInbox: '../secret' is not an entry of the import inbox /data/imports
"""

from __future__ import annotations

from pathlib import Path

from ecotaxa_core.errors import EcoTaxaError

__all__ = ["NotInInbox", "inbox_entries", "inbox_entry"]


class NotInInbox(EcoTaxaError):
    """A name that is not one of the import inbox's entries."""


def inbox_entries(inbox: Path) -> list[str]:
    """Names of the inbox's folders and zip files, sorted (hidden ones left out)."""
    if not inbox.is_dir():
        return []
    return sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")
                  and (p.is_dir() or p.suffix.lower() == ".zip") and _inside(inbox, p))


def inbox_entry(inbox: Path, name: str) -> Path:
    """The resolved path of inbox entry ``name``; :class:`NotInInbox` for anything else."""
    if name in ("", ".", "..") or Path(name).name != name:
        raise NotInInbox(f"{name!r} is not an entry of the import inbox {inbox}")
    path = inbox / name
    if not path.exists() or not _inside(inbox, path) or name not in inbox_entries(inbox):
        raise NotInInbox(f"{name!r} is not an entry of the import inbox {inbox}")
    return path.resolve()


def _inside(inbox: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(inbox.resolve())
