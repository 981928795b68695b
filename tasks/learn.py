"""Prefect tasks of the training and prediction flows, and the Dask plumbing of prediction.

Each Prefect task wraps one core function. Prediction itself,
:func:`~ecotaxa_core.learn.prediction.predict_chunk_batch`, runs on Dask workers as a
plain function (no Prefect inside workers); :func:`predict_on_dask` submits
every chunk and writes each chunk's predictions from the flow process, in one
transaction per chunk, as the chunks complete.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import numpy as np
from distributed import Client, as_completed
from prefect import task
from prefect.cache_policies import NO_CACHE

from ecotaxa_core.annotation import Prediction, PredictionBatch
from ecotaxa_core.db.models import TrainedModel
from ecotaxa_core.instance import Instance
from ecotaxa_core.learn.prediction import (predict_chunk_batch, predictable_object_ids,
                                           prediction_chunks, prediction_summary,
                                           write_predictions)
from ecotaxa_core.learn.training import train_model
from ecotaxa_core.learn.training_settings import TrainingSettings
from ecotaxa_core.progress import Progress, report
from tasks.retries import ON_TRANSIENT_ERRORS

__all__ = ["train_model_task", "find_predictable_objects", "write_predictions_task",
           "predict_on_dask"]


@task(name="train_model", cache_policy=NO_CACHE)
def train_model_task(inst: Instance, project_id: int, kind: str, feature_sets: Sequence[str],
                     user_id: Optional[int], settings: TrainingSettings,
                     reuse: bool = True) -> TrainedModel:
    return train_model(inst, project_id, kind, feature_sets=feature_sets, user_id=user_id,
                       reuse=reuse,
                       other_project_ids=settings.other_project_ids,
                       categories=settings.categories,
                       max_per_category=settings.max_per_category, seed=settings.seed,
                       test_size=settings.test_size, appear_as=settings.appear_as)


@task(name="predictable_object_ids", cache_policy=NO_CACHE, **ON_TRANSIENT_ERRORS)
def find_predictable_objects(inst: Instance, project_id: int,
                             except_model_id: Optional[int] = None) -> np.ndarray:
    with inst.sessions() as session:
        return predictable_object_ids(session, project_id, except_model_id=except_model_id)


@task(name="write_predictions", cache_policy=NO_CACHE, **ON_TRANSIENT_ERRORS)
def write_predictions_task(inst: Instance, project_id: int,
                           predictions: PredictionBatch | Sequence[Prediction],
                           model_id: int) -> int:
    return write_predictions(inst, project_id, predictions, model_id)


def predict_on_dask(client: Client, inst: Instance, project_id: int, model: TrainedModel,
                    object_ids: np.ndarray, chunk_size: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Predict ``object_ids`` in chunks on Dask; write each chunk as it completes
    (``progress`` hears of the objects written after each). The chunks are those of
    :func:`~ecotaxa_core.learn.prediction.prediction_chunks`: of ``chunk_size``,
    smaller at the start and the end so the writing overlaps the predicting.

    If a chunk fails, the chunks not yet written are cancelled; those already
    written keep their new predictions, the others their old state.
    """
    start = time.perf_counter()
    report(progress, "objects", 0, len(object_ids))  # the rate counts from here
    futures = [client.submit(predict_chunk_batch, str(inst.models_dir), model.id, model.path,
                             inst.features.where, project_id, object_ids[chunk], pure=False)
               for chunk in prediction_chunks(len(object_ids), chunk_size)]
    n_predicted = n_written = n_done = 0
    try:
        for future in as_completed(futures):
            predictions = future.result()
            future.release()
            n_predicted += len(predictions)
            n_written += write_predictions_task(inst, project_id, predictions, model.id)
            n_done += 1
            report(progress, "objects", n_written, len(object_ids))
    finally:
        if n_done < len(futures):
            client.cancel(futures)
    summary = prediction_summary(project_id, model.id, len(object_ids), n_predicted, n_written,
                                 time.perf_counter() - start)
    return {**summary, "n_chunks": len(futures), "chunk_size": chunk_size}
