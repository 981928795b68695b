"""Prefect tasks for import and export: each wraps one core function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ecotaxa_core.export import export_project
from ecotaxa_core.importer import import_path
from ecotaxa_core.instance import Instance


def _progress_logger(label: str, every: float = 0.1):
    logger = get_run_logger()
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        frac = done / total if total else 1.0
        if frac >= state["next"] or done == total:
            logger.info("%s: %d / %d (%.0f %%)", label, done, total, 100 * frac)
            state["next"] = frac + every

    return progress


@task(name="import_path", cache_policy=NO_CACHE)
def import_path_task(inst: Instance, project_id: int, path: str, user_id: int | None,
                     create_missing_taxa: bool) -> dict[str, Any]:
    result = import_path(inst, project_id, Path(path), user_id=user_id,
                         create_missing_taxa=create_missing_taxa,
                         progress=_progress_logger("import (images checked + stored)"))
    return result.to_dict()


@task(name="export_project", cache_policy=NO_CACHE)
def export_project_task(inst: Instance, project_id: int, out_dir: str,
                        with_images: bool) -> dict[str, Any]:
    return export_project(inst, project_id, Path(out_dir), with_images=with_images).to_dict()
