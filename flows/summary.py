"""Summary flow: abundance, concentration and biovolume per sample (or acquisition) and category."""

from __future__ import annotations

import sys
from typing import Any, Literal, Optional

from prefect import flow

from flows._instance import open_instance, stage_job
from tasks.exporting import export_summary_task


@flow(name="summary", log_prints=True)
def summary_flow(project_id: int, out_dir: str, by: Literal["sample", "acquisition"] = "sample",
                 with_predicted: bool = False,
                 formulas: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Write ``summary_<project>_by_<by>.tsv``; ``formulas`` replace the project's for this run."""
    with open_instance() as inst:
        with stage_job(inst, "summary", project_id,
                       {"out_dir": out_dir, "by": by, "with_predicted": with_predicted,
                        "formulas": formulas}) as job:
            job["result"] = export_summary_task(inst, project_id, out_dir, by, with_predicted,
                                                formulas)
        return job["result"]


if __name__ == "__main__":
    print(summary_flow(int(sys.argv[1]), sys.argv[2],
                       by="acquisition" if "--by-acquisition" in sys.argv else "sample",
                       with_predicted="--with-predicted" in sys.argv))
