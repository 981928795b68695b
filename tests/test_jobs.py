"""Job records around stage runs."""

from __future__ import annotations

import pytest

from ecotaxa_core.jobs import list_jobs, recorded_job
from ecotaxa_core.projects import create_project


def test_job_is_running_during_the_block_then_done_with_its_result(instance, admin):
    with instance.sessions.begin() as s:
        pid = create_project(s, "P", owner=admin).id
    with recorded_job(instance, "import", pid, {"path": "/x"}) as job:
        with instance.sessions() as s:
            assert [j.state for j in list_jobs(s, pid)] == ["running"]
        job["result"] = {"n_objects": 3}
    with instance.sessions() as s:
        (j,) = list_jobs(s, pid)
        assert (j.kind, j.state, j.result, j.params) == ("import", "done", {"n_objects": 3},
                                                         {"path": "/x"})
        assert j.finished_at is not None


def test_failed_job_keeps_its_error(instance, admin):
    with pytest.raises(ValueError):
        with recorded_job(instance, "train", None, {}):
            raise ValueError("no validated objects")
    with instance.sessions() as s:
        (j,) = list_jobs(s)
        assert j.state == "failed" and "no validated objects" in j.error


def test_jobs_outlive_their_project(instance, admin):
    from ecotaxa_core.project_ops import delete_project

    with instance.sessions.begin() as s:
        pid = create_project(s, "P", owner=admin).id
    with recorded_job(instance, "import", pid, {"path": "/x"}):
        pass
    with recorded_job(instance, "project_delete", pid, {}) as job:
        job["result"] = delete_project(instance, pid, admin.id)
    with instance.sessions() as s:
        assert list_jobs(s, pid) == []
        gone = list_jobs(s, pid, deleted=True)
        assert [(j.kind, j.state, j.project_id, j.project_ref) for j in gone] == [
            ("project_delete", "done", None, pid), ("import", "done", None, pid)]
        assert gone[0].result["title"] == "P"
    with instance.sessions.begin() as s:
        new = create_project(s, "Q", owner=admin).id  # SQLite may give it the old id again
    with instance.sessions() as s:
        assert list_jobs(s, new) == []
    # A job about a project that does not exist is still recorded, then fails.
    with pytest.raises(LookupError), recorded_job(instance, "project_delete", 987654, {}):
        raise LookupError("project 987654 does not exist")
    with instance.sessions() as s:
        (j,) = list_jobs(s, 987654, deleted=True)
        assert (j.state, j.project_id, j.project_ref) == ("failed", None, 987654)
    with pytest.raises(ValueError, match="project_id"), instance.sessions() as s:
        list_jobs(s, deleted=True)


def test_migration_0003_keeps_jobs_and_their_project(db_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from ecotaxa_core.db.engine import _MIGRATIONS, make_engine, upgrade_schema

    engine = make_engine(db_url)
    upgrade_schema(engine, "0002")
    with engine.begin() as c:
        c.execute(text("insert into projects (id, title, free_columns, settings, created_at) "
                       "values (7, 'old', '{}', '{}', CURRENT_TIMESTAMP)"))
        c.execute(text("insert into jobs (project_id, kind, state, params, progress, created_at)"
                       " values (7, 'import', 'done', '{}', 1.0, CURRENT_TIMESTAMP)"))
    upgrade_schema(engine)
    with engine.begin() as c:
        assert c.execute(text("select project_id, project_ref from jobs")).one() == (7, 7)
        c.execute(text("delete from projects where id = 7"))
        assert c.execute(text("select project_id, project_ref from jobs")).one() == (None, 7)
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    with engine.begin() as c:
        c.execute(text("insert into projects (id, title, free_columns, settings, created_at) "
                       "values (8, 'again', '{}', '{}', CURRENT_TIMESTAMP)"))
        c.execute(text("insert into jobs (project_id, kind, state, params, progress, created_at)"
                       " values (8, 'train', 'done', '{}', 1.0, CURRENT_TIMESTAMP)"))
        c.execute(text("delete from projects where id = 8"))  # 0002 deletes the jobs with it
        assert c.execute(text("select kind from jobs")).scalars().all() == ["import"]
    engine.dispose()


_CHILD = """
import sys, time
from pathlib import Path
from ecotaxa_core.instance import Instance
from ecotaxa_core.jobs import recorded_job
from ecotaxa_core.settings import Settings

home, url, marker = sys.argv[1:4]
inst = Instance.open(Settings(home=home, database_url=url))
with recorded_job(inst, "features", None, {}) as job:
    Path(marker).write_text(str(job["job_id"]))
    time.sleep(300)
"""


def test_a_killed_job_is_marked_failed_and_a_live_one_is_not(instance, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    from ecotaxa_core.jobs import KILLED_MESSAGE, reap_dead_jobs

    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(instance.settings.home),
                             instance.settings.database_url, str(marker)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        killed = int(marker.read_text())
        with recorded_job(instance, "train", None, {}) as job:  # alive, in this process
            assert reap_dead_jobs(instance) == []  # the child holds its job's lock
            with instance.sessions() as s:
                assert {j.id: j.state for j in list_jobs(s)} == {killed: "running",
                                                                 job["job_id"]: "running"}
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert reap_dead_jobs(instance) == [killed]
            with instance.sessions() as s:
                states = {j.id: (j.state, j.error) for j in list_jobs(s)}
            assert states == {killed: ("failed", KILLED_MESSAGE),
                              job["job_id"]: ("running", None)}
        assert reap_dead_jobs(instance) == []
        with instance.sessions() as s:
            assert {j.id: j.state for j in list_jobs(s)} == {killed: "failed",
                                                             job["job_id"]: "done"}
        # Ended jobs, done, failed or reaped, leave no lock file behind.
        with pytest.raises(ValueError):
            with recorded_job(instance, "train", None, {}):
                raise ValueError("no validated objects")
        assert list((instance.settings.work_dir / "jobs").iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
