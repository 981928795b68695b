"""Writing a checked import: vault files, database rows, feature rows, all or nothing.

The slow part, copying each image and making its thumbnail, happens first,
while the images are checked (:mod:`~ecotaxa_core.import_images`), into the
run's own vault folders, outside any database transaction (SQLite has one
writer at a time; a long transaction would block every other writer). Then one
short transaction: taxa and annotators (when allowed), samples, acquisitions,
processes, objects and images with bulk inserts under reserved ids, updates of
existing objects (update modes); the feature rows are written; the
``import_runs`` row (the commit marker) and the ``imported_files`` rows are
inserted; commit. See :mod:`~ecotaxa_core.import_journal` for what happens on
failure or on a kill.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, Image, ImportedFile, ImportRun, Object, Process,
                                    Project, Sample, Taxon, User, utcnow)
from ecotaxa_core.db.bulk import insert_rows
from ecotaxa_core.db.ids import reserve_ids
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.import_features import FeaturePlan, write_features
from ecotaxa_core.import_images import ImageStager
from ecotaxa_core.import_journal import ImportJournal
from ecotaxa_core.import_names import (AnnotatorResolver, NameAnswers, annotator_resolver,
                                       category_resolver)
from ecotaxa_core.import_plan import FreeValues, ImagePlan, ImportPlan, ParentPlan
from ecotaxa_core.instance import Instance
from ecotaxa_core.reimport import ImportDelta, UpdateCounts, apply_updates

__all__ = ["WriteRequest", "WriteOutcome", "write_delta"]

_BATCH = 2000


@dataclass
class WriteRequest:
    """Everything the writer needs, once every check has passed."""

    project_id: int
    plan: ImportPlan
    delta: ImportDelta
    answers: NameAnswers
    features: FeaturePlan
    user_id: int | None
    run_id: str
    journal: ImportJournal
    stager: ImageStager  # where each image's file (and thumbnail) was staged
    started_at: datetime = field(default_factory=utcnow)
    imported_files: list[tuple[str, str, int]] = field(default_factory=list)  # path, sha, rows
    # The run's summary (kept in its ``import_runs`` row), from what was written.
    summarize: Callable[["WriteOutcome"], dict] = lambda outcome: {}


@dataclass
class WriteOutcome:
    taxa_created: list[str] = field(default_factory=list)
    users_created: list[str] = field(default_factory=list)
    updates: UpdateCounts = field(default_factory=UpdateCounts)


# -- the transaction ---------------------------------------------------------------------
def write_delta(inst: Instance, req: WriteRequest) -> WriteOutcome:
    """Write ``req`` in one transaction (images already in the vault); raises on any failure.

    The caller undoes a failure with the journal (the transaction itself is
    rolled back here).
    """
    outcome = WriteOutcome()
    plan, delta = req.plan, req.delta
    with inst.sessions.begin() as s:
        _serialise_writers(s, req.answers)
        project = s.get(Project, req.project_id, with_for_update=True)
        if project is None:
            raise ProjectNotFound(req.project_id)
        taxa, annotators = _resolve_names(s, req, outcome)
        parent_ids = _parents(s, req.project_id, delta.named_parents(plan))
        object_ids = _insert_objects(s, req, taxa, annotators, parent_ids)
        images = [(oid, im) for oid, o in zip(object_ids, delta.new_objects) for im in o.images]
        images += [(oid, im) for oid, _, im in delta.added_images]
        _insert_images(s, inst, req, images)
        outcome.updates = apply_updates(s, plan, delta, parent_ids, taxa, annotators,
                                        req.user_id)
        _merge_free_columns(project, plan)
        write_features(inst.features, req.project_id, req.features, object_ids, req.run_id)
        s.add(ImportRun(id=req.run_id, project_id=req.project_id, source=plan.source,
                        user_id=req.user_id, started_at=req.started_at, committed_at=utcnow(),
                        summary=req.summarize(outcome)))
        s.flush()
        if req.imported_files:
            s.execute(insert(ImportedFile), [
                dict(project_id=req.project_id, run_id=req.run_id, path=path, sha256=sha,
                     n_rows=n) for path, sha, n in req.imported_files])
    return outcome


# Any constant: the key of the PostgreSQL advisory lock imports take to create names.
_NAMES_LOCK_KEY = 0x45636F54617861  # "EcoTaxa"


def _serialise_writers(s: Session, answers: NameAnswers) -> None:
    """Make concurrent imports that may create the same taxa or users take turns.

    Taxa and users are shared by all projects: two imports creating "detritus" at
    once would both find it missing. On SQLite the transaction takes the write
    lock at once (``BEGIN IMMEDIATE``; SQLite has one writer anyway), so what it
    reads is what it writes over. On PostgreSQL an import that may create names
    holds an advisory lock until it commits.
    """
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        s.connection().exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql" and (answers.create_missing_taxa or answers.create_missing_users):
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _NAMES_LOCK_KEY})


def _created_during(s: Session, model, resolve: Callable[[], object]) -> tuple[object, list]:
    """Run ``resolve`` and return its result with the ``model`` rows it added."""
    new: list = []

    def collect(session, _context, _instances) -> None:
        new.extend(o for o in session.new if isinstance(o, model))

    event.listen(s, "before_flush", collect)
    try:
        result = resolve()
    finally:
        event.remove(s, "before_flush", collect)
    return result, new


def _resolve_names(s: Session, req: WriteRequest, outcome: WriteOutcome):
    objects = req.delta.classified
    categories = category_resolver(req.plan, objects, req.answers,
                                   create=req.answers.create_missing_taxa)
    taxa, new_taxa = _created_during(s, Taxon, lambda: categories.resolve(s))
    outcome.taxa_created = [t.display_name for t in new_taxa]
    people = annotator_resolver(objects, req.answers, create=req.answers.create_missing_users)
    annotators, new_users = _created_during(s, User, lambda: people.resolve(s))
    outcome.users_created = [u.email for u in new_users]
    return taxa, annotators


def _existing(s: Session, model, project_id: int, orig_ids: Iterable[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    orig_ids = list(orig_ids)
    for start in range(0, len(orig_ids), 500):
        chunk = orig_ids[start:start + 500]
        ids.update(s.execute(select(model.orig_id, model.id).where(
            model.project_id == project_id, model.orig_id.in_(chunk))).all())
    return ids


def _insert_rows(s: Session, model, n: int, make_row: Callable[[int], dict]) -> list[int]:
    """Insert ``n`` rows (``make_row(i)`` makes row ``i``) in batches under reserved ids;
    the ids, in order.

    Reserving the ids (:func:`~ecotaxa_core.db.ids.reserve_ids`) spares reading
    them back: asked for the ids in order, SQLAlchemy inserts one row at a time
    on SQLite (no sentinel column). Rows are made a batch at a time, so memory
    does not grow with the import, and go in with ``COPY`` on PostgreSQL
    (:func:`~ecotaxa_core.db.bulk.insert_rows`).
    """
    ids = reserve_ids(s, model, n)
    for start in range(0, n, _BATCH):
        batch = []
        for i in range(start, min(n, start + _BATCH)):
            row = make_row(i)
            row["id"] = ids[i]
            batch.append(row)
        insert_rows(s, model.__table__, batch)
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


def _parents(s: Session, project_id: int, named) -> dict[str, dict[str, int]]:
    samples_plan, acqs_plan, processes_plan = named
    samples = _create(s, Sample, project_id, samples_plan, lambda p: Sample(
        orig_id=p.orig_id, lat=p.lat, lon=p.lon, extra=p.extra))
    acqs = _create(s, Acquisition, project_id, acqs_plan, lambda p: Acquisition(
        orig_id=p.orig_id, sample_id=samples[p.parent], instrument=p.instrument, extra=p.extra))
    processes = _create(s, Process, project_id, processes_plan, lambda p: Process(
        orig_id=p.orig_id, acquisition_id=acqs[p.parent], extra=p.extra))
    return {"sample": samples, "acq": acqs, "process": processes}


def _insert_objects(s: Session, req: WriteRequest, taxa: dict[str, int], annotators: dict,
                    parent_ids: dict) -> list[int]:
    objects = req.delta.new_objects

    def row(i: int) -> dict:
        o = objects[i]
        taxon_id = taxa[o.label] if o.label is not None else o.category_id
        annotator = o.annotator_id if o.annotator_id is not None else annotators.get(
            AnnotatorResolver.person(o))
        return dict(
            project_id=req.project_id, orig_id=o.orig_id,
            sample_id=parent_ids["sample"].get(o.sample),
            acquisition_id=parent_ids["acq"].get(o.acquisition),
            process_id=parent_ids["process"].get(o.process), lat=o.lat, lon=o.lon, date=o.date,
            time=o.time, depth_min=o.depth_min, depth_max=o.depth_max, status=o.status,
            taxon_id=taxon_id, annotator_id=annotator, annotation_date=o.annotation_date,
            extra=o.extra.to_dict() if isinstance(o.extra, FreeValues) else dict(o.extra))

    return _insert_rows(s, Object, len(objects), row)


def _insert_images(s: Session, inst: Instance, req: WriteRequest,
                   images: list[tuple[int, ImagePlan]]) -> None:
    """Image rows for the files the stager wrote into the run's vault folders.

    A file several images name (one file, several objects) gets a hard link
    of its own for each image after the first, next to it, so that deleting one
    image never takes another one's file.
    """
    if not images:
        return
    image_ids = reserve_ids(s, Image, len(images))
    root = inst.settings.vault_dir
    used: set[Path] = set()
    paths: list[tuple[str, str | None]] = []
    for image_id, (_, im) in zip(image_ids, images):
        original, thumb = req.stager.staged(im)
        if original in used:  # the run's folders: undone with them if the import fails
            original = _link_next_to(original, image_id)
            thumb = _link_next_to(thumb, image_id) if thumb is not None else None
        else:
            used.add(original)
        paths.append((original.relative_to(root).as_posix(),
                      thumb.relative_to(root).as_posix() if thumb is not None else None))
    for start in range(0, len(images), _BATCH):
        insert_rows(s, Image.__table__, [
            dict(id=image_ids[i], object_id=images[i][0], rank=images[i][1].rank,
                 file_path=paths[i][0], thumb_path=paths[i][1],
                 original_name=images[i][1].original_name, width=images[i][1].width,
                 height=images[i][1].height)
            for i in range(start, min(len(images), start + _BATCH))])


def _link_next_to(path: Path, image_id: int) -> Path:
    link = path.with_name(f"{path.stem}.{image_id}{path.suffix}")
    try:
        os.link(path, link)
    except OSError:
        shutil.copyfile(path, link)
    return link


def _merge_free_columns(project: Project, plan: ImportPlan) -> None:
    merged = {prefix: dict(cols) for prefix, cols in (project.free_columns or {}).items()}
    for prefix, cols in plan.free_columns.items():
        target = merged.setdefault(prefix, {})
        for name, kind in cols.items():
            target.setdefault(name, kind)
    if merged != (project.free_columns or {}):
        project.free_columns = merged
