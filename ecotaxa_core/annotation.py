"""Classification changes, with EcoTaxa's rules and full history.

Every change of category or status first writes the object's previous state
to ``annotation_history`` (who changed it, when), in the same transaction.
Predictions only ever touch unclassified and predicted objects: a validated or
dubious object is a human decision and is never overwritten by a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import AnnotationHistory, Object, ObjectStatus, Taxon, utcnow
from ecotaxa_core.errors import EcoTaxaError, ObjectNotFound, TaxonNotFound

__all__ = [
    "Prediction",
    "validate_objects",
    "set_dubious",
    "move_objects",
    "apply_predictions",
    "object_history",
    "PREDICTABLE",
]

PREDICTABLE = (ObjectStatus.UNCLASSIFIED.value, ObjectStatus.PREDICTED.value)

_STATE = (Object.id, Object.status, Object.taxon_id, Object.score, Object.annotator_id,
          Object.annotation_date, Object.model_id)


@dataclass(frozen=True)
class Prediction:
    object_id: int
    taxon_id: int
    score: float
    top: Sequence[tuple[int, float]]  # best first, at most 3


def _history_rows(rows, changed_by_id: int | None, when: datetime) -> list[dict]:
    return [dict(object_id=r.id, changed_at=when, changed_by_id=changed_by_id, status=r.status,
                 taxon_id=r.taxon_id, score=r.score, annotator_id=r.annotator_id,
                 annotation_date=r.annotation_date, model_id=r.model_id) for r in rows]


def _set_state(session: Session, project_id: int, object_ids: Iterable[int], *, status: str,
               user_id: int, taxon_id: int | None = None, keep_taxon: bool = False) -> int:
    ids = sorted({int(i) for i in object_ids})
    if not ids:
        return 0
    when = utcnow()
    changed = 0
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        rows = session.execute(select(*_STATE).where(Object.id.in_(chunk),
                                                     Object.project_id == project_id)
                               .with_for_update()).all()
        if len(rows) != len(chunk):
            missing = sorted(set(chunk) - {r.id for r in rows})
            raise ObjectNotFound(f"objects {missing[:10]} are not in project {project_id}")
        if keep_taxon and any(r.taxon_id is None for r in rows):
            bad = [r.id for r in rows if r.taxon_id is None][:10]
            raise EcoTaxaError(f"objects {bad} have no category to validate; move them to one")
        session.execute(insert(AnnotationHistory), _history_rows(rows, user_id, when))
        values = dict(status=status, annotator_id=user_id, annotation_date=when, score=None,
                      model_id=None)
        if not keep_taxon:
            values["taxon_id"] = taxon_id
        session.execute(update(Object).where(Object.id.in_(chunk)).values(**values))
        changed += len(rows)
    return changed


def validate_objects(session: Session, project_id: int, object_ids: Iterable[int],
                     user_id: int) -> int:
    """Validate the objects in their current category; returns how many changed."""
    return _set_state(session, project_id, object_ids, status=ObjectStatus.VALIDATED.value,
                      user_id=user_id, keep_taxon=True)


def set_dubious(session: Session, project_id: int, object_ids: Iterable[int], user_id: int) -> int:
    """Mark the objects dubious, keeping their category."""
    return _set_state(session, project_id, object_ids, status=ObjectStatus.DUBIOUS.value,
                      user_id=user_id, keep_taxon=True)


def move_objects(session: Session, project_id: int, object_ids: Iterable[int], taxon_id: int,
                 user_id: int) -> int:
    """Give the objects another category, validated by ``user_id``."""
    if session.get(Taxon, taxon_id) is None:
        raise TaxonNotFound(f"no taxon with id {taxon_id}")
    return _set_state(session, project_id, object_ids, status=ObjectStatus.VALIDATED.value,
                      user_id=user_id, taxon_id=taxon_id)


def apply_predictions(session: Session, project_id: int, predictions: Sequence[Prediction],
                      model_id: int) -> int:
    """Write predictions to the objects that may take them; returns how many changed.

    Objects that are validated or dubious when the transaction runs are skipped,
    even if they were predictable when the predictions were computed: the status
    test is in the same locked read as the history write.
    """
    by_id = {p.object_id: p for p in predictions}
    if not by_id:
        return 0
    when = utcnow()
    changed = 0
    ids = sorted(by_id)
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        rows = session.execute(select(*_STATE).where(Object.id.in_(chunk),
                                                     Object.project_id == project_id,
                                                     Object.status.in_(PREDICTABLE))
                               .with_for_update()).all()
        if not rows:
            continue
        session.execute(insert(AnnotationHistory), _history_rows(rows, None, when))
        session.execute(
            update(Object),
            [dict(id=r.id, status=ObjectStatus.PREDICTED.value, taxon_id=by_id[r.id].taxon_id,
                  score=float(by_id[r.id].score), model_id=model_id, annotator_id=None,
                  annotation_date=when,
                  top_predictions=[[int(t), float(s)] for t, s in by_id[r.id].top[:3]])
             for r in rows],
        )
        changed += len(rows)
    return changed


def object_history(session: Session, object_id: int) -> list[AnnotationHistory]:
    """Previous states of an object, newest first."""
    return list(session.scalars(select(AnnotationHistory)
                                .where(AnnotationHistory.object_id == object_id)
                                .order_by(AnnotationHistory.changed_at.desc(),
                                          AnnotationHistory.id.desc())))
