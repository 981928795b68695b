"""Every stage is declared as a Prefect deployment with typed parameters."""

from __future__ import annotations


def test_each_stage_is_a_deployment_with_typed_parameters():
    from deployments.serve import stage_deployments

    deps = {d.name: d for d in stage_deployments()}
    assert set(deps) == {"import", "features", "train", "predict", "export", "loop"}
    schema = deps["import"].parameter_openapi_schema
    props = schema["properties"] if isinstance(schema, dict) else schema.properties
    assert props["project_id"]["type"] == "integer"
    assert props["create_missing_taxa"]["type"] == "boolean"
    required = schema["required"] if isinstance(schema, dict) else schema.required
    assert set(required) == {"project_id", "path"}
