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
from typing import Callable, Iterable, Sequence

from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, Image, ImportedFile, ImportRun, Object, Process,
                                    Project, Sample, Taxon, User, utcnow)
from ecotaxa_core.db.bulk import insert_rows
from ecotaxa_core.db.ids import reserve_ids
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.import_features import FeaturePlan, write_features
from ecotaxa_core.import_images import ImageStager, StagingDirs
from ecotaxa_core.import_journal import ImportJournal
from ecotaxa_core.import_names import (AnnotatorResolver, NameAnswers, annotator_resolver,
                                       category_resolver)
from ecotaxa_core.import_plan import FreeValues, ImagePlan, ImportPlan, ParentPlan
from ecotaxa_core.instance import Instance
from ecotaxa_core.pixel_size import pixel_size_of
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
    # Whether the checks found names to create (the write takes turns with other
    # imports that create names only then).
    creates_names: bool = False
    started_at: datetime = field(default_factory=utcnow)
    imported_files: list[tuple[str, str, int]] = field(default_factory=list)  # path, sha, rows
    # The run's summary (kept in its ``import_runs`` row), from what was written.
    summarize: Callable[["WriteOutcome"], dict] = lambda outcome: {}
    # Waits for the images still being staged, raising if one is refused (None: all done).
    images_ready: Callable[[], None] | None = None


@dataclass
class WriteOutcome:
    taxa_created: list[str] = field(default_factory=list)
    users_created: list[str] = field(default_factory=list)
    updates: UpdateCounts = field(default_factory=UpdateCounts)
    pixel_size_um_set: float | None = None
    notes: list[str] = field(default_factory=list)


# -- the transaction ---------------------------------------------------------------------
def write_delta(inst: Instance, req: WriteRequest) -> WriteOutcome:
    """Write ``req`` in one transaction; raises on any failure.

    The images are in the vault already, or, when ``req.images_ready`` is given,
    still being staged: the object rows and the feature rows go in meanwhile, then
    ``images_ready()`` waits for the images (raising if one is refused) before
    the image rows. The caller undoes a failure with the journal (the transaction
    itself is rolled back here).
    """
    outcome = WriteOutcome()
    plan, delta = req.plan, req.delta
    with inst.sessions.begin() as s:
        _serialise_writers(s, req.creates_names)
        project = s.get(Project, req.project_id, with_for_update=True)
        if project is None:
            raise ProjectNotFound(req.project_id)
        taxa, annotators = _resolve_names(s, req, outcome)
        parent_ids = _parents(s, req.project_id, delta.named_parents(plan))
        object_ids = _insert_objects(s, req, taxa, annotators, parent_ids)
        write_features(inst.features, req.project_id, req.features, object_ids, req.run_id)
        if req.images_ready is not None:
            req.images_ready()
        _insert_images(s, inst, req, object_ids)
        outcome.updates = apply_updates(s, plan, delta, parent_ids, taxa, annotators,
                                        req.user_id)
        _merge_free_columns(project, plan)
        # A vault behind a URL gets the run's folders now, all written, before the commit.
        inst.vault.publish(inst.vault.staging_root(inst.settings.work_dir),
                           StagingDirs.vault_folders(req.run_id))
        if delta.mode == "add":
            _learn_pixel_size(inst, project, plan, outcome)
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


def _serialise_writers(s: Session, creates_names: bool) -> None:
    """Make concurrent imports that may create the same taxa or users take turns.

    Taxa and users are shared by all projects: two imports creating "detritus" at
    once would both find it missing. On SQLite the transaction takes the write
    lock at once (``BEGIN IMMEDIATE``; SQLite has one writer anyway), so what it
    reads is what it writes over. On PostgreSQL an import whose checks found names
    to create holds an advisory lock until it commits, and matches its names again
    under it (another import may have created some meanwhile).
    """
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        s.connection().exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql" and creates_names:
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
    names = req.delta.names
    categories = category_resolver(names, req.answers, create=req.answers.create_missing_taxa)
    taxa, new_taxa = _created_during(s, Taxon, lambda: categories.resolve(s))
    outcome.taxa_created = [t.display_name for t in new_taxa]
    people = annotator_resolver(names, req.answers, create=req.answers.create_missing_users)
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
                    parent_ids: dict) -> Sequence[int]:
    """Insert the new objects a batch at a time under reserved ids; the ids, in order.

    Reserving the ids (:func:`~ecotaxa_core.db.ids.reserve_ids`) spares reading
    them back: asked for the ids in order, SQLAlchemy inserts one row at a time
    on SQLite (no sentinel column). Rows are made a batch at a time from the
    plan's spool, so memory does not grow with the import, and go in with
    ``COPY`` on PostgreSQL (:func:`~ecotaxa_core.db.bulk.insert_rows`).
    """
    objects = req.delta.new_objects
    ids = reserve_ids(s, Object, len(objects))
    samples, acqs, processes = parent_ids["sample"], parent_ids["acq"], parent_ids["process"]
    person = AnnotatorResolver.person
    project_id, start = req.project_id, 0
    for batch in objects.batches(_BATCH):
        rows = []
        for object_id, o in zip(ids[start:start + len(batch)], batch):
            label = o.label
            rows.append(dict(
                id=object_id, project_id=project_id, orig_id=o.orig_id,
                sample_id=samples.get(o.sample), acquisition_id=acqs.get(o.acquisition),
                process_id=processes.get(o.process), lat=o.lat, lon=o.lon, date=o.date,
                time=o.time, depth_min=o.depth_min, depth_max=o.depth_max, status=o.status,
                taxon_id=taxa[label] if label is not None else o.category_id,
                annotator_id=(o.annotator_id if o.annotator_id is not None
                              else annotators.get(person(o))),
                annotation_date=o.annotation_date,
                extra=o.extra.to_dict() if isinstance(o.extra, FreeValues) else dict(o.extra)))
        insert_rows(s, Object.__table__, rows)
        start += len(batch)
    return ids


def _insert_images(s: Session, inst: Instance, req: WriteRequest,
                   object_ids: Sequence[int]) -> None:
    """The image rows of the new objects (``object_ids``, in order) and the images
    added to objects already present."""
    images = _ImageRows(s, inst, req)
    start = 0
    for batch in req.delta.new_objects.batches(_BATCH):
        images.add([(object_id, im) for object_id, o in
                    zip(object_ids[start:start + len(batch)], batch) for im in o.images])
        start += len(batch)
    images.add([(oid, im) for oid, _, im in req.delta.added_images])
    images.done()


class _ImageRows:
    """Image rows for the files the stager wrote into the run's vault folders, inserted
    a batch at a time under ids reserved for all of them at once.

    A file several images name (one file, several objects) gets a hard link
    of its own for each image after the first, next to it, so that deleting one
    image never takes another one's file.
    """

    def __init__(self, s: Session, inst: Instance, req: WriteRequest):
        self.s, self.stager = s, req.stager
        self.root = str(inst.vault.staging_root(inst.settings.work_dir)).rstrip(os.sep) + os.sep
        self.ids = reserve_ids(s, Image, req.delta.n_images_to_store)
        self.n = 0
        self.used = bytearray()  # per file number: 1 once an image row uses its file
        self.pending: list[dict] = []

    def add(self, images: list[tuple[int, ImagePlan]]) -> None:
        for object_id, im in images:
            image_id = self.ids[self.n]
            self.n += 1
            staged = self.stager.staged(im)
            number = self.stager.number(im)
            if number >= len(self.used):
                self.used.extend(bytes(number + 1 - len(self.used)))
            original, thumb = staged.original, staged.thumb
            if self.used[number]:  # the run's folders: undone with them if the import fails
                original = _link_next_to(original, image_id)
                thumb = _link_next_to(thumb, image_id) if thumb is not None else None
            self.used[number] = 1
            self.pending.append(dict(
                id=image_id, object_id=object_id, rank=im.rank,
                file_path=self._in_vault(original),
                thumb_path=self._in_vault(thumb) if thumb is not None else None,
                original_name=im.original_name, width=staged.width, height=staged.height))
        if len(self.pending) >= _BATCH:
            self.done()

    def _in_vault(self, path: str) -> str:
        """A staged file's path in the vault, as the database keeps it."""
        if not path.startswith(self.root):
            raise RuntimeError(f"{path} was staged outside the vault {self.root}")
        return path[len(self.root):].replace(os.sep, "/")

    def done(self) -> None:
        if self.pending:
            insert_rows(self.s, Image.__table__, self.pending)
            self.pending = []


def _link_next_to(path: str, image_id: int) -> str:
    stem, suffix = os.path.splitext(path)
    link = f"{stem}.{image_id}{suffix}"
    try:
        os.link(path, link)
    except OSError:
        shutil.copyfile(path, link)
    return link


def _learn_pixel_size(inst: Instance, project: Project, plan: ImportPlan,
                      outcome: WriteOutcome) -> None:
    """Give a project without a pixel size the one the import's columns agree on.

    Not once its morphological features exist: they were computed without it,
    and rows with and without mm units must not mix (the features flow would
    refuse the new producer); a note says so instead.
    """
    if project.pixel_size_um is not None:
        return
    found = pixel_size_of(plan.processes.values(), plan.acquisitions.values())
    if found.conflicting:
        outcome.notes.append(
            f"pixel size not set: {found.column} holds several sizes "
            f"({', '.join(f'{v:g}' for v in found.values)} µm)")
        return
    if found.um is None:
        return
    from ecotaxa_core.features.morphology import MorphologyExtractor

    if inst.features.n_rows(project.id, MorphologyExtractor.name):
        outcome.notes.append(
            f"{found.column} gives a pixel size of {found.um:g} µm, not set: the project's "
            "morphological features were computed without one (set it and recompute them)")
        return
    project.pixel_size_um = found.um
    outcome.pixel_size_um_set = found.um


def _merge_free_columns(project: Project, plan: ImportPlan) -> None:
    merged = {prefix: dict(cols) for prefix, cols in (project.free_columns or {}).items()}
    for prefix, cols in plan.free_columns.items():
        target = merged.setdefault(prefix, {})
        for name, kind in cols.items():
            target.setdefault(name, kind)
    if merged != (project.free_columns or {}):
        project.free_columns = merged
