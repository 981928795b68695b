"""Prediction-time probabilities of a fitted pipeline, in float32 numpy.

scikit-learn validates and converts its input to float64 at every step of a
pipeline; on a chunk of 1,321-feature rows that costs more than the model.
:func:`compile_predict_proba` reads the fitted parameters of the steps it
knows and returns a function that applies them in float32, in place:

- ``SimpleImputer`` (median, mean, most frequent or constant, no indicator):
  gaps take the stored statistics;
- ``FunctionTransformer(signed_log)``;
- ``StandardScaler``, folded into the logistic regression that follows it;
- ``LogisticRegression`` (multinomial softmax, or binary), as one matrix product;
- ``RandomForestClassifier`` (one output): scikit-learn finds each row's leaf
  in every tree (``apply``); the leaves' class fractions, gathered once into a
  float32 table, are summed by one sparse product (a third less time than
  ``predict_proba``, which adds a float64 copy of every tree's answer);
- :class:`~ecotaxa_core.learn.classifiers.ForestBlend`: its linear part and
  its forest as above.

Any other step or final estimator is applied through scikit-learn, so every
pipeline gets a function; the probabilities agree with ``predict_proba`` to
float32 rounding (about 1e-6; tested for every classifier kind). In a daemon
process (a Dask worker), forests predict with one job: joblib cannot start
workers there and would fall back to one, warning at every call.
"""

from __future__ import annotations

import multiprocessing
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ecotaxa_core.learn.classifiers import ForestBlend, signed_log

__all__ = ["compile_predict_proba"]

Transform = Callable[[np.ndarray], np.ndarray]
PredictProba = Callable[[np.ndarray], np.ndarray]

#: Largest leaf table a forest is compiled into (float32 class fractions of every
#: leaf); a larger forest predicts through scikit-learn.
MAX_LEAF_TABLE_BYTES = 1 << 30


def compile_predict_proba(model) -> PredictProba:
    """A function ``X -> probabilities`` equal to ``model.predict_proba`` (float32 rounding).

    ``X`` (float32 or float64, shape (n, n_features)) may be overwritten.
    """
    if multiprocessing.current_process().daemon:
        _one_job(model)
    steps = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
    *transforms, (_, final) = steps
    ops: list[Transform] = []
    scaler: StandardScaler | None = None
    for _, step in transforms:
        if scaler is not None:  # a scaler not followed by the logistic regression
            ops.append(_scale_op(scaler))
            scaler = None
        if isinstance(step, StandardScaler) and _foldable_scaler(step):
            scaler = step
        else:
            ops.append(_transform_op(step))
    head = _final_op(final, scaler)
    if head is None:
        if scaler is not None:
            ops.append(_scale_op(scaler))
        head = final.predict_proba

    def predict_proba(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        for op in ops:
            X = op(X)
        return head(X)

    return predict_proba


def _one_job(model) -> None:
    """Every estimator inside ``model`` that runs jobs runs one."""
    parts = [model]
    while parts:
        part = parts.pop()
        if isinstance(part, Pipeline):
            parts.extend(step for _, step in part.steps)
        elif isinstance(part, ForestBlend):
            parts.extend(p for p in (getattr(part, "linear_", None),
                                     getattr(part, "forest_", None)) if p is not None)
        elif getattr(part, "n_jobs", None) not in (None, 1):
            part.n_jobs = 1


def _transform_op(step) -> Transform:
    if (isinstance(step, SimpleImputer) and not step.add_indicator
            and _is_nan_marker(step.missing_values)):
        statistics = np.asarray(step.statistics_, dtype=np.float64)
        if np.isfinite(statistics).all():  # else scikit-learn drops columns: let it
            fill = statistics.astype(np.float32)
            return lambda X: _impute(X, fill)
    if isinstance(step, FunctionTransformer) and step.func is signed_log and not step.kw_args:
        return _signed_log32
    return lambda X: np.asarray(step.transform(X), dtype=np.float32)


def _is_nan_marker(value) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _impute(X: np.ndarray, fill: np.ndarray) -> np.ndarray:
    X = np.array(X, dtype=np.float32, copy=True)
    missing = np.isnan(X)
    if missing.any():
        rows, cols = np.nonzero(missing)
        X[rows, cols] = fill[cols]
    return X


def _signed_log32(X: np.ndarray) -> np.ndarray:
    sign = np.sign(X)
    np.abs(X, out=X)
    np.log1p(X, out=X)
    X *= sign
    return X


def _foldable_scaler(scaler: StandardScaler) -> bool:
    return scaler.with_mean and scaler.with_std


def _scale_op(scaler: StandardScaler) -> Transform:
    mean = (np.asarray(scaler.mean_, dtype=np.float32) if scaler.with_mean
            else np.float32(0))
    scale = (np.asarray(scaler.scale_, dtype=np.float32) if scaler.with_std
             else np.float32(1))

    def scale_op(X: np.ndarray) -> np.ndarray:
        X -= mean
        X /= scale
        return X

    return scale_op


def _final_op(final, scaler: StandardScaler | None) -> PredictProba | None:
    if isinstance(final, LogisticRegression):
        return _logistic_op(final, scaler)
    if isinstance(final, RandomForestClassifier) and scaler is None:
        return _forest_op(final)
    if isinstance(final, ForestBlend) and scaler is None:
        return _blend_op(final)
    return None


def _logistic_op(logistic: LogisticRegression, scaler: StandardScaler | None) -> PredictProba | None:
    if getattr(logistic, "multi_class", "auto") not in ("auto", "multinomial", "deprecated"):
        return None  # one-vs-rest probabilities: scikit-learn's own normalisation
    coef = np.asarray(logistic.coef_, dtype=np.float64)
    intercept = np.asarray(logistic.intercept_, dtype=np.float64)
    if scaler is not None:  # (x - m) / s . w + b  =  x . (w / s) + (b - m . (w / s))
        coef = coef / scaler.scale_
        intercept = intercept - coef @ scaler.mean_
    weights = np.ascontiguousarray(coef.T, dtype=np.float32)
    bias = intercept.astype(np.float32)
    if weights.shape[1] == 1:  # two classes: one logit
        def binary(X: np.ndarray) -> np.ndarray:
            p = expit((X @ weights + bias)[:, 0].astype(np.float64))
            return np.column_stack([1.0 - p, p])
        return binary

    def softmax(X: np.ndarray) -> np.ndarray:
        logits = (X @ weights).astype(np.float64)
        logits += bias
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    return softmax


def _forest_op(forest: RandomForestClassifier) -> PredictProba | None:
    """``forest.predict_proba`` as a sum of rows of a leaf table (see the module's doc)."""
    if forest.n_outputs_ != 1 or not forest.estimators_:
        return None
    trees = [estimator.tree_ for estimator in forest.estimators_]
    is_leaf = np.concatenate([tree.children_left == -1 for tree in trees])
    if int(is_leaf.sum()) * len(forest.classes_) * 4 > MAX_LEAF_TABLE_BYTES:
        return None
    # Nodes numbered tree after tree: each tree's first node, and each leaf's table row.
    node_offsets = np.cumsum([0] + [tree.node_count for tree in trees[:-1]])
    table_row = np.full(len(is_leaf), -1, dtype=np.int64)
    table_row[is_leaf] = np.arange(int(is_leaf.sum()))
    value = np.concatenate([tree.value[tree.children_left == -1, 0, :] for tree in trees])
    # Weighted counts or fractions per leaf, as fractions, averaged over the trees.
    table = (value / value.sum(axis=1, keepdims=True) / len(trees)).astype(np.float32)
    n_trees = len(trees)

    def forest_proba(X: np.ndarray) -> np.ndarray:
        rows = table_row[forest.apply(X) + node_offsets]  # (n, n_trees) leaves
        n = rows.shape[0]
        picks = sp.csr_matrix((np.ones(n * n_trees, dtype=np.float32), rows.ravel(),
                               np.arange(0, n * n_trees + 1, n_trees)),
                              shape=(n, table.shape[0]))
        return np.asarray(picks @ table)

    return forest_proba


def _blend_op(blend: ForestBlend) -> PredictProba:
    linear = compile_predict_proba(blend.linear_)
    forest = blend.forest_
    columns = list(blend.forest_columns)
    w = float(blend.forest_weight)
    if forest is None or w == 0:
        return linear
    forest_op = _forest_op(forest) or forest.predict_proba

    def blended(X: np.ndarray) -> np.ndarray:
        forest_proba = forest_op(X[:, columns])
        logp = np.log(np.clip(linear(X), 1e-12, None))  # after the forest: may overwrite X
        logp *= 1 - w
        logp += w * np.log(np.clip(forest_proba, 1e-12, None))
        logp -= logp.max(axis=1, keepdims=True)
        np.exp(logp, out=logp)
        logp /= logp.sum(axis=1, keepdims=True)
        return logp

    return blended
