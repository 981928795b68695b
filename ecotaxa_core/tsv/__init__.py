"""The EcoTaxa TSV format: reading files, typed values, problems with their location."""

from ecotaxa_core.tsv.columns import PARENT_PREFIXES, PREDEFINED, PREFIXES, is_free, split_column
from ecotaxa_core.tsv.issues import MAX_ISSUES_PER_FILE, ImportReport, TsvFormatError, TsvIssue
from ecotaxa_core.tsv.reader import FIRST_DATA_LINE, TsvColumn, TsvRow, TsvTable, decode_text, read_tsv
from ecotaxa_core.tsv.values import (format_float, parse_coordinate, parse_date, parse_float,
                                     parse_int, parse_latitude, parse_longitude, parse_status,
                                     parse_time)

__all__ = [
    "PREFIXES",
    "PARENT_PREFIXES",
    "PREDEFINED",
    "is_free",
    "split_column",
    "TsvIssue",
    "ImportReport",
    "TsvFormatError",
    "MAX_ISSUES_PER_FILE",
    "TsvColumn",
    "TsvRow",
    "TsvTable",
    "read_tsv",
    "decode_text",
    "FIRST_DATA_LINE",
    "parse_float",
    "parse_int",
    "parse_coordinate",
    "parse_latitude",
    "parse_longitude",
    "parse_date",
    "parse_time",
    "parse_status",
    "format_float",
]
