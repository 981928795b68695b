"""Everything a validator may want to know about one object, for its detail view.

:func:`object_detail` gathers, in one read, the object's images (vault paths,
first image first), its own metadata and that of its sample, acquisition and
process, its classification now, its top-3 predictions with category names,
and its classification history (newest first, with who changed it, and
whether the change was an undo). The caller must be allowed to view the
project (:class:`~ecotaxa_core.errors.PermissionDenied` otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (
    Acquisition,
    AnnotationHistory,
    Image,
    Object,
    Process,
    Sample,
    User,
)
from ecotaxa_core.errors import ObjectNotFound
from ecotaxa_core.rights import Action, require
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["HistoryEntry", "ObjectDetail", "object_detail"]


@dataclass(frozen=True)
class HistoryEntry:
    """A state the object had, until ``changed_by`` changed it at ``changed_at``."""

    changed_at: datetime
    changed_by: str | None  # None: a prediction run
    action: str | None  # "undo" when the change put back an earlier state
    status: str
    category: str | None
    score: float | None
    annotator: str | None


@dataclass(frozen=True)
class ObjectDetail:
    id: int
    orig_id: str
    status: str
    category: str | None
    score: float | None
    annotator: str | None
    annotation_date: datetime | None
    images: list[str]  # vault paths, rank order
    metadata: dict[str, Any]  # the object's own fields and free columns
    sample: dict[str, Any] = field(default_factory=dict)
    acquisition: dict[str, Any] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)
    top_predictions: list[tuple[str, float]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    # (orig_id, lat, lon) of the project's samples that have a position (at most
    # MAP_SAMPLES, the object's own first): where this sample lies among the others.
    sample_positions: list[tuple[str, float, float]] = field(default_factory=list)


MAP_SAMPLES = 5000


def _sample_positions(session: Session, project_id: int,
                      own_sample_id: int | None) -> list[tuple[str, float, float]]:
    q = (select(Sample.orig_id, Sample.lat, Sample.lon)
         .where(Sample.project_id == project_id, Sample.lat.is_not(None), Sample.lon.is_not(None)))
    own = (session.execute(q.where(Sample.id == own_sample_id)).all()
           if own_sample_id is not None else [])
    others = session.execute(q.where(Sample.id != (own_sample_id or -1)).order_by(Sample.id)
                             .limit(MAP_SAMPLES - len(own))).all()
    return [(o, float(lat), float(lon)) for o, lat, lon in [*own, *others]]


def object_detail(session: Session, project_id: int, object_id: int, user_id: int) -> ObjectDetail:
    """The detail of one object of the project, as ``user_id`` may see it."""
    require(session, user_id, project_id, Action.VIEW)
    obj = session.get(Object, int(object_id))
    if obj is None or obj.project_id != int(project_id):
        raise ObjectNotFound(f"no object {object_id} in project {project_id}")
    history = session.execute(
        select(AnnotationHistory).where(AnnotationHistory.object_id == obj.id)
        .order_by(AnnotationHistory.changed_at.desc(), AnnotationHistory.id.desc())).scalars().all()
    top = [(int(t), float(p)) for t, p in (obj.top_predictions or [])]
    taxa = {obj.taxon_id, *(h.taxon_id for h in history), *(t for t, _ in top)} - {None}
    names = taxon_names(session, sorted(taxa)) if taxa else {}
    user_ids = {obj.annotator_id, *(h.changed_by_id for h in history),
                *(h.annotator_id for h in history)} - {None}
    users = dict(session.execute(select(User.id, User.name).where(User.id.in_(user_ids)))
                 .all()) if user_ids else {}
    images = session.scalars(select(Image.file_path).where(Image.object_id == obj.id)
                             .order_by(Image.rank)).all()

    def parent(model, parent_id) -> dict[str, Any]:
        row = session.get(model, parent_id) if parent_id is not None else None
        if row is None:
            return {}
        own = {k: getattr(row, k) for k in ("orig_id", "lat", "lon") if hasattr(row, k)}
        return {**own, **(row.extra or {})}

    metadata = {"lat": obj.lat, "lon": obj.lon, "date": obj.date, "time": obj.time,
                "depth_min": obj.depth_min, "depth_max": obj.depth_max, **(obj.extra or {})}
    return ObjectDetail(
        id=obj.id, orig_id=obj.orig_id, status=obj.status, category=names.get(obj.taxon_id),
        score=obj.score, annotator=users.get(obj.annotator_id),
        annotation_date=obj.annotation_date, images=list(images), metadata=metadata,
        sample=parent(Sample, obj.sample_id), acquisition=parent(Acquisition, obj.acquisition_id),
        process=parent(Process, obj.process_id),
        top_predictions=[(names.get(t, f"taxon {t}"), p) for t, p in top],
        history=[HistoryEntry(changed_at=h.changed_at, changed_by=users.get(h.changed_by_id),
                              action=h.action, status=h.status, category=names.get(h.taxon_id),
                              score=h.score, annotator=users.get(h.annotator_id))
                 for h in history],
        sample_positions=_sample_positions(session, obj.project_id, obj.sample_id))
