"""Every stage is declared as a Prefect deployment with typed, enforced parameters."""

from __future__ import annotations

from prefect.utilities.callables import parameter_schema


def test_each_stage_is_a_deployment_with_typed_parameters():
    from deployments.serve import STAGE_FLOWS, stage_deployments

    deps = {d.name: d for d in stage_deployments()}
    assert set(deps) == {"import", "features", "train", "predict", "export", "summary", "dwca",
                         "loop"}
    assert all(d.enforce_parameter_schema for d in deps.values())
    flows = {f.name: f for f in STAGE_FLOWS}
    schema = parameter_schema(flows["import"].fn)
    assert schema.properties["project_id"]["type"] == "integer"
    assert schema.properties["create_missing_taxa"]["type"] == "boolean"
    assert set(schema.required) == {"project_id", "path"}
    assert parameter_schema(flows["predict"].fn).required == ["project_id"]
