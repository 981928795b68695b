"""Darwin Core Archive flow: events, occurrences and measurements for GBIF/OBIS."""

from __future__ import annotations

import sys
from typing import Any, Optional

from prefect import flow

from flows._instance import open_instance, stage_job
from tasks.exporting import export_dwca_task


@flow(name="dwca", log_prints=True)
def dwca_flow(project_id: int, out_dir: str, title: Optional[str] = None,
              contact_name: Optional[str] = None, contact_email: Optional[str] = None,
              organization: Optional[str] = None, license: Optional[str] = None,
              abstract: Optional[str] = None, citation: Optional[str] = None,
              with_predicted: bool = False) -> dict[str, Any]:
    """Write ``dwca_<project>_<time>.zip``; metadata not given come from the project's settings."""
    metadata = dict(title=title, contact_name=contact_name, contact_email=contact_email,
                    organization=organization, license=license, abstract=abstract,
                    citation=citation)
    with open_instance() as inst:
        with stage_job(inst, "dwca", project_id,
                       {"out_dir": out_dir, "with_predicted": with_predicted, **metadata}) as job:
            job["result"] = export_dwca_task(inst, project_id, out_dir, metadata,
                                             with_predicted)
        return job["result"]


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[3:] if a.startswith("--") and "=" in a)
    print(dwca_flow(int(sys.argv[1]), sys.argv[2],
                    contact_email=args.get("--contact-email"), license=args.get("--license"),
                    title=args.get("--title"), with_predicted="--with-predicted" in sys.argv))
