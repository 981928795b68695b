"""Reading one EcoTaxa TSV file: encoding, header line, type line, data lines.

Files are read as UTF-8 (with or without BOM), falling back to Latin-1 as
EcoTaxa does for instrument files. Line 1 names the columns, line 2 gives a
type marker per column (``[f]`` number, ``[t]`` text), data starts on line 3.
Structural problems (bad column names, unknown prefixes or types, values in
columns without a header, no data) go to the :class:`ImportReport`; bad columns
are left out of the returned :class:`TsvTable` so its rows can still be checked.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "ecotaxa_x.tsv").write_text(
...     "object_id\\tobject_area\\timg_file_name\\n[t]\\t[f]\\t[t]\\no1\\t12\\ta.png\\n")
>>> report = ImportReport()
>>> table = read_tsv(d / "ecotaxa_x.tsv", "ecotaxa_x.tsv", report)
>>> [c.name for c in table.columns], table.rows[0].line, table.value(table.rows[0], "object_area")
(['object_id', 'object_area', 'img_file_name'], 3, '12')
>>> report.n_issues
0
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ecotaxa_core.tsv.columns import (PARENT_PREFIXES, PREDEFINED, PREFIXES, TYPE_MARKERS,
                                      split_column)
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["TsvColumn", "TsvRow", "TsvTable", "read_tsv", "decode_text", "FIRST_DATA_LINE"]

FIRST_DATA_LINE = 3


@dataclass(frozen=True)
class TsvColumn:
    index: int  # position in the file's lines
    name: str  # normalised: stripped, lower case
    prefix: str
    field: str
    type: str  # "f" or "t"
    free: bool


@dataclass(frozen=True)
class TsvRow:
    line: int  # line number in the file (first line = 1)
    cells: list[str]


@dataclass
class TsvTable:
    path: Path
    rel: str  # name shown in messages, relative to the import source
    columns: list[TsvColumn]
    rows: list[TsvRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {c.name: c.index for c in self.columns}

    def has(self, name: str) -> bool:
        return name in self._index

    def value(self, row: TsvRow, name: str) -> str:
        """The stripped text of a cell ('' when the column is absent or the cell empty)."""
        i = self._index.get(name)
        if i is None or i >= len(row.cells):
            return ""
        return row.cells[i].strip()

    def free_columns(self, prefix: str) -> list[TsvColumn]:
        return [c for c in self.columns if c.free and c.prefix == prefix]


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM dropped) when it decodes, else Latin-1 (which always does)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _records(text: str, rel: str, report: ImportReport) -> list[tuple[int, list[str]]] | None:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"')
    records: list[tuple[int, list[str]]] = []
    previous = 0
    try:
        for cells in reader:
            records.append((previous + 1, cells))
            previous = reader.line_num
    except csv.Error as e:
        report.add(rel, previous + 1, None, None, "bad_csv", f"unreadable line ({e})")
        return None
    return records


def read_tsv(path: Path, rel: str, report: ImportReport) -> TsvTable | None:
    """Read and check the structure of one TSV; None when nothing usable is in it."""
    text = decode_text(Path(path).read_bytes())
    if not text.strip():
        report.add(rel, 1, None, None, "empty_file",
                   "the file is empty (expected a header line, a type line and data lines)")
        return None
    records = _records(text, rel, report)
    if records is None:
        return None
    header = [c.strip().lower() for c in records[0][1]]
    if len(records) < 2:
        report.add(rel, 2, None, None, "missing_type_line",
                   "no type line: line 2 must give [f] or [t] for each column")
        return None
    types = [c.strip() for c in records[1][1]]
    columns = _header_columns(header, types, rel, report)
    _check_required_columns(header, columns, rel, report)

    table = TsvTable(path=Path(path), rel=rel, columns=columns)
    # Cells of columns without a header (an empty name, or past the last name) must be empty.
    headerless = [i for i, name in enumerate(header) if not name]
    width = len(header)
    for line, cells in records[2:]:
        if not any(c.strip() for c in cells):
            continue  # blank line
        stray = [cells[i].strip() for i in headerless if i < len(cells) and cells[i].strip()]
        stray += [c.strip() for c in cells[width:] if c.strip()]
        if stray:
            report.add(rel, line, None, repr(stray), "extra_values",
                       f"value(s) {stray!r} in column(s) without a header")
        table.rows.append(TsvRow(line, cells))
    if not table.rows:
        report.add(rel, FIRST_DATA_LINE, None, None, "no_data",
                   f"no data: the file has a header and a type line but no data line "
                   f"(data starts on line {FIRST_DATA_LINE})")
    return table


def _header_columns(header: list[str], types: list[str], rel: str,
                    report: ImportReport) -> list[TsvColumn]:
    columns: list[TsvColumn] = []
    seen: set[str] = set()
    needs_type = [name for name in header if name and name not in PREDEFINED
                  and split_column(name) is not None and split_column(name)[0] in PREFIXES]
    no_type_line = bool(needs_type) and not any(t.lower() in TYPE_MARKERS for t in types)
    if no_type_line:
        report.add(rel, 2, None, None, "bad_type_line",
                   "line 2 holds no type marker: it must give [f] (number) or [t] (text) "
                   "for each column")
    for index, name in enumerate(header):
        if not name:
            continue
        parts = split_column(name)
        if parts is None:
            report.add(rel, 1, name, name, "bad_header",
                       f"invalid column name {name!r}: it must be <prefix>_<field>")
            continue
        prefix, fld = parts
        if prefix not in PREFIXES:
            report.add(rel, 1, name, name, "unknown_prefix",
                       f"invalid column name {name!r}: unknown prefix {prefix!r} "
                       f"(expected one of {', '.join(PREFIXES)})")
            continue
        if name in seen:
            report.add(rel, 1, name, name, "duplicate_column", f"column {name!r} appears twice")
            continue
        seen.add(name)
        if name in PREDEFINED:
            columns.append(TsvColumn(index, name, prefix, fld, PREDEFINED[name], free=False))
            continue
        if prefix == "img":
            report.add(rel, 1, name, name, "unknown_column",
                       f"unknown image column {name!r} (only img_file_name and img_rank exist)")
            continue
        marker = types[index] if index < len(types) else ""
        if marker.lower() not in TYPE_MARKERS:
            if not no_type_line:
                report.add(rel, 2, name, marker, "bad_type",
                           f"invalid type {marker!r} for column {name!r} (expected [f] or [t])")
            continue
        columns.append(TsvColumn(index, name, prefix, fld, TYPE_MARKERS[marker.lower()], free=True))
    return columns


def _check_required_columns(header: list[str], columns: list[TsvColumn], rel: str,
                            report: ImportReport) -> None:
    names = set(header)
    for required in ("object_id", "img_file_name"):
        if required not in names:
            report.add(rel, 1, required, None, "missing_column", f"no {required} column")
    for prefix in PARENT_PREFIXES:
        others = sorted(c.name for c in columns if c.prefix == prefix and c.field != "id")
        if others and f"{prefix}_id" not in names:
            report.add(rel, 1, f"{prefix}_id", None, "missing_column",
                       f"column {prefix}_id is required as there are {prefix} columns: {others}")
