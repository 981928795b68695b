"""Pipeline stages started from the dashboard, as runs of their Prefect deployments.

A button asks :func:`start_stage`: the core checks the user's right
(:func:`ecotaxa_core.rights.require_stage`), then the stage's deployment
(``features/features``, ``train/train``, ``predict/predict``,
``export/export``, served by ``python -m deployments.serve``) gets a flow run
through the Prefect API, tagged with the user and project. :func:`run_states`
reads the runs back for the page's live list, with the progress each run
publishes (its latest progress artifact: percent, objects done, rate, time
left; see ``flows._progress``); a run waits in ``Scheduled`` until a runner
serving the deployments picks it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from ecotaxa_core.db.models import User
from ecotaxa_core.import_inbox import inbox_entry
from ecotaxa_core.instance import Instance
from ecotaxa_core.reimport import MODES
from ecotaxa_core.rights import require_stage

__all__ = ["StartedRun", "start_stage", "run_states", "STAGES"]

STAGES = ("features", "train", "predict", "export")  # one button each; "import" has its form
IMPORT_MODES = MODES  # the core's re-import modes


@dataclass(frozen=True)
class StartedRun:
    id: str
    name: str
    stage: str
    state: str  # Prefect's state name: Scheduled, Pending, Running, Completed, Failed ...
    message: str | None = None
    started: datetime | None = None
    progress: float | None = None  # percent of the step under way, from the run's artifact
    progress_text: str | None = None  # "1,200 of 5,000 objects (24 %), 210 per s, ..."


def start_stage(instance: Instance, user_id: int, project_id: int, stage: str, *,
                inbox_name: str | None = None, mode: str = "add",
                create_missing_taxa: bool = False) -> StartedRun:
    """Start ``stage`` on the project through its Prefect deployment; returns the new run.

    ``import`` takes an entry of the import inbox (``inbox_name``, see
    :mod:`ecotaxa_core.import_inbox`), its ``mode`` and whether unknown
    categories are created; the user is recorded as the importer.
    """
    from prefect.deployments import run_deployment

    with instance.sessions() as session:
        require_stage(session, user_id, project_id, stage)
        email = session.get(User, int(user_id)).email if stage == "import" else None
    parameters: dict = {"project_id": int(project_id)}
    if stage == "import":
        if mode not in IMPORT_MODES:
            raise ValueError(f"unknown import mode {mode!r}; use one of {', '.join(IMPORT_MODES)}")
        path = inbox_entry(instance.settings.imports_dir, inbox_name or "")
        parameters.update(path=str(path), mode=mode, user_email=email,
                          create_missing_taxa=bool(create_missing_taxa))
    elif stage == "export":
        parameters["out_dir"] = str(
            (instance.settings.exports_dir / f"project_{int(project_id)}").resolve())
    run = run_deployment(f"{stage}/{stage}", parameters=parameters, timeout=0,
                         tags=[f"project:{int(project_id)}", f"user:{int(user_id)}", "dashboard"])
    return StartedRun(str(run.id), run.name, stage, run.state.name if run.state else "Scheduled",
                      started=run.expected_start_time)


def run_states(runs: list[StartedRun]) -> list[StartedRun]:
    """The same runs with their state and progress now (two API calls per run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId,
                                                ArtifactFilterType)
    from prefect.client.schemas.sorting import ArtifactSort

    out = []
    with get_client(sync_client=True) as client:
        for r in runs:
            fr = client.read_flow_run(UUID(r.id))
            state = fr.state
            latest = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(r.id)]),
                    type=ArtifactFilterType(any_=["progress"])),
                sort=ArtifactSort.UPDATED_DESC, limit=1)
            progress = float(latest[0].data) if latest and latest[0].data is not None else None
            out.append(StartedRun(r.id, r.name, r.stage, state.name if state else "Unknown",
                                  state.message if state else None, r.started, progress,
                                  latest[0].description if latest else None))
    return out
