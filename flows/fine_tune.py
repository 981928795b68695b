"""Fine-tuning flow: train a backbone + 600 bottleneck on validated objects, register it.

The network (EfficientNet-Lite0, ImageNet, by default) is fine-tuned on the
validated objects of the project (and of ``other_project_ids``; only
``categories`` when given, each category of ``appear_as`` learned as its
target, as in training), with
EcoTaxa's augmentations, class weights and early stopping on a validation
split (:mod:`ecotaxa_core.learn.fine_tuning`). Its feature part becomes the
backbone ``name``: feature set ``deep_NAME``, 600 floats per object. With
``compute_features`` the features flow then fills ``deep_NAME`` (and its
PCA-50) for the project, ready for ``ecotaxa train``.

Run it::

    python -m flows.fine_tune 1 mine --epochs 10 --input-size 128 --device auto --compute-features
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from prefect import flow, get_run_logger

from ecotaxa_core.features.backbones import FEATURE_SET_PREFIX
from ecotaxa_core.learn.fine_tuning import DEFAULT_BASE, FineTuningSettings
from flows._instance import open_instance, stage_job
from tasks.fine_tuning import fine_tune_backbone


@flow(name="fine_tune", log_prints=True)
def fine_tune_flow(project_id: int, name: str, epochs: int = 10, input_size: int = 128,
                   device: str = "auto", max_per_category: Optional[int] = None,
                   time_budget_s: Optional[float] = None, patience: int = 3,
                   batch_size: int = 64, learning_rate: float = 1e-3, base: str = DEFAULT_BASE,
                   validation_fraction: float = 0.1, seed: int = 0,
                   other_project_ids: list[int] = [], categories: Optional[list[int]] = None,
                   appear_as: Optional[dict[int, int]] = None,
                   compute_features: bool = False) -> dict[str, Any]:
    """Fine-tune backbone ``name`` on project ``project_id``; returns its summary.

    With ``compute_features``, the summary's ``features`` holds the features
    flow's result for ``deep_NAME``.
    """
    logger = get_run_logger()
    # Bad settings fail here, before a job is recorded.
    settings = FineTuningSettings(base=base, input_size=input_size, epochs=epochs,
                                  batch_size=batch_size, learning_rate=learning_rate,
                                  patience=patience, time_budget_s=time_budget_s,
                                  validation_fraction=validation_fraction, seed=seed,
                                  device=device)
    params = {"name": name, "settings": settings.to_dict(), "max_per_category": max_per_category,
              "other_project_ids": list(other_project_ids),
              "categories": None if categories is None else list(categories),
              "appear_as": None if appear_as is None else {str(k): int(v)
                                                           for k, v in appear_as.items()},
              "compute_features": compute_features}
    with open_instance() as inst, stage_job(inst, "fine_tune", project_id, params) as job:
        summary = fine_tune_backbone(inst, project_id, name, settings,
                                     other_project_ids=list(other_project_ids),
                                     categories=categories, max_per_category=max_per_category,
                                     appear_as=appear_as)
        logger.info("backbone %s registered (%s): validation accuracy %s, log loss %s",
                    name, summary["weights"], summary["validation"]["accuracy"],
                    summary["validation"]["log_loss"])
        job["result"] = summary
    if compute_features:
        from flows.features import features_flow

        summary = {**summary, "features": features_flow(
            project_id=project_id, feature_sets=[FEATURE_SET_PREFIX + name])}
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("name", help="the new backbone (feature set deep_NAME)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--max-per-category", type=int, default=None)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base", default=DEFAULT_BASE)
    parser.add_argument("--other-project-ids", type=int, nargs="*", default=[])
    parser.add_argument("--compute-features", action="store_true")
    args = parser.parse_args(argv)
    return fine_tune_flow(project_id=args.project_id, name=args.name, epochs=args.epochs,
                          input_size=args.input_size, device=args.device,
                          max_per_category=args.max_per_category,
                          time_budget_s=args.time_budget, patience=args.patience,
                          batch_size=args.batch_size, base=args.base,
                          other_project_ids=args.other_project_ids,
                          compute_features=args.compute_features)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
