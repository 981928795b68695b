"""The columns of an EcoTaxa TSV: prefixes, predefined columns and their types.

A column name is ``<prefix>_<field>``; the predefined ones map to database
fields, every other one is a *free* column stored typed in the ``extra`` JSON
of its object, sample, acquisition or process.

>>> split_column("object_annotation_category")
('object', 'annotation_category')
>>> PREDEFINED["object_lat"], is_free("object_area"), is_free("img_rank")
('f', True, False)
>>> column_name_problem("object_"), column_name_problem("object_área")
('no field name after the prefix', None)
>>> MAX_TEXT_LENGTH["object_id"], MAX_TEXT_LENGTH["acq_instrument"]
(255, 64)
"""

from __future__ import annotations

import re

from ecotaxa_core.db.models import Acquisition, Image, Object, Process, Sample, Taxon, User

__all__ = [
    "PREFIXES",
    "PARENT_PREFIXES",
    "PREDEFINED",
    "TYPE_MARKERS",
    "MAX_TEXT_LENGTH",
    "MAX_COLUMN_NAME_LENGTH",
    "split_column",
    "is_free",
    "column_name_problem",
]

PREFIXES = ("object", "sample", "acq", "process", "img")
PARENT_PREFIXES = ("sample", "acq", "process")

# Predefined columns and the type they always have ("f" number, "t" text);
# the type line is not consulted for them.
PREDEFINED: dict[str, str] = {
    "object_id": "t",
    "object_lat": "f",
    "object_lon": "f",
    "object_date": "t",
    "object_time": "t",
    "object_depth_min": "f",
    "object_depth_max": "f",
    "object_annotation_status": "t",
    "object_annotation_category": "t",
    "object_annotation_category_id": "f",
    # Written by exports for people ("Biota>other>egg"); not read back.
    "object_annotation_hierarchy": "t",
    "object_annotation_person_name": "t",
    "object_annotation_person_email": "t",
    "object_annotation_date": "t",
    "object_annotation_time": "t",
    "sample_id": "t",
    "sample_lat": "f",
    "sample_lon": "f",
    "acq_id": "t",
    "acq_instrument": "t",
    "process_id": "t",
    "img_file_name": "t",
    "img_rank": "f",
}

TYPE_MARKERS = {"[f]": "f", "[t]": "t"}


def _length(model, column: str) -> int:
    return model.__table__.c[column].type.length


# Longest text the database keeps for the predefined text columns (PostgreSQL
# refuses longer values, so they are refused when the file is read).
MAX_TEXT_LENGTH: dict[str, int] = {
    "object_id": _length(Object, "orig_id"),
    "sample_id": _length(Sample, "orig_id"),
    "acq_id": _length(Acquisition, "orig_id"),
    "process_id": _length(Process, "orig_id"),
    "acq_instrument": _length(Acquisition, "instrument"),
    "img_file_name": _length(Image, "original_name"),
    "object_annotation_category": _length(Taxon, "name"),
    "object_annotation_person_name": _length(User, "name"),
    "object_annotation_person_email": _length(User, "email"),
}

MAX_COLUMN_NAME_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def split_column(name: str) -> tuple[str, str] | None:
    """(prefix, field) of a normalised column name, None without an underscore."""
    if "_" not in name:
        return None
    prefix, field = name.split("_", 1)
    return prefix, field


def is_free(name: str) -> bool:
    """Whether a (well-formed) column is a free one, stored in ``extra``."""
    parts = split_column(name)
    return parts is not None and parts[0] != "img" and name not in PREDEFINED


def column_name_problem(name: str) -> str | None:
    """Why a (normalised) ``<prefix>_<field>`` name cannot be a column, or None."""
    parts = split_column(name)
    if parts is not None and not parts[1]:
        return "no field name after the prefix"
    if len(name) > MAX_COLUMN_NAME_LENGTH:
        return f"longer than {MAX_COLUMN_NAME_LENGTH} characters"
    if _CONTROL.search(name):
        return "it holds control characters"
    return None
