"""Jobs: the user-visible record of each stage run (who, what, state, result, error).

A job outlives its project: deleting or merging away a project keeps its jobs
(``project_id`` becomes NULL, ``project_ref`` keeps the id), so the record of
the deletion itself and the project's earlier history remain
(:func:`list_jobs` with ``deleted=True``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Job, Project, utcnow
from ecotaxa_core.instance import Instance

__all__ = ["recorded_job", "list_jobs"]


@contextmanager
def recorded_job(inst: Instance, kind: str, project_id: int | None, params: dict[str, Any],
                 flow_run_id: str | None = None, user_id: int | None = None) -> Iterator[dict]:
    """Record a job around a block; put the block's result in the yielded dict's "result".

    The job row is committed as ``running`` before the block starts, so other
    sessions (the dashboard) see it, and ends ``done`` or ``failed`` with the error.
    A job about a project that does not exist (any more) is still recorded,
    with only its ``project_ref``; the block then reports what is wrong.
    """
    with inst.sessions.begin() as s:
        live = project_id is not None and s.get(Project, project_id) is not None
        job = Job(project_id=project_id if live else None, project_ref=project_id, kind=kind,
                  state="running", params=params, flow_run_id=flow_run_id, user_id=user_id)
        s.add(job)
        s.flush()
        job_id = job.id
    holder: dict[str, Any] = {"job_id": job_id, "result": None}
    try:
        yield holder
    except BaseException as exc:
        with inst.sessions.begin() as s:
            job = s.get(Job, job_id)
            job.state, job.error, job.finished_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
        raise
    with inst.sessions.begin() as s:
        job = s.get(Job, job_id)
        job.state, job.result, job.progress, job.finished_at = "done", holder["result"], 1.0, utcnow()


def list_jobs(session: Session, project_id: int | None = None, limit: int = 50, *,
              deleted: bool = False) -> list[Job]:
    """The latest jobs, newest first: all, those of a project, or (``deleted=True``) those
    of a project that no longer exists and had the id ``project_id``."""
    q = select(Job).order_by(Job.id.desc()).limit(limit)
    if deleted:
        if project_id is None:
            raise ValueError("deleted=True needs the project_id the project had")
        q = q.where(Job.project_id.is_(None), Job.project_ref == project_id)
    elif project_id is not None:
        q = q.where(Job.project_id == project_id)
    return list(session.scalars(q))
