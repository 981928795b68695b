"""The deployments on Prefect work pools, for workers on other hosts (a GPU host).

``deployments.serve`` (what ``ecotaxa up`` starts) runs every flow run in one
process on this machine. To spread the work over hosts, register the same
deployments on two work pools of Prefect's ``process`` type, then start a worker
for each pool on the hosts that should run its flows::

    PREFECT_API_URL=http://prefect-host:4200/api ecotaxa deploy [--ingest-config ingest.toml]
    prefect worker start --pool ecotaxa-cpu      # on each CPU host
    prefect worker start --pool ecotaxa-gpu      # on each GPU host

- ``ecotaxa-cpu``: every stage (``import/import``, ``features/features``, ...,
  ``loop/loop``), ``repredict/nightly`` on its schedule, and the ingest
  deployments of ``--ingest-config``;
- ``ecotaxa-gpu``: ``fine_tune/gpu`` (``device="cuda"``) and ``features/gpu``
  (the deep feature sets). Their runs get ``ECOTAXA_DEEP_DEVICE=cuda`` and an
  embedded Dask cluster of one worker process on the GPU host itself: the shared
  scheduler's workers have no GPU. The pool's concurrency limit (1 unless
  ``--gpu-limit`` says otherwise) makes runs wait their turn for the GPU.

Pools are created with those limits when missing, and left as they are when they
exist (an operator may have changed them). Workers import the flows by module
(``flows.features.features_flow``): a host needs this package installed and the
instance's ``ECOTAXA_*`` settings (database URL, vault and feature store URLs,
Dask scheduler) in the worker's environment, which each flow run inherits.
Deployments keep the names they have under ``serve``: deploying moves them to
the pools, serving moves them back.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from deployments.serve import all_deployments
from ecotaxa_core.errors import EcoTaxaError
from flows.features import DEFAULT_FEATURE_SETS, features_flow
from flows.fine_tune import fine_tune_flow

__all__ = ["CPU_POOL", "GPU_POOL", "GPU_RUN_ENV", "WorkPoolError", "work_pool_deployments",
           "deploy_to_work_pools"]

CPU_POOL = "ecotaxa-cpu"
GPU_POOL = "ecotaxa-gpu"
# What a GPU pool's flow run changes in the worker's environment.
GPU_RUN_ENV = {"ECOTAXA_DEEP_DEVICE": "cuda", "ECOTAXA_DASK_SCHEDULER_ADDRESS": "",
               "ECOTAXA_DASK_N_WORKERS": "1"}
_BY_MODULE = {"entrypoint_type": EntrypointType.MODULE_PATH}


class WorkPoolError(EcoTaxaError):
    """Deployments that cannot be registered: no Prefect API given, or it refused them."""


@dataclass(frozen=True)
class _PoolSpec:
    name: str
    description: str
    concurrency_limit: int | None


def work_pool_deployments(ingest_config: str | None = None) -> list:
    """Every deployment of :mod:`deployments.serve` on ``ecotaxa-cpu``, plus the GPU ones
    on ``ecotaxa-gpu``; flows referred to by module."""
    deep_sets = [name for name in DEFAULT_FEATURE_SETS if name.startswith("deep_")]
    gpu = {"work_pool_name": GPU_POOL, "tags": ["ecotaxa", "gpu"],
           "job_variables": {"env": dict(GPU_RUN_ENV)}, **_BY_MODULE}
    return (all_deployments(ingest_config, work_pool_name=CPU_POOL, **_BY_MODULE)
            + [fine_tune_flow.to_deployment(name="gpu", parameters={"device": "cuda"}, **gpu),
               features_flow.to_deployment(name="gpu", parameters={"feature_sets": deep_sets},
                                           **gpu)])


def _ensure_pool(client, spec: _PoolSpec) -> str:
    try:
        client.read_work_pool(spec.name)
        return "kept"
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=spec.name, type="process", description=spec.description,
            base_job_template=ProcessWorker.get_default_base_job_template(),
            concurrency_limit=spec.concurrency_limit))
        return "created"


def deploy_to_work_pools(ingest_config: str | None = None, *, cpu_limit: int | None = None,
                         gpu_limit: int | None = 1) -> dict[str, Any]:
    """Create the work pools when missing, register every deployment on its pool.

    Returns ``{"api": url, "work_pools": {pool: "created" | "kept"}, "deployments":
    {pool: ["flow/deployment", ...]}}``.

    Raises
    ------
    WorkPoolError : ``PREFECT_API_URL`` not set (deployments on a temporary server
        would vanish with it), or the API cannot be reached or refuses a deployment.
    IngestConfigError : an unusable ``ingest_config``.
    """
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise WorkPoolError("set PREFECT_API_URL to the Prefect server the workers poll "
                            "(e.g. http://127.0.0.1:4200/api): deployments registered on a "
                            "temporary server would vanish with it")
    for name, limit in (("cpu_limit", cpu_limit), ("gpu_limit", gpu_limit)):
        if limit is not None and limit < 1:
            raise WorkPoolError(f"{name} must be at least 1 (or none), got {limit}")
    deployments = work_pool_deployments(ingest_config)
    specs = (_PoolSpec(CPU_POOL, "ecotaxa-flow stages, ingest and nightly re-prediction",
                       cpu_limit),
             _PoolSpec(GPU_POOL, "ecotaxa-flow fine-tuning and deep features on a GPU host",
                       gpu_limit))
    try:
        with get_client(sync_client=True) as client:
            pools = {spec.name: _ensure_pool(client, spec) for spec in specs}
        by_pool: dict[str, list[str]] = {spec.name: [] for spec in specs}
        for deployment in deployments:
            deployment.apply()
            by_pool[deployment.work_pool_name].append(
                f"{deployment.flow_name}/{deployment.name}")
    except httpx.HTTPError as error:  # unreachable, or a refusal (4xx/5xx)
        raise WorkPoolError(f"the Prefect API at {api} did not take the deployments: "
                            f"{error}") from error
    return {"api": api, "work_pools": pools, "deployments": by_pool}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m deployments.work_pools",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingest-config", metavar="FILE",
                        help="TOML (or .json) file of drop folders to watch (deployments.ingest)")
    parser.add_argument("--cpu-limit", type=int, default=None,
                        help="concurrent runs of a new ecotaxa-cpu pool (default: no limit)")
    parser.add_argument("--gpu-limit", type=int, default=1,
                        help="concurrent runs of a new ecotaxa-gpu pool (default 1)")
    args = parser.parse_args(argv)
    return deploy_to_work_pools(args.ingest_config, cpu_limit=args.cpu_limit,
                                gpu_limit=args.gpu_limit)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
