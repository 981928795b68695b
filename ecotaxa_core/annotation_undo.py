"""Undo of a validator's last changes, written to the history like any change.

A change is what one call of :mod:`ecotaxa_core.annotation` did for one user:
every history row it wrote shares its moment (``changed_at``) and its author,
and the objects it changed carry that moment as ``annotation_date`` and the
author as ``annotator_id`` until someone changes them again. Undoing a change
puts back, on each of its objects that nobody changed since, the state its
history row holds (category, status, score, annotator, date, model), after
writing the state it replaces to the history as an ``undo`` row. Objects
changed since by someone else (or by a later change of the same user) keep
their newer state: the last change wins, and the result says which were kept.

Undo rows are not themselves undone by :func:`undo_last_change`: undoing
again goes one change further back, as a validator expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import AnnotationHistory, Object, utcnow
from ecotaxa_core.rights import Action, require

__all__ = ["RecentChange", "UndoResult", "recent_changes", "undo_last_change", "UNDO"]

UNDO = "undo"
_LOOK_BACK = 50  # changes examined to find the last one that can still be undone


@dataclass(frozen=True)
class RecentChange:
    """One change of a user in a project, newest first in :func:`recent_changes`."""

    changed_at: datetime
    n_objects: int  # objects the change touched
    n_undoable: int  # of those, still in the state the change gave them


@dataclass(frozen=True)
class UndoResult:
    changed_at: datetime | None  # the change undone (None: nothing to undo)
    restored: list[int]  # objects put back in their previous state
    kept: list[int]  # objects of that change changed since by someone: left as they are

    def __bool__(self) -> bool:
        return bool(self.restored)


def _recent_moments(session: Session, project_id: int, user_id: int, limit: int) -> list:
    """The moments of the user's last ``limit`` changes in the project, newest first.

    Walks the (changed_by_id, changed_at) index backwards and stops after
    ``limit`` moments, however long the user's history.
    """
    h = AnnotationHistory
    return list(session.scalars(
        select(h.changed_at).join(Object, Object.id == h.object_id)
        .where(h.changed_by_id == user_id, h.action.is_(None), Object.project_id == project_id)
        .group_by(h.changed_at).order_by(h.changed_at.desc()).limit(limit)))


def _changes(session: Session, project_id: int, user_id: int, limit: int) -> list:
    """``(changed_at, n, n_current)`` of the user's last ``limit`` changes, newest first."""
    moments = _recent_moments(session, project_id, user_id, limit)
    if not moments:
        return []
    h = AnnotationHistory
    rows = session.execute(
        select(h.changed_at, func.count().label("n"),
               func.sum(_still_current(user_id)).label("n_current"))
        .join(Object, Object.id == h.object_id)
        .where(h.changed_by_id == user_id, h.action.is_(None), Object.project_id == project_id,
               h.changed_at.in_(moments))
        .group_by(h.changed_at).order_by(h.changed_at.desc())).all()
    return rows


def _still_current(user_id: int):
    """1 when the object still holds the state the history row's change gave it."""
    return case((and_(Object.annotator_id == user_id,
                      Object.annotation_date == AnnotationHistory.changed_at), 1), else_=0)


def recent_changes(session: Session, project_id: int, user_id: int,
                   limit: int = 20) -> list[RecentChange]:
    """The user's last changes in the project (not undos), newest first."""
    require(session, user_id, project_id, Action.VIEW)
    return [RecentChange(r.changed_at, int(r.n), int(r.n_current or 0))
            for r in _changes(session, project_id, user_id, limit)]


def undo_last_change(session: Session, project_id: int, user_id: int) -> UndoResult:
    """Undo the user's newest change in the project that still holds on some object.

    Runs in the caller's transaction; raises :class:`PermissionDenied` unless
    the user may annotate the project.
    """
    require(session, user_id, project_id, Action.ANNOTATE)
    for change in _changes(session, project_id, user_id, _LOOK_BACK):
        if change.n_current:
            return _undo(session, project_id, user_id, change.changed_at)
    return UndoResult(None, [], [])


def _undo(session: Session, project_id: int, user_id: int, changed_at: datetime) -> UndoResult:
    h = AnnotationHistory
    previous = {r.object_id: r for r in session.execute(
        select(h.object_id, h.status, h.taxon_id, h.score, h.annotator_id, h.annotation_date,
               h.model_id)
        .join(Object, Object.id == h.object_id)
        .where(h.changed_by_id == user_id, h.changed_at == changed_at, h.action.is_(None),
               Object.project_id == project_id))}
    ids = sorted(previous)
    current = session.execute(
        select(Object.id, Object.status, Object.taxon_id, Object.score, Object.annotator_id,
               Object.annotation_date, Object.model_id)
        .where(Object.id.in_(ids), Object.annotator_id == user_id,
               Object.annotation_date == changed_at)
        .with_for_update()).all()
    restored = sorted(r.id for r in current)
    kept = sorted(set(ids) - set(restored))
    if not restored:
        return UndoResult(changed_at, [], kept)
    when = utcnow()
    session.execute(insert(AnnotationHistory), [
        dict(object_id=r.id, changed_at=when, changed_by_id=user_id, action=UNDO, status=r.status,
             taxon_id=r.taxon_id, score=r.score, annotator_id=r.annotator_id,
             annotation_date=r.annotation_date, model_id=r.model_id) for r in current])
    session.execute(update(Object), [
        dict(id=i, status=previous[i].status, taxon_id=previous[i].taxon_id,
             score=previous[i].score, annotator_id=previous[i].annotator_id,
             annotation_date=previous[i].annotation_date, model_id=previous[i].model_id)
        for i in restored])
    return UndoResult(changed_at, restored, kept)
