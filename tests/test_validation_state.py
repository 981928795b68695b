"""The validation page's state model, without a browser."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ecotaxa_core.db.models import AnnotationHistory, Object, Role
from ecotaxa_core.errors import PermissionDenied
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.users import create_user, get_user_by_email

from conftest import ADMIN_EMAIL
from dashboards.validation import ANY_STATUS, ANY_TAXON, ValidationPage, ValidationState
from validation_project import make_validation_project


@pytest.fixture
def demo(sqlite_instance, ndsb_subset):
    vp = make_validation_project(sqlite_instance, ndsb_subset)
    with sqlite_instance.sessions() as s:
        admin_id = get_user_by_email(s, ADMIN_EMAIL).id
    return sqlite_instance, vp, admin_id


def _n_history(inst) -> int:
    with inst.sessions() as s:
        return s.scalar(select(func.count()).select_from(AnnotationHistory))


def test_opens_the_first_project_sorted_by_score(demo):
    inst, vp, admin_id = demo
    state = ValidationState(inst, admin_id, vault_url="/vault/")
    assert state.project_id == vp.project_id and state.can_annotate
    assert state.total == 12 and state.page_summary() == "1-12 of 12 objects, page 1 of 1"
    scores = [r.score for r in state.rows]
    assert scores[:3] == [0.97, 0.93, 0.88] and scores[-2:] == [None, None]
    first = state.grid_items()[0]
    assert first["src"].startswith("/vault/thumbs/") and first["category"] == "Chaetognatha"
    assert (inst.vault.root / first["src"].removeprefix("/vault/")).is_file()
    labels = list(state.param.taxon_id.names)
    assert labels == ["All categories", "Biota (10 pred)", "\u00a0\u00a0Bacillariophyta (3 pred)",
                      "\u00a0\u00a0Chaetognatha (3 pred)", "\u00a0\u00a0Copepoda (4 pred)"]
    page = ValidationPage(state)
    assert page.__panel__() is page.__panel__()  # built once per page


def test_pages_filters_and_selection(demo):
    inst, vp, admin_id = demo
    state = ValidationState(inst, admin_id)
    state.page_size = 10
    assert (len(state.rows), state.n_pages) == (10, 2)
    state.run_action("next_page")
    assert state.page == 2 and len(state.rows) == 2
    assert state.page_summary() == "11-12 of 12 objects, page 2 of 2"
    state.run_action("next_page")  # no page 3
    assert state.page == 2
    state.run_action("select_all")
    assert state.selected == [r.id for r in state.rows]
    state.status = "unclassified"  # a filter goes back to page 1
    assert state.page == 1 and state.total == 2 and {r.status for r in state.rows} == {"unclassified"}
    assert state.selected == [r.id for r in state.rows]  # still visible, still selected
    state.status = ANY_STATUS
    state.taxon_id = vp.taxa["Copepoda"]
    assert [r.score for r in state.rows] == [0.93, 0.81, 0.64, 0.33]
    assert state.selected == []
    state.toggle(state.rows[1].id)
    state.toggle(state.rows[0].id)
    assert state.selected == [state.rows[0].id, state.rows[1].id]  # in page order
    state.toggle(state.rows[0].id)
    state.run_action("select_none")
    assert state.selected == []
    state.sort = "score_asc"
    assert [r.score for r in state.rows] == [0.33, 0.64, 0.81, 0.93]


def test_changes_write_history_and_refresh(demo):
    inst, vp, admin_id = demo
    state = ValidationState(inst, admin_id)
    state.taxon_id = vp.taxa["Copepoda"]
    state.selected = [r.id for r in state.rows[:2]]
    assert state.validate() == 2
    assert (state.message, state.message_kind) == ("2 objects validated.", "success")
    assert state.selected == [] and _n_history(inst) == 2
    assert "\u00a0\u00a0Copepoda (2 pred, 2 val)" in state.param.taxon_id.names
    assert [r.status for r in state.rows] == ["predicted", "predicted", "validated", "validated"]
    assert state.rows[-1].annotator == "Administrator"

    state.selected = [state.rows[0].id]
    assert state.move_to(vp.taxa["Chaetognatha"]) == 1
    assert state.message == "1 object moved to Chaetognatha."
    assert state.total == 3 and state.taxon_id == vp.taxa["Copepoda"]

    target = state.rows[0].id
    state.selected = [target]
    state.run_action("dubious")
    assert state.message == "1 object marked dubious."
    assert {r.id: r.status for r in state.rows}[target] == "dubious"
    assert _n_history(inst) == 4


def test_refused_changes_say_why_and_change_nothing(demo):
    inst, vp, admin_id = demo
    state = ValidationState(inst, admin_id)
    assert state.validate() == 0
    assert state.message_kind == "warning" and "Select objects first" in state.message
    state.status = "unclassified"
    state.selected = [r.id for r in state.rows]
    assert state.validate() == 0  # no category to validate them in
    assert state.message_kind == "danger" and "no category" in state.message
    assert state.move_to(None) == 0 and state.message_kind == "warning"
    assert _n_history(inst) == 0
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object).where(Object.annotator_id.is_not(None))) == 0


def test_who_sees_what(demo):
    inst, vp, admin_id = demo
    with inst.sessions.begin() as s:
        visitor = create_user(s, "visitor@example.org", "Visitor", "pw")
        nobody = create_user(s, "nobody@example.org", "Nobody", "pw")
        hidden = create_project(s, "hidden")
        set_member(s, vp.project_id, visitor.id, Role.VISITOR)
        ids = visitor.id, nobody.id, hidden.id

    state = ValidationState(inst, ids[0])
    assert state.project_id == vp.project_id and state.total == 12 and not state.can_annotate
    state.selected = [state.rows[0].id]
    assert state.validate() == 0
    assert state.message_kind == "danger" and "may not annotate" in state.message
    assert _n_history(inst) == 0

    lonely = ValidationState(inst, ids[1])
    assert lonely.project_id is None and lonely.rows == [] and lonely.message_kind == "warning"
    with pytest.raises(PermissionDenied, match="may not open project"):
        ValidationState(inst, ids[0], project_id=ids[2])
    admin_state = ValidationState(inst, admin_id, project_id=ids[2])
    assert admin_state.total == 0 and admin_state.page_summary() == "No objects"
    assert admin_state.taxon_id == ANY_TAXON


def test_category_search(demo):
    inst, vp, admin_id = demo
    state = ValidationState(inst, admin_id)
    assert state.search_taxa("chae") == [[vp.taxa["Chaetognatha"], "Chaetognatha"]]
    assert state.search_taxa("  ") == []
