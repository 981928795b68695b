"""Prefect tasks for exports: each wraps one core function and returns its JSON-able summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ecotaxa_core.dwca import export_dwca
from ecotaxa_core.export import export_project
from ecotaxa_core.instance import Instance
from ecotaxa_core.summaries import export_summary


@task(name="export_project", cache_policy=NO_CACHE)
def export_project_task(inst: Instance, project_id: int, out_dir: str, with_images: bool,
                        split_by_sample: bool = False, reuse: bool = True) -> dict[str, Any]:
    logger = get_run_logger()
    result = export_project(inst, project_id, Path(out_dir), with_images=with_images,
                            split_by_sample=split_by_sample, reuse=reuse,
                            progress=lambda n: logger.info("export: %d objects written", n))
    return result.to_dict()


@task(name="export_summary", cache_policy=NO_CACHE)
def export_summary_task(inst: Instance, project_id: int, out_dir: str, by: str,
                        with_predicted: bool,
                        formulas: Mapping[str, str] | None) -> dict[str, Any]:
    result = export_summary(inst, project_id, Path(out_dir), by=by,
                            with_predicted=with_predicted, formulas=formulas)
    for warning in result.warnings:
        get_run_logger().warning(warning)
    return result.to_dict()


@task(name="export_dwca", cache_policy=NO_CACHE)
def export_dwca_task(inst: Instance, project_id: int, out_dir: str,
                     metadata: Mapping[str, str | None], with_predicted: bool) -> dict[str, Any]:
    result = export_dwca(inst, project_id, Path(out_dir), with_predicted=with_predicted,
                         **metadata)
    for warning in result.warnings:
        get_run_logger().warning(warning)
    return result.to_dict()
