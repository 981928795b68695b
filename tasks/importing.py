"""Prefect tasks for imports: each wraps one core function (exports: tasks/exporting.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

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
                     create_missing_taxa: bool, taxa_map: str | None = None,
                     users_map: str | None = None, create_missing_users: bool = False,
                     mode: str = "add") -> dict[str, Any]:
    result = import_path(inst, project_id, Path(path), user_id=user_id,
                         create_missing_taxa=create_missing_taxa,
                         taxa_map=Path(taxa_map) if taxa_map else None,
                         users_map=Path(users_map) if users_map else None,
                         create_missing_users=create_missing_users, mode=mode,
                         progress=_progress_logger("import (images checked + stored)"))
    return result.to_dict()
