"""Prefect task for instrument ingest: one pass over a drop folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from ecotaxa_core.importer import import_path
from ecotaxa_core.ingest import ingest_drop_folder
from ecotaxa_core.instance import Instance
from ecotaxa_core.jobs import recorded_job


@task(name="ingest_drop_folder", cache_policy=NO_CACHE)
def ingest_drop_folder_task(inst: Instance, drop_folder: str, project_id: int, user_id: int | None,
                            create_missing_taxa: bool, settle_seconds: float,
                            require_ready_marker: bool, create_missing_users: bool = False) -> dict[str, Any]:
    """Import the ready bundles of ``drop_folder``; each import is a job of the project."""
    logger = get_run_logger()
    run_id = flow_run.get_id()

    def run_import(bundle: Path) -> dict[str, Any]:
        logger.info("importing %s into project %d", bundle.name, project_id)
        params = {"path": str(bundle), "drop_folder": drop_folder,
                  "create_missing_taxa": create_missing_taxa,
                  "create_missing_users": create_missing_users}
        with recorded_job(inst, "import", project_id, params, user_id=user_id,
                          flow_run_id=str(run_id) if run_id else None) as job:
            job["result"] = import_path(inst, project_id, bundle, user_id=user_id,
                                        create_missing_taxa=create_missing_taxa,
                                        create_missing_users=create_missing_users).to_dict()
        return job["result"]

    summary = ingest_drop_folder(inst, drop_folder, project_id, user_id=user_id,
                                 create_missing_taxa=create_missing_taxa,
                                 create_missing_users=create_missing_users,
                                 settle_seconds=settle_seconds,
                                 require_ready_marker=require_ready_marker, run_import=run_import)
    if summary.busy:
        logger.info("%s: another ingest pass is working on it; nothing done", drop_folder)
    for b in summary.bundles:
        if b.status == "quarantined":
            logger.warning("%s quarantined: %s (report: %s.error.txt)", b.name,
                           b.reason.split("\n", 1)[0], b.path)
        elif b.status in ("imported", "already_imported"):
            logger.info("%s %s: %s objects, now %s", b.name, b.status.replace("_", " "),
                        (b.result or {}).get("n_objects"), b.path)
        else:
            logger.info("%s %s: %s", b.name, b.status.replace("_", " "), b.reason)
    return summary.to_dict()
