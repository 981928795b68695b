"""Prediction flow: predict a project's unclassified and predicted objects on Dask.

The model defaults to the project's best one (highest held-out accuracy). The
predictable objects are split into chunks of ``ECOTAXA_PREDICT_CHUNK_SIZE``; each chunk
is predicted on a Dask worker (``tasks.dask_cluster``: an embedded
LocalCluster, or ``ECOTAXA_DASK_SCHEDULER_ADDRESS``) and written by this flow
in one transaction as soon as it completes. Validated and dubious objects are
never touched.

Run it::

    python -m flows.predict 1 --model-id 3
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from prefect import flow, get_run_logger

from ecotaxa_core.errors import ModelNotFound
from ecotaxa_core.learn.learning_set import FeatureSetUnavailable
from ecotaxa_core.learn.prediction import (count_above_threshold, n_predicted_by,
                                           prediction_summary)
from ecotaxa_core.learn.registry import best_model, get_model
from flows._instance import open_instance, stage_job
from flows._progress import RunProgress
from tasks.dask_cluster import dask_client
from tasks.learn import find_predictable_objects, predict_on_dask


@flow(name="predict", log_prints=True)
def predict_flow(project_id: int, model_id: Optional[int] = None,
                 again: bool = False) -> dict[str, Any]:
    """Predict project ``project_id`` with ``model_id`` (default: its best model).

    Objects that model predicted already keep their prediction (a re-run with
    nothing new does nothing), unless ``again``.
    """
    logger = get_run_logger()
    with open_instance() as inst, stage_job(inst, "predict", project_id,
                                            {"model_id": model_id}) as job:
        with inst.sessions() as s:
            model = get_model(s, model_id) if model_id is not None else best_model(s, project_id)
        # Fail here, not on every worker, when the files or the features are missing.
        if not (inst.models_dir / model.path).is_file():
            raise ModelNotFound(f"model {model.id}: {inst.models_dir / model.path} is missing")
        for feature_set in model.feature_sets:
            if not inst.features.exists(project_id, feature_set):
                raise FeatureSetUnavailable(
                    f"model {model.id} needs feature set {feature_set!r}, which project "
                    f"{project_id} does not have; compute it first")
        object_ids = find_predictable_objects(inst, project_id,
                                              except_model_id=None if again else model.id)
        with inst.sessions() as s:
            already = 0 if again else n_predicted_by(s, project_id, model.id)
        chunk_size = inst.settings.predict_chunk_size
        logger.info("predicting %d objects of project %d with model %d (%s), chunks of %d",
                    len(object_ids), project_id, model.id, model.kind, chunk_size)
        if len(object_ids):
            with dask_client(inst.settings) as client:
                summary = predict_on_dask(client, inst, project_id, model, object_ids,
                                          chunk_size,
                                          progress=RunProgress("predict", logger.info))
        else:
            summary = {**prediction_summary(project_id, model.id, 0, 0, 0, 0.0),
                       "n_chunks": 0, "chunk_size": chunk_size}
        summary["model_kind"] = model.kind
        summary["n_already_predicted"] = already
        summary["n_above_threshold"] = count_above_threshold(inst, project_id, model.id)
        job["result"] = summary
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("--model-id", type=int, default=None)
    parser.add_argument("--again", action="store_true",
                        help="predict again the objects the model predicted already")
    args = parser.parse_args(argv)
    return predict_flow(project_id=args.project_id, model_id=args.model_id, again=args.again)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
