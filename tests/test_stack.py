"""`ecotaxa up`, `status`, `down`: the whole stack on this machine, for real.

A Prefect server, a Dask scheduler with a worker, the deployments' runner and
the dashboard start as processes; a stage is triggered by the Prefect REST API
and run by the runner on the scheduler; `down` leaves no process behind.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from distributed import Client
from sqlalchemy import select

from conftest import ADMIN_EMAIL, _free_port
from tasks.dask_cluster import WORKER_ENVIRON

pytestmark = pytest.mark.slow
ECOTAXA = str(Path(sys.executable).with_name("ecotaxa"))


AUTH = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret-pw").decode()}


def _call(request: urllib.request.Request) -> dict:
    """The JSON answer, retrying 502/503 as Prefect's own client does (a server just
    restarted answers 503 while its database is busy starting up)."""
    for attempt in range(6):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code not in (502, 503) or attempt == 5:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def _post(url: str, body: dict) -> dict:
    return _call(urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                        headers={"Content-Type": "application/json", **AUTH}))


def _get(url: str, headers: dict | None = None) -> dict:
    return _call(urllib.request.Request(url, headers=AUTH if headers is None else headers))


def stack_env(inst, **settings: str) -> dict[str, str]:
    """The environment of `ecotaxa up` for the instance: free ports, the runner polling
    every 2 s, none of this process's Prefect or Dask settings; then ``settings``."""
    env = {**os.environ, "ECOTAXA_HOME": str(inst.settings.home),
           "ECOTAXA_DATABASE_URL": inst.settings.database_url,
           "ECOTAXA_PREFECT_PORT": str(_free_port()),
           "ECOTAXA_DASK_SCHEDULER_PORT": str(_free_port()),
           "ECOTAXA_DASK_DASHBOARD_PORT": str(_free_port()),
           "ECOTAXA_DASHBOARD_PORT": str(_free_port()),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "ECOTAXA_DASK_SCHEDULER_ADDRESS",
                "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(key, None)
    return {**env, **settings}


def test_an_exposed_prefect_api_without_an_auth_string_is_refused(tmp_path, monkeypatch):
    from ecotaxa_cli.stack import StackError, stack_up
    from ecotaxa_core.settings import Settings

    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    with pytest.raises(StackError, match="PREFECT_SERVER_API_AUTH_STRING"):
        stack_up(Settings(home=tmp_path, prefect_address="0.0.0.0"))
    assert not (tmp_path / "run" / "stack.json").exists()


def test_up_runs_a_stage_triggered_by_the_rest_api_then_down(sqlite_instance, ndsb_subset):
    """The Prefect API is exposed (0.0.0.0) behind an auth string: calls without it are
    refused; the runner and the dashboard, started by `up`, have it."""
    from ecotaxa_core.db.models import Job
    from ecotaxa_core.importer import import_path
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.users import get_user_by_email

    inst = sqlite_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "stack").id
        admin = get_user_by_email(s, ADMIN_EMAIL).id
    import_path(inst, pid, ndsb_subset, user_id=admin, create_missing_taxa=True)
    env = stack_env(inst, ECOTAXA_DASK_N_WORKERS="1", ECOTAXA_DASK_THREADS_PER_WORKER="2",
                    PREFECT_LOGGING_LEVEL="INFO", ECOTAXA_PREFECT_ADDRESS="0.0.0.0",
                    PREFECT_SERVER_API_AUTH_STRING="ops:s3cret-pw")

    def ecotaxa(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ECOTAXA, *args], env=env, capture_output=True, text=True,
                              timeout=400)

    started = ecotaxa("up", "--json")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads(started.stdout)
        urls = state["urls"]
        pids = [e["pid"] for e in state["services"].values()]
        assert all(u.startswith(("http://127.0.0.1", "tcp://127.0.0.1")) for u in urls.values())
        again = ecotaxa("up")
        assert again.returncode == 1 and "already up" in again.stderr

        status = json.loads(ecotaxa("status", "--json").stdout)
        assert status["up"] and status["database"] == inst.settings.database_url
        doing = {n: s["doing"] for n, s in status["services"].items()}
        assert doing["dask-scheduler"].startswith("1 workers, 2 threads")
        with Client(urls["dask-scheduler"], timeout=30) as client:  # allocator settings
            for name, value in WORKER_ENVIRON.items():
                assert set(client.run(os.getenv, name).values()) == {value}, name
        assert doing["runner"].startswith("serving") and doing["dashboard"] == "answering"
        with urllib.request.urlopen(urls["dashboard"], timeout=10) as page:
            assert page.status == 200
        for name in ("prefect", "dask-scheduler", "dask-workers", "runner", "dashboard"):
            assert (inst.settings.logs_dir / f"{name}.log").is_file()

        # The REST call the README gives: the deployment by name, then a run of it.
        api = urls["prefect"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{api}/deployments/name/features/features", headers={})
        assert refused.value.code == 401
        deployment = _get(f"{api}/deployments/name/features/features")
        run = _post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                    {"parameters": {"project_id": pid, "feature_sets": ["morpho"]}})
        deadline = time.monotonic() + 300
        while True:
            state_now = _get(f"{api}/flow_runs/{run['id']}")["state"]
            if state_now["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert time.monotonic() < deadline, f"the run is still {state_now['name']}"
            time.sleep(2)
        assert state_now["type"] == "COMPLETED", state_now
        assert inst.features.n_rows(pid, "morpho") == 240  # every imported object

        # The Prefect server dies between two flows: `up` starts it alone again; the
        # deployments (in its database) and the runner carry on; the next run completes.
        prefect = state["services"]["prefect"]
        os.killpg(prefect["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while json.loads(ecotaxa("status", "--json").stdout)["services"]["prefect"]["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        restarted = ecotaxa("up", "--json")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        restarted = json.loads(restarted.stdout)
        assert restarted["started_now"] == ["prefect"]
        assert {n: e["pid"] for n, e in restarted["services"].items() if n != "prefect"} == {
            n: e["pid"] for n, e in state["services"].items() if n != "prefect"}
        pids.append(restarted["services"]["prefect"]["pid"])
        out_dir = inst.settings.exports_dir / "after_restart"
        summary = _get(f"{api}/deployments/name/summary/summary")
        run = _post(f"{api}/deployments/{summary['id']}/create_flow_run",
                    {"parameters": {"project_id": pid, "out_dir": str(out_dir)}})
        deadline = time.monotonic() + 300
        while (state_now := _get(f"{api}/flow_runs/{run['id']}")["state"])["type"] not in (
                "COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert time.monotonic() < deadline, f"the run is still {state_now['name']}"
            time.sleep(2)
        assert state_now["type"] == "COMPLETED", state_now
        assert (out_dir / f"summary_{pid}_by_sample.tsv").is_file()
        with inst.sessions() as s:
            kinds = [j.kind for j in s.scalars(select(Job).where(Job.project_id == pid)
                                               .order_by(Job.id))]
        assert kinds == ["features", "summary"]  # each run recorded once
    finally:
        stopped = ecotaxa("down", "--json")
    assert stopped.returncode == 0 and set(json.loads(stopped.stdout)["services"].values()) <= {
        "stopped", "killed"}
    assert not [p for p in pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    after = ecotaxa("status", "--json")
    assert after.returncode == 3 and not json.loads(after.stdout)["up"]
