"""The rows of a project's EcoTaxa TSV: columns, types, and cells streamed from the database.

Every predefined column (position, date, annotation status, category and its
id and hierarchy, annotator, annotation time, sample/acquisition/process ids)
and every free column, with the type recorded at import, so the TSV imports
back unchanged. Rows are streamed (a server-side cursor on PostgreSQL) in an
order an index gives without sorting, so memory stays flat whatever the
project size. Free-column numbers are written with the very text they were
stored with (Python's shortest float repr), which reads back as the same float;
the cells of a row are joined without the csv module unless one needs quoting,
since formatting is what limits the export's speed.
"""

from __future__ import annotations

import json
import operator
import re
from datetime import timezone
from typing import Any, Iterator, NamedTuple

from sqlalchemy import ARRAY, BigInteger, Text, any_, bindparam, cast, func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, Image, Object, ObjectStatus, Process, Project,
                                    Sample, Taxon, User)

__all__ = ["export_columns", "ProjectRows", "Cells", "NEEDS_QUOTES", "NO_SAMPLE"]

_YIELD_PER = 5000
NO_SAMPLE = "no_sample"  # the folder of objects without sample, when split by sample

# Predefined columns in export order, with their types.
_OBJECT_COLUMNS = [
    ("object_id", "t"), ("object_lat", "f"), ("object_lon", "f"), ("object_date", "t"),
    ("object_time", "t"), ("object_depth_min", "f"), ("object_depth_max", "f"),
    ("object_annotation_status", "t"), ("object_annotation_category", "t"),
    ("object_annotation_category_id", "f"), ("object_annotation_hierarchy", "t"),
    ("object_annotation_person_name", "t"), ("object_annotation_person_email", "t"),
    ("object_annotation_date", "t"), ("object_annotation_time", "t"),
]
_IMAGE_COLUMNS = [("img_file_name", "t"), ("img_rank", "f")]
_PARENT_COLUMNS = {"sample": [("sample_id", "t"), ("sample_lat", "f"), ("sample_lon", "f")],
                   "acq": [("acq_id", "t"), ("acq_instrument", "t")],
                   "process": [("process_id", "t")]}


def export_columns(free_columns: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """(name, type) of every exported column, for a project's free columns.

    >>> cols = export_columns({"object": {"area": "f"}, "sample": {"ship": "t"}})
    >>> [c for c, _ in cols][-10:]
    ['object_area', 'img_file_name', 'img_rank', 'sample_id', 'sample_lat', 'sample_lon',
     'sample_ship', 'acq_id', 'acq_instrument', 'process_id']
    >>> dict(cols)["object_area"], dict(cols)["object_date"]
    ('f', 't')
    """
    cols = list(_OBJECT_COLUMNS)
    cols += [(f"object_{n}", k) for n, k in (free_columns.get("object") or {}).items()]
    cols += _IMAGE_COLUMNS
    for prefix, predefined in _PARENT_COLUMNS.items():
        cols += predefined
        cols += [(f"{prefix}_{n}", k) for n, k in (free_columns.get(prefix) or {}).items()]
    return cols


# -- rows -----------------------------------------------------------------------------
_OBJECT_FIELDS = (Object.id, Object.orig_id, Object.lat, Object.lon, Object.date, Object.time,
                  Object.depth_min, Object.depth_max, Object.status, Object.taxon_id,
                  Object.annotator_id, Object.annotation_date, Object.sample_id,
                  Object.acquisition_id, Object.process_id, cast(Object.extra, Text))
_IMAGE_FIELDS = (Image.object_id, Image.id, Image.rank, Image.original_name, Image.file_path)
_NO_IMAGE = ((None, None, None, None),)


# Free-column values exactly as stored: numbers keep the text json.dumps gave them
# (Python's shortest repr, which reads back as the same float), so nothing is
# converted twice; NaN and infinities, which the importer never stores, are empty.
_RAW_JSON = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=lambda _: None)
NEEDS_QUOTES = re.compile(r'[\t\n\r"]')  # what a TSV cell must be quoted for


class Cells(NamedTuple):
    """Cells of a row part, and their tab-joined text when none of them needs quoting."""

    cells: list[Any]
    text: str | None


def _cells(cells: list[Any]) -> Cells:
    try:
        text = "\t".join(cells)
    except TypeError:  # a value that is not text (a JSON boolean or list): csv writes it
        return Cells(cells, None)
    if text.count("\t") != len(cells) - 1 or '"' in text or "\n" in text or "\r" in text:
        return Cells(cells, None)
    return Cells(cells, text)


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _txt(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _num(value) if isinstance(value, float) \
        else str(value)


class ProjectRows:
    """Turns database rows into TSV cells; lookups of shared rows are made once."""

    def __init__(self, s: Session, project_id: int):
        self.s, self.project_id = s, project_id
        project = s.get(Project, project_id)
        free = project.free_columns or {}
        self.columns = export_columns(free)
        self.object_fields = list((free.get("object") or {}).keys())
        self.samples = self._parent_cells(Sample, free.get("sample") or {},
                                          lambda r: [r.orig_id, _num(r.lat), _num(r.lon)])
        self.acquisitions = self._parent_cells(Acquisition, free.get("acq") or {},
                                               lambda r: [r.orig_id, _txt(r.instrument)])
        self.processes = self._parent_cells(Process, free.get("process") or {},
                                            lambda r: [r.orig_id])
        self.sample_names = {i: cells[0] for i, cells in self.samples.items() if i is not None}
        self._taxa = _taxa_with_ancestors(s, project_id)
        self._users = {u.id: (u.name, u.email) for u in s.scalars(
            select(User).where(User.id.in_(select(Object.annotator_id).where(
                Object.project_id == project_id).distinct())))}
        self._annotation_cells: dict[tuple, list[str]] = {}
        self._tails: dict[tuple, Cells] = {}
        # Every free field present (as ''), then the object's own values, read in column order.
        fields = self.object_fields
        self._blanks = dict.fromkeys(fields, "")
        self._free_cells = operator.itemgetter(*fields) if len(fields) > 1 \
            else (lambda d: tuple(d[f] for f in fields))
        self._stamps: dict = {}  # annotation time -> its two cells (bulk validations share it)

    def _parent_cells(self, model, free: dict[str, str], predefined) -> dict[int | None, list]:
        """Cells of each sample (acquisition, process) by id; None: the empty cells."""
        names = list(free)
        cells: dict[int | None, list] = {}
        for r in self.s.scalars(select(model).where(model.project_id == self.project_id)):
            extra = r.extra or {}
            cells[r.id] = predefined(r) + [_txt(extra.get(n)) for n in names]
        self.s.expunge_all()
        prefix = {Sample: "sample", Acquisition: "acq", Process: "process"}[model]
        cells[None] = [""] * (len(_PARENT_COLUMNS[prefix]) + len(names))
        return cells

    def samples_in_order(self) -> list[tuple[int | None, str]]:
        """(sample id, sample orig_id) of every sample with objects, by orig_id; None last."""
        used = set(self.s.scalars(select(Object.sample_id).where(
            Object.project_id == self.project_id).distinct()))
        ordered = sorted(((self.sample_names[i], i) for i in used if i is not None))
        out = [(i, name) for name, i in ordered]
        if None in used:
            out.append((None, NO_SAMPLE))
        return out

    def annotation_cells(self, status: str, taxon_id: int | None,
                         annotator_id: int | None) -> list[str]:
        key = (status, taxon_id, annotator_id)
        cells = self._annotation_cells.get(key)
        if cells is None:
            if status == ObjectStatus.UNCLASSIFIED.value:
                cells = [""] * 6
            else:
                taxon = self._taxa.get(taxon_id)
                name, email = self._users.get(annotator_id, (None, None))
                cells = [status, taxon.display_name if taxon else "",
                         str(taxon_id) if taxon_id is not None else "",
                         self.hierarchy(taxon_id) if taxon else "", name or "", email or ""]
            self._annotation_cells[key] = cells
        return cells

    def hierarchy(self, taxon_id: int) -> str:
        names, t, seen = [], self._taxa.get(taxon_id), set()
        while t is not None and t.id not in seen:
            seen.add(t.id)
            names.append(t.name)
            t = self._taxa.get(t.parent_id) if t.parent_id is not None else None
        return ">".join(reversed(names))

    def _tail(self, sid: int | None, aid: int | None, pid: int | None) -> Cells:
        key = (sid, aid, pid)
        tail = self._tails.get(key)
        if tail is None:
            s, a, p = self.samples, self.acquisitions, self.processes
            tail = self._tails[key] = _cells(s.get(sid, s[None]) + a.get(aid, a[None])
                                             + p.get(pid, p[None]))
        return tail

    def _in_folder(self, stmt, sample_id: int | None, by_sample: bool):
        """``stmt`` restricted to the objects of one TSV (the project, or one sample)."""
        if not by_sample:
            return stmt.where(Object.project_id == self.project_id)
        if sample_id is not None:
            return stmt.where(Object.sample_id == sample_id)
        return stmt.where(Object.sample_id.is_(None), Object.project_id == self.project_id)

    def shared_image_names(self) -> frozenset[str]:
        """Original image names that several images of the project have (usually none)."""
        return frozenset(self.s.scalars(
            select(Image.original_name).join(Object, Object.id == Image.object_id)
            .where(Object.project_id == self.project_id)
            .group_by(Image.original_name).having(func.count() > 1)))

    def _images(self, object_ids: list[int]) -> dict[int, list[tuple]]:
        """(image id, rank, original name, vault path) of each object's images, by rank."""
        conn = self.s.connection()
        if conn.dialect.name == "postgresql":  # one array parameter, not thousands
            wanted = Image.object_id == any_(bindparam("ids", object_ids,
                                                       type_=ARRAY(BigInteger)))
        else:
            wanted = Image.object_id.in_(object_ids)
        found: dict[int, list[tuple]] = {}
        for oid, *image in conn.execute(select(*_IMAGE_FIELDS).where(wanted)
                                        .order_by(Image.object_id, Image.rank)):
            found.setdefault(oid, []).append(tuple(image))
        return found

    def rows(self, sample_id: int | None, by_sample: bool) -> Iterator[tuple]:
        """(object id, cells before the image columns, cells after them, image) per row.

        Objects come in an order an index gives without sorting (the database
        streams them): by ``orig_id`` for the whole project (its unique index),
        by id within a sample (the sample index). Their images are read for
        each batch of objects by the (object, rank) index, whatever plan the
        database would pick for a join.
        """
        stmt = self._in_folder(select(*_OBJECT_FIELDS), sample_id, by_sample) \
            .order_by(Object.id if by_sample else Object.orig_id) \
            .execution_options(yield_per=_YIELD_PER)
        for batch in self.s.connection().execute(stmt).partitions():
            images = self._images([row[0] for row in batch])
            for row in self._object_rows(batch):
                for image in images.get(row[0], _NO_IMAGE):
                    yield row + (image,)

    def _object_rows(self, batch) -> Iterator[tuple]:
        """(object id, head cells, tail cells) of each object of a batch."""
        decode, blanks, free_cells = _RAW_JSON.decode, self._blanks, self._free_cells
        unclassified, stamps = ObjectStatus.UNCLASSIFIED.value, self._stamps
        for (oid, orig_id, lat, lon, date, time, dmin, dmax, status, taxon_id, annotator_id,
             when, sid, aid, pid, extra) in batch:
            own = decode(extra) if extra else None
            values = {**blanks, **own} if isinstance(own, dict) else blanks
            if status == unclassified or when is None:
                stamp = ["", ""]
            else:
                stamp = stamps.get(when)
                if stamp is None:
                    if len(stamps) > 10000:
                        stamps.clear()
                    utc = when.astimezone(timezone.utc) if when.tzinfo else when
                    stamp = stamps[when] = [utc.strftime("%Y%m%d"), utc.strftime("%H%M%S")]
            head = _cells([orig_id, _num(lat), _num(lon), date.replace("-", "") if date else "",
                           time.replace(":", "") if time else "", _num(dmin), _num(dmax)]
                          + self.annotation_cells(status, taxon_id, annotator_id) + stamp
                          + list(free_cells(values)))
            yield oid, head, self._tail(sid, aid, pid)


def _taxa_with_ancestors(s: Session, project_id: int) -> dict[int, Taxon]:
    taxa: dict[int, Taxon] = {}
    wanted = set(s.scalars(select(Object.taxon_id).where(
        Object.project_id == project_id, Object.taxon_id.is_not(None)).distinct()))
    while wanted:
        found = {t.id: t for t in s.scalars(select(Taxon).where(Taxon.id.in_(list(wanted))))}
        taxa.update(found)
        wanted = {t.parent_id for t in found.values() if t.parent_id is not None} - set(taxa)
    for t in taxa.values():
        s.expunge(t)
    return taxa
