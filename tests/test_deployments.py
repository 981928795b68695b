"""Every stage is declared as a Prefect deployment with typed, enforced parameters."""

from __future__ import annotations

from prefect.utilities.callables import parameter_schema


def test_each_stage_is_a_deployment_with_typed_parameters():
    from deployments.serve import STAGE_FLOWS, stage_deployments

    deps = {d.name: d for d in stage_deployments()}
    assert set(deps) == {"import", "features", "fine_tune", "train", "predict", "export",
                         "summary", "dwca", "loop"}
    assert all(d.enforce_parameter_schema for d in deps.values())
    flows = {f.name: f for f in STAGE_FLOWS}
    schema = parameter_schema(flows["import"].fn)
    assert schema.properties["project_id"]["type"] == "integer"
    assert schema.properties["create_missing_taxa"]["type"] == "boolean"
    assert set(schema.required) == {"project_id", "path"}
    assert parameter_schema(flows["predict"].fn).required == ["project_id"]


def test_the_nightly_repredict_deployment_runs_on_its_cron_unless_it_is_empty():
    from deployments.serve import all_deployments, scheduled_deployments
    from ecotaxa_core.settings import Settings

    [nightly] = scheduled_deployments(Settings(repredict_cron="30 3 * * *"))
    assert (nightly.name, nightly.flow_name) == ("nightly", "repredict")
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "30 3 * * *"
    [unscheduled] = scheduled_deployments(Settings(repredict_cron=""))
    assert not unscheduled.schedules
    assert "nightly" in {d.name for d in all_deployments()}
