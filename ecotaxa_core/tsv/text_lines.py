"""The text of a TSV file, line by line, without holding the file in memory.

EcoTaxa files come as UTF-8 (with or without BOM), as Latin-1 (instrument
files such as UVP6's write ``°`` as one Latin-1 byte), mixed (a UTF-8 file
with a few Latin-1 lines), or as UTF-16 with a BOM (Excel's "Unicode text").
:func:`sniff_encoding` reads the bytes once, in blocks, to decide which, and
refuses binary data (a NUL character) with its line; :func:`open_lines` then
streams the lines in that encoding, each at most a given length, so a file
of a million objects is read in constant memory.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "ecotaxa_x.tsv"
>>> _ = p.write_bytes(b"\\xef\\xbb\\xbfa\\tb\\r\\ncaf\\xc3\\xa9\\r43\\xb0\\n")
>>> sniff_encoding(p)
'mixed'
>>> list(open_lines(p, "mixed", 100))
['a\\tb\\r\\n', 'café\\r', '43°\\n']
"""

from __future__ import annotations

import codecs
import io
from pathlib import Path
from typing import Iterator

__all__ = ["NotText", "LineTooLong", "decode_text", "sniff_encoding", "open_lines"]

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_BLOCK = 1 << 20


class NotText(ValueError):
    """Bytes that are not text: ``line`` and ``position`` (1-based) of the first offender."""

    def __init__(self, line: int, position: int, line_text: str, reason: str):
        self.line, self.position, self.line_text = line, position, line_text
        super().__init__(f"{reason} at line {line}, character {position}")


class LineTooLong(Exception):
    """A physical line longer than the reader accepts: its number and length."""

    def __init__(self, line: int, length: int):
        super().__init__(line, length)
        self.line, self.length = line, length


def decode_text(data: bytes) -> str:
    """The text of a TSV file's bytes (a small file read whole: map files, tests).

    UTF-16 with a BOM; else UTF-8 (BOM dropped), each line that is not UTF-8
    read as Latin-1 (which always decodes). Raises :class:`NotText` when the
    text holds a NUL character (binary data) or is broken UTF-16.

    >>> decode_text(b"\\xef\\xbb\\xbfcaf\\xc3\\xa9\\n43\\xb000 0\\n")
    'café\\n43°00 0\\n'
    >>> decode_text(b"a\\tb\\nc\\x00\\n")
    Traceback (most recent call last):
    ...
    ecotaxa_core.tsv.text_lines.NotText: NUL character (binary data) at line 2, character 2
    """
    if data.startswith(_UTF16_BOMS):
        text = _decode_utf16(data)
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


def sniff_encoding(path: Path) -> str | None:
    """How to read ``path``: "utf-8", "mixed" (line by line, Latin-1 where not UTF-8)
    or "utf-16"; None when the file holds nothing but white space.

    Raises :class:`NotText` for binary data (a NUL character) or broken UTF-16,
    with the line and position of the first offender.
    """
    with open(path, "rb") as f:
        start = f.read(4)
        if start.startswith(_UTF16_BOMS):
            text = decode_text(start + f.read())
            return "utf-16" if text.strip() else None
        f.seek(len(_UTF8_BOM) if start.startswith(_UTF8_BOM) else 0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        utf8, content = True, False
        while block := f.read(_BLOCK):
            if b"\x00" in block:
                f.seek(0)
                decode_text(f.read())  # raises with the NUL's line and position
            content = content or bool(block.strip())
            if utf8:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    utf8 = False
        if utf8:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8 = False
    if not content:
        return None
    return "utf-8" if utf8 else "mixed"


def open_lines(path: Path, encoding: str, max_chars: int) -> Iterator[str]:
    """The physical lines of ``path`` (line ends kept: LF, CRLF or CR).

    Raises :class:`LineTooLong` at the first line over ``max_chars``
    characters, having read at most that many more.
    """
    n = 0
    for line in _raw_lines(path, encoding, max_chars):
        n += 1
        if len(line) > max_chars:
            raise LineTooLong(n, len(line) if line[-1] in "\r\n" else _length(path, encoding, n))
        yield line


def _raw_lines(path: Path, encoding: str, max_chars: int) -> Iterator[str]:
    if encoding == "utf-16":
        with open(path, "rb") as f:
            text = _decode_utf16(f.read())
        yield from io.StringIO(text, newline="")
    elif encoding == "utf-8":
        with open(path, encoding="utf-8-sig", newline="") as f:
            while line := f.readline(max_chars + 1):
                yield line
    else:
        with open(path, "rb") as f:
            if f.read(3) != _UTF8_BOM:
                f.seek(0)
            # Up to 4 bytes a character: a line of max_chars characters fits in one read.
            while raw := f.readline(4 * max_chars + 4):
                for piece in raw.splitlines(keepends=True):
                    yield _decode_line(piece)


def _length(path: Path, encoding: str, n: int) -> int:
    """The length of physical line ``n`` (line end included), read again in chunks."""
    line, length = 1, 0
    for chunk in _raw_lines(path, encoding, 1 << 20):
        if line == n:
            length += len(chunk)
        if chunk[-1] in "\r\n":
            if line == n:
                break
            line += 1
    return length


def _decode_utf16(data: bytes) -> str:
    try:
        return data.decode("utf-16")
    except UnicodeDecodeError as e:
        raise NotText(*_where(data[:e.start].decode("utf-16", "replace")),
                      "invalid UTF-16") from None


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
