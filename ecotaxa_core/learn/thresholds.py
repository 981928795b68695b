"""Per-category score thresholds that give a chosen precision, and the objects they cover.

A validator who trusts predictions of category ``c`` with a score of at least
``t_c`` can validate them in bulk. :func:`category_thresholds` finds, from the
held-out part of the learning set, the lowest such ``t_c`` for which the
held-out objects *predicted* as ``c`` with a top-1 score ``>= t_c`` are right
at least ``target_precision`` of the time, counting ties at ``t_c`` in. A
threshold needs at least ``min_objects`` such held-out objects, so that one
lucky object does not make a rule. :func:`bulk_validation_candidates` applies
the thresholds stored with a model to a project's current predictions.

The thresholds are measured on the model fitted on the training part; the
registered model is refitted on the whole learning set, whose scores are
usually a little more confident, so the precision above a threshold is an
estimate, not a guarantee.

Example: six held-out objects predicted as category 1, scores from high to
low, the fifth one wrong. At 0.6 the six give 5 / 6 = 0.83; at 0.7 the five
highest give 4 / 5 = 0.8; at 0.8 only four are left (fewer than five).

>>> y_true = np.array([1, 1, 1, 1, 2, 1])
>>> proba = np.array([[s, 1 - s] for s in (0.95, 0.9, 0.85, 0.8, 0.7, 0.6)])
>>> t = category_thresholds(y_true, proba, [1, 2], {1: "a", 2: "b"}, target_precision=0.8)
>>> t["per_class"]["a"]["threshold"], t["per_class"]["a"]["n_above"]
(0.6, 6)
>>> category_thresholds(y_true, proba, [1, 2], {1: "a", 2: "b"},
...                     target_precision=0.9)["per_class"]["a"]["reason"]
'precision stays below 0.9 at every threshold that keeps at least 5 objects (best 0.833)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import case, false, func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, ObjectStatus
from ecotaxa_core.learn.registry import get_model

__all__ = [
    "DEFAULT_TARGET_PRECISION",
    "DEFAULT_MIN_OBJECTS",
    "category_thresholds",
    "model_thresholds",
    "bulk_validation_select",
    "CategoryCandidates",
    "BulkValidationCandidates",
    "bulk_validation_candidates",
]

DEFAULT_TARGET_PRECISION = 0.95
#: Held-out objects a category must have above its threshold for the threshold to count.
DEFAULT_MIN_OBJECTS = 5

# Precision is compared on counts; this keeps 19 / 20 >= 0.95 true despite binary floats.
_EPS = 1e-9


def _check_parameters(target_precision: float, min_objects: int) -> None:
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if int(min_objects) != min_objects or min_objects < 1:
        raise ValueError(f"min_objects must be a positive integer, got {min_objects}")


def _one_category(scores: np.ndarray, correct: np.ndarray, target: float,
                  min_objects: int) -> dict[str, Any]:
    """Threshold of one predicted category from its objects' top-1 scores and correctness."""
    n_predicted = len(scores)
    entry: dict[str, Any] = {"threshold": None, "precision": None, "n_above": 0,
                             "n_predicted": int(n_predicted), "coverage": None, "reason": None}
    if n_predicted == 0:
        entry["reason"] = "never predicted on the held-out part"
        return entry
    if n_predicted < min_objects:
        entry["reason"] = (f"only {n_predicted} held-out object{'s' * (n_predicted > 1)} "
                           f"predicted as this category; at least {min_objects} needed")
        return entry
    order = np.argsort(-scores, kind="stable")
    scores, correct = scores[order], correct[order]
    n_above = np.arange(1, n_predicted + 1)
    n_right = np.cumsum(correct)
    # A threshold keeps every object tied with it: only the last of a run of equal
    # scores ends a candidate set.
    ends = np.flatnonzero(np.append(scores[1:] < scores[:-1], True))
    enough = ends[n_above[ends] >= min_objects]
    precise = enough[n_right[enough] >= target * n_above[enough] - _EPS]
    if len(precise) == 0:
        best = float(np.max(n_right[enough] / n_above[enough]))
        entry["reason"] = (f"precision stays below {target:g} at every threshold that keeps "
                           f"at least {min_objects} objects (best {best:.3f})")
        return entry
    last = precise[-1]  # the most objects, so the lowest threshold
    entry.update(threshold=float(scores[last]),
                 precision=float(n_right[last] / n_above[last]),
                 n_above=int(n_above[last]), n_right=int(n_right[last]),
                 coverage=float(n_above[last] / n_predicted))
    return entry


def category_thresholds(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[int],
                        class_names: Mapping[int, str], *,
                        target_precision: float = DEFAULT_TARGET_PRECISION,
                        min_objects: int = DEFAULT_MIN_OBJECTS) -> dict[str, Any]:
    """Lowest top-1 score per predicted category giving ``target_precision`` on held-out data.

    Parameters
    ----------
    y_true : array of shape (n_samples,)
        True taxon ids of the held-out objects.
    proba : array of shape (n_samples, n_classes)
        Their predicted probabilities, columns in ``classes`` order.
    classes : sequence of int
        Taxon ids of the columns of ``proba``.
    class_names : mapping
        Taxon id to display name (the key of ``per_class``).
    target_precision : float
        Wanted fraction of right predictions above each threshold, in (0, 1].
    min_objects : int
        Held-out objects a category needs above its threshold.

    Returns
    -------
    dict
        JSON-able: ``per_class`` maps each category name to its ``threshold``,
        held-out ``precision`` above it, ``n_above`` (objects at or above it),
        ``n_predicted`` (objects predicted as the category), ``coverage``
        (``n_above / n_predicted``) and, without a threshold, the ``reason``;
        then totals over the held-out part: ``n_bulk_validatable``, their
        ``fraction_bulk_validatable`` and ``expected_error_rate``.
    """
    _check_parameters(target_precision, min_objects)
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise ValueError(f"proba must have shape ({len(y_true)}, {len(classes)}) "
                         f"(objects, classes), got {proba.shape}")
    best = np.argmax(proba, axis=1) if len(y_true) else np.empty(0, dtype=np.intp)
    top_score = proba[np.arange(len(y_true)), best]
    correct = classes[best] == y_true
    per_class: dict[str, dict[str, Any]] = {}
    n_bulk = n_bulk_right = 0
    for j, taxon in enumerate(classes.tolist()):
        mine = best == j
        entry = _one_category(top_score[mine], correct[mine], target_precision, min_objects)
        n_bulk += entry["n_above"]
        n_bulk_right += entry.pop("n_right", 0)
        per_class[class_names.get(int(taxon), str(taxon))] = {"taxon_id": int(taxon), **entry}
    n_test = len(y_true)
    return {
        "target_precision": float(target_precision),
        "min_objects": int(min_objects),
        "measured_on": "held-out part, model fitted on the training part",
        "per_class": per_class,
        "n_categories_with_threshold": sum(e["threshold"] is not None for e in per_class.values()),
        "n_test": int(n_test),
        "n_bulk_validatable": int(n_bulk),
        "fraction_bulk_validatable": n_bulk / n_test if n_test else None,
        "expected_error_rate": 1.0 - n_bulk_right / n_bulk if n_bulk else None,
    }


def model_thresholds(metrics: Mapping[str, Any] | None) -> dict[int, tuple[float, float]]:
    """Taxon id -> (threshold, held-out precision) from a model's stored metrics."""
    per_class = ((metrics or {}).get("thresholds") or {}).get("per_class") or {}
    return {int(e["taxon_id"]): (float(e["threshold"]), float(e["precision"]))
            for e in per_class.values() if e.get("threshold") is not None}


def _above_threshold(thresholds: Mapping[int, float]):
    if not thresholds:
        return false()
    # Categories without a threshold map to NULL, and "score >= NULL" is never true.
    return Object.score >= case({int(t): float(v) for t, v in thresholds.items()},
                                value=Object.taxon_id, else_=None)


def _predicted_by(project_id: int, model_id: int):
    return (Object.project_id == int(project_id), Object.model_id == int(model_id),
            Object.status == ObjectStatus.PREDICTED.value)


def bulk_validation_select(session: Session, project_id: int, model_id: int):
    """A ``SELECT Object.id`` of the objects that ``model_id``'s thresholds let validate in bulk.

    Only objects of ``project_id`` whose current state is a prediction by that
    model count (never validated or dubious ones). Add ordering or paging to it.

    Raises
    ------
    ModelNotFound
        No model ``model_id``.
    """
    row = get_model(session, model_id)
    limits = {t: v for t, (v, _) in model_thresholds(row.metrics).items()}
    return select(Object.id).where(*_predicted_by(project_id, model_id),
                                   _above_threshold(limits))


@dataclass(frozen=True)
class CategoryCandidates:
    """One predicted category of a project: how many of its predictions a threshold covers."""

    taxon_id: int
    name: str
    threshold: float | None
    held_out_precision: float | None
    n_predicted: int  # the project's objects predicted as this category by the model
    n_above: int  # those at or above the threshold


@dataclass(frozen=True)
class BulkValidationCandidates:
    """What a model's thresholds cover among a project's current predictions by that model."""

    project_id: int
    model_id: int
    target_precision: float | None
    categories: tuple[CategoryCandidates, ...]  # most objects above the threshold first
    n_predicted: int
    n_above: int
    # Held-out error rate of each category weighted by this project's counts above it.
    expected_error_rate: float | None
    reason: str | None  # why nothing can be covered, when so

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"categories": [asdict(c) for c in self.categories]}


def bulk_validation_candidates(session: Session, project_id: int,
                               model_id: int) -> BulkValidationCandidates:
    """Per category, how many of the project's predictions by ``model_id`` are above its threshold.

    Raises
    ------
    ModelNotFound
        No model ``model_id``.
    """
    row = get_model(session, model_id)
    thresholds = model_thresholds(row.metrics)
    stored = (row.metrics or {}).get("thresholds") or {}
    names = dict(zip(row.settings.get("classes", []), row.settings.get("class_names", [])))
    limits = {t: v for t, (v, _) in thresholds.items()}
    above = _above_threshold(limits)
    counts = session.execute(
        select(Object.taxon_id, func.count(), func.count(case((above, 1))))
        .where(*_predicted_by(project_id, model_id)).group_by(Object.taxon_id)).all()
    categories = []
    for taxon, n_predicted, n_above in counts:
        threshold, precision = thresholds.get(taxon, (None, None))
        categories.append(CategoryCandidates(int(taxon), names.get(taxon, str(taxon)), threshold,
                                             precision, int(n_predicted), int(n_above)))
    categories.sort(key=lambda c: (-c.n_above, -c.n_predicted, c.name))
    n_above = sum(c.n_above for c in categories)
    expected_errors = sum(c.n_above * (1.0 - c.held_out_precision)
                          for c in categories if c.n_above)
    reason = None
    if not thresholds:
        reason = (f"model {model_id} has no score threshold: "
                  + ("it was not evaluated on a held-out part" if not stored
                     else f"no category reaches precision {stored.get('target_precision')} on "
                          "the held-out part with enough objects"))
    elif not categories:
        reason = f"project {project_id} has no object currently predicted by model {model_id}"
    return BulkValidationCandidates(
        project_id=int(project_id), model_id=int(model_id),
        target_precision=stored.get("target_precision"), categories=tuple(categories),
        n_predicted=sum(c.n_predicted for c in categories), n_above=n_above,
        expected_error_rate=expected_errors / n_above if n_above else None, reason=reason)


def current_prediction_model(session: Session, project_id: int) -> int | None:
    """The model behind most of the project's current predictions (None: no prediction)."""
    row = session.execute(
        select(Object.model_id, func.count().label("n"))
        .where(Object.project_id == int(project_id), Object.status == ObjectStatus.PREDICTED.value,
               Object.model_id.is_not(None))
        .group_by(Object.model_id).order_by(func.count().desc(), Object.model_id.desc())
        .limit(1)).first()
    return int(row.model_id) if row is not None else None
