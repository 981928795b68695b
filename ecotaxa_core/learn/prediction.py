"""Prediction: registered model + feature store -> top-3 predictions per object.

:func:`predict_chunk_batch` takes only plain values (paths, ids) so it can run on a
Dask worker: it loads the model once per process, reads the chunk's features
from the Zarr store and returns a :class:`~ecotaxa_core.annotation.PredictionBatch`
(arrays: cheap to send back; :func:`predict_chunk` gives the same as
:class:`~ecotaxa_core.annotation.Prediction` records). Writing them is the
caller's job (the single database writer): :func:`write_predictions` writes
one chunk in one transaction (two statements whatever its size, see
:func:`~ecotaxa_core.db.bulk.write_predicted_state`), so a run that dies half
way leaves each object with either its old or its new prediction.

Only unclassified and predicted objects are predicted; validated and dubious
ones are human decisions that :func:`~ecotaxa_core.annotation.apply_predictions`
never touches.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ecotaxa_core.annotation import PREDICTABLE, Prediction, PredictionBatch, apply_predictions
from ecotaxa_core.db.models import Object, ObjectStatus
from ecotaxa_core.errors import ModelNotFound
from ecotaxa_core.learn.learning_set import FeatureSetUnavailable, read_feature_sets
from ecotaxa_core.learn.registry import LoadedModel, best_model, get_model, load_model_files
from ecotaxa_core.learn.thresholds import bulk_validation_candidates
from ecotaxa_core.store.feature_store import FeatureStore

__all__ = [
    "TOP_K",
    "predictable_object_ids",
    "n_predicted_by",
    "model_features",
    "top_predictions",
    "predict_batch",
    "predict_with_model",
    "predict_chunk",
    "predict_chunk_batch",
    "write_predictions",
    "predict_project",
    "prediction_summary",
    "count_above_threshold",
    "prediction_chunks",
]

TOP_K = 3

#: Smallest chunk :func:`prediction_chunks` makes to ramp up or down: below it a
#: chunk's fixed costs (a store open, a task, a transaction) outweigh its work.
MIN_RAMP_CHUNK = 1024
#: Ramp steps at each end of a run (chunk size / 8, / 4, / 2).
RAMP_STEPS = 3


def prediction_chunks(n: int, chunk_size: int) -> list[slice]:
    """Slices of ``range(n)`` for a pipelined prediction: small chunks first and last.

    Workers predict chunks while a single writer (the flow process) writes the
    finished ones. With equal chunks, the writer waits for the first chunk's whole
    read and prediction before it writes anything, and the workers idle while it
    writes the last one. So the run starts and ends with chunks of ``chunk_size``
    / 8, / 4, / 2 (never under :data:`MIN_RAMP_CHUNK`), the middle is cut in
    chunks of ``chunk_size``; the slices cover ``range(n)`` in order, each once.

    >>> [s.stop - s.start for s in prediction_chunks(50_000, 8192)]
    [1024, 2048, 4096, 8192, 8192, 8192, 8192, 2896, 4096, 2048, 1024]
    >>> [s.stop - s.start for s in prediction_chunks(2_500, 1000)]
    [1000, 1000, 500]
    """
    if n < 0 or chunk_size < 1:
        raise ValueError(f"prediction_chunks: n={n}, chunk_size={chunk_size}: "
                         "need n >= 0 and chunk_size >= 1")
    ramp = [chunk_size >> k for k in range(RAMP_STEPS, 0, -1)
            if chunk_size >> k >= MIN_RAMP_CHUNK]
    sizes: list[int] = []
    left = n
    for size in ramp:  # up
        if left == 0:
            break
        sizes.append(min(size, left))
        left -= sizes[-1]
    down = sum(ramp)
    while left > down:  # the middle, in full chunks (the last one may be shorter)
        sizes.append(min(chunk_size, left - down))
        left -= sizes[-1]
    for size in reversed(ramp):  # down
        if left == 0:
            break
        sizes.append(min(size, left))
        left -= sizes[-1]
    bounds = np.cumsum([0] + sizes)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def predictable_object_ids(session: Session, project_id: int, *,
                           except_model_id: int | None = None) -> np.ndarray:
    """Ids of the project's unclassified and predicted objects, sorted.

    ``except_model_id``: without the objects that model predicted already (a model
    gives an object the same prediction every time: predicting them again would
    write nothing new but history).
    """
    where = [Object.project_id == int(project_id), Object.status.in_(PREDICTABLE)]
    if except_model_id is not None:
        # Spelled out: NOT (a AND b) would drop the rows where model_id is NULL.
        where.append(or_(Object.status != ObjectStatus.PREDICTED.value,
                         Object.model_id.is_(None), Object.model_id != int(except_model_id)))
    ids = session.scalars(select(Object.id).where(*where).order_by(Object.id)).all()
    return np.asarray(ids, dtype=np.int64)


def n_predicted_by(session: Session, project_id: int, model_id: int) -> int:
    """How many objects of the project hold a prediction of ``model_id``."""
    return int(session.scalar(select(func.count()).select_from(Object).where(
        Object.project_id == int(project_id), Object.status == ObjectStatus.PREDICTED.value,
        Object.model_id == int(model_id))))


def model_features(model: LoadedModel, store: FeatureStore, project_id: int,
                   object_ids: Sequence[int]) -> np.ndarray:
    """The model's input matrix for ``object_ids``: its features, in its column order."""
    X, names = read_feature_sets(store, project_id, model.feature_sets, object_ids)
    if names == model.feature_names:
        return X
    column = {n: i for i, n in enumerate(names)}
    absent = [n for n in model.feature_names if n not in column]
    if absent:
        raise FeatureSetUnavailable(
            f"project {project_id} lacks {len(absent)} features model {model.model_id} was "
            f"trained on (e.g. {absent[:3]}); its feature sets were computed differently")
    return X[:, [column[n] for n in model.feature_names]]


def top_predictions(proba: np.ndarray, classes: Sequence[int],
                    object_ids: Sequence[int]) -> PredictionBatch:
    """The best ``TOP_K`` classes of each row of ``proba``, best first, as a batch.

    Equal probabilities rank in class order (as a stable sort would), since
    ``argmax`` returns the first maximum. ``TOP_K`` passes of ``argmax`` cost
    far less than sorting every row of a 120-class matrix.

    >>> batch = top_predictions(np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]), [10, 20, 30], [1, 2])
    >>> batch.top_taxon_ids.tolist(), batch.top_scores.tolist()
    ([[20, 30, 10], [10, 20, 30]], [[0.6, 0.3, 0.1], [0.5, 0.25, 0.25]])
    """
    proba = np.asarray(proba)
    n, n_classes = proba.shape
    k = min(TOP_K, n_classes)
    rest = proba.copy()
    rows = np.arange(n)
    best = np.empty((n, k), dtype=np.intp)
    for j in range(k):
        best[:, j] = rest.argmax(axis=1)
        rest[rows, best[:, j]] = -np.inf
    taxa = np.asarray(classes, dtype=np.int64)[best]
    scores = np.take_along_axis(proba, best, axis=1).astype(np.float64)
    return PredictionBatch(np.asarray(object_ids, dtype=np.int64), taxa[:, 0].copy(),
                           scores[:, 0].copy(), taxa, scores)


def predict_batch(model: LoadedModel, X: np.ndarray, object_ids: Sequence[int]) -> PredictionBatch:
    """Top-3 predictions of the rows of ``X``; rows without any feature value are skipped."""
    ids = np.asarray(object_ids, dtype=np.int64)
    has_features = ~np.isnan(X).all(axis=1)
    if not has_features.all():
        ids, X = ids[has_features], X[has_features]
    if len(ids) == 0:
        k = min(TOP_K, len(model.classes))
        return PredictionBatch(ids, np.empty(0, np.int64), np.empty(0), np.empty((0, k), np.int64),
                               np.empty((0, k)))
    return top_predictions(model.predict_proba(X), model.classes, ids)


def predict_with_model(model: LoadedModel, X: np.ndarray,
                       object_ids: Sequence[int]) -> list[Prediction]:
    """:func:`predict_batch` as a list of :class:`~ecotaxa_core.annotation.Prediction`."""
    return predict_batch(model, X, object_ids).predictions()


@lru_cache(maxsize=4)
def _cached_model(models_dir: str, model_id: int, model_path: str,
                  modified_ns: int) -> LoadedModel:
    # Per-process cache: a worker that predicts many chunks loads the model once.
    # The file's modification time is part of the key, so a model id reused for
    # another file (SQLite reuses the id of a deleted last row) is reloaded.
    return load_model_files(models_dir, model_id, model_path)


def predict_chunk(models_dir: str, model_id: int, model_path: str, feature_store_root: str,
                  project_id: int, object_ids: Sequence[int]) -> list[Prediction]:
    """:func:`predict_chunk_batch` as a list of :class:`~ecotaxa_core.annotation.Prediction`."""
    return predict_chunk_batch(models_dir, model_id, model_path, feature_store_root, project_id,
                               object_ids).predictions()


def predict_chunk_batch(models_dir: str, model_id: int, model_path: str,
                        feature_store_root: str, project_id: int,
                        object_ids: Sequence[int]) -> PredictionBatch:
    """Predict one chunk of objects (safe to run on a Dask worker).

    Parameters
    ----------
    models_dir : str
        The registry folder (``inst.models_dir``).
    model_id : int
    model_path : str
        The model file, relative to ``models_dir`` (``TrainedModel.path``).
    feature_store_root : str
        The feature store folder (``inst.features.root``).
    project_id : int
        The project whose feature rows are read.
    object_ids : sequence of int

    Returns
    -------
    PredictionBatch
        One row per object that has at least one feature value, in ``object_ids`` order.
    """
    path = os.path.join(os.fspath(models_dir), str(model_path))
    try:
        modified_ns = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise ModelNotFound(f"model {model_id}: {path} is missing") from None
    model = _cached_model(os.fspath(models_dir), int(model_id), str(model_path), modified_ns)
    X = model_features(model, FeatureStore(feature_store_root), project_id, object_ids)
    return predict_batch(model, X, object_ids)


def write_predictions(inst, project_id: int,
                      predictions: PredictionBatch | Sequence[Prediction],
                      model_id: int | None) -> int:
    """Write one chunk of predictions in one transaction; returns how many objects changed."""
    with inst.sessions.begin() as session:
        return apply_predictions(session, project_id, predictions, model_id)


def predict_project(inst, project_id: int, model_id: int | None = None, *,
                    chunk_size: int | None = None, again: bool = False) -> dict[str, Any]:
    """Predict every predictable object of a project, chunk by chunk, in this process.

    Objects the model predicted already are left as they are, unless ``again``.

    The flow ``predict_flow`` does the same with the chunks on Dask. Default
    model: the project's best (:func:`~ecotaxa_core.learn.registry.best_model`);
    default chunk size: the settings' ``predict_chunk_size``. Returns a
    JSON-able summary.
    """
    t0 = time.perf_counter()
    chunk_size = chunk_size or inst.settings.predict_chunk_size
    with inst.sessions() as session:
        row = (get_model(session, model_id) if model_id is not None
               else best_model(session, project_id))
        model_id, path = row.id, row.path
        ids = predictable_object_ids(session, project_id,
                                     except_model_id=None if again else model_id)
    n_predicted = n_written = 0
    for start in range(0, len(ids), chunk_size):
        preds = predict_chunk_batch(str(inst.models_dir), model_id, path,
                                    inst.features.where, project_id,
                                    ids[start:start + chunk_size])
        n_predicted += len(preds)
        n_written += write_predictions(inst, project_id, preds, model_id)
    seconds = time.perf_counter() - t0
    return prediction_summary(project_id, model_id, len(ids), n_predicted, n_written, seconds,
                              n_above_threshold=count_above_threshold(inst, project_id, model_id))


def count_above_threshold(inst, project_id: int, model_id: int) -> int | None:
    """How many of the project's predictions by ``model_id`` its score thresholds cover.

    None when the model has no threshold (see
    :func:`~ecotaxa_core.learn.thresholds.bulk_validation_candidates`).
    """
    with inst.sessions() as session:
        candidates = bulk_validation_candidates(session, project_id, model_id)
    if candidates.n_above == 0 and candidates.target_precision is None:
        return None
    return candidates.n_above


def prediction_summary(project_id: int, model_id: int, n_predictable: int, n_predicted: int,
                       n_written: int, seconds: float, *,
                       n_above_threshold: int | None = None) -> dict[str, Any]:
    """The JSON-able summary of a prediction run.

    ``n_above_threshold``: the project's predictions by the model at or above
    their category's score threshold (validatable in bulk); None when unknown.
    """
    return {"project_id": int(project_id), "model_id": int(model_id),
            "n_predictable": int(n_predictable), "n_predicted": int(n_written),
            "n_without_features": int(n_predictable - n_predicted),
            "n_no_longer_predictable": int(n_predicted - n_written),
            "n_above_threshold": None if n_above_threshold is None else int(n_above_threshold),
            "seconds": round(seconds, 3),
            "objects_per_second": round(n_written / seconds, 1) if seconds > 0 else None}
