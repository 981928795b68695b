"""Held-out evaluation of a classifier on a learning set.

The learning set is split once, stratified by category (``test_size`` of each
category held out, fixed by ``seed``). A category with too few objects to give
at least one to each side cannot be stratified: its objects stay in training
only and the metrics list it under ``train_only_categories``.

Metrics follow the plankton benchmark: accuracy, balanced accuracy, log loss,
per-category precision / recall / F1 / support, the confusion matrix, and
macro and support-weighted precision / recall / F1 over the test categories,
also over living (plankton) categories only, leaving out detritus, artefacts,
bubbles and the like. The held-out probabilities also give each category the
score threshold above which its predictions reach a chosen precision (see
:mod:`ecotaxa_core.learn.thresholds`).

>>> y = np.array([1] * 10 + [2] * 10 + [3] * 2)
>>> split = holdout_split(y, test_size=0.2, seed=0)
>>> len(split.train_index), len(split.test_index), split.train_only
(18, 4, (3,))
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from sklearn.base import clone
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, log_loss,
                             precision_recall_fscore_support)
from sklearn.model_selection import train_test_split

from ecotaxa_core.learn.thresholds import (DEFAULT_MIN_OBJECTS, DEFAULT_TARGET_PRECISION,
                                           category_thresholds)

__all__ = ["HoldoutSplit", "holdout_split", "evaluate_holdout", "score_probabilities",
           "NON_PLANKTON", "min_per_category"]

#: Category names that are not organisms; left out of the plankton-only macro scores.
NON_PLANKTON = re.compile(r"detritus|artefact|artifact|bubble|badfocus|fiber|fibre|dust|"
                          r"not[ _-]?living", re.IGNORECASE)


def min_per_category(test_size: float) -> int:
    """Objects a category needs to be stratified: one in test and one in training."""
    return max(2, math.ceil(1.0 / test_size))


@dataclass(frozen=True)
class HoldoutSplit:
    """Row indices of the training and test parts of a learning set."""

    train_index: np.ndarray
    test_index: np.ndarray
    train_only: tuple[int, ...]  # taxon ids too rare to test, kept in training
    test_size: float
    seed: int

    @property
    def has_test(self) -> bool:
        return len(self.test_index) > 0


def holdout_split(y: np.ndarray, *, test_size: float = 0.2, seed: int = 0) -> HoldoutSplit:
    """A stratified split; categories with too few objects stay in training only.

    When fewer than two categories can be tested, there is no test part.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    y = np.asarray(y)
    taxa, counts = np.unique(y, return_counts=True)
    rare = taxa[counts < min_per_category(test_size)]
    testable = np.flatnonzero(~np.isin(y, rare))
    train_only = tuple(int(t) for t in rare)
    if len(taxa) - len(rare) < 2:
        return HoldoutSplit(np.arange(len(y)), np.empty(0, dtype=np.intp), train_only,
                            test_size, seed)
    train, test = train_test_split(testable, test_size=test_size, random_state=seed,
                                   stratify=y[testable])
    train = np.sort(np.concatenate([train, np.flatnonzero(np.isin(y, rare))]))
    return HoldoutSplit(train, np.sort(test), train_only, test_size, seed)


def _macro(values: np.ndarray, mask: np.ndarray) -> float | None:
    return float(values[mask].mean()) if mask.any() else None


def _weighted(values: np.ndarray, support: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``values`` over ``mask`` weighted by each category's held-out support."""
    weights = support[mask]
    return float(np.average(values[mask], weights=weights)) if weights.sum() > 0 else None


def evaluate_holdout(estimator, X: np.ndarray, y: np.ndarray, split: HoldoutSplit,
                     class_names: Mapping[int, str], *,
                     target_precision: float = DEFAULT_TARGET_PRECISION,
                     min_threshold_objects: int = DEFAULT_MIN_OBJECTS) -> dict[str, Any]:
    """Fit a clone of ``estimator`` on the training part and score it on the test part.

    Returns a JSON-able dict. ``estimator`` itself is left unfitted; the caller
    refits the final model on the whole learning set. ``target_precision`` and
    ``min_threshold_objects`` define the per-category score thresholds stored
    under ``"thresholds"`` (see :func:`~ecotaxa_core.learn.thresholds.category_thresholds`).
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    base = {"evaluation": "held_out" if split.has_test else "none",
            "test_size": split.test_size, "seed": split.seed,
            "n_train": int(len(split.train_index)), "n_test": int(len(split.test_index)),
            "train_only_categories": [class_names.get(t, str(t)) for t in split.train_only]}
    if not split.has_test:
        base.update(accuracy=None, balanced_accuracy=None, log_loss=None,
                    reason="fewer than two categories have enough objects for a held-out test "
                           f"(at least {min_per_category(split.test_size)} each)")
        return base
    t0 = time.perf_counter()
    model = clone(estimator).fit(X[split.train_index], y[split.train_index])
    fit_seconds = time.perf_counter() - t0
    X_test, y_test = X[split.test_index], y[split.test_index]
    proba = model.predict_proba(X_test)
    classes = np.asarray(model.classes_)
    base.update(
        score_probabilities(y_test, proba, classes, class_names),
        thresholds=category_thresholds(y_test, proba, classes, class_names,
                                       target_precision=target_precision,
                                       min_objects=min_threshold_objects),
        fit_seconds=round(fit_seconds, 3),
    )
    return base


def score_probabilities(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray,
                        class_names: Mapping[int, str]) -> dict[str, Any]:
    """The metrics of held-out probabilities: ``proba[:, j]`` is that of ``classes[j]``.

    Accuracy, balanced accuracy, log loss, macro and support-weighted precision /
    recall / F1 over the tested categories and over plankton only, per-category
    scores and the confusion matrix; JSON-able. The prediction is each row's
    most probable class.
    """
    classes = np.asarray(classes)
    pred = classes[np.argmax(proba, axis=1)]
    names = [class_names.get(int(t), str(int(t))) for t in classes]
    with warnings.catch_warnings():
        # Categories predicted but absent from the test part (train-only ones).
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, pred, labels=classes, zero_division=0)
    tested = support > 0
    plankton = tested & np.array([not NON_PLANKTON.search(n) for n in names])
    return dict(
        accuracy=float(accuracy_score(y_true, pred)),
        balanced_accuracy=float(balanced),
        log_loss=float(log_loss(y_true, proba, labels=classes)),
        macro_precision=_macro(precision, tested),
        macro_recall=_macro(recall, tested),
        macro_f1=_macro(f1, tested),
        plankton_macro_precision=_macro(precision, plankton),
        plankton_macro_recall=_macro(recall, plankton),
        plankton_macro_f1=_macro(f1, plankton),
        weighted_precision=_weighted(precision, support, tested),
        weighted_recall=_weighted(recall, support, tested),
        weighted_f1=_weighted(f1, support, tested),
        plankton_weighted_precision=_weighted(precision, support, plankton),
        plankton_weighted_recall=_weighted(recall, support, plankton),
        plankton_weighted_f1=_weighted(f1, support, plankton),
        non_plankton_categories=[n for n, t, p in zip(names, tested, plankton) if t and not p],
        per_class={n: {"taxon_id": int(t), "precision": float(p), "recall": float(r),
                       "f1": float(f), "support": int(s)}
                   for n, t, p, r, f, s in zip(names, classes, precision, recall, f1, support)},
        confusion_matrix={"labels": names, "taxon_ids": [int(t) for t in classes],
                          "rows": "true category", "columns": "predicted category",
                          "matrix": confusion_matrix(y_true, pred, labels=classes).tolist()})
