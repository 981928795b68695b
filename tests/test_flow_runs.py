"""Stages started from the dashboard become runs of their deployments on a real Prefect API."""

from __future__ import annotations

import pytest

from dashboards.flow_runs import run_states, start_stage
from ecotaxa_core.db.models import Role
from ecotaxa_core.errors import PermissionDenied
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.users import create_user


@pytest.fixture
def registered(prefect_server):
    """The predict and export deployments, registered (not served: runs wait in Scheduled)."""
    from flows.export import export_flow
    from flows.import_bundle import import_flow
    from flows.predict import predict_flow

    for flow in (predict_flow, export_flow, import_flow):
        flow.to_deployment(name=flow.name, tags=["ecotaxa"]).apply()


def test_a_manager_starts_a_stage_others_are_refused(sqlite_instance, registered):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "runs").id
        users = {r: create_user(s, f"{r}@example.org", r, "pw") for r in ("manager", "annotator",
                                                                          "visitor")}
        s.flush()
        for role, u in users.items():
            set_member(s, pid, u.id, Role(role))
        users = {r: u.id for r, u in users.items()}

    run = start_stage(inst, users["manager"], pid, "predict")
    [now] = run_states([run])
    assert (now.id, now.stage, now.state) == (run.id, "predict", "Scheduled")

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(now.id)
        deployment = client.read_deployment(stored.deployment_id)
    assert deployment.name == "predict" and stored.parameters == {"project_id": pid}
    assert {f"project:{pid}", f"user:{users['manager']}", "dashboard"} <= set(stored.tags)

    for who in ("annotator", "visitor"):
        with pytest.raises(PermissionDenied, match="may not import"):
            start_stage(inst, users[who], pid, "predict")
    export = start_stage(inst, users["visitor"], pid, "export")  # viewing is enough to export
    with get_client(sync_client=True) as client:
        params = client.read_flow_run(export.id).parameters
    assert params == {"project_id": pid,
                      "out_dir": str((inst.settings.exports_dir / f"project_{pid}").resolve())}
    with pytest.raises(ValueError, match="unknown stage"):
        start_stage(inst, users["manager"], pid, "drop_tables")


def test_an_import_starts_on_an_inbox_entry_as_the_manager(sqlite_instance, registered):
    from ecotaxa_core.import_inbox import NotInInbox

    inst = sqlite_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "imports").id
        manager = create_user(s, "boss@example.org", "boss", "pw")
        annotator = create_user(s, "ann@example.org", "ann", "pw")
        s.flush()
        set_member(s, pid, manager.id, Role.MANAGER)
        set_member(s, pid, annotator.id, Role.ANNOTATOR)
        manager, annotator = manager.id, annotator.id
    (inst.settings.imports_dir / "cruise_7").mkdir(parents=True)

    run = start_stage(inst, manager, pid, "import", inbox_name="cruise_7", mode="update_all",
                      create_missing_taxa=True)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        params = client.read_flow_run(run.id).parameters
    assert params == {"project_id": pid,
                      "path": str((inst.settings.imports_dir / "cruise_7").resolve()),
                      "mode": "update_all", "user_email": "boss@example.org",
                      "create_missing_taxa": True}
    with pytest.raises(NotInInbox):
        start_stage(inst, manager, pid, "import", inbox_name="../ecotaxa.db")
    with pytest.raises(ValueError, match="unknown import mode"):
        start_stage(inst, manager, pid, "import", inbox_name="cruise_7", mode="replace")
    with pytest.raises(PermissionDenied, match="may not import"):
        start_stage(inst, annotator, pid, "import", inbox_name="cruise_7")
