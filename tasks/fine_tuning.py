"""Prefect task of the fine-tuning flow: one call of the core fine-tuning.

The training runs in the flow's process (on its GPU when there is one): it is
one long computation over images held in memory, not chunk-sized work for Dask.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ecotaxa_core.instance import Instance
from ecotaxa_core.learn.fine_tuning import FineTuningSettings, fine_tune

__all__ = ["fine_tune_backbone"]


@task(name="fine_tune", cache_policy=NO_CACHE)
def fine_tune_backbone(inst: Instance, project_id: int, name: str,
                       settings: FineTuningSettings, other_project_ids: Sequence[int] = (),
                       categories: Optional[Sequence[int]] = None,
                       max_per_category: Optional[int] = None,
                       appear_as: Optional[Mapping[int, int]] = None) -> dict[str, Any]:
    """Fine-tune and register backbone ``name``; its summary (JSON-able)."""
    logger = get_run_logger()
    result = fine_tune(inst, project_id, name, settings, other_project_ids=other_project_ids,
                       categories=categories, max_per_category=max_per_category,
                       appear_as=appear_as, log=logger.info)
    return result.summary()
