"""Jobs: the user-visible record of each stage run (who, what, state, result, error).

A job outlives its project: deleting or merging away a project keeps its jobs
(``project_id`` becomes NULL, ``project_ref`` keeps the id), so the record of
the deletion itself and the project's earlier history remain
(:func:`list_jobs` with ``deleted=True``).

A running job's process holds a lock file (``work/jobs/<id>.lock``) until the
job ends; the system releases it if the process dies. A job still
``running`` whose lock is free was killed: :func:`reap_dead_jobs` (run when a
job starts, and by ``ecotaxa jobs``) marks it ``failed`` and says so.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Job, Project, utcnow
from ecotaxa_core.durable_files import file_lock
from ecotaxa_core.instance import Instance

__all__ = ["recorded_job", "list_jobs", "reap_dead_jobs", "KILLED_MESSAGE"]

KILLED_MESSAGE = "the process running it ended before the job did (killed or crashed)"


def _lock_path(inst: Instance, job_id: int) -> Path:
    return inst.settings.work_dir / "jobs" / f"{job_id}.lock"


@contextmanager
def recorded_job(inst: Instance, kind: str, project_id: int | None, params: dict[str, Any],
                 flow_run_id: str | None = None, user_id: int | None = None) -> Iterator[dict]:
    """Record a job around a block; put the block's result in the yielded dict's "result".

    The job row is committed as ``running`` before the block starts, so other
    sessions (the dashboard) see it, and ends ``done`` or ``failed`` with the error.
    A job about a project that does not exist (any more) is still recorded,
    with only its ``project_ref``; the block then reports what is wrong.
    """
    reap_dead_jobs(inst)
    job_id = None
    try:
        with ExitStack() as stack:
            with inst.sessions.begin() as s:
                live = project_id is not None and s.get(Project, project_id) is not None
                job = Job(project_id=project_id if live else None, project_ref=project_id,
                          kind=kind, state="running", params=params, flow_run_id=flow_run_id,
                          user_id=user_id)
                s.add(job)
                s.flush()
                job_id = job.id
                # Held before the row is visible as running: a reaper never sees it free.
                stack.enter_context(file_lock(_lock_path(inst, job_id)))
            holder: dict[str, Any] = {"job_id": job_id, "result": None}
            try:
                yield holder
            except BaseException as exc:
                with inst.sessions.begin() as s:
                    job = s.get(Job, job_id)
                    job.state, job.finished_at = "failed", utcnow()
                    job.error = f"{type(exc).__name__}: {exc}"
                raise
            with inst.sessions.begin() as s:
                job = s.get(Job, job_id)
                job.state, job.result, job.progress = "done", holder["result"], 1.0
                job.finished_at = utcnow()
    finally:  # done or failed: the lock file has served
        if job_id is not None:
            _lock_path(inst, job_id).unlink(missing_ok=True)


def reap_dead_jobs(inst: Instance) -> list[int]:
    """Mark ``failed`` the running jobs whose process is gone; their ids.

    A job is alive while its process holds its lock file. A running job with no
    lock file at all was started by another machine sharing the database (or
    before locks existed) and is left alone.
    """
    with inst.sessions() as s:
        running = s.scalars(select(Job.id).where(Job.state == "running")).all()
    dead = []
    for job_id in running:
        path = _lock_path(inst, job_id)
        if not path.exists():
            continue
        with file_lock(path, blocking=False) as got:
            if not got:
                continue
            with inst.sessions.begin() as s:
                job = s.get(Job, job_id, with_for_update=True)
                if job is not None and job.state == "running":
                    job.state, job.error, job.finished_at = "failed", KILLED_MESSAGE, utcnow()
                    dead.append(job_id)
        path.unlink(missing_ok=True)
    return dead


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
