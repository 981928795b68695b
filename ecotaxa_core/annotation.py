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

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.bulk import write_predicted_state
from ecotaxa_core.db.engine import json_dumps
from ecotaxa_core.db.models import AnnotationHistory, Object, ObjectStatus, Taxon, utcnow
from ecotaxa_core.errors import EcoTaxaError, ObjectNotFound, TaxonNotFound
from ecotaxa_core.rights import Action, require

__all__ = [
    "Prediction",
    "PredictionBatch",
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
    """One object's prediction: its category and score, and its top 3 (best first)."""

    object_id: int
    taxon_id: int
    score: float
    top: Sequence[tuple[int, float]]  # best first, at most 3


@dataclass(frozen=True, eq=False)
class PredictionBatch:
    """The predictions of many objects as arrays: what a chunk's prediction returns.

    Cheaper than a list of :class:`Prediction` to compute, to send from a Dask
    worker and to write.

    Parameters
    ----------
    object_ids : ndarray of shape (n_objects,)
    taxon_ids, scores : ndarray of shape (n_objects,)
        The predicted category and its score.
    top_taxon_ids, top_scores : ndarray of shape (n_objects, k)
        The best ``k`` (at most 3) categories and scores, best first; a NaN
        score marks an absent entry (an object with fewer than ``k``).

    Examples
    --------
    >>> batch = PredictionBatch.from_predictions([Prediction(7, 2, 0.75, [(2, 0.75), (5, 0.25)])])
    >>> batch.top_lists()
    [[[2, 0.75], [5, 0.25]]]
    >>> batch.predictions()[0].top
    [(2, 0.75), (5, 0.25)]
    """

    object_ids: np.ndarray
    taxon_ids: np.ndarray
    scores: np.ndarray
    top_taxon_ids: np.ndarray
    top_scores: np.ndarray

    def __post_init__(self):
        n = len(self.object_ids)
        if (self.object_ids.shape != (n,) or self.taxon_ids.shape != (n,)
                or self.scores.shape != (n,) or self.top_taxon_ids.ndim != 2
                or self.top_taxon_ids.shape != self.top_scores.shape
                or len(self.top_taxon_ids) != n or self.top_taxon_ids.shape[1] > 3):
            raise ValueError(
                f"prediction arrays do not match: {n} object ids, taxon ids "
                f"{self.taxon_ids.shape}, scores {self.scores.shape}, top "
                f"{self.top_taxon_ids.shape} and {self.top_scores.shape} (at most 3 columns)")
        bad = ~np.isfinite(self.scores) | np.isinf(self.top_scores).any(axis=1)
        if bad.any():
            raise ValueError(f"objects {self.object_ids[bad][:10].tolist()} have a "
                             "non-finite prediction score")

    def __len__(self) -> int:
        return len(self.object_ids)

    @classmethod
    def from_predictions(cls, predictions: Sequence[Prediction]) -> "PredictionBatch":
        k = max((len(p.top) for p in predictions), default=0)
        if k > 3:
            raise ValueError(f"a prediction keeps at most 3 (category, score) pairs, got {k}")
        top_taxa = np.zeros((len(predictions), k), dtype=np.int64)
        top_scores = np.full((len(predictions), k), np.nan)
        for i, p in enumerate(predictions):
            for j, (taxon, score) in enumerate(p.top):
                top_taxa[i, j], top_scores[i, j] = int(taxon), float(score)
        return cls(np.array([int(p.object_id) for p in predictions], dtype=np.int64),
                   np.array([int(p.taxon_id) for p in predictions], dtype=np.int64),
                   np.array([float(p.score) for p in predictions], dtype=np.float64),
                   top_taxa, top_scores)

    def predictions(self) -> list[Prediction]:
        """The same as :class:`Prediction` records, in batch order."""
        tops = [[(t, s) for t, s in zip(tr, sr) if s == s]  # s != s: NaN, no entry
                for tr, sr in zip(self.top_taxon_ids.tolist(), self.top_scores.tolist())]
        return [Prediction(o, t, s, top) for o, t, s, top in
                zip(self.object_ids.tolist(), self.taxon_ids.tolist(), self.scores.tolist(),
                    tops)]

    def by_object_id(self) -> "PredictionBatch":
        """Sorted by object id, the last prediction of an object predicted twice kept."""
        ids_last_first = self.object_ids[::-1]
        _, first = np.unique(ids_last_first, return_index=True)
        keep = len(self.object_ids) - 1 - first  # ascending ids
        return PredictionBatch(self.object_ids[keep], self.taxon_ids[keep], self.scores[keep],
                               self.top_taxon_ids[keep], self.top_scores[keep])

    def top_json(self) -> list[str]:
        """Each object's top as JSON text, as :meth:`top_lists` would be written.

        >>> PredictionBatch.from_predictions([Prediction(7, 2, 0.75, [(2, 0.75), (5, 0.25)])]).top_json()
        ['[[2,0.75],[5,0.25]]']
        """
        if np.isnan(self.top_scores).any() or self.top_taxon_ids.shape[1] == 0:
            return [json_dumps(top) for top in self.top_lists()]
        # One format per object (orjson would need a list per object first): a
        # Python float's repr is the shortest text that reads back as the same
        # number, as orjson writes it, and JSON has no other notation for it.
        k = self.top_taxon_ids.shape[1]
        pattern = "[" + ",".join(["[%d,%r]"] * k) + "]"
        columns = []
        for j in range(k):
            columns += [self.top_taxon_ids[:, j].tolist(), self.top_scores[:, j].tolist()]
        return [pattern % row for row in zip(*columns)]

    def top_lists(self) -> list[list[list]]:
        """Each object's top as the ``top_predictions`` column holds it: ``[[taxon, score], ...]``."""
        taxa, scores = self.top_taxon_ids.tolist(), self.top_scores.tolist()
        if not np.isnan(self.top_scores).any():
            return [[[t, s] for t, s in zip(tr, sr)] for tr, sr in zip(taxa, scores)]
        return [[[t, s] for t, s in zip(tr, sr) if s == s] for tr, sr in zip(taxa, scores)]


def _history_rows(rows, changed_by_id: int | None, when: datetime) -> list[dict]:
    return [dict(object_id=r.id, changed_at=when, changed_by_id=changed_by_id, status=r.status,
                 taxon_id=r.taxon_id, score=r.score, annotator_id=r.annotator_id,
                 annotation_date=r.annotation_date, model_id=r.model_id) for r in rows]


def _set_state(session: Session, project_id: int, object_ids: Iterable[int], *, status: str,
               user_id: int, taxon_id: int | None = None, keep_taxon: bool = False) -> int:
    require(session, user_id, project_id, Action.ANNOTATE)
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
    """Validate the objects in their current category; returns how many changed.

    Like every change of this module, raises :class:`PermissionDenied` unless
    ``user_id`` may annotate the project, whoever calls it (page, flow, CLI).
    """
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


def apply_predictions(session: Session, project_id: int,
                      predictions: "PredictionBatch | Sequence[Prediction]",
                      model_id: int | None) -> int:
    """Write predictions to the objects that may take them; returns how many changed.

    Each object still unclassified or predicted when the write runs gets the
    predicted status, its category and score, its top 3 and ``model_id``, after
    its previous state has been copied to its history. Objects that are
    validated or dubious by then are skipped, even if they were predictable
    when the predictions were computed: the status is tested again under the
    write lock (SQLite) or the row locks (PostgreSQL) that the history copy and
    the update share. Everything happens in the caller's transaction, so a
    failure leaves every object of the batch as it was.

    Parameters
    ----------
    session : Session
        The caller's transaction (one per chunk of predictions). On SQLite its
        first statement should be this one's, so the write lock is taken before
        any read (a stale read fails with "database is locked" rather than
        overwriting a newer state).
    project_id : int
        Objects of other projects are never touched.
    predictions : PredictionBatch or sequence of Prediction
        An object predicted twice keeps its last prediction.
    model_id : int or None
        The model that made them.
    """
    batch = (predictions if isinstance(predictions, PredictionBatch)
             else PredictionBatch.from_predictions(predictions))
    if not len(batch):
        return 0
    batch = batch.by_object_id()
    return write_predicted_state(
        session, project_id, batch.object_ids, batch.taxon_ids, batch.scores, batch.top_json(),
        model_id, utcnow(), predictable=PREDICTABLE, predicted=ObjectStatus.PREDICTED.value)


def object_history(session: Session, object_id: int) -> list[AnnotationHistory]:
    """Previous states of an object, newest first."""
    return list(session.scalars(select(AnnotationHistory)
                                .where(AnnotationHistory.object_id == object_id)
                                .order_by(AnnotationHistory.changed_at.desc(),
                                          AnnotationHistory.id.desc())))
