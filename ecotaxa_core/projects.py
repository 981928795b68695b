"""Projects and their members."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Membership, Object, ObjectStatus, Project, Role, User
from ecotaxa_core.errors import EcoTaxaError, ProjectNotFound

__all__ = ["create_project", "get_project", "set_member", "project_counts", "list_projects"]


def create_project(session: Session, title: str, instrument: str | None = None,
                   owner: User | None = None, pixel_size_um: float | None = None) -> Project:
    title = title.strip()
    if not title:
        raise EcoTaxaError("a project needs a title")
    project = Project(title=title, instrument=instrument, pixel_size_um=pixel_size_um,
                      free_columns={})
    session.add(project)
    session.flush()
    if owner is not None:
        set_member(session, project.id, owner.id, Role.MANAGER)
    return project


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, int(project_id))
    if project is None:
        raise ProjectNotFound(project_id)
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.id)))


def set_member(session: Session, project_id: int, user_id: int, role: Role) -> None:
    m = session.get(Membership, (user_id, project_id))
    if m is None:
        session.add(Membership(user_id=user_id, project_id=project_id, role=Role(role).value))
    else:
        m.role = Role(role).value
    session.flush()


def project_counts(session: Session, project_id: int) -> dict[str, int]:
    """Objects per status, plus the total."""
    get_project(session, project_id)
    rows = session.execute(select(Object.status, func.count()).where(Object.project_id == project_id)
                           .group_by(Object.status)).all()
    counts = {s.value: 0 for s in ObjectStatus}
    counts.update({status: n for status, n in rows})
    counts["total"] = sum(n for _, n in rows)
    return counts
