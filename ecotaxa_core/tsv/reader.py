"""Reading one EcoTaxa TSV file: encoding, header line, type line, data lines.

Line 1 names the columns, line 2 gives a type marker per column (``[f]``
number, ``[t]`` text), data starts on line 3. Structural problems (bad column
names, unknown prefixes or types, values in columns without a header, no data)
go to the :class:`ImportReport`; bad columns are left out of the returned
:class:`TsvTable` so its rows can still be checked.

What a file may hold, decided after EcoTaxa's back end (``BO/TSVFile.py`` reads
with ``csv.DictReader(delimiter='\\t', quotechar='"')``):

- encodings: UTF-8 with or without BOM; lines that are not UTF-8 are read as
  Latin-1 (instrument files such as UVP6's write ``°`` as one Latin-1 byte;
  EcoTaxa reads every file as Latin-1); UTF-16 with a BOM (Excel's "Unicode
  text"). A file holding NUL characters is binary: refused, with the line.
- line ends: LF, CRLF and CR, mixed or not; blank lines are skipped.
- quotes: as in EcoTaxa (and the csv module), a value that starts with ``"``
  is quoted (``"a""b"`` is ``a"b``, a quoted value may hold tabs and line
  breaks, as exports write them); a quote inside an unquoted value is kept. A
  quote opened and never closed is refused instead of swallowing the rest of
  the file.
- sizes: a file larger than ``max_file_bytes`` (:data:`MAX_FILE_BYTES`) is
  not read; a line longer than ``max_line_chars`` (:data:`MAX_LINE_CHARS`) stops
  the reading of the file; a value longer than ``max_field_chars``
  (:data:`MAX_FIELD_CHARS`, the csv module's own limit, which EcoTaxa has too)
  or than the database keeps for a predefined column
  (:data:`~ecotaxa_core.tsv.columns.MAX_TEXT_LENGTH`) is refused with its
  line and column.
- shape: a header cell with no name, and cells past the header, must be
  empty (trailing empty columns are fine); short data lines are padded with
  empty values; a column named twice is refused.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "ecotaxa_x.tsv").write_text(
...     "object_id\\tobject_area\\timg_file_name\\n[t]\\t[f]\\t[t]\\no1\\t12\\ta.png\\n")
>>> report = ImportReport()
>>> table = read_tsv(d / "ecotaxa_x.tsv", "ecotaxa_x.tsv", report)
>>> row = next(table.rows())
>>> [c.name for c in table.columns], row.line, table.value(row, "object_area")
(['object_id', 'object_area', 'img_file_name'], 3, '12')
>>> report.n_issues
0
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ecotaxa_core.tsv.columns import (MAX_TEXT_LENGTH, PARENT_PREFIXES, PREDEFINED, PREFIXES,
                                      TYPE_MARKERS, column_name_problem, split_column)
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.tsv.text_lines import (LineTooLong, NotText, decode_text, open_lines,
                                         sniff_encoding)
from ecotaxa_core.tsv.values import shown

__all__ = ["TsvColumn", "TsvRow", "TsvTable", "read_tsv", "decode_text", "FIRST_DATA_LINE",
           "MAX_LINE_CHARS", "MAX_FIELD_CHARS", "MAX_FILE_BYTES", "NotText"]

FIRST_DATA_LINE = 3
MAX_LINE_CHARS = 4 * 1024 * 1024  # 4 Mi characters: 1,000 columns of 4,000 characters
MAX_FIELD_CHARS = 131_072  # csv.field_size_limit()'s default
MAX_FILE_BYTES = 2 * 1024**3  # 2 GiB of TSV is ~2 million objects of 100 columns


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
    """The columns of one file, and its data rows read once, as they are asked for."""

    path: Path
    rel: str  # name shown in messages, relative to the import source
    columns: list[TsvColumn]
    _rows: Callable[[], Iterator[TsvRow]] | None = field(default=None, repr=False)
    n_rows: int = 0  # data rows given so far

    def __post_init__(self) -> None:
        self._index = {c.name: c.index for c in self.columns}

    def rows(self) -> Iterator[TsvRow]:
        """The data rows, checked as they are read (a file is read once: a second call
        gives nothing); structural problems go to the report."""
        source, self._rows = self._rows, None
        if source is None:
            return
        for row in source():
            self.n_rows += 1
            yield row

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


class _Records:
    """The records of a file, (first line, cells), read as they are asked for.

    A structural problem (a line too long, an unreadable line, a quote never
    closed) goes to the report and ends the records.
    """

    def __init__(self, path: Path, encoding: str, rel: str, report: ImportReport,
                 max_line_chars: int, max_field_chars: int):
        self.path, self.encoding, self.rel, self.report = path, encoding, rel, report
        self.max_line_chars, self.max_field_chars = max_line_chars, max_field_chars
        self.header: list[str] = []
        self.failed = False

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        lines = _LastLine(open_lines(self.path, self.encoding, self.max_line_chars))
        reader = _reader(lines)
        previous, first = 0, 0
        pending = None  # the last record is given once known not to run past the file's end
        try:
            for cells in reader:
                if pending is not None:
                    yield pending
                first = previous + 1
                if first == 1:
                    self.header = cells
                pending = (first, cells)
                previous = reader.line_num
        except LineTooLong as e:
            self._fail(e.line, None, "line_too_long",
                       f"line {e.line} holds {e.length:,} characters, more than the "
                       f"{self.max_line_chars:,} a line may hold: is this an EcoTaxa TSV file?")
            return
        except csv.Error as e:
            line = previous + 1
            if "field larger than field limit" in str(e):
                limit = min(self.max_field_chars, csv.field_size_limit())
                index = next((i for i, c in enumerate(lines.last.split("\t")) if len(c) > limit),
                             None)
                self._fail(line, self._column_name(index), "field_too_long",
                           f"a value is longer than {limit:,} characters (or a quote (\") "
                           "opened here is never closed)")
            else:
                self._fail(line, None, "bad_csv", f"unreadable line ({e})")
            return
        finally:
            lines.close()
        if first and reader.line_num > first and self._unclosed_quote(first):
            self.failed = True
            _report_unclosed(self.report, self.rel, first)
        elif pending is not None:
            yield pending

    def _fail(self, line: int, column: str | None, code: str, message: str) -> None:
        self.failed = True
        self.report.add(self.rel, line, column, None, code, message)

    def _column_name(self, index: int | None) -> str | None:
        if index is None or index >= len(self.header):
            return None
        return _normalise(self.header[index]) or None

    def _unclosed_quote(self, first_line: int) -> bool:
        """Whether the record starting on ``first_line`` ends inside a quoted value."""
        lines = open_lines(self.path, self.encoding, self.max_line_chars)
        try:
            rest = itertools.islice(lines, first_line - 1, None)
            for _ in _reader(rest, strict=True):
                break
        except csv.Error as e:
            return "unexpected end of data" in str(e)
        finally:
            lines.close()
        return False


class _LastLine:
    """The lines given to the csv reader, remembering the last one (for messages)."""

    def __init__(self, lines: Iterator[str]):
        self._lines, self.last = lines, ""

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.last = line
            yield line

    def close(self) -> None:
        self._lines.close()


def _reader(lines, *, strict: bool = False):
    return csv.reader(lines, delimiter="\t", quotechar='"', strict=strict)


def _report_unclosed(report: ImportReport, rel: str, line: int) -> None:
    report.add(rel, line, None, None, "unclosed_quote",
               f"a quote (\") opened on line {line} is never closed: the value would run to "
               "the end of the file")


def _normalise(name: str) -> str:
    return name.replace("\ufeff", "").strip().lower()


def read_tsv(path: Path, rel: str, report: ImportReport, *,
             max_line_chars: int = MAX_LINE_CHARS,
             max_field_chars: int = MAX_FIELD_CHARS,
             max_file_bytes: int = MAX_FILE_BYTES) -> TsvTable | None:
    """Read and check the structure of one TSV; None when nothing usable is in it.

    Values longer than ``max_field_chars`` are refused; the csv module's
    process-wide ``csv.field_size_limit()`` caps it as well. A file larger than
    ``max_file_bytes`` is refused unread.
    """
    size = Path(path).stat().st_size
    if size > max_file_bytes:
        report.add(rel, None, None, None, "file_too_large",
                   f"the file holds {size:,} bytes, more than the {max_file_bytes:,} a TSV file "
                   "may hold: split it (one file per sample, for instance)")
        return None
    try:
        encoding = sniff_encoding(Path(path))
    except NotText as e:
        header = [] if e.line == 1 else _normalise_header(path)
        index = e.line_text.count("\t")
        column = (header[index] or None) if index < len(header) else None
        if column is not None and (split_column(column) or ("",))[0] not in PREFIXES:
            column = None  # a binary file's first "line" names no column
        report.add(rel, e.line, column, None, "not_text",
                   f"not a text file: {e} (is it really a TSV file?)")
        return None
    if encoding is None:
        report.add(rel, 1, None, None, "empty_file",
                   "the file is empty (expected a header line, a type line and data lines)")
        return None
    records = _Records(Path(path), encoding, rel, report, max_line_chars, max_field_chars)
    stream = iter(records)
    head = list(itertools.islice(stream, 2))
    if records.failed:
        return None
    header = [_normalise(c) for c in head[0][1]]
    if len(head) < 2:
        report.add(rel, 2, None, None, "missing_type_line",
                   "no type line: line 2 must give [f] or [t] for each column")
        return None
    types = [c.strip() for c in head[1][1]]
    columns = _header_columns(header, types, rel, report)
    _check_required_columns(header, columns, rel, report)
    checks = _RowChecks(header, columns, rel, report, max_field_chars)
    return TsvTable(path=Path(path), rel=rel, columns=columns,
                    _rows=lambda: checks.rows(stream, records))


class _RowChecks:
    """Checks of each data line that do not depend on what its columns mean."""

    def __init__(self, header: list[str], columns: list[TsvColumn], rel: str,
                 report: ImportReport, max_field_chars: int):
        self.header, self.rel, self.report = header, rel, report
        self.max_field_chars = max_field_chars
        # Cells of columns without a header (an empty name, or past the last name) must be
        # empty.
        self.headerless = [i for i, name in enumerate(header) if not name]
        self.width = len(header)
        self.bounded = [(c.index, c.name, MAX_TEXT_LENGTH[c.name]) for c in columns
                        if c.name in MAX_TEXT_LENGTH]

    def rows(self, stream: Iterator[tuple[int, list[str]]], records: "_Records"
             ) -> Iterator[TsvRow]:
        rel, report, n = self.rel, self.report, 0
        for line, cells in stream:
            if not any(c.strip() for c in cells):
                continue  # blank line
            if sum(map(len, cells)) > self.max_field_chars:
                _check_field_sizes(cells, self.header, self.max_field_chars, rel, line, report)
            for index, name, limit in self.bounded:
                if index < len(cells) and len(cells[index]) > limit \
                        and len(value := cells[index].strip()) > limit:
                    report.add(rel, line, name, _short(value), "text_too_long",
                               f"{name} {shown(value)} is longer than the {limit} characters "
                               "it may hold")
            stray = [cells[i].strip() for i in self.headerless
                     if i < len(cells) and cells[i].strip()]
            stray += [c.strip() for c in cells[self.width:] if c.strip()]
            if stray:
                stray = [shown(c) for c in stray[:5]] + (["..."] if len(stray) > 5 else [])
                report.add(rel, line, None, ", ".join(stray), "extra_values",
                           f"value(s) [{', '.join(stray)}] in column(s) without a header")
            n += 1
            yield TsvRow(line, cells)
        if not n and not records.failed:
            report.add(rel, FIRST_DATA_LINE, None, None, "no_data",
                       f"no data: the file has a header and a type line but no data line "
                       f"(data starts on line {FIRST_DATA_LINE})")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _normalise_header(path: Path) -> list[str]:
    """The column names of line 1, read on their own (for messages about later lines)."""
    with open(path, "rb") as f:
        first = f.readline(MAX_LINE_CHARS)
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16: not read line by line here
        return []
    return [_normalise(c) for c in decode_text(first.rstrip(b"\r\n")).split("\t")]


def _check_field_sizes(cells: list[str], header: list[str], limit: int, rel: str, line: int,
                       report: ImportReport) -> None:
    for i, cell in enumerate(cells):
        if len(cell) > limit:
            column = header[i] if i < len(header) and header[i] else None
            report.add(rel, line, column, _short(cell), "field_too_long",
                       f"a value of {len(cell):,} characters is longer than the {limit:,} "
                       "a value may hold")


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
            report.add(rel, 1, _short(name), _short(name), "bad_header",
                       f"invalid column name {shown(name)}: it must be <prefix>_<field>")
            continue
        prefix, fld = parts
        problem = column_name_problem(name)
        if problem is not None:
            report.add(rel, 1, _short(name), _short(name), "bad_header",
                       f"invalid column name {shown(name)}: {problem}")
            continue
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
                report.add(rel, 2, name, _short(marker), "bad_type",
                           f"invalid type {shown(marker)} for column {name!r} "
                           "(expected [f] or [t])")
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
