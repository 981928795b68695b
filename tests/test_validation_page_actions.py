"""Undo, stale tiles, shared links, filters and rights of the validation page state, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dashboards.validation import ValidationState
from ecotaxa_core.annotation import validate_objects
from ecotaxa_core.db.models import AnnotationHistory, Object, Role
from ecotaxa_core.projects import set_member
from ecotaxa_core.users import create_user
from validation_project import make_validation_project


@pytest.fixture
def vp(instance, ndsb_subset):
    return make_validation_project(instance, ndsb_subset)


@pytest.fixture
def users(instance, vp):
    with instance.sessions.begin() as s:
        made = {name: create_user(s, f"{name}@example.org", name, "pw")
                for name in ("ann", "bob", "vis")}
        s.flush()
        set_member(s, vp.project_id, made["ann"].id, Role.ANNOTATOR)
        set_member(s, vp.project_id, made["bob"].id, Role.ANNOTATOR)
        set_member(s, vp.project_id, made["vis"].id, Role.VISITOR)
        return {name: u.id for name, u in made.items()}


def _state(instance, vp, user_id, **kw) -> ValidationState:
    return ValidationState(instance, user_id, project_id=vp.project_id, **kw)


def _db(instance, vp) -> dict[str, tuple]:
    with instance.sessions() as s:
        return {o.orig_id: (o.status, o.taxon_id, o.annotator_id)
                for o in s.scalars(select(Object).where(Object.project_id == vp.project_id))}


def test_validate_the_page_then_undo_twice(instance, vp, users):
    state = _state(instance, vp, users["ann"], page_size=10)
    before = _db(instance, vp)
    first_page = [r.orig_id for r in state.rows]
    assert state.validate_page_and_next() == 10
    assert state.page == 2  # the validated objects are still listed: go one page on
    after_page = _db(instance, vp)
    assert {o for o in first_page if after_page[o][0] == "validated"} == set(first_page)

    state.page = 1
    state.selected = [state.rows[0].id]
    assert state.mark_dubious() == 1
    assert state.undo() == 1 and "1 object back as before" in state.message
    assert _db(instance, vp) == after_page
    assert state.undo() == 10
    assert _db(instance, vp) == before
    assert state.undo() == 0 and state.message == "Nothing to undo."

    status_only = _state(instance, vp, users["ann"], page_size=10, status="unclassified",
                         sort="orig_id")
    assert status_only.total == 2
    status_only.selected = [status_only.rows[0].id]
    status_only.move_to(vp.taxa["Copepoda"])  # one left to validate in the page
    predicted = _state(instance, vp, users["ann"], page_size=10, status="predicted")
    shown = [r.id for r in predicted.rows]
    assert predicted.validate_page_and_next() == 10
    assert predicted.page == 1 and predicted.total == 0  # they left the filter: nothing skipped
    assert {_db(instance, vp)[o][0] for o in vp.objects} >= {"validated"}
    assert len(shown) == 10


def test_a_change_by_someone_else_refreshes_the_stale_tiles(instance, vp, users):
    ann = _state(instance, vp, users["ann"], sort="orig_id")
    bob = _state(instance, vp, users["bob"], sort="orig_id")
    assert ann.check_for_changes() == 0
    target = ann.rows[0]
    bob.selected = [target.id]
    bob.validate()
    assert ann.rows[0].status == target.status  # not yet seen
    assert ann.check_for_changes() == 1
    assert "changed by someone else" in ann.message
    assert (ann.rows[0].id, ann.rows[0].status, ann.rows[0].annotator) == (
        target.id, "validated", "bob")
    assert ann.check_for_changes() == 0


def test_a_visitor_sees_but_cannot_change_or_undo(instance, vp, users):
    state = _state(instance, vp, users["vis"])
    before = _db(instance, vp)
    assert len(state.rows) == 12 and not state.can_annotate
    state.selected = [state.rows[0].id]
    assert state.detail is not None and state.detail.id == state.rows[0].id
    state.can_annotate = True  # a page that wrongly offers the buttons: the core refuses
    assert state.validate() == 0 and "may not annotate" in state.message
    assert state.undo() == 0 and "may not annotate" in state.message
    assert _db(instance, vp) == before
    with instance.sessions() as s:
        assert s.scalars(select(AnnotationHistory)).first() is None


def test_moves_offer_recent_categories_first(instance, vp, users):
    state = _state(instance, vp, users["ann"], sort="orig_id")
    assert state.search_taxa("") == []
    state.selected = [state.rows[0].id]
    state.move_to(vp.taxa["Bacillariophyta"])
    state.selected = [state.rows[1].id]
    state.move_to(vp.taxa["Copepoda"])
    assert state.search_taxa("") == [[vp.taxa["Copepoda"], "Copepoda"],
                                     [vp.taxa["Bacillariophyta"], "Bacillariophyta"]]
    assert state.search_taxa("a")[:2] == state.search_taxa("")  # then the other matches
    assert [vp.taxa["Chaetognatha"], "Chaetognatha"] in state.search_taxa("a")


def test_the_view_goes_to_a_link_and_back(instance, vp, users):
    state = _state(instance, vp, users["ann"])
    state.param.update(taxon_id=vp.taxa["Copepoda"], score_min=0.5, sort="score_asc")
    query = state.view_query()
    assert query == {"project": str(vp.project_id), "category": str(vp.taxa["Copepoda"]),
                     "score_min": "0.5", "sort": "score_asc"}
    shared = ValidationState(instance, users["bob"], query=query)
    assert [r.score for r in shared.rows] == [0.64, 0.81, 0.93]
    assert shared.view_query() == query
    bad = ValidationState(instance, users["bob"], query={**query, "score_min": "high",
                                                         "category": "999999"})
    assert "score_min='high'" in bad.message and "category='999999'" in bad.message
    assert bad.total == 12  # the bad criteria are skipped


def test_filters_beyond_category_and_status(instance, vp, users):
    state = _state(instance, vp, users["ann"])
    state.param.update(score_min=0.5, score_max=0.9)
    assert sorted(r.score for r in state.rows) == [0.52, 0.64, 0.76, 0.81, 0.88]
    state.param.update(score_min=None, score_max=None, conditions="nosuchfield>3")
    assert state.rows == [] and "nosuchfield" in state.message
    state.conditions = ""
    [biota] = [n["id"] for n in state.tree if n["name"] == "Biota"]  # an ancestor, offered
    assert [n["p"] for n in state.tree if n["name"] == "Biota"] == [10]
    state.taxon_id = biota
    assert state.total == 0  # nothing is in Biota itself
    state.with_children = True
    assert state.total == 10  # its three children's predicted objects
    state.param.update(taxon_id=vp.taxa["Copepoda"], with_children=False)
    state.choose_branch(biota)  # a click in the tree
    assert (state.taxon_id, state.with_children, state.total) == (biota, True, 10)


def test_similarity_sort_needs_a_chosen_object_with_features(instance, vp, users):
    state = _state(instance, vp, users["ann"])
    state.sort_by_similarity()
    assert "Select one object" in state.message
    state.selected = [state.rows[0].id]
    state.sort_by_similarity()
    assert state.sort == "similar" and state.rows == []
    assert "no deep features" in state.message


def test_annotators_changes_are_checked_by_the_core_too(instance, vp, users):
    """The rights live in the core: a call without the page is refused the same way."""
    from ecotaxa_core.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        with instance.sessions.begin() as s:
            validate_objects(s, vp.project_id, list(vp.objects.values()), users["vis"])


def test_each_user_finds_the_view_they_left_in_each_project(instance, vp, users):
    from dashboards.validation import ValidationPage

    state = _state(instance, vp, users["ann"])
    ValidationPage(state, stale_check_ms=0).__panel__()  # the page saves the view as it changes
    state.param.update(taxon_id=vp.taxa["Copepoda"], sort="score_asc")
    again = ValidationState(instance, users["ann"])
    assert (again.taxon_id, again.sort, again.total) == (vp.taxa["Copepoda"], "score_asc", 4)
    other = ValidationState(instance, users["bob"])  # bob's view is his own
    assert (other.taxon_id, other.sort, other.total) == (0, "score_desc", 12)
    link = ValidationState(instance, users["ann"], query={"project": str(vp.project_id),
                                                          "status": "unclassified"})
    assert (link.taxon_id, link.status, link.total) == (0, "unclassified", 2)  # the link wins


def test_sample_annotator_date_and_depth_filters(instance, vp, users):
    from ecotaxa_core.db.models import Sample

    copepods = [vp.objects[f"copepod_cyclopoid_oithona_eggs_{i}"] for i in range(4)]
    with instance.sessions.begin() as s:
        station = Sample(project_id=vp.project_id, orig_id="st_12")
        s.add(station)
        s.flush()
        for k, oid in enumerate(copepods):
            obj = s.get(Object, oid)
            obj.sample_id, obj.date, obj.depth_min, obj.depth_max = (
                station.id, f"2024-05-0{k + 1}", 10.0 * k, 10.0 * k + 5)
    with instance.sessions.begin() as s:
        validate_objects(s, vp.project_id, copepods[:2], users["bob"])
    state = _state(instance, vp, users["ann"], sort="orig_id")
    assert list(state.param.sample.names) == ["All samples", "st_12"]
    assert list(state.param.annotator.names) == ["Anyone", f"bob (#{users['bob']})"]
    state.sample = "st_12"
    assert [r.id for r in state.rows] == copepods
    state.annotator = users["bob"]
    assert [r.id for r in state.rows] == copepods[:2]
    state.param.update(annotator=0, date_from="2024-05-02", date_to="2024-05-03")
    assert [r.id for r in state.rows] == copepods[1:3]
    state.param.update(date_from="", date_to="", depth_min=12.0, depth_max=40.0)
    assert [r.id for r in state.rows] == copepods[2:]  # [10, 15] is not inside [12, 40]
    state.date_from = "May 2"
    assert state.rows == [] and "date_from" in state.message


def test_predictions_above_their_threshold_are_shown_and_validated_in_bulk(sqlite_instance):
    """A real model, evaluated on a held-out part: its thresholds drive the bulk validation."""
    from learn_data import cluster_features, make_project

    from ecotaxa_core.learn import predict_project, train_model
    from ecotaxa_core.learn.thresholds import model_thresholds

    inst = sqlite_instance
    sp = make_project(inst, n_validated=(40, 40, 40), n_unclassified=30, n_dubious=3)
    ids, X = cluster_features(sp.truth, 4, separation=1.0)
    inst.features.append(sp.project_id, "morpho", ids, X, [f"f{j}" for j in range(4)])
    model = train_model(inst, sp.project_id, "deep_logreg", feature_sets=["morpho"])
    limits = {t: v for t, (v, _) in model_thresholds(model.metrics).items()}
    predict_project(inst, sp.project_id, model.id)
    with inst.sessions.begin() as s:
        annotator = create_user(s, "ann@example.org", "ann", "pw")
        s.flush()
        set_member(s, sp.project_id, annotator.id, Role.ANNOTATOR)
        annotator = annotator.id
    with inst.sessions() as s:
        predicted = {o.id: (o.taxon_id, o.score) for o in s.scalars(
            select(Object).where(Object.project_id == sp.project_id, Object.status == "predicted"))}
    above = sorted(i for i, (t, score) in predicted.items() if score >= limits[t])
    assert 0 < len(above) < len(predicted)

    state = ValidationState(inst, annotator, project_id=sp.project_id)
    assert state.bulk.model_id == model.id and state.bulk.n_above == len(above)
    assert f"**{len(above)}** of {len(predicted)} predictions" in state.bulk_summary()
    assert state.validate_above_thresholds() == 0  # not shown yet: refused
    state.param.update(above_threshold=True, page_size=10)
    assert state.total == len(above) and state.view_query()["above"] == "1"
    assert state.validate_above_thresholds() == len(above)  # every page, not just this one
    with inst.sessions() as s:
        now = {o.id: (o.status, o.annotator_id) for o in s.scalars(
            select(Object).where(Object.id.in_(list(predicted))))}
    assert all(now[i] == ("validated", annotator) for i in above)
    assert all(now[i] == ("predicted", None) for i in predicted if i not in above)
    assert state.bulk.n_above == 0 and state.total == 0
    assert state.undo() == len(above)  # one change: one undo
    assert state.bulk.n_above == len(above)


def test_batch_classification_marks_on_the_map_inverts_and_classifies(instance, vp, users):
    import numpy as np

    from dashboards.batch_page import BatchState

    ids = sorted(vp.objects.values())
    # Two clouds: the chaetognaths far from everything else.
    chaetos = {vp.objects[f"chaetognath_other_{i}"] for i in range(4)}
    vectors = np.array([[10.0, 0.0, 0.0] if i in chaetos else [0.0, 1.0 * k % 3, 0.0]
                        for k, i in enumerate(ids)], dtype=np.float32)
    instance.features.append(vp.project_id, "deep_test", ids, vectors, ["a", "b", "c"],
                             producer={"kind": "test"})
    state = _state(instance, vp, users["ann"])
    batch = BatchState(state)
    batch.load()
    assert sorted(batch.ids.tolist()) == ids and batch.xy.shape == (12, 2)
    far = [k for k, i in enumerate(batch.ids) if abs(batch.xy[k, 0]) > 5]  # the lasso's circle
    batch.mark_indices(far)
    assert set(batch.marked) == chaetos
    batch.invert()
    assert set(batch.marked) == set(ids) - chaetos
    batch.invert()
    assert batch.classify(vp.taxa["Copepoda"]) == 4
    db = _db(instance, vp)
    assert all(db[f"chaetognath_other_{i}"] == ("validated", vp.taxa["Copepoda"], users["ann"])
               for i in range(4))
    assert len(batch.ids) == 8 and not chaetos & set(batch.ids.tolist())  # labelled: hidden
    assert batch.message.startswith("4 objects classified as Copepoda. They are hidden")
    assert state.undo() == 4  # one change for the whole batch
    reference = next(iter(sorted(set(ids) - chaetos)))
    batch.mark_similar(reference, n=3)
    assert len(batch.marked) == 3 and reference in batch.marked

    visitor = BatchState(_state(instance, vp, users["vis"]))
    visitor.load()
    visitor.mark_indices(range(3))
    assert visitor.classify(vp.taxa["Copepoda"]) == 0 and "may not annotate" in visitor.message


def test_settings_page_sets_presets_fields_and_members_for_managers_only(instance, vp, users):
    from dashboards.settings_page import SettingsPage

    with instance.sessions.begin() as s:
        set_member(s, vp.project_id, users["bob"], Role.MANAGER)
    manager_state = _state(instance, vp, users["bob"], sort="orig_id")
    page = SettingsPage(manager_state)
    assert page.may_change and not page.save.disabled
    page.fields.value = ["orig_id", "depth_min"]
    page.picker.param.update(label="Chaetognatha", value=vp.taxa["Chaetognatha"])  # picked
    assert page.preset.value == [vp.taxa["Chaetognatha"]]
    assert page.save_settings() and "saved" in page.message.object
    item = manager_state.grid_items()[0]
    assert item["fields"] == [["orig_id", manager_state.rows[0].orig_id], ["depth_min", ""]]
    assert manager_state.search_taxa("") == [[vp.taxa["Chaetognatha"], "Chaetognatha"]]
    page.member_email.value, page.member_role.value = "vis@example.org", "annotator"
    assert page.apply_member()
    assert ("vis@example.org", "annotator") in [(m.email, m.role) for m in page.view.members]

    annotator_page = SettingsPage(_state(instance, vp, users["ann"]))
    assert not annotator_page.may_change and annotator_page.save.disabled
    annotator_page.title.value = "taken over"
    assert not annotator_page.save_settings()  # a page that would let it: the core refuses
    assert "may not administrate" in annotator_page.message.object
    with instance.sessions() as s:
        from ecotaxa_core.db.models import Project

        assert s.get(Project, vp.project_id).title == "validation demo"


def test_action_menu_asks_then_runs_project_operations_for_managers(instance, vp, users):
    from dashboards.project_actions import ProjectActions

    copepods = {vp.objects[f"copepod_cyclopoid_oithona_eggs_{i}"] for i in range(4)}
    with instance.sessions.begin() as s:
        set_member(s, vp.project_id, users["bob"], Role.MANAGER)
        validate_objects(s, vp.project_id, sorted(copepods)[:3], users["bob"])
    state = _state(instance, vp, users["bob"])
    state.taxon_id = vp.taxa["Copepoda"]
    actions = ProjectActions(state)
    before = _db(instance, vp)
    actions.ask("reset")
    assert actions.pending == "reset" and "send 3 validated objects back" in actions.question
    actions.cancel()
    assert actions.confirm() is None and _db(instance, vp) == before  # cancelled: nothing
    actions.ask("reset")
    assert actions.confirm() == 3
    assert {_db(instance, vp)[o][0] for o, i in vp.objects.items() if i in copepods} == {
        "predicted"}

    actions.ask("replace")
    assert "give 4 objects" in actions.question
    actions.target_taxon = vp.taxa["Bacillariophyta"]
    assert actions.confirm() == 4
    assert state.total == 0  # they left the Copepoda filter
    state.taxon_id = vp.taxa["Bacillariophyta"]
    actions.ask("subset")
    actions.new_title = "diatoms only"
    assert actions.confirm() == 7 and "diatoms only" in actions.message
    actions.ask("delete")
    assert "delete 7 objects" in actions.question
    annotator = ProjectActions(_state(instance, vp, users["ann"]))
    annotator.validation.taxon_id = vp.taxa["Bacillariophyta"]
    annotator.ask("delete")
    assert annotator.confirm() is None and "may not manage" in annotator.message
    assert actions.confirm() == 7
    assert len(_db(instance, vp)) == 5


def test_sorting_by_any_field_of_the_project(instance, vp, users):
    """Each field of the project is offered in both directions; numbers sort as numbers;
    the choice travels in the link."""
    from ecotaxa_core.db.models import Project

    with instance.sessions.begin() as s:
        s.get(Project, vp.project_id).free_columns = {"object": {"length": "f"}}
        objects = s.scalars(select(Object).where(Object.project_id == vp.project_id)
                            .order_by(Object.id)).all()
        for k, obj in enumerate(objects):
            obj.extra = {"length": float((k * 7) % 12)} if k != 3 else {}
            obj.depth_min = None
    state = _state(instance, vp, users["ann"])
    labels = state.param.sort.objects
    assert labels["length, high to low"] == "field:length:desc"
    assert labels["depth_min, low to high"] == "field:depth_min"
    state.sort = "field:length:desc"
    lengths = [(r.fields or {}).get("length") for r in state.rows]
    assert lengths == sorted(lengths[:-1], reverse=True) + [None]
    assert lengths[:3] == [11.0, 10.0, 8.0]  # 9.0 was the fourth object's, taken away
    query = state.view_query()
    assert query["sort"] == "field:length:desc"
    shared = ValidationState(instance, users["bob"], query=query)
    assert [r.id for r in shared.rows] == [r.id for r in state.rows]
    bad = ValidationState(instance, users["bob"], query={**query, "sort": "field:nope"})
    assert "sort='field:nope'" in bad.message and bad.sort == "score_desc"


def test_action_menu_sets_metadata_merges_and_reports_progress(instance, vp, users, ndsb_subset):
    """The menu's field edit touches the samples of the shown objects only; a merge takes a
    project the user manages; the progress of the run is reported to the page."""
    import asyncio

    from dashboards.project_actions import ProjectActions
    from ecotaxa_core.db.models import Project, Sample

    with instance.sessions.begin() as s:
        set_member(s, vp.project_id, users["bob"], Role.MANAGER)
        stations = [Sample(project_id=vp.project_id, orig_id=f"st{k}") for k in range(2)]
        s.add_all(stations)
        s.flush()
        for obj in s.scalars(select(Object).where(Object.project_id == vp.project_id)):
            in_copepods = obj.taxon_id == vp.taxa["Copepoda"]
            obj.sample_id = stations[0 if in_copepods else 1].id
    other = make_validation_project(instance, ndsb_subset, title="second cruise")
    with instance.sessions.begin() as s:
        set_member(s, other.project_id, users["bob"], Role.MANAGER)
        s.execute(Object.__table__.update().where(Object.project_id == other.project_id)
                  .values(orig_id=Object.orig_id + "_b"))
    state = _state(instance, vp, users["bob"])
    state.taxon_id = vp.taxa["Copepoda"]
    actions = ProjectActions(state)
    steps = []
    actions.param.watch(lambda e: steps.append(e.new), "progress_text")

    actions.ask("metadata")
    assert "of 4 objects" in actions.question
    actions.param.update(level="sample", field_name="ship", field_value="Tara")
    assert actions.confirm() == 1 and "ship set on 1 sample" in actions.message
    with instance.sessions() as s:
        ships = dict(s.execute(select(Sample.orig_id, Sample.extra)
                               .where(Sample.project_id == vp.project_id)).all())
        assert ships == {"st0": {"ship": "Tara"}, "st1": {}}
        assert s.get(Project, vp.project_id).free_columns["sample"]["ship"] == "t"

    actions.ask("merge")
    assert actions.param.merge_source.objects == {"#%d second cruise" % other.project_id:
                                                  other.project_id}
    steps.clear()
    n = asyncio.run(actions.confirm_in_background())
    assert n == 12 and "12 objects of project" in actions.message
    assert "objects: 12 of 12" in steps and not actions.running
    assert other.project_id not in state.param.project_id.objects.values()  # gone from the list
    assert vp.project_id in state.param.project_id.objects.values()
    with instance.sessions() as s:
        assert s.get(Project, other.project_id) is None
        assert s.scalar(select(func.count()).select_from(Object)
                        .where(Object.project_id == vp.project_id)) == 24

    visitor = ProjectActions(_state(instance, vp, users["vis"]))
    visitor.ask("merge")
    assert visitor.merge_source is None and None in visitor.param.merge_source.objects
    assert visitor.confirm() is None and "choose the project" in visitor.message
