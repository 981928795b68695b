"""Project settings and members, changed by managers only, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from ecotaxa_core.db.models import Project, Role
from ecotaxa_core.errors import PermissionDenied, UserNotFound
from ecotaxa_core.project_settings import (
    InvalidSetting,
    project_settings,
    set_member_role,
    update_project_settings,
)
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.users import create_user


@pytest.fixture
def setup(instance):
    with instance.sessions.begin() as s:
        users = {r: create_user(s, f"{r}@example.org", r.capitalize(), "pw")
                 for r in ("manager", "annotator", "visitor", "newcomer")}
        s.flush()
        project = create_project(s, "settings", owner=users["manager"])
        project.free_columns = {"object": {"area": "f", "sex": "t"}}
        for r in ("annotator", "visitor"):
            set_member(s, project.id, users[r].id, Role(r))
        taxa = [get_or_create_taxon(s, n).id for n in ("Copepoda", "detritus")]
        return {"pid": project.id, "taxa": taxa, **{r: u.id for r, u in users.items()}}


def test_a_manager_changes_settings_and_members(instance, setup):
    pid, manager = setup["pid"], setup["manager"]
    with instance.sessions.begin() as s:
        update_project_settings(s, pid, manager, title="  Tara 2024  ", instrument="uvp6",
                                pixel_size_um=73.0, preset_taxa=setup["taxa"][::-1],
                                thumbnail_fields=["area", "depth_min"])
        set_member_role(s, pid, manager, "NEWCOMER@example.org", "annotator")
        set_member_role(s, pid, manager, "visitor@example.org", None)
    with instance.sessions() as s:
        view = project_settings(s, pid, setup["annotator"])
    assert (view.title, view.instrument, view.pixel_size_um) == ("Tara 2024", "uvp6", 73.0)
    assert view.preset_taxa == [(setup["taxa"][1], "detritus"), (setup["taxa"][0], "Copepoda")]
    assert view.thumbnail_fields == ["area", "depth_min"]
    assert "sex" in view.available_fields and "orig_id" in view.available_fields
    assert [(m.email, m.role) for m in view.members] == [
        ("manager@example.org", "manager"), ("annotator@example.org", "annotator"),
        ("newcomer@example.org", "annotator")]


def test_bad_values_and_others_are_refused_and_nothing_changes(instance, setup):
    pid, manager = setup["pid"], setup["manager"]
    bad = [(dict(title="  "), "title"), (dict(pixel_size_um=-1.0), "pixel_size_um"),
           (dict(pixel_size_um=float("nan")), "pixel_size_um"),
           (dict(preset_taxa=[999_999]), "preset_taxa"),
           (dict(thumbnail_fields=["area", "'; DROP TABLE objects; --"]), "thumbnail_fields")]
    for kwargs, field in bad:
        with pytest.raises(InvalidSetting, match=f"setting {field}") as caught:
            with instance.sessions.begin() as s:
                update_project_settings(s, pid, manager, instrument="changed", **kwargs)
        assert caught.value.field == field
    for who in ("annotator", "visitor", "newcomer"):
        with pytest.raises(PermissionDenied, match="may not administrate"):
            with instance.sessions.begin() as s:
                update_project_settings(s, pid, setup[who], title="mine")
        with pytest.raises(PermissionDenied):
            with instance.sessions.begin() as s:
                set_member_role(s, pid, setup[who], f"{who}@example.org", "manager")
    with pytest.raises(InvalidSetting, match="last manager"):
        with instance.sessions.begin() as s:
            set_member_role(s, pid, manager, "manager@example.org", "visitor")
    with pytest.raises(InvalidSetting, match="unknown role"):
        with instance.sessions.begin() as s:
            set_member_role(s, pid, manager, "annotator@example.org", "owner")
    with pytest.raises(UserNotFound):
        with instance.sessions.begin() as s:
            set_member_role(s, pid, manager, "nobody@example.org", "visitor")
    with instance.sessions() as s:
        project = s.get(Project, pid)
        assert (project.title, project.instrument) == ("settings", None)
        assert "dashboard" not in (project.settings or {})
