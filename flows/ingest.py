"""Instrument ingest flow: import every new bundle of a watched drop folder, exactly once.

Scheduled by the deployments of :mod:`deployments.ingest`; one run is one pass
(see :mod:`ecotaxa_core.ingest` for the folder layout and the claim protocol).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from prefect import flow

from ecotaxa_core.users import user_for_cli
from flows._instance import open_instance
from tasks.ingest import ingest_drop_folder_task


@flow(name="ingest", log_prints=True)
def ingest_flow(drop_folder: str, project_id: int, create_missing_taxa: bool = False,
                settle_seconds: float = 10.0, require_ready_marker: bool = False,
                user_email: Optional[str] = None,
                create_missing_users: bool = False) -> dict[str, Any]:
    """Import the complete new bundles dropped in ``drop_folder`` into ``project_id``.

    Imported bundles move to ``done/``, refused ones to ``quarantine/`` with an
    ``.error.txt`` report; bundles still being copied wait for a later run.
    """
    with open_instance() as inst:
        with inst.sessions() as s:
            user_id = user_for_cli(s, user_email).id
        return ingest_drop_folder_task(inst, drop_folder, project_id, user_id,
                                       create_missing_taxa, settle_seconds, require_ready_marker,
                                       create_missing_users)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="One ingest pass over a drop folder.")
    parser.add_argument("drop_folder")
    parser.add_argument("project_id", type=int)
    parser.add_argument("--create-missing-taxa", action="store_true")
    parser.add_argument("--create-missing-users", action="store_true")
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--require-ready-marker", action="store_true")
    args = parser.parse_args()
    print(json.dumps(ingest_flow(args.drop_folder, args.project_id, args.create_missing_taxa,
                                 args.settle_seconds, args.require_ready_marker,
                                 create_missing_users=args.create_missing_users), indent=1))
