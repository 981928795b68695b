"""The whole loop on the scaled-out stack: `ecotaxa up` on PostgreSQL with a Dask scheduler
and two worker processes, every stage triggered through the Prefect API (REST, the
`prefect` command line, `run_deployment`), results checked in the database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from test_stack import _get, _post, stack_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _wait(api: str, run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        state = _get(f"{api}/flow_runs/{run_id}", headers={})["state"]
        if state["type"] in FINAL:
            return state
        assert time.monotonic() < deadline, f"run {run_id} is still {state['name']}"
        time.sleep(2)


def test_the_loop_on_postgresql_with_two_workers_through_the_prefect_api(pg_instance):
    from ecotaxa_core.db.models import Job, Object, ObjectStatus
    from ecotaxa_core.demo_data import DEMO_BUNDLE, DEMO_TRUTH, score_against_truth
    from ecotaxa_core.projects import create_project

    inst = pg_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "end to end").id
    out_dir = inst.settings.exports_dir / "e2e"
    env = stack_env(inst, ECOTAXA_DASK_N_WORKERS="2", ECOTAXA_DASK_THREADS_PER_WORKER="1")

    def run(*argv: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=600,
                              **kw)

    up = run(str(BIN / "ecotaxa"), "up", "--json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        api = json.loads(up.stdout)["urls"]["prefect"]
        status = json.loads(run(str(BIN / "ecotaxa"), "status", "--json").stdout)
        assert status["services"]["dask-scheduler"]["doing"].startswith("2 workers, 2 threads")

        # 1. REST: the whole loop (import, features, train, predict, export) as sub-flows.
        loop = _get(f"{api}/deployments/name/loop/loop", headers={})
        created = _post(f"{api}/deployments/{loop['id']}/create_flow_run", {"parameters": {
            "project_id": pid, "path": str(DEMO_BUNDLE), "out_dir": str(out_dir),
            "create_missing_taxa": True, "create_missing_users": True}})
        state = _wait(api, created["id"], 900)
        assert state["type"] == "COMPLETED", (state, (inst.settings.logs_dir / "runner.log")
                                              .read_text()[-3000:])

        # 2. The prefect command line: a summary of the project.
        cli = subprocess.run([str(BIN / "prefect"), "deployment", "run", "summary/summary",
                              "-p", f"project_id={pid}", "-p", f"out_dir={out_dir}",
                              "--watch", "--watch-timeout", "300"],
                             env={**env, "PREFECT_API_URL": api}, capture_output=True,
                             text=True, timeout=400)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert list(out_dir.glob(f"summary_{pid}_by_sample.tsv"))

        # 3. run_deployment, from Python: predict again with the same model.
        script = ("import json, sys; from prefect.deployments import run_deployment; "
                  "r = run_deployment('predict/predict', parameters={'project_id': int(sys.argv[1])},"
                  " timeout=300); print(json.dumps({'state': r.state.type.value}))")
        py = subprocess.run([sys.executable, "-c", script, str(pid)],
                            env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True,
                            timeout=400)
        assert py.returncode == 0 and json.loads(py.stdout.splitlines()[-1]) == {
            "state": "COMPLETED"}, py.stdout + py.stderr
    finally:
        down = run(str(BIN / "ecotaxa"), "down")
    assert down.returncode == 0

    with inst.sessions() as s:
        by_status = dict(s.execute(select(Object.status, func.count())
                                   .where(Object.project_id == pid).group_by(Object.status)).all())
        assert by_status == {ObjectStatus.VALIDATED.value: 840, ObjectStatus.PREDICTED.value: 360}
        assert s.scalar(select(func.count()).select_from(Object).where(
            Object.project_id == pid, Object.status == "predicted",
            Object.model_id.is_(None))) == 0
        jobs = [(j.kind, j.state) for j in s.scalars(
            select(Job).where(Job.project_id == pid).order_by(Job.id))]
        scored = score_against_truth(s, pid, DEMO_TRUTH)
    assert jobs == [("import", "done"), ("features", "done"), ("train", "done"),
                    ("predict", "done"), ("export", "done"), ("summary", "done"),
                    ("predict", "done")]
    assert scored["n"] == 360 and scored["accuracy"] > 0.7
    for name in ("morpho", "deep_effnetlite0"):
        assert inst.features.n_rows(pid, name) == 1200
    assert list(out_dir.glob(f"ecotaxa_export_{pid}_*.zip"))
