"""What a project's managers set: title, instrument, pixel size, the categories offered
first, the fields shown under thumbnails, and who is a member in which role.

Reading needs the view right; every change needs the administrate right (a
manager, or an instance administrator), checked here whoever calls. Bad values
are refused with the field at fault (:class:`InvalidSetting`) and nothing is
changed. A project always keeps at least one manager.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Membership, Project, Role, Taxon, User
from ecotaxa_core.errors import EcoTaxaError, UserNotFound
from ecotaxa_core.projects import get_project, set_member
from ecotaxa_core.rights import Action, require

__all__ = ["InvalidSetting", "Member", "ProjectSettingsView", "project_settings",
           "update_project_settings", "set_member_role", "THUMBNAIL_FIELDS_BUILTIN"]

#: Object fields that may be shown under a thumbnail besides the project's free columns.
THUMBNAIL_FIELDS_BUILTIN = ("orig_id", "date", "time", "depth_min", "depth_max", "lat", "lon")
_MAX_PRESET = 200


class InvalidSetting(EcoTaxaError, ValueError):
    """A project setting that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"setting {field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Member:
    user_id: int
    email: str
    name: str
    role: str


@dataclass(frozen=True)
class ProjectSettingsView:
    project_id: int
    title: str
    instrument: str | None
    pixel_size_um: float | None
    preset_taxa: list[tuple[int, str]]  # (taxon id, display name), in the order set
    thumbnail_fields: list[str]
    available_fields: list[str]  # what thumbnail_fields may name
    members: list[Member]  # by role (managers first), then e-mail


def _available_fields(project: Project) -> list[str]:
    free = sorted((project.free_columns or {}).get("object", {}))
    return list(THUMBNAIL_FIELDS_BUILTIN) + [f for f in free if f not in THUMBNAIL_FIELDS_BUILTIN]


def project_settings(session: Session, project_id: int, user_id: int) -> ProjectSettingsView:
    require(session, user_id, project_id, Action.VIEW)
    project = get_project(session, project_id)
    dashboard = (project.settings or {}).get("dashboard", {})
    preset_ids = [int(t) for t in dashboard.get("preset_taxa", [])]
    names = dict(session.execute(select(Taxon.id, Taxon.display_name)
                                 .where(Taxon.id.in_(preset_ids))).all()) if preset_ids else {}
    order = {Role.MANAGER.value: 0, Role.ANNOTATOR.value: 1, Role.VISITOR.value: 2}
    members = [Member(u, e, n, r) for u, e, n, r in session.execute(
        select(User.id, User.email, User.name, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project.id))]
    members.sort(key=lambda m: (order.get(m.role, 3), m.email))
    return ProjectSettingsView(
        project_id=project.id, title=project.title, instrument=project.instrument,
        pixel_size_um=project.pixel_size_um,
        preset_taxa=[(t, names[t]) for t in preset_ids if t in names],
        thumbnail_fields=list(dashboard.get("thumbnail_fields", [])),
        available_fields=_available_fields(project), members=members)


def update_project_settings(session: Session, project_id: int, user_id: int, *,
                            title: str | None = None, instrument: str | None = None,
                            pixel_size_um: float | None = None,
                            preset_taxa: Sequence[int] | None = None,
                            thumbnail_fields: Sequence[str] | None = None) -> None:
    """Change the settings given (None: unchanged; an empty instrument clears it)."""
    require(session, user_id, project_id, Action.ADMINISTRATE)
    project = get_project(session, project_id)
    changes: dict = {}
    if title is not None:
        title = title.strip()
        if not title or len(title) > 255:
            raise InvalidSetting("title", "needs 1 to 255 characters")
        changes["title"] = title
    if instrument is not None:
        instrument = instrument.strip()
        if len(instrument) > 64:
            raise InvalidSetting("instrument", "at most 64 characters")
        changes["instrument"] = instrument or None
    if pixel_size_um is not None:
        if not (isinstance(pixel_size_um, (int, float)) and math.isfinite(pixel_size_um)
                and pixel_size_um > 0):
            raise InvalidSetting("pixel_size_um", f"{pixel_size_um!r} is not a positive size in µm")
        changes["pixel_size_um"] = float(pixel_size_um)
    dashboard = dict((project.settings or {}).get("dashboard", {}))
    if preset_taxa is not None:
        ids = list(dict.fromkeys(int(t) for t in preset_taxa))
        if len(ids) > _MAX_PRESET:
            raise InvalidSetting("preset_taxa", f"at most {_MAX_PRESET} categories")
        known = set(session.scalars(select(Taxon.id).where(Taxon.id.in_(ids)))) if ids else set()
        unknown = [t for t in ids if t not in known]
        if unknown:
            raise InvalidSetting("preset_taxa", f"no taxon with id {unknown[:10]}")
        dashboard["preset_taxa"] = ids
    if thumbnail_fields is not None:
        fields = list(dict.fromkeys(str(f) for f in thumbnail_fields))
        available = _available_fields(project)
        unknown = [f for f in fields if f not in available]
        if unknown:
            raise InvalidSetting("thumbnail_fields",
                                 f"unknown field {unknown}; use some of {', '.join(available)}")
        dashboard["thumbnail_fields"] = fields
    for name, value in changes.items():
        setattr(project, name, value)
    if preset_taxa is not None or thumbnail_fields is not None:
        project.settings = {**(project.settings or {}), "dashboard": dashboard}
    session.flush()


def set_member_role(session: Session, project_id: int, user_id: int, member_email: str,
                    role: str | None) -> None:
    """Give ``member_email`` a role in the project (None: remove them from it)."""
    require(session, user_id, project_id, Action.ADMINISTRATE)
    get_project(session, project_id)
    member = session.scalar(select(User).where(User.email == member_email.strip().lower()))
    if member is None:
        raise UserNotFound(f"no user with e-mail {member_email!r}")
    if role is not None:
        try:
            role = Role(role).value
        except ValueError:
            raise InvalidSetting("role", f"unknown role {role!r}; use "
                                 f"{', '.join(r.value for r in Role)}") from None
    current = session.get(Membership, (member.id, int(project_id)))
    if current is not None and current.role == Role.MANAGER.value and role != Role.MANAGER.value:
        managers = session.scalar(select(func.count()).select_from(Membership).where(
            Membership.project_id == int(project_id), Membership.role == Role.MANAGER.value))
        if managers <= 1:
            raise InvalidSetting("role", f"{member.email} is the project's last manager")
    if role is None:
        if current is not None:
            session.delete(current)
            session.flush()
        return
    set_member(session, int(project_id), member.id, Role(role))
