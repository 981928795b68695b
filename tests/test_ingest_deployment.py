"""Ingest deployments: the configuration file, the scheduled deployments, and serving them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.utilities.callables import parameter_schema

from conftest import ROOT
from deployments.ingest import IngestConfigError, ingest_deployments, load_ingest_config
from test_ingest import IMPORT_TEST, N_OBJECTS, TSV_ISSUES, copy_bundle, n_objects, new_project

CONFIG = """
[defaults]
settle_seconds = 5
interval_seconds = 120

[[drop_folder]]
path = "drops/uvp6"
project_id = 3

[[drop_folder]]
name = "zooscan-lab"
path = "/data/zooscan"
project_id = 4
cron = "*/5 * * * *"
create_missing_taxa = true
require_ready_marker = true
user_email = "ops@example.org"
"""


def test_config_maps_folders_to_projects_schedules_and_options(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text(CONFIG)
    uvp6, zooscan = load_ingest_config(path)
    assert (uvp6.name, uvp6.drop_folder, uvp6.project_id) == (
        "uvp6", str(tmp_path / "drops" / "uvp6"), 3)
    assert (uvp6.interval_seconds, uvp6.cron, uvp6.settle_seconds) == (120, None, 5)
    assert (uvp6.create_missing_taxa, uvp6.require_ready_marker, uvp6.user_email) == (
        False, False, None)
    assert (zooscan.name, zooscan.drop_folder, zooscan.interval_seconds, zooscan.cron) == (
        "zooscan-lab", "/data/zooscan", None, "*/5 * * * *")
    assert zooscan.create_missing_taxa and zooscan.require_ready_marker
    assert zooscan.user_email == "ops@example.org"


def test_config_may_be_json_and_defaults_to_a_minute(tmp_path):
    path = tmp_path / "ingest.json"
    path.write_text(json.dumps({"drop_folder": [{"path": "/d", "project_id": 1}]}))
    (only,) = load_ingest_config(path)
    assert (only.name, only.interval_seconds, only.cron, only.settle_seconds) == ("d", 60, None, 10)


@pytest.mark.parametrize("text, message", [
    ('[[drop_folder]]\npath = "/d"\nprojet_id = 1\n',
     r"\[\[drop_folder\]\] #1 \(/d\), key 'projet_id': Extra inputs are not permitted"),
    ('[[drop_folder]]\npath = "/d"\nproject_id = 1\ncron = "* * * * *"\ninterval_seconds = 9\n',
     "give either interval_seconds or cron, not both"),
    ('[[drop_folder]]\npath = "/a/d"\nproject_id = 1\n[[drop_folder]]\npath = "/b/d"\n'
     'project_id = 2\n', "several drop folders are named d"),
    ('[[drop_folder]]\npath = "/d"\nproject_id = "three"\n',
     "key 'project_id': Input should be a valid integer"),
    ('[[drop_folder]]\npath = "/d\nproject_id = 1\n', r"line 2, column 11"),
    ('[defaults]\nsettle_seconds = 1\n', "key 'drop_folder': Field required"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "ingest.toml"
    path.write_text(text)
    with pytest.raises(IngestConfigError, match=message) as info:
        load_ingest_config(path)
    assert str(path) in str(info.value)


def test_one_scheduled_deployment_per_drop_folder(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text(CONFIG)
    uvp6, zooscan = ingest_deployments(path)
    assert (uvp6.flow_name, uvp6.name, zooscan.name) == ("ingest", "uvp6", "zooscan-lab")
    assert uvp6.schedules[0].schedule.interval == timedelta(seconds=120)
    assert zooscan.schedules[0].schedule.cron == "*/5 * * * *"
    assert uvp6.parameters == {"drop_folder": str(tmp_path / "drops" / "uvp6"), "project_id": 3,
                               "create_missing_taxa": False, "create_missing_users": False,
                               "settle_seconds": 5.0, "require_ready_marker": False,
                               "user_email": None}
    assert zooscan.parameters["require_ready_marker"] is True
    assert uvp6.enforce_parameter_schema and "ingest" in uvp6.tags
    from flows.ingest import ingest_flow

    schema = parameter_schema(ingest_flow.fn)
    assert set(schema.required) == {"drop_folder", "project_id"}
    assert schema.properties["project_id"]["type"] == "integer"
    assert schema.properties["settle_seconds"]["type"] == "number"


def test_invalid_cron_is_a_config_error(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text('[[drop_folder]]\npath = "/d"\nproject_id = 1\ncron = "every tuesday"\n')
    with pytest.raises(IngestConfigError, match="drop folder 'd'"):
        ingest_deployments(path)


def test_serve_adds_the_ingest_deployments_to_the_stages(tmp_path):
    from deployments.serve import all_deployments

    path = tmp_path / "ingest.toml"
    path.write_text(CONFIG)
    names = [f"{d.flow_name}/{d.name}" for d in all_deployments(str(path))]
    assert names[-2:] == ["ingest/uvp6", "ingest/zooscan-lab"] and len(names) == 12
    assert "repredict/nightly" in names  # the stages, the nightly re-prediction, the folders
    assert len(all_deployments(None)) == 10


# -- serving for real -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body)
                                 .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait_for(condition, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: a process ended early ({proc.args}):\n"
                            + log.read_text()[-4000:])
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    logs = "\n".join(f"--- {proc.args}\n{log.read_text()[-4000:]}" for proc, log in procs)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs}")


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 30) -> None:
    """Stop a process we started (its own session), gracefully, then for good."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # the process and whatever it started that still runs
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout)


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.mark.slow
def test_served_ingest_deployment_imports_dropped_bundles_on_schedule(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    drop.mkdir()
    config = tmp_path / "ingest.toml"
    config.write_text(f'[[drop_folder]]\nname = "test-drop"\npath = "{drop}"\nproject_id = {pid}\n'
                      "interval_seconds = 4\nsettle_seconds = 1\ncreate_missing_taxa = true\n")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ECOTAXA_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = _start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                     "--port", str(port)], env, server_log)
    served = None
    try:
        _wait_for(lambda: _api(api, "/health") is True, 120, "the Prefect server",
                  [(server, server_log)])
        served = _start([sys.executable, "-m", "deployments.serve", "--ingest-config", str(config)],
                        env | {"PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                               "ECOTAXA_HOME": str(sqlite_instance.settings.home),
                               "ECOTAXA_DATABASE_URL": sqlite_instance.settings.database_url},
                        serve_log)
        procs = [(server, server_log), (served, serve_log)]
        # an instrument copies under a hidden name, then renames: the drop is atomic
        copy_bundle(IMPORT_TEST, drop / ".cast1")
        os.rename(drop / ".cast1", drop / "cast1")
        _wait_for(lambda: any((drop / "done").glob("*_cast1")), 150, "cast1 in done/", procs)
        assert n_objects(sqlite_instance, pid) == N_OBJECTS

        # a later run of the schedule refuses a faulty bundle: quarantine with its report
        shutil.make_archive(str(tmp_path / "bad"), "zip", TSV_ISSUES)
        os.rename(tmp_path / "bad.zip", drop / "bad.zip")
        _wait_for(lambda: any((drop / "quarantine").glob("*_bad.zip.error.txt")), 90,
                  "bad.zip in quarantine/", procs)
        report = next((drop / "quarantine").glob("*_bad.zip.error.txt")).read_text()
        assert "line 3, column object_lat: invalid latitude '100'" in report
        assert n_objects(sqlite_instance, pid) == N_OBJECTS

        served_names = {d["name"] for d in _api(api, "/deployments/filter", {})}
        assert served_names == {"import", "features", "fine_tune", "train", "predict", "export",
                                "summary", "dwca", "loop", "nightly", "test-drop"}
        (deployment,) = _api(api, "/deployments/filter",
                             {"deployments": {"name": {"any_": ["test-drop"]}}})
        assert deployment["schedules"][0]["schedule"]["interval"] == 4
        runs = _api(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {
            "any_": ["COMPLETED"]}}, "deployment_id": {"any_": [deployment["id"]]}}})
        assert runs and all(r["deployment_id"] == deployment["id"] for r in runs)
    finally:
        if served is not None:
            _stop(served)
        _stop(server, signal.SIGTERM)
    assert served.returncode is not None and server.returncode is not None
