"""EcoTaxa's bulk project operations: reset, replace a category, edit metadata, delete.

Each function checks that the user may manage the project
(:func:`~ecotaxa_core.rights.require`) and is all or nothing. Resetting,
replacing and deleting work on the objects an
:class:`~ecotaxa_core.object_filter.ObjectFilter` keeps (every object when it
is None), checked against the project before anything is written. Classification
changes write the previous state of every object to ``annotation_history``
first, in the same transaction (as :mod:`ecotaxa_core.annotation` does).

Metadata edits have no history table: :func:`edit_metadata` returns the old
values, ``(orig_id, old value)`` per row, which the flow records in its job
result so an edit can be undone by editing the old values back.

Deletions hold the project's import lock, delete the rows in one transaction
and only then the files (vault images, feature rows, model files). A crash
between the two leaves orphan files, never rows pointing at missing files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.annotation import _STATE, _history_rows
from ecotaxa_core.db.models import (Acquisition, AnnotationHistory, Image, Object, ObjectStatus,
                                    Process, Project, Sample, Taxon, TrainedModel, utcnow)
from ecotaxa_core.errors import EcoTaxaError, NotFoundError, ObjectNotFound, TaxonNotFound
from ecotaxa_core.import_journal import project_lock
from ecotaxa_core.instance import Instance
from ecotaxa_core.object_filter import ObjectFilter
from ecotaxa_core.progress import Progress, report
from ecotaxa_core.rights import Action, require

__all__ = ["reset_to_predicted", "replace_category", "edit_metadata", "MetadataEdit",
           "delete_objects", "delete_project", "METADATA_LEVELS", "rewrite_feature_sets"]

_CHUNK = 1000

# Level -> (model, predefined columns a bulk edit may set).
METADATA_LEVELS: dict[str, tuple[type, tuple[str, ...]]] = {
    "sample": (Sample, ("lat", "lon")),
    "acquisition": (Acquisition, ("instrument",)),
    "process": (Process, ()),
}


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start:start + _CHUNK])


def _rewrite_state(session: Session, project_id: int, object_filter: ObjectFilter | None,
                   where: list, values: dict, user_id: int, progress: Progress | None) -> int:
    """History rows then ``values`` for every object of the project that ``object_filter``
    keeps and that matches ``where``."""
    clauses = (object_filter or ObjectFilter()).where_clauses(session, project_id)
    ids = list(session.scalars(select(Object.id).where(*clauses, *where).order_by(Object.id)))
    when = utcnow()
    done = 0
    report(progress, "objects", 0, len(ids))
    for chunk in _chunks(ids):
        rows = session.execute(select(*_STATE).where(Object.id.in_(chunk)).with_for_update()).all()
        session.execute(insert(AnnotationHistory), _history_rows(rows, user_id, when))
        session.execute(update(Object).where(Object.id.in_(chunk))
                        .values(annotation_date=when, **values))
        done += len(chunk)
        report(progress, "objects", done, len(ids))
    return len(ids)


def reset_to_predicted(session: Session, project_id: int, user_id: int, *,
                       taxon_ids: Sequence[int] | None = None,
                       object_filter: ObjectFilter | None = None,
                       progress: Progress | None = None) -> int:
    """Send validated objects (of ``taxon_ids`` if given, kept by ``object_filter`` if given)
    back to predicted; returns how many.

    The category is kept; the annotator is cleared and the previous state goes
    to the history. ``progress`` hears of each batch (:mod:`ecotaxa_core.progress`).
    """
    require(session, user_id, project_id, Action.MANAGE)
    where = [Object.status == ObjectStatus.VALIDATED.value, Object.taxon_id.is_not(None)]
    if taxon_ids is not None:
        where.append(Object.taxon_id.in_([int(t) for t in taxon_ids]))
    return _rewrite_state(session, project_id, object_filter, where,
                          dict(status=ObjectStatus.PREDICTED.value, annotator_id=None), user_id,
                          progress)


def replace_category(session: Session, project_id: int, from_taxon_id: int, to_taxon_id: int,
                     user_id: int, *, statuses: Sequence[str] | None = None,
                     object_filter: ObjectFilter | None = None,
                     progress: Progress | None = None) -> int:
    """Give every object of ``from_taxon_id`` (with one of ``statuses``, kept by
    ``object_filter``) ``to_taxon_id``.

    Statuses are kept; the user becomes the annotator. Returns how many changed.
    ``progress`` hears of each batch.
    """
    require(session, user_id, project_id, Action.MANAGE)
    for tid in (from_taxon_id, to_taxon_id):
        if session.get(Taxon, int(tid)) is None:
            raise TaxonNotFound(f"no taxon with id {tid}")
    where = [Object.taxon_id == int(from_taxon_id)]
    if statuses is not None:
        known = {s.value for s in ObjectStatus}
        bad = sorted(set(statuses) - known)
        if bad:
            raise EcoTaxaError(f"unknown status {bad}; use one of {sorted(known)}")
        where.append(Object.status.in_(list(statuses)))
    return _rewrite_state(session, project_id, object_filter, where,
                          dict(taxon_id=int(to_taxon_id), annotator_id=user_id), user_id,
                          progress)


@dataclass
class MetadataEdit:
    """What :func:`edit_metadata` changed: the old value of each row, by orig_id."""

    level: str
    field: str
    value: Any
    old_values: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def n_changed(self) -> int:
        return len(self.old_values)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "field": self.field, "value": self.value,
                "n_changed": self.n_changed, "old_values": [list(o) for o in self.old_values]}


def _checked_value(level: str, name: str, value: Any) -> Any:
    if name in ("lat", "lon"):
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise EcoTaxaError(f"{level} {name} must be a number, not {value!r}") from None
        limit = 90.0 if name == "lat" else 180.0
        if not -limit <= number <= limit:
            raise EcoTaxaError(f"{level} {name} {number} is outside [-{limit:g}, {limit:g}]")
        return number
    return value


def edit_metadata(session: Session, project_id: int, user_id: int, *, level: str,
                  orig_ids: Sequence[str] | None, field: str, value: Any,
                  object_filter: ObjectFilter | None = None) -> MetadataEdit:
    """Set ``field`` to ``value`` on the samples/acquisitions/processes ``orig_ids`` (all if None;
    with ``object_filter``, only those that the objects it keeps belong to).

    ``field`` is a predefined column (``lat``/``lon`` of samples, ``instrument``
    of acquisitions) or else a free column kept in ``extra`` (added to the
    project's free columns; ``None`` removes it from the rows). Returns the old
    values so the edit can be undone.
    """
    require(session, user_id, project_id, Action.MANAGE)
    if level not in METADATA_LEVELS:
        raise EcoTaxaError(f"unknown level {level!r}; use one of {sorted(METADATA_LEVELS)}")
    model, predefined = METADATA_LEVELS[level]
    name = field.strip().lower()
    if name.startswith(level + "_"):
        name = name[len(level) + 1:]
    if not name:
        raise EcoTaxaError("no field named")
    value = _checked_value(level, name, value)
    query = select(model).where(model.project_id == project_id).order_by(model.orig_id)
    if object_filter is not None:
        link = {"sample": Object.sample_id, "acquisition": Object.acquisition_id,
                "process": Object.process_id}[level]
        query = query.where(model.id.in_(select(link).where(
            *object_filter.where_clauses(session, project_id))))
    if orig_ids is not None:
        wanted = sorted({str(o) for o in orig_ids})
        query = query.where(model.orig_id.in_(wanted))
    rows = list(session.scalars(query.with_for_update()))
    if orig_ids is not None and len(rows) != len(wanted):
        missing = sorted(set(wanted) - {r.orig_id for r in rows})
        raise NotFoundError(f"no {level} {missing[:10]} in project {project_id}")
    edit = MetadataEdit(level, name, value)
    for row in rows:
        if name in predefined:
            old = getattr(row, name)
            setattr(row, name, value)
        else:
            extra = dict(row.extra or {})
            old = extra.get(name)
            if value is None:
                extra.pop(name, None)
            else:
                extra[name] = value
            row.extra = extra
        edit.old_values.append((row.orig_id, old))
    if name not in predefined and value is not None:
        project = session.get(Project, project_id)
        columns = {k: dict(v) for k, v in (project.free_columns or {}).items()}
        kind = "f" if isinstance(value, (int, float)) and not isinstance(value, bool) else "t"
        columns.setdefault(level, {}).setdefault(name, kind)
        project.free_columns = columns
    session.flush()
    return edit


# -- files of a project -----------------------------------------------------------
def rewrite_feature_sets(inst: Instance, project_id: int, drop_ids: Sequence[int]) -> int:
    """Rewrite each feature set of the project without the rows of ``drop_ids``.

    Each set is written whole under a temporary name, then swapped in, so a
    reader sees the old set or the new one. Returns the number of rows dropped.
    """
    store = inst.features
    drop = np.asarray(sorted({int(i) for i in drop_ids}), dtype=np.int64)
    dropped = 0
    for name in store.feature_sets(project_id):
        matrix = store.read(project_id, name)
        keep = ~np.isin(matrix.object_ids, drop)
        if keep.all():
            continue
        dropped += int((~keep).sum())
        producer = store.attrs(project_id, name)
        tmp = f"{name}__rewrite"
        store.delete(project_id, tmp)
        if keep.any():
            store.append(project_id, tmp, matrix.object_ids[keep], matrix.values[keep],
                         matrix.feature_names, producer=producer)
        store.drop_backup(store.backup_rel(project_id, name, "rewrite"))
        trash = store.set_aside(project_id, name, "rewrite")
        if keep.any():
            store.rename(project_id, tmp, name)
        store.drop_backup(trash)
    return dropped


def _image_paths(session: Session, object_ids_query) -> list[str]:
    rows = session.execute(select(Image.file_path, Image.thumb_path)
                           .where(Image.object_id.in_(object_ids_query))).all()
    return [p for row in rows for p in row if p]


def _checked_ids(session: Session, project_id: int, object_ids: Sequence[int]) -> list[int]:
    ids = sorted({int(i) for i in object_ids})
    found: set[int] = set()
    for chunk in _chunks(ids):
        found.update(session.scalars(select(Object.id).where(Object.id.in_(chunk),
                                                             Object.project_id == project_id)))
    if len(found) != len(ids):
        missing = sorted(set(ids) - found)
        raise ObjectNotFound(f"objects {missing[:10]} are not in project {project_id}")
    return ids


def delete_objects(inst: Instance, project_id: int, user_id: int, *,
                   object_ids: Sequence[int] | None = None,
                   object_filter: ObjectFilter | None = None,
                   progress: Progress | None = None) -> int:
    """Delete objects (their images, history, feature rows, vault files); returns how many.

    ``progress`` hears of each batch of objects (in the transaction, before the
    feature rows and files go).

    The objects are ``object_ids``, or those ``object_filter`` keeps (an empty
    filter is refused: :func:`delete_project` deletes everything). Refuses the
    whole call when an id is not an object of the project, or both are given.
    """
    if (object_ids is None) == (object_filter is None):
        raise EcoTaxaError("give the object ids or a filter of the objects to delete")
    if object_filter is not None and object_filter.is_empty:
        raise EcoTaxaError("an empty filter would delete every object; name some criteria "
                           "or delete the whole project")
    with project_lock(inst.settings.work_dir, project_id):
        with inst.sessions.begin() as s:
            require(s, user_id, project_id, Action.MANAGE)
            if object_filter is not None:
                ids = object_filter.matching_ids(s, project_id)
            else:
                ids = _checked_ids(s, project_id, object_ids)
            files: list[str] = []
            report(progress, "objects", 0, len(ids))
            for k, chunk in enumerate(_chunks(ids)):
                files += _image_paths(s, chunk)
                s.execute(delete(Image).where(Image.object_id.in_(chunk)))
                s.execute(delete(AnnotationHistory).where(AnnotationHistory.object_id.in_(chunk)))
                s.execute(delete(Object).where(Object.id.in_(chunk)))
                report(progress, "objects", min(len(ids), (k + 1) * _CHUNK), len(ids))
        # Past the commit nothing calls back: an error there would leave the rest undone.
        rewrite_feature_sets(inst, project_id, ids)
        inst.vault.remove(*files)
    return len(ids)


def delete_project(inst: Instance, project_id: int, user_id: int) -> dict[str, Any]:
    """Delete the project with everything in it (rows, vault files, features, model files).

    Its jobs stay (see :mod:`ecotaxa_core.jobs`); the summary returned names the
    project, for the record of the deletion.
    """
    with project_lock(inst.settings.work_dir, project_id):
        with inst.sessions.begin() as s:
            require(s, user_id, project_id, Action.MANAGE)
            title = s.get(Project, project_id).title
            object_ids = select(Object.id).where(Object.project_id == project_id)
            files = _image_paths(s, object_ids)
            model_ids = list(s.scalars(select(TrainedModel.id)
                                       .where(TrainedModel.project_id == project_id)))
            n_objects = len(list(s.scalars(object_ids)))
            s.execute(delete(Image).where(Image.object_id.in_(object_ids)))
            s.execute(delete(AnnotationHistory).where(AnnotationHistory.object_id.in_(object_ids)))
            s.execute(delete(Object).where(Object.project_id == project_id))
            s.delete(s.get(Project, project_id))
        inst.features.delete_project(project_id)
        for model_id in model_ids:  # the registry keeps a model under models_dir/<id>
            shutil.rmtree(Path(inst.models_dir) / str(int(model_id)), ignore_errors=True)
        inst.vault.remove(*files)
    return {"project_id": project_id, "title": title, "n_objects": n_objects,
            "n_files": len(files)}
