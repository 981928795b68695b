"""Import flow: an EcoTaxa bundle or a class-folder tree into a project.

Also the recovery flow, which undoes what killed imports left behind (any
import does it for its own project first; this one sweeps every project).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Literal, Optional

from prefect import flow

from ecotaxa_core.import_journal import recover_interrupted_imports
from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance, stage_job
from tasks.importing import import_path_task

ImportMode = Literal["add", "update_metadata", "update_all"]


@flow(name="import", log_prints=True)
def import_flow(project_id: int, path: str, create_missing_taxa: bool = False,
                user_email: Optional[str] = None, taxa_map: Optional[str] = None,
                users_map: Optional[str] = None, create_missing_users: bool = False,
                mode: ImportMode = "add") -> dict[str, Any]:
    """Import ``path`` into project ``project_id``; all or nothing."""
    options = {"create_missing_taxa": create_missing_taxa, "taxa_map": taxa_map,
               "users_map": users_map, "create_missing_users": create_missing_users,
               "mode": mode}
    with open_instance() as inst:
        with inst.sessions() as s:
            user_id = user_for_cli(s, user_email).id
        with stage_job(inst, "import", project_id, {"path": path, **options}) as job:
            job["result"] = import_path_task(inst, project_id, path, user_id, **options)
        return job["result"]


@flow(name="import-recover", log_prints=True)
def import_recover_flow(project_id: Optional[int] = None) -> dict[str, Any]:
    """Undo or finish the imports a dead process left (every project, or one)."""
    with open_instance() as inst:
        return recover_interrupted_imports(inst, project_id).to_dict()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("path")
    parser.add_argument("--create-missing-taxa", action="store_true")
    parser.add_argument("--create-missing-users", action="store_true")
    parser.add_argument("--taxa-map")
    parser.add_argument("--users-map")
    parser.add_argument("--mode", default="add", choices=["add", "update_metadata", "update_all"])
    args = parser.parse_args()
    print(json.dumps(import_flow(args.project_id, args.path, args.create_missing_taxa,
                                 taxa_map=args.taxa_map, users_map=args.users_map,
                                 create_missing_users=args.create_missing_users, mode=args.mode),
                     default=str))
