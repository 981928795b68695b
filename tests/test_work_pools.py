"""The deployments on work pools: `ecotaxa deploy` against a real Prefect server, then
`prefect worker start` processes of each pool running their flow runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from ecotaxa_core.db.models import Job

from test_ingest import IMPORT_TEST, N_OBJECTS, n_objects, new_project
from test_ingest_deployment import _api, _start, _stop, _wait_for

BIN = Path(sys.executable).parent
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _env(inst, tmp_path: Path, api: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ECOTAXA_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_WORKER_QUERY_SECONDS": "1",
            "ECOTAXA_HOME": str(inst.settings.home),
            "ECOTAXA_DATABASE_URL": inst.settings.database_url}
    return env | ({"PREFECT_API_URL": api} if api else {})


def _deploy(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ecotaxa"), "deploy", "--json", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _run_deployment(api: str, name: str, parameters: dict) -> str:
    deployment = _api(api, f"/deployments/name/{name}")
    return _api(api, f"/deployments/{deployment['id']}/create_flow_run",
                {"parameters": parameters})["id"]


def _final_state(api: str, run_id: str, timeout_s: float, procs) -> dict:
    states = []

    def final() -> bool:
        states[:] = [_api(api, f"/flow_runs/{run_id}")["state"]]
        return states[0]["type"] in FINAL

    _wait_for(final, timeout_s, f"flow run {run_id}", procs)
    return states[0]


def test_deploy_without_a_prefect_api_url_says_so_and_registers_nothing(sqlite_instance, tmp_path):
    done = _deploy(_env(sqlite_instance, tmp_path, None))
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == "WorkPoolError"
    assert "set PREFECT_API_URL" in done.stderr


def test_deploy_reports_an_unreachable_api(sqlite_instance, tmp_path):
    from test_ingest_deployment import _free_port

    done = _deploy(_env(sqlite_instance, tmp_path, f"http://127.0.0.1:{_free_port()}/api"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "did not take the deployments" in done.stderr


@pytest.mark.slow
def test_workers_of_each_pool_run_their_deployments(sqlite_instance, prefect_api_url, tmp_path):
    api, inst = prefect_api_url, sqlite_instance
    pid = new_project(inst)
    env = _env(inst, tmp_path, api)
    config = tmp_path / "ingest.toml"
    config.write_text(f'[[drop_folder]]\nname = "pool-drop"\npath = "{tmp_path / "drop"}"\n'
                      f'project_id = {pid}\ncron = "*/10 * * * *"\n')

    first = _deploy(env, "--ingest-config", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads(first.stdout)
    assert result["work_pools"] == {"ecotaxa-cpu": "created", "ecotaxa-gpu": "created"}
    cpu, gpu = result["deployments"]["ecotaxa-cpu"], result["deployments"]["ecotaxa-gpu"]
    assert {"import/import", "features/features", "fine_tune/fine_tune", "train/train",
            "predict/predict", "export/export", "loop/loop", "repredict/nightly",
            "ingest/pool-drop"} <= set(cpu)
    assert gpu == ["fine_tune/gpu", "features/gpu"]

    pools = {p["name"]: p for p in _api(api, "/work_pools/filter", {})}
    assert (pools["ecotaxa-cpu"]["type"], pools["ecotaxa-cpu"]["concurrency_limit"]) == (
        "process", None)
    assert (pools["ecotaxa-gpu"]["type"], pools["ecotaxa-gpu"]["concurrency_limit"]) == (
        "process", 1)
    features_gpu = _api(api, "/deployments/name/features/gpu")
    assert features_gpu["work_pool_name"] == "ecotaxa-gpu"
    assert features_gpu["entrypoint"] == "flows.features.features_flow"
    assert features_gpu["job_variables"]["env"]["ECOTAXA_DEEP_DEVICE"] == "cuda"
    assert features_gpu["parameters"] == {"feature_sets": ["deep_effnetlite0"]}
    assert features_gpu["enforce_parameter_schema"]
    ingest = _api(api, "/deployments/name/ingest/pool-drop")
    assert (ingest["work_pool_name"], ingest["schedules"][0]["schedule"]["cron"]) == (
        "ecotaxa-cpu", "*/10 * * * *")

    # Deploying again updates the deployments in place and leaves the existing pools alone.
    n_deployments = _api(api, "/deployments/count", {})
    again = _deploy(env, "--ingest-config", str(config), "--gpu-limit", "4")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["work_pools"] == {"ecotaxa-cpu": "kept",
                                                      "ecotaxa-gpu": "kept"}
    assert _api(api, "/deployments/count", {}) == n_deployments
    assert _api(api, "/work_pools/ecotaxa-gpu")["concurrency_limit"] == 1

    # Typed parameters: a run with a project id that is not an integer is refused.
    with pytest.raises(Exception, match="409|422"):
        _run_deployment(api, "import/import", {"project_id": "one", "path": str(IMPORT_TEST)})

    logs = {name: tmp_path / f"worker-{name}.log" for name in ("cpu", "gpu")}
    workers = {name: _start([str(BIN / "prefect"), "worker", "start", "--pool", f"ecotaxa-{name}",
                             "--name", f"test-{name}"], env, logs[name]) for name in logs}
    procs = [(workers[name], logs[name]) for name in logs]
    try:
        # The CPU pool's worker runs an import triggered through the API.
        run_id = _run_deployment(api, "import/import", {"project_id": pid, "path": str(IMPORT_TEST),
                                                        "create_missing_taxa": True})
        state = _final_state(api, run_id, 300, procs)
        assert state["type"] == "COMPLETED", (state, logs["cpu"].read_text()[-4000:])
        assert n_objects(inst, pid) == N_OBJECTS
        run = _api(api, f"/flow_runs/{run_id}")
        assert run["work_pool_name"] == "ecotaxa-cpu"

        # The GPU pool's worker runs deep features with device cuda on its own cluster:
        # here, a host without a GPU, the run fails and says why; no feature row is written.
        run_id = _run_deployment(api, "features/gpu", {"project_id": pid})
        state = _final_state(api, run_id, 600, procs)
        if torch.cuda.is_available():
            assert state["type"] == "COMPLETED", (state, logs["gpu"].read_text()[-4000:])
            assert inst.features.n_rows(pid, "deep_effnetlite0") == N_OBJECTS
        else:
            assert state["type"] == "FAILED", state
            assert "no CUDA GPU" in state["message"], state
            assert inst.features.n_rows(pid, "deep_effnetlite0") == 0
            with inst.sessions() as s:
                job = s.scalars(select(Job).where(Job.project_id == pid,
                                                  Job.kind == "features")).one()
            assert job.state == "failed" and "no CUDA GPU" in job.error
            assert job.flow_run_id == run_id
        assert _api(api, f"/flow_runs/{run_id}")["work_pool_name"] == "ecotaxa-gpu"
    finally:
        for proc in workers.values():
            _stop(proc)
