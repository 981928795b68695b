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
