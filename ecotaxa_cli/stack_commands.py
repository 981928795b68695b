"""``ecotaxa up``, ``down`` and ``status``: the whole stack on this machine (see stack.py);
``ecotaxa deploy``: the deployments on work pools, for workers on other hosts."""

from __future__ import annotations

from typing import Any

import typer

from ecotaxa_cli.common import JsonOpt, app, emit, fail, load_settings
from ecotaxa_cli.stack import stack_down, stack_status, stack_up
from ecotaxa_core.errors import EcoTaxaError


@app.command()
def up(timeout: float = typer.Option(180.0, help="Seconds each service has to answer."),
       as_json: bool = JsonOpt) -> None:
    """Start a Prefect server, a Dask scheduler and workers, the deployments' runner and the
    dashboard on this machine (logs under $ECOTAXA_HOME/logs)."""
    try:
        state = stack_up(load_settings(), timeout_s=timeout)
    except EcoTaxaError as error:
        fail(error, as_json)
    emit(as_json, state, _human_up)


@app.command()
def down(as_json: bool = JsonOpt) -> None:
    """Stop what `ecotaxa up` started."""
    emit(as_json, stack_down(load_settings()),
         lambda r: "\n".join(f"{n}: {what}" for n, what in r["services"].items())
         or "nothing was running")


@app.command()
def status(as_json: bool = JsonOpt) -> None:
    """What `ecotaxa up` started, where, and what each part is doing."""
    result = stack_status(load_settings())
    emit(as_json, result, _human_status)
    if not result["up"]:
        raise typer.Exit(code=3)


@app.command()
def deploy(ingest_config: str = typer.Option(None, help="TOML (or .json) file of drop folders "
                                             "to watch, one ingest deployment each."),
           cpu_limit: int = typer.Option(None, help="Concurrent runs of a new ecotaxa-cpu "
                                         "pool (default: no limit)."),
           gpu_limit: int = typer.Option(1, help="Concurrent runs of a new ecotaxa-gpu pool."),
           as_json: bool = JsonOpt) -> None:
    """Register every deployment on the work pools ecotaxa-cpu and ecotaxa-gpu of the Prefect
    API at PREFECT_API_URL (pools created when missing); then run `prefect worker start --pool
    ecotaxa-cpu` (and ecotaxa-gpu on a GPU host) where the flows should run."""
    from deployments.work_pools import deploy_to_work_pools

    try:
        result = deploy_to_work_pools(ingest_config, cpu_limit=cpu_limit, gpu_limit=gpu_limit)
    except EcoTaxaError as error:
        fail(error, as_json)
    emit(as_json, result, _human_deploy)


def _human_deploy(r: dict[str, Any]) -> str:
    lines = [f"deployed on {r['api']}:"]
    for pool, names in r["deployments"].items():
        lines.append(f"  {pool} ({r['work_pools'][pool]}): {', '.join(names)}")
    lines.append("run them: prefect worker start --pool ecotaxa-cpu  (ecotaxa-gpu on a GPU host)")
    return "\n".join(lines)


def _human_up(state: dict[str, Any]) -> str:
    urls = state["urls"]
    return (f"up (started now: {', '.join(state['started_now'])}): "
            f"database {state['database']}\n"
            f"  dashboard        {urls['dashboard']}\n"
            f"  Prefect API      {urls['prefect']}  (UI: {urls['prefect'][:-4]})\n"
            f"  Dask scheduler   {urls['dask-scheduler']}  (diagnostics: {urls['dask-dashboard']})\n"
            f"  logs             {state['home']}/logs/\n"
            f"trigger a stage: PREFECT_API_URL={urls['prefect']} prefect deployment run "
            "'features/features' -p project_id=1")


def _human_status(r: dict[str, Any]) -> str:
    lines = [f"stack {'up' if r['up'] else 'not (fully) up'}; database {r['database'] or '?'}"]
    for name, s in r["services"].items():
        where = f" {s['url']}" if s["url"] else ""
        state = f"running (pid {s['pid']}){where}: {s['doing']}" if s["running"] else "stopped"
        lines.append(f"  {name:<15} {state}")
    return "\n".join(lines)
