"""Exporting a project as an EcoTaxa TSV bundle, plus per-sample per-category counts.

The bundle is a zip ``ecotaxa_export_<project>_<UTC time>.zip`` holding one
``ecotaxa_<project>.tsv`` (header line, type line, one line per image) and,
with images, the image files under ``images/``. It holds every predefined
column (position, date, annotation status, category, annotator, annotation
time, sample/acquisition/process ids) and every free column with the type
recorded at import, so :func:`~ecotaxa_core.importer.import_path` (or EcoTaxa)
reads it back. Category ids are this instance's taxon ids, which are EcoTaxa's
for taxa created from EcoTaxa files. The counts table ``counts_<project>.tsv``
is written next to the zip.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, Image, Object, ObjectStatus, Process, Sample,
                                    Taxon, User, utcnow)
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project
from ecotaxa_core.tsv.values import format_float

__all__ = ["ExportResult", "export_project", "export_columns"]

_BATCH = 2000

# Predefined columns in export order, with their types.
_OBJECT_COLUMNS = [
    ("object_id", "t"), ("object_lat", "f"), ("object_lon", "f"), ("object_date", "t"),
    ("object_time", "t"), ("object_depth_min", "f"), ("object_depth_max", "f"),
    ("object_annotation_status", "t"), ("object_annotation_category", "t"),
    ("object_annotation_category_id", "f"), ("object_annotation_hierarchy", "t"),
    ("object_annotation_person_name", "t"), ("object_annotation_person_email", "t"),
    ("object_annotation_date", "t"), ("object_annotation_time", "t"),
]
_PARENT_COLUMNS = {"sample": [("sample_id", "t"), ("sample_lat", "f"), ("sample_lon", "f")],
                   "acq": [("acq_id", "t"), ("acq_instrument", "t")],
                   "process": [("process_id", "t")]}


@dataclass(frozen=True)
class ExportResult:
    project_id: int
    bundle: Path
    counts: Path
    n_objects: int
    n_images: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bundle"], d["counts"] = str(self.bundle), str(self.counts)
        return d


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
    cols += [("img_file_name", "t"), ("img_rank", "f")]
    for prefix, predefined in _PARENT_COLUMNS.items():
        cols += predefined
        cols += [(f"{prefix}_{n}", k) for n, k in (free_columns.get(prefix) or {}).items()]
    return cols


def export_project(inst: Instance, project_id: int, out_dir: str | Path, *,
                   with_images: bool = True) -> ExportResult:
    """Write the project's bundle zip and counts table into ``out_dir``.

    Without images, the TSV still names the image files it would hold.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with inst.sessions() as s:
        project = get_project(s, project_id)
        columns = export_columns(project.free_columns or {})
        bundle = _free_name(out_dir, f"ecotaxa_export_{project_id}_"
                                     f"{utcnow().strftime('%Y%m%d_%H%M%S')}", ".zip")
        part = bundle.with_name(bundle.name + ".part")
        tsv_part = bundle.with_name(bundle.name + ".tsv.part")
        n_objects = n_images = 0
        try:
            with zipfile.ZipFile(part, "w") as z, open(tsv_part, "w", encoding="utf-8",
                                                       newline="") as tsv:
                writer = csv.writer(tsv, delimiter="\t", lineterminator="\n")
                writer.writerow([c for c, _ in columns])
                writer.writerow([f"[{k}]" for _, k in columns])
                used_names: set[str] = set()
                for obj, images, ctx in _objects(s, project_id):
                    n_objects += 1
                    for image in images or [None]:
                        name = _image_name(obj.orig_id, image, used_names) if image else ""
                        if image is not None:
                            n_images += 1
                            if with_images:
                                z.write(inst.vault.path(image.file_path), name,
                                        compress_type=zipfile.ZIP_STORED)
                        writer.writerow(_row(columns, obj, image, name, ctx))
            with zipfile.ZipFile(part, "a") as z:
                z.write(tsv_part, f"ecotaxa_{project_id}.tsv", compress_type=zipfile.ZIP_DEFLATED)
            os.replace(part, bundle)
        finally:
            part.unlink(missing_ok=True)
            tsv_part.unlink(missing_ok=True)
        counts = out_dir / f"counts_{project_id}.tsv"
        _write_counts(s, project_id, counts)
    return ExportResult(project_id=project_id, bundle=bundle, counts=counts,
                        n_objects=n_objects, n_images=n_images)


def _free_name(folder: Path, stem: str, suffix: str) -> Path:
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}_{n}{suffix}", n + 1
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _image_name(orig_id: str, image: Image, used: set[str]) -> str:
    stem = _UNSAFE.sub("_", orig_id).strip("._") or "object"
    ext = Path(image.file_path).suffix.lower()
    name = f"images/{stem}_{image.rank}{ext}"
    if name in used:
        name = f"images/{stem}_{image.rank}_{image.id}{ext}"
    used.add(name)
    return name


@dataclass
class _Context:
    """Rows shared by many objects, loaded once per batch."""

    samples: dict[int, Sample]
    acquisitions: dict[int, Acquisition]
    processes: dict[int, Process]
    taxa: dict[int, Taxon]
    users: dict[int, User]
    free: dict[str, dict[str, str]]

    def hierarchy(self, taxon_id: int) -> str:
        names, t, seen = [], self.taxa.get(taxon_id), set()
        while t is not None and t.id not in seen:
            seen.add(t.id)
            names.append(t.name)
            t = self.taxa.get(t.parent_id) if t.parent_id is not None else None
        return ">".join(reversed(names))


def _load(s: Session, model, ids) -> dict[int, Any]:
    ids = {i for i in ids if i is not None}
    found: dict[int, Any] = {}
    ids_list = list(ids)
    for start in range(0, len(ids_list), 1000):
        found.update({r.id: r for r in s.scalars(select(model).where(
            model.id.in_(ids_list[start:start + 1000])))})
    return found


def _taxa_with_ancestors(s: Session, ids) -> dict[int, Taxon]:
    taxa: dict[int, Taxon] = {}
    wanted = {i for i in ids if i is not None}
    while wanted:
        found = _load(s, Taxon, wanted)
        taxa.update(found)
        wanted = {t.parent_id for t in found.values() if t.parent_id is not None} - set(taxa)
    return taxa


def _objects(s: Session, project_id: int) -> Iterator[tuple[Object, list[Image], _Context]]:
    free = dict(get_project(s, project_id).free_columns or {})
    parents = (_load_all(s, Sample, project_id), _load_all(s, Acquisition, project_id),
               _load_all(s, Process, project_id))
    last_id = 0
    while True:
        objs = list(s.scalars(select(Object).where(Object.project_id == project_id,
                                                   Object.id > last_id)
                              .order_by(Object.id).limit(_BATCH)))
        if not objs:
            return
        last_id = objs[-1].id
        images: dict[int, list[Image]] = defaultdict(list)
        for im in s.scalars(select(Image).where(Image.object_id.in_([o.id for o in objs]))
                            .order_by(Image.object_id, Image.rank)):
            images[im.object_id].append(im)
        ctx = _Context(*parents, taxa=_taxa_with_ancestors(s, (o.taxon_id for o in objs)),
                       users=_load(s, User, (o.annotator_id for o in objs)), free=free)
        for o in objs:
            yield o, images.get(o.id, []), ctx
        s.expunge_all()  # keep memory flat on large projects


def _load_all(s: Session, model, project_id: int) -> dict[int, Any]:
    return {r.id: r for r in s.scalars(select(model).where(model.project_id == project_id))}


def _compact_date(iso: str | None) -> str:
    return iso.replace("-", "") if iso else ""


def _compact_time(iso: str | None) -> str:
    return iso.replace(":", "") if iso else ""


def _text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "f" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_float(value)
    return str(value)


def _row(columns: list[tuple[str, str]], o: Object, image: Image | None, image_name: str,
         ctx: _Context) -> list[str]:
    sample = ctx.samples.get(o.sample_id) if o.sample_id else None
    acq = ctx.acquisitions.get(o.acquisition_id) if o.acquisition_id else None
    process = ctx.processes.get(o.process_id) if o.process_id else None
    taxon = ctx.taxa.get(o.taxon_id) if o.taxon_id else None
    user = ctx.users.get(o.annotator_id) if o.annotator_id else None
    when = o.annotation_date
    if when is not None and when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    status = "" if o.status == ObjectStatus.UNCLASSIFIED.value else o.status
    values = {
        "object_id": o.orig_id, "object_lat": format_float(o.lat),
        "object_lon": format_float(o.lon), "object_date": _compact_date(o.date),
        "object_time": _compact_time(o.time), "object_depth_min": format_float(o.depth_min),
        "object_depth_max": format_float(o.depth_max), "object_annotation_status": status,
        "object_annotation_category": taxon.display_name if taxon else "",
        "object_annotation_category_id": str(taxon.id) if taxon else "",
        "object_annotation_hierarchy": ctx.hierarchy(taxon.id) if taxon else "",
        "object_annotation_person_name": user.name if user and status else "",
        "object_annotation_person_email": user.email if user and status else "",
        "object_annotation_date": when.strftime("%Y%m%d") if when and status else "",
        "object_annotation_time": when.strftime("%H%M%S") if when and status else "",
        "img_file_name": image_name, "img_rank": str(image.rank) if image else "",
        "sample_id": sample.orig_id if sample else "",
        "sample_lat": format_float(sample.lat) if sample else "",
        "sample_lon": format_float(sample.lon) if sample else "",
        "acq_id": acq.orig_id if acq else "",
        "acq_instrument": (acq.instrument or "") if acq else "",
        "process_id": process.orig_id if process else "",
    }
    extras = {"object": o.extra or {}, "sample": sample.extra if sample else {},
              "acq": acq.extra if acq else {}, "process": process.extra if process else {}}
    for prefix, kinds in ctx.free.items():
        for field, kind in kinds.items():
            values[f"{prefix}_{field}"] = _text((extras.get(prefix) or {}).get(field), kind)
    return [values.get(name, "") for name, _ in columns]


def _write_counts(s: Session, project_id: int, path: Path) -> None:
    """Objects per sample, category and status (categories without objects are left out)."""
    rows = s.execute(
        select(Sample.orig_id, Taxon.display_name, Object.status, func.count())
        .select_from(Object)
        .outerjoin(Sample, Sample.id == Object.sample_id)
        .outerjoin(Taxon, Taxon.id == Object.taxon_id)
        .where(Object.project_id == project_id)
        .group_by(Sample.orig_id, Taxon.display_name, Object.status)).all()
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sample, category, status, n in rows:
        table[(sample or "", category or "")][status] += n
    statuses = [s_.value for s_ in (ObjectStatus.VALIDATED, ObjectStatus.PREDICTED,
                                    ObjectStatus.DUBIOUS, ObjectStatus.UNCLASSIFIED)]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["sample_id", "category"] + [f"n_{st}" for st in statuses] + ["n_total"])
    for (sample, category), by_status in sorted(table.items()):
        counts = [by_status.get(st, 0) for st in statuses]
        writer.writerow([sample, category] + counts + [sum(counts)])
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
