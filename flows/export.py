"""Export flow: the project's EcoTaxa TSV bundle and per-sample category counts."""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from flows._instance import open_instance, stage_job
from tasks.exporting import export_project_task


@flow(name="export", log_prints=True)
def export_flow(project_id: int, out_dir: str, with_images: bool = True,
                split_by_sample: bool = False, again: bool = False) -> dict[str, Any]:
    """Write ``ecotaxa_export_<project>_<time>.zip`` (re-importable) and ``counts_<project>.tsv``.

    When ``out_dir`` holds this project's last export with the same options and
    content, nothing is written (``reused`` in the result), unless ``again``.
    """
    with open_instance() as inst:
        with stage_job(inst, "export", project_id,
                       {"out_dir": out_dir, "with_images": with_images,
                        "split_by_sample": split_by_sample}) as job:
            job["result"] = export_project_task(inst, project_id, out_dir, with_images,
                                                split_by_sample, reuse=not again)
        return job["result"]


if __name__ == "__main__":
    print(export_flow(int(sys.argv[1]), sys.argv[2], with_images="--no-images" not in sys.argv,
                      split_by_sample="--split-by-sample" in sys.argv))
