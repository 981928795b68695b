"""Every stage as a Prefect deployment, served by one process, with the ingest schedules.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve \\
        [--ingest-config ingest.toml]

Then trigger a stage through the Prefect API, for example::

    prefect deployment run 'features/features' -p project_id=1

or from Python with ``prefect.deployments.run_deployment("features/features",
parameters={"project_id": 1})``. With ``--ingest-config`` (see
:mod:`deployments.ingest`), each configured drop folder also gets an
``ingest/<name>`` deployment that runs on its schedule.
"""

from __future__ import annotations

import argparse

from prefect import serve

from ecotaxa_core.settings import Settings

from flows.dwca import dwca_flow
from flows.export import export_flow
from flows.features import features_flow
from flows.fine_tune import fine_tune_flow
from flows.import_bundle import import_flow
from flows.loop import loop_flow
from flows.predict import predict_flow
from flows.repredict import repredict_flow
from flows.summary import summary_flow
from flows.train import train_flow

STAGE_FLOWS = (import_flow, features_flow, fine_tune_flow, train_flow, predict_flow,
               export_flow, summary_flow, dwca_flow, loop_flow)


def stage_deployments(**options):
    """One deployment per stage flow, named after the flow.

    ``options`` go to each ``to_deployment`` (a work pool, the entrypoint type: see
    :mod:`deployments.work_pools`).
    """
    return [f.to_deployment(name=f.name, tags=["ecotaxa"], **options) for f in STAGE_FLOWS]


def scheduled_deployments(settings: Settings | None = None, **options):
    """``repredict/nightly``: projects validated since their newest model learn and predict
    again, on ``ECOTAXA_REPREDICT_CRON`` (none when it is empty: run it by hand)."""
    cron = (settings or Settings()).repredict_cron.strip()
    return [repredict_flow.to_deployment(name="nightly", tags=["ecotaxa"],
                                         **({"cron": cron} if cron else {}), **options)]


def all_deployments(ingest_config: str | None = None, **options):
    """The stage deployments, the nightly re-prediction, and one ingest deployment per
    folder of ``ingest_config``."""
    from deployments.ingest import ingest_deployments

    return (stage_deployments(**options) + scheduled_deployments(**options)
            + (ingest_deployments(ingest_config, **options) if ingest_config else []))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve",
                                     description="Serve the ecotaxa-flow deployments.")
    parser.add_argument("--ingest-config", metavar="FILE",
                        help="TOML (or .json) file of drop folders to watch (deployments.ingest)")
    args = parser.parse_args(argv)
    serve(*all_deployments(args.ingest_config))


if __name__ == "__main__":
    main()
