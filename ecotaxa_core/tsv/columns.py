"""The columns of an EcoTaxa TSV: prefixes, predefined columns and their types.

A column name is ``<prefix>_<field>``; the predefined ones map to database
fields, every other one is a *free* column stored typed in the ``extra`` JSON
of its object, sample, acquisition or process.

>>> split_column("object_annotation_category")
('object', 'annotation_category')
>>> PREDEFINED["object_lat"], is_free("object_area"), is_free("img_rank")
('f', True, False)
"""

from __future__ import annotations

__all__ = [
    "PREFIXES",
    "PARENT_PREFIXES",
    "PREDEFINED",
    "TYPE_MARKERS",
    "split_column",
    "is_free",
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
