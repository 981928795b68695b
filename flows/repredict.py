"""Nightly re-prediction: train again, then predict, each project validated since its newest model.

Served as the ``repredict/nightly`` deployment on the ``ECOTAXA_REPREDICT_CRON``
schedule (``0 2 * * *``: 02:00 every night; empty: not scheduled). Each
project trains with its remembered training settings, then predicts with its
best model. One project's failure does not stop the others; the run fails at
the end, naming them.

Run it::

    python -m flows.repredict            # the projects due
    python -m flows.repredict 3 7        # these projects, due or not
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from prefect import flow, get_run_logger

from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.learn.retraining_due import projects_due_for_retraining
from flows._instance import open_instance
from flows.predict import predict_flow
from flows.train import train_flow


@flow(name="repredict", log_prints=True)
def repredict_flow(project_ids: Optional[list[int]] = None) -> dict[str, Any]:
    """Train then predict ``project_ids`` (default: the projects validated since their
    newest model); returns, per project, the new best model and the objects predicted."""
    logger = get_run_logger()
    if project_ids is None:
        with open_instance() as inst, inst.sessions() as s:
            project_ids = projects_due_for_retraining(s)
    logger.info("re-predicting projects %s", project_ids or "(none due)")
    done: dict[int, dict[str, Any]] = {}
    failed: dict[int, str] = {}
    for pid in project_ids:
        try:
            trained = train_flow(project_id=pid)
            predicted = predict_flow(project_id=pid, model_id=trained["best"])
        except Exception as error:  # the other projects still get their turn
            logger.error("project %d: %s", pid, error)
            failed[pid] = f"{type(error).__name__}: {error}"
            continue
        done[pid] = {"model_id": trained["best"], "n_predicted": predicted["n_predicted"]}
    if failed:
        raise EcoTaxaError(f"re-prediction failed for projects {sorted(failed)}: {failed}; "
                           f"done: {sorted(done)}")
    return {"projects": done}


if __name__ == "__main__":
    print(repredict_flow([int(a) for a in sys.argv[1:]] or None))
