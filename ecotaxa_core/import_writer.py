"""Writing a checked :class:`ImportPlan`: vault files, database rows, feature rows.

All database rows are written in one transaction: taxa (when allowed),
annotators, samples, acquisitions, processes, objects and images, with bulk
inserts. Images are copied into the vault (with their thumbnails) by a thread
pool once their rows have ids. On any failure the vault files written are
removed, the transaction is rolled back and the "tsv" feature set is cut back
to its former length, then the error is raised again.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Acquisition, Image, Object, Process, Project, Sample, Taxon
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.image_checks import default_workers
from ecotaxa_core.import_checks import TSV_FEATURE_SET
from ecotaxa_core.import_plan import ImportPlan, ParentPlan
from ecotaxa_core.instance import Instance
from ecotaxa_core.taxonomy import CategoryResolver
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.users import find_or_create_annotator
from ecotaxa_core.vault import Vault

__all__ = ["write_plan"]

_BATCH = 2000


def write_plan(inst: Instance, project_id: int, plan: ImportPlan, *, create_missing_taxa: bool,
               progress: Callable[[int], None] | None = None) -> list[str]:
    """Write ``plan`` atomically; returns the display names of the taxa it created."""
    n_rows_before = inst.features.n_rows(project_id, TSV_FEATURE_SET)
    written: list[str] = []
    try:
        with inst.sessions.begin() as s:
            project = s.get(Project, project_id, with_for_update=True)
            if project is None:
                raise ProjectNotFound(project_id)
            taxa, created = _resolve_categories(s, plan, create_missing_taxa)
            annotators = _annotators(s, plan)
            sample_ids, acq_ids, process_ids = _parents(s, project_id, plan)
            object_ids = _insert_objects(s, project_id, plan, taxa, annotators, sample_ids,
                                         acq_ids, process_ids)
            _insert_images(s, inst.vault, plan, object_ids, written, progress)
            _merge_free_columns(project, plan)
            _append_features(inst, project_id, plan, object_ids)
    except BaseException:
        inst.vault.remove(*written)
        inst.features.truncate(project_id, TSV_FEATURE_SET, n_rows_before)
        raise
    return created


def _resolve_categories(s: Session, plan: ImportPlan,
                        create_missing: bool) -> tuple[dict[str, int], list[str]]:
    """Taxon id of each label; raises UnknownCategories, or TsvFormatError for bad ids."""
    resolver = CategoryResolver(create_missing=create_missing)
    for obj in plan.objects:
        if obj.label is not None:
            where = f"folder {Path(obj.rel).parent.as_posix()}" if plan.kind == "class_folders" \
                else obj.where
            resolver.add(obj.label, where, obj.category_id)
    new_taxa: list[Taxon] = []

    def collect(session, _context, _instances) -> None:
        new_taxa.extend(o for o in session.new if isinstance(o, Taxon))

    event.listen(s, "before_flush", collect)
    try:
        taxa = resolver.resolve(s)
    finally:
        event.remove(s, "before_flush", collect)
    _check_category_ids(s, plan, taxa)
    return taxa, [t.display_name for t in new_taxa]


def _check_category_ids(s: Session, plan: ImportPlan, taxa: dict[str, int]) -> None:
    """A category id given with a name must not contradict it.

    Ids in EcoTaxa files are EcoTaxa's own; a taxon created from such a file
    keeps that id when it is free. The name decides, except that an id naming
    no taxon here, given with the name of a taxon we had already, is refused
    as EcoTaxa refuses unknown ids. (An id that is another local taxon is
    ignored: local ids and EcoTaxa ids share one range and may collide.)
    """
    mismatched = [o for o in plan.objects if o.label is not None
                  and o.category_id is not None and taxa[o.label] != o.category_id]
    ids = {o.category_id for o in mismatched}
    local = set(s.scalars(select(Taxon.id).where(Taxon.id.in_(ids)))) if ids else set()
    report = ImportReport(plan.source)
    for obj in mismatched:
        if obj.category_id not in local:
            report.add(obj.rel, obj.line, "object_annotation_category_id", str(obj.category_id),
                       "unknown_category_id",
                       f"category id {obj.category_id} is not a taxon of this instance, while "
                       f"{obj.label!r} is taxon {taxa[obj.label]}: correct or remove the id")
    report.raise_if_any()


def _annotators(s: Session, plan: ImportPlan) -> dict[tuple[str | None, str | None], int | None]:
    people = {(o.annotator_name, o.annotator_email) for o in plan.objects
              if o.annotator_name or o.annotator_email}
    found = {}
    for name, email in sorted(people, key=lambda p: (p[0] or "", p[1] or "")):
        user = find_or_create_annotator(s, name, email)
        found[(name, email)] = user.id if user is not None else None
    return found


def _existing(s: Session, model, project_id: int, orig_ids: Iterable[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    orig_ids = list(orig_ids)
    for start in range(0, len(orig_ids), 500):
        chunk = orig_ids[start:start + 500]
        ids.update(s.execute(select(model.orig_id, model.id).where(
            model.project_id == project_id, model.orig_id.in_(chunk))).all())
    return ids


def _create(s: Session, model, project_id: int, plans: dict[str, ParentPlan],
            make) -> dict[str, int]:
    """Ids of the parents named in ``plans``: existing rows, or new ones made by ``make``."""
    ids = _existing(s, model, project_id, plans)
    rows = {orig: make(p) for orig, p in plans.items() if orig not in ids}
    for row in rows.values():
        row.project_id = project_id
    s.add_all(rows.values())
    s.flush()
    ids.update({orig: row.id for orig, row in rows.items()})
    return ids


def _parents(s: Session, project_id: int, plan: ImportPlan):
    samples = _create(s, Sample, project_id, plan.samples, lambda p: Sample(
        orig_id=p.orig_id, lat=p.lat, lon=p.lon, extra=p.extra))
    acqs = _create(s, Acquisition, project_id, plan.acquisitions, lambda p: Acquisition(
        orig_id=p.orig_id, sample_id=samples[p.parent], instrument=p.instrument, extra=p.extra))
    processes = _create(s, Process, project_id, plan.processes, lambda p: Process(
        orig_id=p.orig_id, acquisition_id=acqs[p.parent], extra=p.extra))
    return samples, acqs, processes


def _insert_objects(s: Session, project_id: int, plan: ImportPlan, taxa: dict[str, int],
                    annotators: dict, sample_ids: dict, acq_ids: dict,
                    process_ids: dict) -> list[int]:
    rows = []
    for o in plan.objects:
        taxon_id = taxa[o.label] if o.label is not None else o.category_id
        annotator = o.annotator_id if o.annotator_id is not None else annotators.get(
            (o.annotator_name, o.annotator_email))
        rows.append(dict(
            project_id=project_id, orig_id=o.orig_id,
            sample_id=sample_ids.get(o.sample), acquisition_id=acq_ids.get(o.acquisition),
            process_id=process_ids.get(o.process), lat=o.lat, lon=o.lon, date=o.date,
            time=o.time, depth_min=o.depth_min, depth_max=o.depth_max, status=o.status,
            taxon_id=taxon_id, annotator_id=annotator, annotation_date=o.annotation_date,
            extra=o.extra))
    ids: list[int] = []
    for start in range(0, len(rows), _BATCH):
        ids += s.scalars(insert(Object).returning(Object.id, sort_by_parameter_order=True),
                         rows[start:start + _BATCH]).all()
    return ids


def _insert_images(s: Session, vault: Vault, plan: ImportPlan, object_ids: list[int],
                   written: list[str], progress: Callable[[int], None] | None) -> None:
    images = [(oid, im) for oid, o in zip(object_ids, plan.objects) for im in o.images]
    rows = [dict(object_id=oid, rank=im.rank, file_path="", original_name=im.original_name,
                 width=im.width, height=im.height) for oid, im in images]
    image_ids: list[int] = []
    for start in range(0, len(rows), _BATCH):
        image_ids += s.scalars(insert(Image).returning(Image.id, sort_by_parameter_order=True),
                               rows[start:start + _BATCH]).all()
    jobs = [(image_id, im.src, im.rank) for image_id, (_, im) in zip(image_ids, images)]
    paths = _store_files(vault, jobs, written, progress)
    updates = [dict(id=image_id, file_path=rel, thumb_path=thumb)
               for (image_id, _, _), (rel, thumb) in zip(jobs, paths)]
    for start in range(0, len(updates), _BATCH):
        s.execute(update(Image), updates[start:start + _BATCH])


def _store_one(vault: Vault, image_id: int, src: Path, rank: int) -> tuple[str, str]:
    try:
        return vault.store(src, image_id, rank)
    except BaseException:
        # Remove what a half-done store left (vault layout: <kind>/<id // 10000>/<id>_<rank>.*).
        for kind in ("images", "thumbs"):
            for p in (vault.root / kind / f"{image_id // 10000:04d}").glob(f"{image_id}_{rank}.*"):
                p.unlink(missing_ok=True)
        raise


def _store_files(vault: Vault, jobs: list[tuple[int, Path, int]], written: list[str],
                 progress: Callable[[int], None] | None) -> list[tuple[str, str]]:
    """Store every image; on failure, ``written`` still lists every file stored."""
    pool = ThreadPoolExecutor(max_workers=default_workers())
    futures = [pool.submit(_store_one, vault, *job) for job in jobs]
    try:
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            if progress is not None and (done % 256 == 0 or done == len(futures)):
                progress(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                written.extend(future.result())
    return [f.result() for f in futures]


def _merge_free_columns(project: Project, plan: ImportPlan) -> None:
    merged = {prefix: dict(cols) for prefix, cols in (project.free_columns or {}).items()}
    for prefix, cols in plan.free_columns.items():
        target = merged.setdefault(prefix, {})
        for name, kind in cols.items():
            target.setdefault(name, kind)
    if merged != (project.free_columns or {}):
        project.free_columns = merged


def _append_features(inst: Instance, project_id: int, plan: ImportPlan,
                     object_ids: list[int]) -> None:
    names = plan.feature_names
    if not names or not object_ids:
        return
    if inst.features.exists(project_id, TSV_FEATURE_SET):
        names = inst.features.feature_names(project_id, TSV_FEATURE_SET)
    values = np.array([[o.features.get(n, math.nan) for n in names] for o in plan.objects],
                      dtype=np.float32).reshape(len(plan.objects), len(names))
    inst.features.append(project_id, TSV_FEATURE_SET, object_ids, values, names,
                         producer={"kind": "tsv"})
