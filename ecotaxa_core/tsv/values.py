"""Typed values of EcoTaxa TSV cells.

Each parser takes the stripped text of a cell and returns the typed value, or
None for an empty cell; it raises :class:`ValueError` with a message for
people when the text is not a valid value (long texts are cut in messages).

The rules follow EcoTaxa's back end (``BO/TSVFile.py``, ``BO/helpers/
TSVHelpers.py``, ``DB/Object.py``), and are stricter or wider where it helps:

- numbers are plain ASCII with a dot: ``1,5`` is refused, as EcoTaxa's
  ``float()`` refuses it (and so are ``1_000`` and non-ASCII digits, which it
  accepts);
  ``NaN``, ``NA`` and infinities are "no value" (EcoTaxa empties ``nan``/``na``
  and ``-inf``; ``inf`` too here, since no database or feature can hold it);
- integers (``img_rank``, category ids) must fit in 32 bits, as their columns;
- latitudes and longitudes (empty, NaN or NA: no value) are decimal degrees
  or ``DD°MM SS`` (EcoTaxa's UVP form), ``DD°MM.mmm``, ``DD°MM'SS"``, with an
  optional sign or hemisphere letter (N/S for latitudes, E/W for longitudes;
  ``12.5S`` too); ``º`` and ``˚``, often typed for ``°``, are accepted; a sign
  and a hemisphere together are refused as ambiguous;
- dates are ``YYYYMMDD`` or ``YYYY-MM-DD``; times ``HHMM``, ``HHMMSS`` (shorter
  ones left-padded, as spreadsheets drop zeros), ``HH:MM`` or ``HH:MM:SS``.

>>> parse_float(" 12.5 "), parse_float("NaN"), parse_float("")
(12.5, None, None)
>>> parse_latitude("43°30 36")
43.51
>>> round(parse_longitude("-7°15.5"), 6), parse_latitude("12.5 S")
(-7.258333, -12.5)
>>> parse_date("20140420"), parse_date("2014-04-20")
('2014-04-20', '2014-04-20')
>>> parse_time("420"), parse_time("153100"), parse_time("15:31:00")
('04:20:00', '15:31:00', '15:31:00')
>>> parse_status("V"), parse_status("predicted"), parse_status("")
('validated', 'predicted', 'unclassified')
"""

from __future__ import annotations

import datetime as _dt
import math
import re

from ecotaxa_core.db.models import ObjectStatus

__all__ = [
    "parse_float",
    "parse_int",
    "parse_latitude",
    "parse_longitude",
    "parse_coordinate",
    "parse_date",
    "parse_time",
    "parse_status",
    "format_float",
    "shown",
    "INT_MIN",
    "INT_MAX",
]

# EcoTaxa maps these to "no value" in numeric columns.
_NUMERIC_EMPTY = {"", "nan", "na", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity",
                  "+infinity"}

INT_MIN, INT_MAX = -2**31, 2**31 - 1  # the database's INTEGER
_SHOWN = 60


def shown(text: str, limit: int = _SHOWN) -> str:
    """``repr`` of ``text`` for a message, cut after ``limit`` characters.

    >>> shown("abc"), shown("x" * 100, 5)
    ("'abc'", "'xxxxx...' (100 characters)")
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + '...'!r} ({len(text):,} characters)"


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_COMMA_NUMBER = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?", re.ASCII)


def parse_float(text: str) -> float | None:
    """A finite float; empty, NaN, NA and infinities are "no value" (None).

    Only plain ASCII numbers (``-12``, ``1.5``, ``.5``, ``2e-3``) are numbers.
    """
    text = text.strip()
    if text.lower() in _NUMERIC_EMPTY:
        return None
    if _NUMBER.fullmatch(text) is None:
        hint = " (use a dot as decimal separator)" if _COMMA_NUMBER.fullmatch(text) else ""
        raise ValueError(f"invalid number {shown(text)}{hint}")
    value = float(text)
    if not math.isfinite(value):
        return None
    return value


def parse_int(text: str) -> int | None:
    """A 32-bit integer (``3`` or ``3.0``); None when empty."""
    value = parse_float(text)
    if value is None:
        return None
    if value != int(value):
        raise ValueError(f"invalid integer {shown(text.strip())}")
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"integer {shown(text.strip())} is out of range "
                         f"({INT_MIN} to {INT_MAX})")
    return int(value)


_DEGREE = "°º˚"
_DMS = re.compile(
    rf"""^(?P<sign>[+-]?)\s*(?P<deg>\d+(?:\.\d+)?)\s*[{_DEGREE}]\s*
        (?:(?P<min>\d+(?:\.\d+)?)\s*['′]?\s*
           (?:(?P<sec>\d+(?:\.\d+)?)\s*(?:["″]|'')?)?)?\s*
        (?P<hemi>[NSEWnsew])?$""",
    re.VERBOSE | re.ASCII,
)
_DECIMAL_HEMI = re.compile(r"^(?P<value>[^NSEWnsew]*?)\s*(?P<hemi>[NSEWnsew])$")


class _CoordinateError(ValueError):
    """A coordinate's problem, without the text (the caller names the field)."""


def _coordinate(text: str, hemispheres: str) -> float | None:
    if not any(d in text for d in _DEGREE):
        m = _DECIMAL_HEMI.match(text)
        number, hemi = (m.group("value"), m.group("hemi").upper()) if m else (text, "")
        if _COMMA_NUMBER.fullmatch(number.strip()):
            raise _CoordinateError("use a dot as decimal separator")
        try:
            value = parse_float(number)
        except ValueError:
            value = None
        if value is None:
            raise _CoordinateError("")
        sign = number.strip()[:1] if number.strip()[:1] in "+-" else ""
    else:
        m = _DMS.match(text)
        if m is None:
            raise _CoordinateError("")
        minutes = float(m.group("min") or 0)
        seconds = float(m.group("sec") or 0)
        if minutes >= 60 or seconds >= 60:
            raise _CoordinateError("minutes and seconds must be below 60")
        value = float(m.group("deg")) + minutes / 60 + seconds / 3600
        sign, hemi = m.group("sign"), (m.group("hemi") or "").upper()
        value = round(-value if sign == "-" else value, 10)
    if hemi:
        if hemi not in hemispheres:
            raise _CoordinateError(f"hemisphere {hemi!r}: expected {' or '.join(hemispheres)}")
        if sign:
            raise _CoordinateError("give a sign or a hemisphere letter, not both")
        value = -abs(value) if hemi in ("S", "W") else abs(value)
    return value


def parse_coordinate(text: str, hemispheres: str = "NSEW") -> float | None:
    """Decimal degrees from ``12.5``, ``DD°MM SS``, ``DD°MM.mm``, with a sign or a hemisphere.

    ``hemispheres`` lists the letters allowed (``"NS"`` for latitudes).
    """
    return _bounded(text, math.inf, "coordinate", hemispheres)


def _bounded(text: str, limit: float, what: str, hemispheres: str) -> float | None:
    text = text.strip()
    if text.lower() in ("", "nan", "-nan", "na"):
        return None
    try:
        value = _coordinate(text, hemispheres.upper())
    except _CoordinateError as e:
        raise ValueError(f"invalid {what} {shown(text)}" + (f" ({e})" if str(e) else "")) from None
    if not -limit <= value <= limit:
        raise ValueError(f"invalid {what} {shown(text)} (must be within -{limit:g}/+{limit:g}°)")
    return value


def parse_latitude(text: str) -> float | None:
    """Latitude in decimal degrees, checked within -90/+90 (hemisphere N or S)."""
    return _bounded(text, 90, "latitude", "NS")


def parse_longitude(text: str) -> float | None:
    """Longitude in decimal degrees, checked within -180/+180 (hemisphere E or W)."""
    return _bounded(text, 180, "longitude", "EW")


def parse_date(text: str) -> str | None:
    """ISO date text (YYYY-MM-DD) from ``YYYYMMDD`` or ``YYYY-MM-DD``."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    if m is None or ("-" in text and text.count("-") != 2):
        raise ValueError(f"invalid date {shown(text)} (expected YYYYMMDD or YYYY-MM-DD)")
    try:
        return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:
        raise ValueError(f"invalid date {shown(text)}") from None


def parse_time(text: str) -> str | None:
    """ISO time text (HH:MM:SS) from ``HHMM[SS]`` or ``HH:MM[:SS]``.

    As in EcoTaxa, compact times shorter than 4 digits are left-padded with
    zeros (spreadsheets drop them: ``420`` is 04:20) and missing seconds are 0.
    """
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d{2}):(\d{2})(?::(\d{2}))?", text)
    if m is not None:
        hh, mm, ss = m.group(1), m.group(2), m.group(3) or "00"
    elif re.fullmatch(r"\d{1,6}", text):
        digits = text.zfill(4) if len(text) < 4 else text
        digits = digits.ljust(6, "0")
        hh, mm, ss = digits[0:2], digits[2:4], digits[4:6]
    else:
        raise ValueError(f"invalid time {shown(text)} (expected HHMM, HHMMSS, HH:MM or HH:MM:SS)")
    try:
        return _dt.time(int(hh), int(mm), int(ss)).isoformat()
    except ValueError:
        raise ValueError(f"invalid time {shown(text)}") from None


_STATUS = {
    "": ObjectStatus.UNCLASSIFIED,
    "unclassified": ObjectStatus.UNCLASSIFIED,
    "noid": ObjectStatus.UNCLASSIFIED,
    "u": ObjectStatus.UNCLASSIFIED,
    "predicted": ObjectStatus.PREDICTED,
    "p": ObjectStatus.PREDICTED,
    "validated": ObjectStatus.VALIDATED,
    "v": ObjectStatus.VALIDATED,
    "dubious": ObjectStatus.DUBIOUS,
    "d": ObjectStatus.DUBIOUS,
}


def parse_status(text: str) -> str:
    """Annotation status (predicted, validated, dubious or EcoTaxa's P/V/D; empty: unclassified)."""
    try:
        return _STATUS[text.strip().lower()].value
    except KeyError:
        raise ValueError(f"invalid annotation status {shown(text.strip())} "
                         "(expected predicted, validated, dubious, P, V, D or empty)") from None


def format_float(value: float | None) -> str:
    """The shortest text that reads back as the same float ('' for None).

    >>> format_float(241.039993286133), format_float(2.0), format_float(None)
    ('241.039993286133', '2.0', '')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))
