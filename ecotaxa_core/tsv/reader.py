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
from typing import Iterator

from ecotaxa_core.tsv.columns import (MAX_TEXT_LENGTH, PARENT_PREFIXES, PREDEFINED, PREFIXES,
                                      TYPE_MARKERS, column_name_problem, split_column)
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.tsv.values import shown

__all__ = ["TsvColumn", "TsvRow", "TsvTable", "read_tsv", "decode_text", "FIRST_DATA_LINE",
           "MAX_LINE_CHARS", "MAX_FIELD_CHARS", "MAX_FILE_BYTES", "NotText"]

FIRST_DATA_LINE = 3
MAX_LINE_CHARS = 4 * 1024 * 1024  # 4 Mi characters: 1,000 columns of 4,000 characters
MAX_FIELD_CHARS = 131_072  # csv.field_size_limit()'s default
MAX_FILE_BYTES = 2 * 1024**3  # read whole: 2 GiB of TSV is ~2 million objects of 100 columns


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


class NotText(ValueError):
    """Bytes that are not text: ``line`` and ``position`` (1-based) of the first offender."""

    def __init__(self, line: int, position: int, line_text: str, reason: str):
        self.line, self.position, self.line_text = line, position, line_text
        super().__init__(f"{reason} at line {line}, character {position}")


_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_text(data: bytes) -> str:
    """The text of a TSV file's bytes.

    UTF-16 with a BOM; else UTF-8 (BOM dropped), each line that is not UTF-8
    read as Latin-1 (which always decodes). Raises :class:`NotText` when the
    text holds a NUL character (binary data) or is broken UTF-16.

    >>> decode_text(b"\\xef\\xbb\\xbfcaf\\xc3\\xa9\\n43\\xb000 0\\n")
    'café\\n43°00 0\\n'
    >>> decode_text(b"a\\tb\\nc\\x00\\n")
    Traceback (most recent call last):
    ...
    ecotaxa_core.tsv.reader.NotText: NUL character (binary data) at line 2, character 2
    """
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise NotText(*_where(data[:e.start].decode("utf-16", "replace")),
                          "invalid UTF-16") from None
    else:
        if data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM):]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = "".join(_decode_line(line) for line in data.splitlines(keepends=True))
    nul = text.find("\x00")
    if nul >= 0:
        raise NotText(*_where(text[:nul + 1]), "NUL character (binary data)")
    return text


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _where(before: str) -> tuple[int, int, str]:
    """(line, position, text of that line up to the position) of the end of ``before``."""
    lines = io.StringIO(before, newline="").readlines() or [""]
    last = lines[-1]
    return len(lines), len(last), last


class _LineTooLong(Exception):
    def __init__(self, line: int, length: int):
        super().__init__(line, length)
        self.line, self.length = line, length


class _Lines:
    """The physical lines of ``text`` for the csv reader, each checked for its length."""

    def __init__(self, text: str, max_chars: int):
        self._lines = io.StringIO(text, newline="")
        self.max_chars = max_chars
        self.n = 0
        self.last = ""

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.n += 1
            if len(line) > self.max_chars:
                raise _LineTooLong(self.n, len(line))
            self.last = line
            yield line


def _reader(lines, *, strict: bool = False):
    return csv.reader(lines, delimiter="\t", quotechar='"', strict=strict)


def _records(text: str, rel: str, report: ImportReport, max_line_chars: int,
             max_field_chars: int) -> list[tuple[int, list[str]]] | None:
    """(first line, cells) of every record; None (and issues) when the file cannot be read."""
    lines = _Lines(text, max_line_chars)
    reader = _reader(lines)
    records: list[tuple[int, list[str]]] = []
    previous = 0
    try:
        for cells in reader:
            records.append((previous + 1, cells))
            previous = reader.line_num
    except _LineTooLong as e:
        report.add(rel, e.line, None, None, "line_too_long",
                   f"line {e.line} holds {e.length:,} characters, more than the "
                   f"{max_line_chars:,} a line may hold: is this an EcoTaxa TSV file?")
        return None
    except csv.Error as e:
        line = previous + 1
        if "field larger than field limit" in str(e):
            limit = min(max_field_chars, csv.field_size_limit())
            index = next((i for i, c in enumerate(lines.last.split("\t")) if len(c) > limit),
                         None)
            report.add(rel, line, _column_name(records, index), None, "field_too_long",
                       f"a value is longer than {limit:,} characters (or a quote (\") opened "
                       "here is never closed)")
        else:
            report.add(rel, line, None, None, "bad_csv", f"unreadable line ({e})")
        return None
    if records and reader.line_num > records[-1][0] and _unclosed_quote(text, records[-1][0]):
        _report_unclosed(report, rel, records[-1][0])
        return None
    return records


def _report_unclosed(report: ImportReport, rel: str, line: int) -> None:
    report.add(rel, line, None, None, "unclosed_quote",
               f"a quote (\") opened on line {line} is never closed: the value would run to "
               "the end of the file")


def _unclosed_quote(text: str, first_line: int) -> bool:
    """Whether the record starting on ``first_line`` ends inside a quoted value."""
    rest = io.StringIO(text, newline="")
    for _ in range(first_line - 1):
        rest.readline()
    try:
        for _ in _reader(rest, strict=True):
            break
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def _column_name(records: list[tuple[int, list[str]]], index: int | None) -> str | None:
    if not records or index is None or index >= len(records[0][1]):
        return None
    return _normalise(records[0][1][index]) or None


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
        text = decode_text(Path(path).read_bytes())
    except NotText as e:
        header = [] if e.line == 1 else _normalise_header(path)
        column = _column_name([(1, header)], e.line_text.count("\t")) if header else None
        if column is not None and (split_column(column) or ("",))[0] not in PREFIXES:
            column = None  # a binary file's first "line" names no column
        report.add(rel, e.line, column, None, "not_text",
                   f"not a text file: {e} (is it really a TSV file?)")
        return None
    if not text.strip():
        report.add(rel, 1, None, None, "empty_file",
                   "the file is empty (expected a header line, a type line and data lines)")
        return None
    records = _records(text, rel, report, max_line_chars, max_field_chars)
    if records is None:
        return None
    header = [_normalise(c) for c in records[0][1]]
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
    bounded = [(c.index, c.name, MAX_TEXT_LENGTH[c.name]) for c in columns
               if c.name in MAX_TEXT_LENGTH]
    for line, cells in records[2:]:
        if not any(c.strip() for c in cells):
            continue  # blank line
        if sum(map(len, cells)) > max_field_chars:
            _check_field_sizes(cells, header, max_field_chars, rel, line, report)
        for index, name, limit in bounded:
            if index < len(cells) and len(cells[index]) > limit \
                    and len(value := cells[index].strip()) > limit:
                report.add(rel, line, name, _short(value), "text_too_long",
                           f"{name} {shown(value)} is longer than the {limit} characters "
                           "it may hold")
        stray = [cells[i].strip() for i in headerless if i < len(cells) and cells[i].strip()]
        stray += [c.strip() for c in cells[width:] if c.strip()]
        if stray:
            stray = [shown(c) for c in stray[:5]] + (["..."] if len(stray) > 5 else [])
            report.add(rel, line, None, ", ".join(stray), "extra_values",
                       f"value(s) [{', '.join(stray)}] in column(s) without a header")
        table.rows.append(TsvRow(line, cells))
    if not table.rows:
        report.add(rel, FIRST_DATA_LINE, None, None, "no_data",
                   f"no data: the file has a header and a type line but no data line "
                   f"(data starts on line {FIRST_DATA_LINE})")
    return table


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _normalise_header(path: Path) -> list[str]:
    """The column names of line 1, read on their own (for messages about later lines)."""
    with open(path, "rb") as f:
        first = f.readline(MAX_LINE_CHARS)
    if first.startswith(_UTF16_BOMS):
        return []
    return [_normalise(c) for c in _decode_line(first.rstrip(b"\r\n")).split("\t")]


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
