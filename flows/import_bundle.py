"""Import flow: an EcoTaxa bundle or a class-folder tree into a project."""

from __future__ import annotations

import sys
from typing import Any, Optional

from prefect import flow

from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance, stage_job
from tasks.importing import import_path_task


@flow(name="import", log_prints=True)
def import_flow(project_id: int, path: str, create_missing_taxa: bool = False,
                user_email: Optional[str] = None) -> dict[str, Any]:
    """Import ``path`` into project ``project_id``; all or nothing."""
    with open_instance() as inst:
        with inst.sessions() as s:
            user_id = user_for_cli(s, user_email).id
        with stage_job(inst, "import", project_id,
                       {"path": path, "create_missing_taxa": create_missing_taxa}) as job:
            job["result"] = import_path_task(inst, project_id, path, user_id, create_missing_taxa)
        return job["result"]


if __name__ == "__main__":
    print(import_flow(int(sys.argv[1]), sys.argv[2], "--create-missing-taxa" in sys.argv))
