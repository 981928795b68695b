"""Training flow: plan the models, train each, remember the settings.

The settings (candidates, learning set, held-out fraction, time budget) are
those given, else the project's last training's, else the defaults. With no
candidate named, the plan is the best candidate that the project's features
allow and the time budget fits, with EcoTaxa's baseline beside it
(:func:`ecotaxa_core.learn.training.plan_training`). Each model is trained on
the validated objects, evaluated on a held-out part, refitted on the whole
learning set and registered. The summary names the project's best model, the
one the prediction flow uses by default.

Run it::

    python -m flows.train 1 --candidates classic_rf deep_logreg --max-per-category 5000
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from prefect import flow, get_run_logger

from ecotaxa_core.learn.candidates import Candidate
from ecotaxa_core.learn.registry import best_model, list_models
from ecotaxa_core.learn.training import plan_training
from ecotaxa_core.learn.training_settings import (remember_training_settings,
                                                  remembered_training_settings,
                                                  resolve_training_settings)
from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance, stage_job
from tasks.learn import train_model_task

# Metrics repeated in the summary; the registry keeps them all.
SUMMARY_METRICS = ("evaluation", "accuracy", "balanced_accuracy", "log_loss", "macro_precision",
                   "macro_recall", "plankton_macro_precision", "plankton_macro_recall",
                   "plankton_weighted_precision", "plankton_weighted_recall", "n_train",
                   "n_test", "train_only_categories", "total_seconds")


@flow(name="train", log_prints=True)
def train_flow(project_id: int, candidates: Optional[list[str]] = None,
               max_per_category: Optional[int] = None,
               other_project_ids: Optional[list[int]] = None,
               categories: Optional[list[int]] = None,
               appear_as: Optional[dict[int, int]] = None,
               seed: Optional[int] = None, test_size: Optional[float] = None,
               time_budget_s: Optional[float] = None,
               user_email: Optional[str] = None, again: bool = False) -> dict[str, Any]:
    """Train models on project ``project_id``; returns model ids, metrics and the best id.

    A model trained the same way on the same learning set already is kept, not
    trained again (``reused`` in its entry), unless ``again``.

    Every setting left out (None) is the project's last training's, else the
    default. ``candidates``: ``KIND`` or ``KIND:SET+SET`` each; none: the
    automatic choice within ``time_budget_s``.
    """
    logger = get_run_logger()
    for text in candidates or []:
        Candidate.parse(text)  # an unknown kind fails before any work
    with open_instance() as inst:
        with inst.sessions() as s:
            user_id = user_for_cli(s, user_email).id
            remembered = remembered_training_settings(s, project_id)
        settings, origin = resolve_training_settings(
            remembered, candidates=candidates, max_per_category=max_per_category,
            other_project_ids=other_project_ids, categories=categories, appear_as=appear_as,
            seed=seed, test_size=test_size, time_budget_s=time_budget_s)
        with stage_job(inst, "train", project_id, settings.to_dict()) as job:
            plan = plan_training(inst, project_id, settings)
            for note in plan.notes + plan.skipped:
                logger.warning("%s", note)
            summary: dict[str, Any] = {
                "project_id": project_id, "settings": settings.to_dict(),
                "settings_origin": {k: v for k, v in origin.items() if v != "default"},
                "plan": plan.to_dict(), "models": [], "skipped": plan.skipped}
            with inst.sessions() as s:
                before = {m.id for m in list_models(s, project_id)}
            for planned in plan.models:
                row = train_model_task(inst, project_id, planned.candidate.kind,
                                       planned.feature_sets, user_id, settings,
                                       reuse=not again)
                logger.info("model %d (%s, %s): held-out accuracy %s in %s s", row.id,
                            planned.candidate, planned.role, row.metrics.get("accuracy"),
                            row.metrics.get("total_seconds"))
                if row.id in before:
                    logger.info("model %d was trained on this very learning set already: "
                                "kept, not trained again", row.id)
                summary["models"].append({
                    "model_id": row.id, "reused": row.id in before, "kind": planned.candidate.kind,
                    "candidate": str(planned.candidate), "role": planned.role,
                    "name": row.name, "feature_sets": planned.feature_sets,
                    "metrics": {k: row.metrics.get(k) for k in SUMMARY_METRICS}})
            with inst.sessions.begin() as s:
                summary["best"] = best_model(s, project_id).id if summary["models"] else None
                remember_training_settings(s, project_id, settings)
            job["result"] = summary
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("--candidates", nargs="+", default=None,
                        help="KIND or KIND:SET+SET each (default: automatic choice)")
    parser.add_argument("--max-per-category", type=int, default=None)
    parser.add_argument("--other-project-ids", type=int, nargs="*", default=None)
    parser.add_argument("--time-budget-s", type=float, default=None)
    parser.add_argument("--user-email", default=None)
    args = parser.parse_args(argv)
    return train_flow(project_id=args.project_id, candidates=args.candidates,
                      max_per_category=args.max_per_category,
                      other_project_ids=args.other_project_ids,
                      time_budget_s=args.time_budget_s, user_email=args.user_email)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
