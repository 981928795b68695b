"""The classifiers: scikit-learn pipelines, one per kind.

Every kind is a :class:`~sklearn.pipeline.Pipeline` that starts with a median
imputer, so the medians learned on the learning set travel with the model and
fill the gaps of the objects it predicts.

- ``classic_rf``: EcoTaxa's classifier on numeric features (``tsv`` and
  ``morpho``): median imputation, then a random forest of 300 trees with
  ``min_samples_leaf=5`` and balanced class weights.
- ``deep_logreg``: a multinomial logistic regression on the full deep vector
  (``deep_effnetlite0``), after median imputation, a signed logarithm
  (:func:`signed_log`: tames the long tails of classic features such as areas
  when they are joined) and standardisation.
- ``deep_rf``: EcoTaxa's recipe for deep features: the same random forest on
  the 50 principal components of the deep vector (``deep_effnetlite0_pca50``).
- ``deep_logreg_rf``: ``deep_logreg`` on every feature blended with a forest
  on the classic ones (:class:`ForestBlend`; EcoTaxa's forest with 100 trees:
  as accurate in the blend as 300, 2.6 times faster to predict).
- ``deep_mlp``: a small neural network (one hidden layer of 512 ReLU units,
  L2 penalty, early stopping on 10 % of its training part when every
  category can spare objects for it) on the same transformed features.

A kind's default feature sets are those of :data:`DEFAULT_FEATURE_SETS` the
project holds; any other mix (deep and classic features side by side) can be
given explicitly.

>>> make_classifier("classic_rf", n_jobs=1).named_steps["classify"].n_estimators
300
>>> default_feature_sets("classic_rf", ["deep_effnetlite0", "morpho", "tsv"])
['tsv', 'morpho']
>>> default_feature_sets("deep_logreg", ["morpho"])
[]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array, check_is_fitted
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ecotaxa_core.errors import EcoTaxaError

__all__ = [
    "CLASSIFIER_KINDS",
    "DEFAULT_FEATURE_SETS",
    "UnknownClassifierKind",
    "make_classifier",
    "default_feature_sets",
    "classifier_parameters",
]

#: Feature sets each kind uses by default, in order; those the project has are taken.
DEFAULT_FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "classic_rf": ("tsv", "morpho"),
    "deep_logreg": ("deep_effnetlite0",),
    "deep_rf": ("deep_effnetlite0_pca50",),
    "deep_mlp": ("deep_effnetlite0",),
    "deep_logreg_rf": ("deep_effnetlite0", "morpho", "tsv"),
}
CLASSIFIER_KINDS: tuple[str, ...] = tuple(DEFAULT_FEATURE_SETS)

# Inverse regularisation strength of the logistic regression on standardised
# 1280-d deep vectors. scikit-learn's objective is C * sum(loss) + |w|^2 / 2, so
# the penalty weighs less as the learning set grows. Measured on 12 NDSB
# classes x 100 images (5-fold CV, EfficientNet-Lite0 vectors), accuracy / log
# loss: C=1 0.817 / 0.690, C=0.1 0.823 / 0.540, C=0.02 0.830 / 0.493,
# C=0.005 0.837 / 0.520; a tolerance of 1e-3 gave the same scores 4x faster.
DEEP_LOGREG_C = 0.02
DEEP_LOGREG_TOL = 1e-3
#: Weight of the forest in deep_logreg_rf's geometric blend (NDSB: 0.3 was best of 0-0.5).
DEEP_LOGREG_RF_WEIGHT = 0.3
#: Trees of deep_logreg_rf's forest. The forest is most of the blend's prediction
#: time. NDSB (121 categories, 80/20 split, bench_quality.py --blend-trees):
#: 300 trees 0.726 accuracy / 0.593 balanced / 0.955 log loss, predict_proba
#: 11,000 objects/s; 100 trees 0.726 / 0.599 / 0.968, 28,600 objects/s;
#: 50 trees 0.724 / 0.593 / 1.001.
DEEP_LOGREG_RF_TREES = 100
#: Objects below which the MLP trains without early stopping (see SmallSetSafeMLP).
MLP_EARLY_STOPPING_MIN_OBJECTS = 2000
# The MLP: one hidden layer, Adam, early stopping on 10 % of the training part.
DEEP_MLP_HIDDEN = (512,)
DEEP_MLP_ALPHA = 1e-2


def signed_log(X: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: monotonic, odd, close to ``x`` near 0.

    >>> signed_log(np.array([-np.e + 1, 0.0, 1e6])).round(3).tolist()
    [-1.0, 0.0, 13.816]
    """
    X = np.asarray(X, dtype=np.float64)
    return np.sign(X) * np.log1p(np.abs(X))


class SmallSetSafeMLP(MLPClassifier):
    """scikit-learn's MLP whose early stopping steps aside for small training sets.

    Early stopping watches the accuracy on the held-out tenth: on fewer than
    :data:`MLP_EARLY_STOPPING_MIN_OBJECTS` objects that accuracy saturates
    within a few epochs and stops the network long before its probabilities
    are fitted (and on very small sets a tenth cannot hold every category).
    The MLP then stops when its training loss stops improving.
    """

    def fit(self, X, y, **kwargs):
        requested = self.early_stopping
        if requested:
            n_objects = len(np.asarray(y))
            _, counts = np.unique(np.asarray(y), return_counts=True)
            n_held = int(np.ceil(self.validation_fraction * n_objects))
            if (n_objects < MLP_EARLY_STOPPING_MIN_OBJECTS or n_held < len(counts)
                    or counts.min() < 2):
                self.early_stopping = False
        try:
            return super().fit(X, y, **kwargs)
        finally:
            self.early_stopping = requested


class ForestBlend(ClassifierMixin, BaseEstimator):
    """A linear model on every feature, blended with a random forest on some of them.

    The probabilities are the normalised weighted geometric mean
    ``p_linear ** (1 - w) * p_forest ** w``: the forest on the classic
    (morphological) features corrects the linear model where size and shape
    matter. On NDSB (121 categories, frozen deep features + morpho) a weight
    of 0.3 added 1.2 points of accuracy and lowered the log loss.

    Parameters
    ----------
    linear : classifier
        Fitted on every column.
    forest : classifier
        Fitted on ``forest_columns`` only; without such columns the blend is
        the linear model alone.
    forest_columns : tuple of int
    forest_weight : float in [0, 1]
    """

    def __init__(self, linear=None, forest=None, forest_columns: tuple[int, ...] = (),
                 forest_weight: float = 0.3):
        self.linear = linear
        self.forest = forest
        self.forest_columns = forest_columns
        self.forest_weight = forest_weight

    def fit(self, X, y):
        X = check_array(X)
        self.linear_ = clone(self.linear).fit(X, y)
        self.classes_ = self.linear_.classes_
        columns = list(self.forest_columns)
        self.forest_ = clone(self.forest).fit(X[:, columns], y) if columns else None
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "linear_")
        X = check_array(X)
        proba = self.linear_.predict_proba(X)
        if self.forest_ is None or self.forest_weight == 0:
            return proba
        forest = self.forest_.predict_proba(X[:, list(self.forest_columns)])
        w = float(self.forest_weight)
        logp = (1 - w) * np.log(np.clip(proba, 1e-12, None)) \
            + w * np.log(np.clip(forest, 1e-12, None))
        logp -= logp.max(axis=1, keepdims=True)
        out = np.exp(logp)
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def classic_columns(feature_names: Sequence[str]) -> tuple[int, ...]:
    """Positions of the features that are not deep-network outputs (``deep_*`` sets).

    >>> classic_columns(["deep_effnetlite0:f0", "morpho:area", "tsv:feret"])
    (1, 2)
    """
    return tuple(i for i, n in enumerate(feature_names) if not n.startswith("deep_"))


class UnknownClassifierKind(EcoTaxaError, ValueError):
    def __init__(self, kind: str):
        super().__init__(f"unknown classifier kind {kind!r}; known kinds: "
                         f"{', '.join(CLASSIFIER_KINDS)}")
        self.kind = kind


def _forest(n_jobs: int | None, random_state: int, n_trees: int = 300) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=n_trees, min_samples_leaf=5,
                                  class_weight="balanced", n_jobs=n_jobs,
                                  random_state=random_state)


def _logistic() -> Pipeline:
    return Pipeline([
        ("log", FunctionTransformer(signed_log, validate=True)),
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(C=DEEP_LOGREG_C, tol=DEEP_LOGREG_TOL, max_iter=1000)),
    ])


def make_classifier(kind: str, *, n_jobs: int | None = -1, random_state: int = 0,
                    feature_names: Sequence[str] = ()) -> Pipeline:
    """A new, unfitted pipeline of the given kind.

    Parameters
    ----------
    kind : {"classic_rf", "deep_logreg", "deep_rf", "deep_mlp", "deep_logreg_rf"}
    n_jobs : int or None
        Parallel jobs of the random forest (-1: every core).
    random_state : int
        Seed of the random forest, so a retraining gives the same model.
    feature_names : sequence of str
        The columns' names (``set:feature``); ``deep_logreg_rf`` gives its
        forest the classic ones.
    """
    if kind in ("classic_rf", "deep_rf"):
        return Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("classify", _forest(n_jobs, random_state)),
        ])
    if kind == "deep_logreg":
        return Pipeline([("impute", SimpleImputer(strategy="median")), *_logistic().steps])
    if kind == "deep_logreg_rf":
        return Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("classify", ForestBlend(linear=_logistic(),
                                     forest=_forest(n_jobs, random_state, DEEP_LOGREG_RF_TREES),
                                     forest_columns=classic_columns(feature_names),
                                     forest_weight=DEEP_LOGREG_RF_WEIGHT)),
        ])
    if kind == "deep_mlp":
        return Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("log", FunctionTransformer(signed_log, validate=True)),
            ("scale", StandardScaler()),
            ("classify", SmallSetSafeMLP(hidden_layer_sizes=DEEP_MLP_HIDDEN, alpha=DEEP_MLP_ALPHA,
                                       early_stopping=True, validation_fraction=0.1,
                                       n_iter_no_change=8, max_iter=200,
                                       random_state=random_state)),
        ])
    raise UnknownClassifierKind(kind)


def default_feature_sets(kind: str, available: Sequence[str]) -> list[str]:
    """The feature sets ``kind`` uses among those ``available`` (empty: cannot train)."""
    if kind not in DEFAULT_FEATURE_SETS:
        raise UnknownClassifierKind(kind)
    defaults = DEFAULT_FEATURE_SETS[kind]
    if defaults[0].startswith("deep_") and defaults[0] not in set(available):
        return []  # a deep kind needs its deep set; the others join it when present
    return [fs for fs in defaults if fs in set(available)]


def classifier_parameters(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """The JSON-able parameters of each step, for the model registry."""
    out: dict[str, dict[str, Any]] = {}
    for name, step in pipeline.steps:
        # NaN (the imputer's missing-value marker) is not valid JSON: keep it as text.
        params = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                  for k, v in step.get_params(deep=False).items()
                  if v is None or isinstance(v, (bool, int, float, str))}
        out[name] = {"class": type(step).__name__, **params}
    return out
