"""Training flow: train each classifier kind whose features the project has.

Each kind is trained on the project's validated objects (and those of
``other_project_ids``), evaluated on a held-out part, refitted on the whole
learning set and registered. A kind whose default feature sets are missing is
skipped with the reason. The summary names the project's best model, the one
the prediction flow uses by default.

Run it::

    python -m flows.train 1 --kinds classic_rf deep_logreg --max-per-category 5000
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from prefect import flow, get_run_logger

from ecotaxa_core.learn.classifiers import (CLASSIFIER_KINDS, DEFAULT_FEATURE_SETS,
                                            default_feature_sets)
from ecotaxa_core.learn.registry import best_model
from ecotaxa_core.learn.training import common_feature_sets
from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance, stage_job
from tasks.learn import train_model_task

DEFAULT_KINDS = ["classic_rf", "deep_logreg"]
# Metrics repeated in the summary; the registry keeps them all.
SUMMARY_METRICS = ("evaluation", "accuracy", "balanced_accuracy", "log_loss", "macro_precision",
                   "macro_recall", "plankton_macro_precision", "plankton_macro_recall", "n_train",
                   "n_test", "train_only_categories", "total_seconds")


@flow(name="train", log_prints=True)
def train_flow(project_id: int, kinds: list[str] = DEFAULT_KINDS,
               max_per_category: Optional[int] = None, other_project_ids: list[int] = [],
               user_email: Optional[str] = None) -> dict[str, Any]:
    """Train ``kinds`` on project ``project_id``; returns model ids, metrics and the best id."""
    logger = get_run_logger()
    for kind in kinds:
        default_feature_sets(kind, [])  # an unknown kind fails before any work
    params = {"kinds": list(kinds), "max_per_category": max_per_category,
              "other_project_ids": list(other_project_ids)}
    with open_instance() as inst, stage_job(inst, "train", project_id, params) as job:
        with inst.sessions() as s:
            user_id = user_for_cli(s, user_email).id
        available = common_feature_sets(inst, [project_id, *other_project_ids])
        summary: dict[str, Any] = {"project_id": project_id, "models": [], "skipped": []}
        for kind in kinds:
            feature_sets = default_feature_sets(kind, available)
            if not feature_sets:
                reason = (f"{kind}: needs feature set {' or '.join(DEFAULT_FEATURE_SETS[kind])}, "
                          f"project {project_id} has {', '.join(available) or 'none'}"
                          + (" in common with the other projects" if other_project_ids else ""))
                logger.warning("skipped %s", reason)
                summary["skipped"].append(reason)
                continue
            row = train_model_task(inst, project_id, kind, feature_sets, user_id,
                                   list(other_project_ids), max_per_category)
            logger.info("model %d (%s on %s): held-out accuracy %s", row.id, kind,
                        "+".join(feature_sets), row.metrics.get("accuracy"))
            summary["models"].append({
                "model_id": row.id, "kind": kind, "name": row.name, "feature_sets": feature_sets,
                "metrics": {k: row.metrics.get(k) for k in SUMMARY_METRICS}})
        with inst.sessions() as s:
            summary["best"] = best_model(s, project_id).id if summary["models"] else None
        job["result"] = summary
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("--kinds", nargs="+", default=DEFAULT_KINDS,
                        help=f"among {', '.join(CLASSIFIER_KINDS)}")
    parser.add_argument("--max-per-category", type=int, default=None)
    parser.add_argument("--other-project-ids", type=int, nargs="*", default=[])
    parser.add_argument("--user-email", default=None)
    args = parser.parse_args(argv)
    return train_flow(project_id=args.project_id, kinds=args.kinds,
                      max_per_category=args.max_per_category,
                      other_project_ids=args.other_project_ids, user_email=args.user_email)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
