"""Undo of a validator's changes, and the rights every change checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ecotaxa_core.annotation import (
    PredictionBatch,
    apply_predictions,
    move_objects,
    object_history,
    set_dubious,
    validate_objects,
)
from ecotaxa_core.annotation_undo import UNDO, recent_changes, undo_last_change
from ecotaxa_core.db.models import AnnotationHistory, Object, Role
from ecotaxa_core.errors import PermissionDenied
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.users import create_user


@pytest.fixture
def setup(instance):
    """Six predicted objects, an annotator, a second annotator and a visitor."""
    import numpy as np

    with instance.sessions.begin() as s:
        cope = get_or_create_taxon(s, "Copepoda")
        diat = get_or_create_taxon(s, "Bacillariophyta")
        prj = create_project(s, "undo")
        users = {name: create_user(s, f"{name}@example.org", name, "pw")
                 for name in ("ann", "bob", "vis")}
        s.flush()
        set_member(s, prj.id, users["ann"].id, Role.ANNOTATOR)
        set_member(s, prj.id, users["bob"].id, Role.ANNOTATOR)
        set_member(s, prj.id, users["vis"].id, Role.VISITOR)
        objects = [Object(project_id=prj.id, orig_id=f"o{i}", status="unclassified")
                   for i in range(6)]
        s.add_all(objects)
        s.flush()
        ids = [o.id for o in objects]
        result = dict(pid=prj.id, ids=ids, cope=cope.id, diat=diat.id,
                      **{name: u.id for name, u in users.items()})
    with instance.sessions.begin() as s:
        batch = PredictionBatch(object_ids=np.array(ids), taxon_ids=np.full(6, result["cope"]),
                                scores=np.linspace(0.5, 0.9, 6),
                                top_taxon_ids=np.full((6, 1), result["cope"]),
                                top_scores=np.linspace(0.5, 0.9, 6)[:, None])
        apply_predictions(s, prj.id, batch, model_id=None)
    return result


def _states(instance, ids):
    with instance.sessions() as s:
        return {o.id: (o.status, o.taxon_id, o.annotator_id, o.score)
                for o in s.scalars(select(Object).where(Object.id.in_(ids)))}


def test_undo_puts_back_the_last_change_then_the_one_before(instance, setup):
    ids, pid, ann = setup["ids"], setup["pid"], setup["ann"]
    predicted = _states(instance, ids)
    with instance.sessions.begin() as s:
        validate_objects(s, pid, ids[:3], ann)
    after_validate = _states(instance, ids)
    with instance.sessions.begin() as s:
        move_objects(s, pid, ids[1:4], setup["diat"], ann)
    with instance.sessions() as s:
        changes = recent_changes(s, pid, ann)
    assert [(c.n_objects, c.n_undoable) for c in changes] == [(3, 3), (3, 1)]

    with instance.sessions.begin() as s:
        first = undo_last_change(s, pid, ann)
    assert first.restored == ids[1:4] and first.kept == []
    assert _states(instance, ids) == after_validate
    with instance.sessions.begin() as s:
        second = undo_last_change(s, pid, ann)
    assert second.restored == ids[:3]
    assert _states(instance, ids) == predicted  # scores and categories back too
    with instance.sessions.begin() as s:
        assert not undo_last_change(s, pid, ann)  # predictions are not the user's to undo

    with instance.sessions() as s:  # the undos are in the history, marked as such
        history = object_history(s, ids[1])
        assert [h.action for h in history] == [UNDO, UNDO, None, None, None]
        assert history[0].status == "validated" and history[0].taxon_id == setup["cope"]
        assert history[1].taxon_id == setup["diat"]
        assert all(h.changed_by_id == ann for h in history[:4])


def test_undo_keeps_what_another_validator_changed_since(instance, setup):
    ids, pid = setup["ids"], setup["pid"]
    with instance.sessions.begin() as s:
        validate_objects(s, pid, ids[:4], setup["ann"])
    with instance.sessions.begin() as s:
        set_dubious(s, pid, ids[2:4], setup["bob"])
    with instance.sessions.begin() as s:
        result = undo_last_change(s, pid, setup["ann"])
    assert (result.restored, result.kept) == (ids[:2], ids[2:4])
    states = _states(instance, ids)
    assert [states[i][0] for i in ids[:4]] == ["predicted", "predicted", "dubious", "dubious"]
    assert states[ids[2]][2] == setup["bob"]  # the last change wins
    with instance.sessions.begin() as s:  # bob's own undo still works
        assert undo_last_change(s, pid, setup["bob"]).restored == ids[2:4]
    assert _states(instance, ids)[ids[2]][:3] == ("validated", setup["cope"], setup["ann"])


def test_visitors_and_strangers_may_neither_change_nor_undo(instance, setup):
    ids, pid = setup["ids"], setup["pid"]
    with instance.sessions.begin() as s:
        stranger = create_user(s, "x@example.org", "x", "pw").id
    before = _states(instance, ids)
    for user in (setup["vis"], stranger):
        for change in (lambda s: validate_objects(s, pid, ids, user),
                       lambda s: set_dubious(s, pid, ids, user),
                       lambda s: move_objects(s, pid, ids, setup["diat"], user),
                       lambda s: undo_last_change(s, pid, user)):
            with pytest.raises(PermissionDenied, match="may not annotate"):
                with instance.sessions.begin() as s:
                    change(s)
    assert _states(instance, ids) == before
    with instance.sessions() as s:
        n_history = len(s.scalars(select(AnnotationHistory)).all())
    assert n_history == 6  # the predictions' rows only


def test_the_detail_of_an_object_names_its_history_and_top_predictions(instance, setup):
    from ecotaxa_core.object_detail import object_detail

    pid, ann, oid = setup["pid"], setup["ann"], setup["ids"][0]
    with instance.sessions.begin() as s:
        move_objects(s, pid, [oid], setup["diat"], ann)
    with instance.sessions.begin() as s:
        undo_last_change(s, pid, ann)
    with instance.sessions.begin() as s:
        validate_objects(s, pid, [oid], setup["bob"])
    with instance.sessions() as s:
        detail = object_detail(s, pid, oid, setup["vis"])  # a visitor may look
        with pytest.raises(PermissionDenied):
            object_detail(s, pid, oid, create_user(s, "y@example.org", "y", "pw").id)
    assert (detail.orig_id, detail.status, detail.category, detail.annotator) == (
        "o0", "validated", "Copepoda", "bob")
    assert detail.top_predictions == [("Copepoda", 0.5)]
    assert [(h.changed_by, h.action, h.status, h.category) for h in detail.history] == [
        ("bob", None, "predicted", "Copepoda"),  # the state bob's validation replaced
        ("ann", UNDO, "validated", "Bacillariophyta"),  # the state ann's undo replaced
        ("ann", None, "predicted", "Copepoda"),
        (None, None, "unclassified", None),  # the prediction run
    ]
