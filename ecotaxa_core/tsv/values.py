"""Typed values of EcoTaxa TSV cells.

Each parser takes the stripped text of a cell and returns the typed value, or
None for an empty cell; it raises :class:`ValueError` with a message for
people when the text is not a valid value.

>>> parse_float(" 12.5 "), parse_float("NaN"), parse_float("")
(12.5, None, None)
>>> parse_latitude("43°30 36")
43.51
>>> round(parse_longitude("-7°15.5"), 6)
-7.258333
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
]

# EcoTaxa maps these to "no value" in numeric columns.
_NUMERIC_EMPTY = {"", "nan", "na", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity"}


def parse_float(text: str) -> float | None:
    """A finite float; empty, NaN, NA and infinities are "no value" (None)."""
    text = text.strip()
    if text.lower() in _NUMERIC_EMPTY:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        return None
    return value


def parse_int(text: str) -> int | None:
    """An integer (``3`` or ``3.0``); None when empty."""
    value = parse_float(text)
    if value is None:
        return None
    if value != int(value):
        raise ValueError(f"invalid integer {text!r}")
    return int(value)


_DMS = re.compile(
    r"""^(?P<sign>[+-]?)\s*(?P<deg>\d+(?:\.\d+)?)\s*°\s*
        (?:(?P<min>\d+(?:\.\d+)?)\s*['′]?\s*
           (?:(?P<sec>\d+(?:\.\d+)?)\s*(?:["″]|'')?)?)?\s*
        (?P<hemi>[NSEWnsew])?$""",
    re.VERBOSE,
)


def parse_coordinate(text: str) -> float | None:
    """Decimal degrees from ``12.5``, ``DD°MM SS``, ``DD°MM.mm`` (optional N/S/E/W)."""
    text = text.strip()
    if not text:
        return None
    if "°" not in text:
        value = parse_float(text)
        if value is None:
            raise ValueError(f"invalid coordinate {text!r}")
        return value
    m = _DMS.match(text)
    if m is None:
        raise ValueError(f"invalid coordinate {text!r}")
    minutes = float(m.group("min") or 0)
    seconds = float(m.group("sec") or 0)
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"invalid coordinate {text!r} (minutes and seconds must be below 60)")
    value = float(m.group("deg")) + minutes / 60 + seconds / 3600
    negative = m.group("sign") == "-" or (m.group("hemi") or "").upper() in ("S", "W")
    return round(-value if negative else value, 10)


def _bounded(text: str, limit: float, what: str) -> float | None:
    try:
        value = parse_coordinate(text)
    except ValueError:
        raise ValueError(f"invalid {what} {text.strip()!r}") from None
    if value is not None and not -limit <= value <= limit:
        raise ValueError(f"invalid {what} {text.strip()!r} (must be within -{limit:g}/+{limit:g}°)")
    return value


def parse_latitude(text: str) -> float | None:
    """Latitude in decimal degrees, checked within -90/+90."""
    return _bounded(text, 90, "latitude")


def parse_longitude(text: str) -> float | None:
    """Longitude in decimal degrees, checked within -180/+180."""
    return _bounded(text, 180, "longitude")


def parse_date(text: str) -> str | None:
    """ISO date text (YYYY-MM-DD) from ``YYYYMMDD`` or ``YYYY-MM-DD``."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    if m is None or ("-" in text and text.count("-") != 2):
        raise ValueError(f"invalid date {text!r} (expected YYYYMMDD or YYYY-MM-DD)")
    try:
        return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:
        raise ValueError(f"invalid date {text!r}") from None


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
        raise ValueError(f"invalid time {text!r} (expected HHMM, HHMMSS or HH:MM:SS)")
    try:
        return _dt.time(int(hh), int(mm), int(ss)).isoformat()
    except ValueError:
        raise ValueError(f"invalid time {text!r}") from None


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
        raise ValueError(f"invalid annotation status {text.strip()!r} "
                         "(expected predicted, validated, dubious, P, V, D or empty)") from None


def format_float(value: float | None) -> str:
    """The shortest text that reads back as the same float ('' for None).

    >>> format_float(241.039993286133), format_float(2.0), format_float(None)
    ('241.039993286133', '2.0', '')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))
