"""``ecotaxa up``, ``down`` and ``status``: the whole stack on this machine (see stack.py)."""

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
