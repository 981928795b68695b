"""Who may do what in a project.

Roles are per project (``memberships.role``): a visitor may view, an
annotator may also annotate, a manager may also import and manage (bulk
operations, deletion, subsets, merges). Administering (members, the project
itself) is for managers too; an instance administrator (``User.is_admin``)
may do everything everywhere. An inactive user may do nothing.
"""

from __future__ import annotations

from enum import Enum

from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Membership, Project, Role, User
from ecotaxa_core.errors import PermissionDenied, ProjectNotFound

__all__ = ["Action", "user_can", "require", "require_stage", "ROLE_ACTIONS", "STAGE_ACTIONS"]


class Action(str, Enum):
    VIEW = "view"
    ANNOTATE = "annotate"
    IMPORT = "import"
    MANAGE = "manage"
    ADMINISTRATE = "administrate"


ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    Role.VISITOR.value: frozenset({Action.VIEW}),
    Role.ANNOTATOR.value: frozenset({Action.VIEW, Action.ANNOTATE}),
    Role.MANAGER.value: frozenset({Action.VIEW, Action.ANNOTATE, Action.IMPORT, Action.MANAGE,
                                   Action.ADMINISTRATE}),
}


def user_can(session: Session, user_id: int, project_id: int, action: Action | str) -> bool:
    """Whether the user may do ``action`` in the project (False for unknown users).

    Raises :class:`ProjectNotFound` when the project does not exist.
    """
    action = Action(action)
    if session.get(Project, int(project_id)) is None:
        raise ProjectNotFound(project_id)
    user = session.get(User, int(user_id)) if user_id is not None else None
    if user is None or not user.active:
        return False
    if user.is_admin:
        return True
    membership = session.get(Membership, (int(user_id), int(project_id)))
    if membership is None:
        return False
    return action in ROLE_ACTIONS.get(membership.role, frozenset())


def require(session: Session, user_id: int, project_id: int, action: Action | str) -> None:
    """Raise :class:`PermissionDenied` unless the user may do ``action`` in the project."""
    if not user_can(session, user_id, project_id, action):
        user = session.get(User, int(user_id)) if user_id is not None else None
        who = user.email if user is not None else f"unknown user {user_id}"
        raise PermissionDenied(f"{who} may not {Action(action).value} project {project_id}")


#: The right each pipeline stage needs when a user starts it (dashboard, API, command line):
#: importing, computing features, training and predicting are a manager's; anyone who may
#: view a project may export it.
STAGE_ACTIONS: dict[str, Action] = {
    "import": Action.IMPORT, "features": Action.IMPORT, "train": Action.IMPORT,
    "predict": Action.IMPORT, "export": Action.VIEW,
}


def require_stage(session: Session, user_id: int, project_id: int, stage: str) -> None:
    """Raise :class:`PermissionDenied` unless the user may start ``stage`` on the project."""
    if stage not in STAGE_ACTIONS:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGE_ACTIONS)}")
    require(session, user_id, project_id, STAGE_ACTIONS[stage])
