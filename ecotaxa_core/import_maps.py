"""A user's answers to an import's unmatched names: taxa and users map files.

An import stops when categories or annotators of the source match nothing here
(:class:`~ecotaxa_core.errors.UnmatchedNames`). The user answers with map files
and runs it again. Both kinds share one format: a text file (UTF-8, with or
without BOM, or Latin-1), one mapping per line, two columns separated by a tab
or, when the file holds no tab, by a comma (quotes as in CSV). An optional first
line ``name<sep>target`` is a header; empty lines and lines starting with ``#``
are skipped. Names match ignoring case and surrounding spaces.

- taxa map: ``name`` is a category as the source writes it (``other``,
  ``egg<other``); ``target`` is a taxon of this instance, by id (``85011``) or by
  display name / label (``other<living``, ``Copepoda``).
- users map: ``name`` is an annotator's name or e-mail as the source writes it;
  ``target`` is the e-mail of an existing user.

Every bad line (not two columns, a name given twice with different targets, a
target that does not exist) is reported with its file, line and column, all at
once, as a :class:`MapFileError`.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "taxa.tsv"
>>> _ = p.write_text("name\\ttarget\\n# a comment\\nOzzeur\\t85011\\n")
>>> [(e.line, e.name, e.target) for e in read_map_file(p)]
[(3, 'ozzeur', '85011')]
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Taxon, User
from ecotaxa_core.errors import TaxonNotFound
from ecotaxa_core.taxonomy import taxon_by_display_name
from ecotaxa_core.tsv.issues import ImportReport, TsvFormatError
from ecotaxa_core.tsv.reader import NotText, decode_text

__all__ = ["MapEntry", "MapFileError", "read_map_file", "load_taxa_map", "load_users_map"]

_MAX_BYTES = 16 * 1024 * 1024


class MapFileError(TsvFormatError):
    """A taxa or users map file has bad lines; ``report`` lists each with its location."""


@dataclass(frozen=True)
class MapEntry:
    line: int
    name: str  # stripped, lower case
    target: str  # stripped
    raw_name: str


def _split(text: str) -> list[tuple[int, list[str]]]:
    delimiter = "\t" if "\t" in text else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"')
    rows, previous = [], 0
    for cells in reader:
        rows.append((previous + 1, cells))
        previous = reader.line_num
    return rows


def read_map_file(path: Path, report: ImportReport | None = None) -> list[MapEntry]:
    """The mappings of a map file; bad lines go to ``report`` (raised if not given)."""
    path = Path(path)
    own = report is None
    report = report if report is not None else ImportReport(str(path))
    rel = path.name
    entries: list[MapEntry] = []
    try:
        data = path.read_bytes() if path.stat().st_size <= _MAX_BYTES else None
    except OSError as e:
        report.add(rel, None, None, None, "map_unreadable", f"cannot read the map file ({e})")
        data = b""
    if data is None:
        report.add(rel, None, None, None, "map_too_big",
                   f"the map file is larger than {_MAX_BYTES // 2**20} MiB")
        data = b""
    try:
        rows = _split(decode_text(data))
    except NotText:
        report.add(rel, None, None, None, "map_binary", "the map file is not text")
        rows = []
    except csv.Error as e:
        report.add(rel, None, None, None, "map_bad_line", f"unreadable map file ({e})")
        rows = []
    seen: dict[str, MapEntry] = {}
    for index, (line, cells) in enumerate(rows):
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if index == 0 and cells[0].lower() == "name":
            continue  # header line
        if len(cells) != 2 or not cells[0] or not cells[1]:
            report.add(rel, line, None, "\t".join(cells), "map_bad_line",
                       f"expected two non-empty columns (name, target), got {len(cells)} "
                       f"column{'' if len(cells) == 1 else 's'}")
            continue
        entry = MapEntry(line, cells[0].lower(), cells[1], cells[0])
        before = seen.get(entry.name)
        if before is not None:
            if before.target != entry.target:
                report.add(rel, line, "name", cells[0], "map_duplicate_name",
                           f"{cells[0]!r} is already mapped to {before.target!r} on line "
                           f"{before.line}")
            continue
        seen[entry.name] = entry
        entries.append(entry)
    if own:
        _raise_if_any(report)
    return entries


def _raise_if_any(report: ImportReport) -> None:
    if report.n_issues:
        report.issues.sort(key=lambda i: (i.path, i.line or 0))
        raise MapFileError(report)


def load_taxa_map(session: Session, path: Path) -> dict[str, int]:
    """``{name (lower case): taxon id}`` from a taxa map file; raises :class:`MapFileError`."""
    report = ImportReport(str(path))
    mapping: dict[str, int] = {}
    for entry in read_map_file(path, report):
        taxon_id = _taxon_id(session, entry.target)
        if isinstance(taxon_id, str):
            report.add(Path(path).name, entry.line, "target", entry.target, "map_unknown_target",
                       f"{entry.raw_name!r} is mapped to {entry.target!r}, which {taxon_id}")
        else:
            mapping[entry.name] = taxon_id
    _raise_if_any(report)
    return mapping


def _taxon_id(session: Session, target: str) -> int | str:
    """The taxon a map target names, or why none does."""
    if target.isdigit():
        taxon = session.get(Taxon, int(target))
        return taxon.id if taxon is not None else "is not the id of a taxon of this instance"
    try:
        return taxon_by_display_name(session, target).id
    except TaxonNotFound as e:
        if "ambiguous" in str(e):
            return "names several taxa (give its display name 'name<parent' or its id)"
        return "matches no taxon of this instance"


def load_users_map(session: Session, path: Path) -> dict[str, int]:
    """``{name or e-mail (lower case): user id}`` from a users map file."""
    report = ImportReport(str(path))
    mapping: dict[str, int] = {}
    for entry in read_map_file(path, report):
        user_id = session.scalar(select(User.id).where(
            func.lower(User.email) == entry.target.lower()))
        if user_id is None:
            report.add(Path(path).name, entry.line, "target", entry.target, "map_unknown_target",
                       f"{entry.raw_name!r} is mapped to {entry.target!r}, which is not the "
                       "e-mail of a user of this instance")
        else:
            mapping[entry.name] = user_id
    _raise_if_any(report)
    return mapping
