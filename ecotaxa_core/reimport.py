"""Importing into a project that already holds some of the source: EcoTaxa's rules.

Three modes:

- ``add`` (the default): TSV files already loaded into the project (same
  SHA-256, recorded in ``imported_files``) are skipped unread; objects already
  present (same ``object_id``) are skipped, except that an image row whose file
  the object does not have yet is added to it (EcoTaxa's "one more image");
  everything else is added.
- ``update_metadata``: objects already present get the metadata and free
  columns the file gives (only the columns it has), and so do the samples,
  acquisitions and processes they name; their classification is left alone.
- ``update_all``: the same, plus the classification (status, category,
  annotator, date); the previous state goes to ``annotation_history`` first.

In both update modes nothing is created but the parents an updated object is
moved to: objects of the file that the project does not hold are reported as
not found (as EcoTaxa does), and no image is added.

:func:`plan_delta` splits a checked plan into what to add, skip and update,
read-only; :func:`apply_updates` writes the updates inside the import's
transaction and counts what really changed, so running an update twice changes
nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, AnnotationHistory, Image, ImportedFile, Object,
                                    Process, Sample, utcnow)
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.bundle_import import report_missing_image
from ecotaxa_core.import_names import NameSurvey
from ecotaxa_core.import_plan import ImagePlan, ImportPlan, ObjectPlan, ParentPlan
from ecotaxa_core.import_spool import ObjectSpool, batched
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["MODES", "ImportDelta", "NewObjects", "check_mode", "loaded_files", "plan_delta",
           "apply_updates", "UpdateCounts"]

MODES = ("add", "update_metadata", "update_all")
_CHUNK = 500

# Predefined object columns and the Object attribute each one sets.
_OBJECT_FIELDS = {"object_lat": "lat", "object_lon": "lon", "object_date": "date",
                  "object_time": "time", "object_depth_min": "depth_min",
                  "object_depth_max": "depth_max"}
_LINK_COLUMNS = ("sample_id", "acq_id", "process_id")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`.

    >>> check_mode("update_all")
    'update_all'
    >>> check_mode("replace")
    Traceback (most recent call last):
    ...
    ecotaxa_core.errors.EcoTaxaError: unknown import mode 'replace' (expected one of add, update_metadata, update_all)
    """
    if mode not in MODES:
        raise EcoTaxaError(f"unknown import mode {mode!r} (expected one of {', '.join(MODES)})")
    return mode


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def loaded_files(session: Session, project_id: int, digests: Iterable[str]) -> set[str]:
    """Those of ``digests`` that committed imports of the project recorded."""
    digests = sorted(set(digests))
    found: set[str] = set()
    for chunk in _chunks(digests):
        found.update(session.scalars(select(ImportedFile.sha256).where(
            ImportedFile.project_id == project_id, ImportedFile.sha256.in_(chunk))))
    return found


class NewObjects:
    """The objects of a plan that the project does not hold yet, in order; iterable
    any number of times (each time read back from the plan's spool)."""

    def __init__(self, objects: ObjectSpool, skip: dict[str, int], n: int):
        self._objects, self._skip, self._n = objects, skip, n

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[ObjectPlan]:
        skip = self._skip
        if not skip:
            return iter(self._objects)
        return (o for o in self._objects if o.orig_id not in skip)

    def batches(self, size: int) -> Iterator[list[ObjectPlan]]:
        return batched(self, size)


@dataclass
class ImportDelta:
    """What an import writes, once compared with what the project holds.

    Built in one pass over the plan's objects (:func:`plan_delta`), which also
    gathers what the checks and the writer need about them: the names they give
    (``names``), the parents they use, how many images are to be stored.
    """

    mode: str
    # Objects already present: {orig_id: object id}.
    present: dict[str, int] = field(default_factory=dict)
    objects: ObjectSpool | None = None  # the plan's objects
    n_new: int = 0
    n_images_to_store: int = 0
    # Images for objects already present: (object id, object plan, image).
    added_images: list[tuple[int, ObjectPlan, ImagePlan]] = field(default_factory=list)
    # Objects already present to update (update modes): (object id, object plan).
    updates: list[tuple[int, ObjectPlan]] = field(default_factory=list)
    n_skipped: int = 0
    not_found: list[str] = field(default_factory=list)
    names: NameSurvey = field(default_factory=lambda: NameSurvey("ecotaxa_bundle"))
    # orig_ids of the samples, acquisitions and processes the written objects use.
    parents_used: tuple[set[str], set[str], set[str]] = field(
        default_factory=lambda: (set(), set(), set()))

    @property
    def new_objects(self) -> NewObjects:
        if self.objects is None or self.mode != "add":
            return NewObjects(_NO_OBJECTS, {}, 0)
        return NewObjects(self.objects, self.present, self.n_new)

    def images_to_store(self) -> Iterator[ImagePlan]:
        """The images whose files go to the vault (``n_images_to_store`` of them)."""
        for obj in self.new_objects:
            yield from obj.images
        for _, _, im in self.added_images:
            yield im

    @property
    def classified(self) -> Iterable[ObjectPlan]:
        """Objects whose classification this import writes (iterable again and again)."""
        if self.mode == "update_all":
            return [o for _, o in self.updates if "object_annotation_status" in o.present]
        if self.mode == "add":
            return self.new_objects
        return []

    def named_parents(self, plan: ImportPlan) -> tuple[dict[str, ParentPlan], ...]:
        """The samples, acquisitions and processes of the objects this import writes."""
        samples, acqs, processes = self.parents_used
        return ({k: v for k, v in plan.samples.items() if k in samples},
                {k: v for k, v in plan.acquisitions.items() if k in acqs},
                {k: v for k, v in plan.processes.items() if k in processes})

    def _use_parents(self, obj: ObjectPlan) -> None:
        samples, acqs, processes = self.parents_used
        if obj.sample:
            samples.add(obj.sample)
        if obj.acquisition:
            acqs.add(obj.acquisition)
        if obj.process:
            processes.add(obj.process)


_NO_OBJECTS: list[ObjectPlan] = []


def existing_objects(session: Session, project_id: int, orig_ids: Iterable[str]) -> dict[str, int]:
    """``{orig_id: object id}`` of the given ids the project holds."""
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(set(orig_ids))):
        found.update(session.execute(select(Object.orig_id, Object.id).where(
            Object.project_id == project_id, Object.orig_id.in_(chunk))).all())
    return found


def plan_delta(session: Session, project_id: int, plan: ImportPlan, mode: str,
               report: ImportReport) -> ImportDelta:
    """Split ``plan`` by what the project holds, in one pass over its objects; image
    rank clashes and missing image files to store go to ``report``."""
    delta = ImportDelta(mode=mode, objects=plan.objects, names=NameSurvey(plan.kind))
    empty = session.scalar(select(Object.id).where(Object.project_id == project_id)
                           .limit(1)) is None
    for batch in plan.objects.batches(_CHUNK):
        there = {} if empty else existing_objects(session, project_id,
                                                  (o.orig_id for o in batch))
        if mode != "add":
            _split_updates(delta, batch, there)
        else:
            _split_new(session, delta, batch, there, report)
    return delta


def _split_updates(delta: ImportDelta, batch: list[ObjectPlan], there: dict[str, int]) -> None:
    for obj in batch:
        object_id = there.get(obj.orig_id)
        if object_id is None:
            delta.not_found.append(obj.orig_id)
            continue
        delta.present[obj.orig_id] = object_id
        delta.updates.append((object_id, obj))
        delta._use_parents(obj)
        if delta.mode == "update_all" and "object_annotation_status" in obj.present:
            delta.names.add(obj)


def _split_new(session: Session, delta: ImportDelta, batch: list[ObjectPlan],
               there: dict[str, int], report: ImportReport) -> None:
    for obj in batch:
        if obj.orig_id not in there:
            delta.n_new += 1
            delta.n_images_to_store += len(obj.images)
            delta.names.add(obj)
            delta._use_parents(obj)
            for im in obj.images:
                if im.missing:
                    report_missing_image(report, im)
    if not there:
        return
    delta.present.update(there)
    images = _images_of(session, sorted(there.values()))
    for obj in batch:
        object_id = there.get(obj.orig_id)
        if object_id is None:
            continue
        delta.n_skipped += 1
        names, ranks = images.get(object_id, ({}, {}))
        for im in obj.images:
            if im.original_name in names:
                continue  # this image is there already
            if im.rank in ranks:
                report.add(im.rel, im.line, "img_rank", str(im.rank), "image_rank_taken",
                           f"object {obj.orig_id!r} is already in the project with image "
                           f"{ranks[im.rank]!r} of rank {im.rank}; give {im.original_name!r} "
                           "another img_rank")
                continue
            if im.missing:
                report_missing_image(report, im)
            delta.added_images.append((object_id, obj, im))
            delta.n_images_to_store += 1


def _images_of(session: Session, object_ids: list[int]) -> dict[int, tuple[dict, dict]]:
    """Per object: ({original name: rank}, {rank: original name}) of its images."""
    found: dict[int, tuple[dict, dict]] = {}
    for chunk in _chunks(object_ids):
        for object_id, name, rank in session.execute(
                select(Image.object_id, Image.original_name, Image.rank)
                .where(Image.object_id.in_(chunk))):
            names, ranks = found.setdefault(object_id, ({}, {}))
            names[name] = rank
            ranks[rank] = name
    return found


# -- updates ------------------------------------------------------------------------
@dataclass
class UpdateCounts:
    n_objects_updated: int = 0
    n_parents_updated: int = 0
    n_classifications_changed: int = 0


def _utc(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=timezone.utc)


def _new_extra(old: dict[str, Any], given: dict[str, Any], fields: Iterable[str]) -> dict:
    """``old`` with the given fields set (an empty cell removes the value)."""
    extra = dict(old or {})
    for name in fields:
        if name in given:
            extra[name] = given[name]
        else:
            extra.pop(name, None)
    return extra


def _object_changes(row: Object, obj: ObjectPlan, object_fields: set[str], ids: dict) -> dict:
    values: dict[str, Any] = {}
    for column, attr in _OBJECT_FIELDS.items():
        if column in obj.present:
            values[attr] = getattr(obj, attr)
    if any(c in obj.present for c in _LINK_COLUMNS):
        values["sample_id"] = ids["sample"].get(obj.sample)
        values["acquisition_id"] = ids["acq"].get(obj.acquisition)
        values["process_id"] = ids["process"].get(obj.process)
    present_free = {f for f in object_fields if f"object_{f}" in obj.present}
    if present_free:
        values["extra"] = _new_extra(row.extra, obj.extra, present_free)
    return {k: v for k, v in values.items() if getattr(row, k) != v}


def _classification(row: Object, obj: ObjectPlan, taxa: dict[str, int],
                    annotators: dict) -> dict | None:
    """The new classification state of ``row`` when the file changes it, else None."""
    taxon_id = taxa[obj.label] if obj.label is not None else obj.category_id
    annotator = annotators.get(((obj.annotator_name or "").strip() or None,
                                (obj.annotator_email or "").strip().lower() or None))
    when = _utc(obj.annotation_date)
    same = (row.status == obj.status and row.taxon_id == taxon_id
            and (annotator is None or annotator == row.annotator_id)
            and (when is None or when == _utc(row.annotation_date)))
    if same:
        return None
    return dict(status=obj.status, taxon_id=taxon_id, annotator_id=annotator,
                annotation_date=when, score=None, model_id=None, top_predictions=None)


def apply_updates(session: Session, plan: ImportPlan, delta: ImportDelta, parent_ids: dict,
                  taxa: dict[str, int], annotators: dict, user_id: int | None) -> UpdateCounts:
    """Write the updates of ``delta`` (update modes); returns what really changed."""
    counts = UpdateCounts()
    if not delta.updates:
        return counts
    counts.n_parents_updated = _update_parents(session, plan, delta, parent_ids)
    object_fields = set(plan.free_columns["object"])
    with_classif = delta.mode == "update_all"
    when = utcnow()
    for chunk in _chunks(delta.updates):
        by_id = {oid: obj for oid, obj in chunk}
        rows = session.scalars(select(Object).where(Object.id.in_(list(by_id)))).all()
        history, changes = [], []
        for row in rows:
            obj = by_id[row.id]
            values = _object_changes(row, obj, object_fields, parent_ids)
            if with_classif and "object_annotation_status" in obj.present:
                state = _classification(row, obj, taxa, annotators)
                if state is not None:
                    history.append(dict(
                        object_id=row.id, changed_at=when, changed_by_id=user_id,
                        status=row.status, taxon_id=row.taxon_id, score=row.score,
                        annotator_id=row.annotator_id, annotation_date=row.annotation_date,
                        model_id=row.model_id))
                    values.update(state)
                    counts.n_classifications_changed += 1
            if values:
                changes.append(dict(id=row.id, **values))
        if history:
            session.execute(insert(AnnotationHistory), history)
        for values in changes:
            session.execute(update(Object).where(Object.id == values.pop("id")).values(**values))
        counts.n_objects_updated += len(changes)
    return counts


_PARENT_MODELS = (("sample", Sample), ("acq", Acquisition), ("process", Process))


def _update_parents(session: Session, plan: ImportPlan, delta: ImportDelta,
                    parent_ids: dict) -> int:
    n = 0
    for (prefix, model), plans in zip(_PARENT_MODELS, delta.named_parents(plan)):
        free = set(plan.free_columns[prefix])
        for orig_id, parent in plans.items():
            row = session.get(model, parent_ids[prefix][orig_id])
            values: dict[str, Any] = {}
            for attr in ("lat", "lon", "instrument"):
                if attr in parent.present and hasattr(row, attr):
                    values[attr] = getattr(parent, attr)
            present_free = parent.present & free
            if present_free:
                values["extra"] = _new_extra(row.extra, parent.extra, present_free)
            values = {k: v for k, v in values.items() if getattr(row, k) != v}
            if values:
                for k, v in values.items():
                    setattr(row, k, v)
                n += 1
    session.flush()
    return n
