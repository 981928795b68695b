"""Taxonomy flows: export and import the tree as a portable file, merge two taxa.

Each flow runs one core function of :mod:`ecotaxa_core.taxonomy_file` or
:mod:`ecotaxa_core.taxonomy_edit` in one transaction (all or nothing) and
records a job. Run as a script::

    python -m flows.taxonomy export taxa.tsv
    python -m flows.taxonomy import taxa.tsv
    python -m flows.taxonomy merge SOURCE_ID TARGET_ID
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from ecotaxa_core.instance import Instance
from ecotaxa_core.taxonomy_edit import merge_taxa
from ecotaxa_core.taxonomy_file import export_taxonomy, import_taxonomy
from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance, stage_job


@task(name="export_taxonomy", cache_policy=NO_CACHE)
def export_taxonomy_task(inst: Instance, path: str) -> dict[str, Any]:
    with inst.sessions() as s:
        return {"path": path, "n_taxa": export_taxonomy(s, path)}


@task(name="import_taxonomy", cache_policy=NO_CACHE)
def import_taxonomy_task(inst: Instance, path: str, user_id: int, dry_run: bool) -> dict[str, Any]:
    with inst.sessions.begin() as s:
        return {"path": path, **import_taxonomy(s, path, user_id, dry_run=dry_run).to_dict()}


@task(name="merge_taxa", cache_policy=NO_CACHE)
def merge_taxa_task(inst: Instance, source_id: int, target_id: int, user_id: int) -> dict[str, Any]:
    with inst.sessions.begin() as s:
        return merge_taxa(s, source_id, target_id, user_id).to_dict()


def _user_id(inst: Instance, user_email: Optional[str]) -> int:
    with inst.sessions() as s:
        return user_for_cli(s, user_email).id


@flow(name="taxonomy-export", log_prints=True)
def export_taxonomy_flow(path: str) -> dict[str, Any]:
    """Write the whole taxonomy tree to the portable file ``path``."""
    with open_instance() as inst:
        with stage_job(inst, "taxonomy_export", None, {"path": path}) as job:
            job["result"] = export_taxonomy_task(inst, path)
        return job["result"]


@flow(name="taxonomy-import", log_prints=True)
def import_taxonomy_flow(path: str, user_email: Optional[str] = None,
                         dry_run: bool = False) -> dict[str, Any]:
    """Load a taxonomy file, keeping its ids; refuses the whole file on any problem."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        with stage_job(inst, "taxonomy_import", None, {"path": path, "dry_run": dry_run}) as job:
            job["result"] = import_taxonomy_task(inst, path, user_id, dry_run)
        return job["result"]


@flow(name="taxonomy-merge", log_prints=True)
def merge_taxa_flow(source_id: int, target_id: int, user_email: Optional[str] = None) -> dict[str, Any]:
    """Move every object and child of taxon ``source_id`` to ``target_id`` (history kept)."""
    with open_instance() as inst:
        user_id = _user_id(inst, user_email)
        with stage_job(inst, "taxonomy_merge", None,
                       {"source_id": source_id, "target_id": target_id}) as job:
            job["result"] = merge_taxa_task(inst, source_id, target_id, user_id)
        return job["result"]


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "export" and len(args) == 1:
        print(json.dumps(export_taxonomy_flow(args[0])))
    elif command == "import" and len(args) == 1:
        print(json.dumps(import_taxonomy_flow(args[0])))
    elif command == "merge" and len(args) == 2:
        print(json.dumps(merge_taxa_flow(int(args[0]), int(args[1]))))
    else:
        sys.exit(__doc__)
