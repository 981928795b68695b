"""Every stage as a Prefect deployment, served by one process.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve

Then trigger a stage through the Prefect API, for example::

    prefect deployment run 'features/features' -p project_id=1

or from Python with ``prefect.deployments.run_deployment("features/features",
parameters={"project_id": 1})``.
"""

from __future__ import annotations

from prefect import serve

from flows.export import export_flow
from flows.features import features_flow
from flows.import_bundle import import_flow
from flows.loop import loop_flow
from flows.predict import predict_flow
from flows.train import train_flow

STAGE_FLOWS = (import_flow, features_flow, train_flow, predict_flow, export_flow, loop_flow)


def stage_deployments():
    """One deployment per stage flow, named after the flow."""
    return [f.to_deployment(name=f.name, tags=["ecotaxa"]) for f in STAGE_FLOWS]


if __name__ == "__main__":
    serve(*stage_deployments())
