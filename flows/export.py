"""Export flow: the project's EcoTaxa TSV bundle and per-sample category counts."""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from flows._instance import open_instance, stage_job
from tasks.importing import export_project_task


@flow(name="export", log_prints=True)
def export_flow(project_id: int, out_dir: str, with_images: bool = True) -> dict[str, Any]:
    with open_instance() as inst:
        with stage_job(inst, "export", project_id,
                       {"out_dir": out_dir, "with_images": with_images}) as job:
            job["result"] = export_project_task(inst, project_id, out_dir, with_images)
        return job["result"]


if __name__ == "__main__":
    print(export_flow(int(sys.argv[1]), sys.argv[2]))
