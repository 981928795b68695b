"""Renaming, merging, deprecating and restoring taxa, on both databases."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from ecotaxa_core.annotation import object_history
from ecotaxa_core.db.models import Object, Taxon
from ecotaxa_core.errors import PermissionDenied
from ecotaxa_core.projects import create_project
from ecotaxa_core.queries import taxa_for_picker
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.taxonomy_edit import (TaxonNode, TaxonomyEditError, canonical_display_names,
                                        deprecate_taxon, merge_taxa, rename_taxon, restore_taxon)
from ecotaxa_core.users import create_user


def _utc(d: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes (in UTC)."""
    return d if d is None or d.tzinfo else d.replace(tzinfo=timezone.utc)


def _labels(session) -> dict[int, str]:
    return dict(session.execute(select(Taxon.id, Taxon.display_name)).all())


@pytest.fixture
def tree(instance):
    """Biota > (Copepoda > (Calanoida, eggs), other > egg), detritus."""
    with instance.sessions.begin() as s:
        biota = get_or_create_taxon(s, "Biota")
        cop = get_or_create_taxon(s, "Copepoda", biota)
        other = get_or_create_taxon(s, "other", biota)
        return {"biota": biota.id, "cop": cop.id, "other": other.id,
                "cal": get_or_create_taxon(s, "Calanoida", cop).id,
                "eggs": get_or_create_taxon(s, "eggs", cop).id,
                "egg": get_or_create_taxon(s, "egg", other).id,
                "det": get_or_create_taxon(s, "detritus").id}


def test_display_names_go_up_the_tree_until_unique():
    tree = {1: TaxonNode(None, "A", "A"), 2: TaxonNode(1, "x", None), 3: TaxonNode(None, "B", "B"),
            4: TaxonNode(3, "x", None), 5: TaxonNode(3, "x", None), 6: TaxonNode(2, "y", None),
            7: TaxonNode(4, "y", None), 8: TaxonNode(None, "y", None)}
    assert canonical_display_names(tree, [2, 4, 5]) == {2: "x<A", 4: "x<B #4", 5: "x<B #5"}
    assert canonical_display_names(tree, [6, 7, 8]) == {6: "y<x<A", 7: "y<x<B", 8: "y<root"}
    assert canonical_display_names(tree, [1], taken={"a"}) == {1: "A<root"}


def test_rename_recomputes_the_display_names_it_affects(instance, admin, tree):
    with instance.sessions.begin() as s:
        result = rename_taxon(s, tree["eggs"], "Egg", admin.id)
    assert result.display_name == "Egg<Copepoda"
    assert result.relabelled == {tree["eggs"]: "Egg<Copepoda", tree["egg"]: "egg<other"}
    with instance.sessions.begin() as s:
        rename_taxon(s, tree["cop"], "Copepoda_x", admin.id)
        assert s.get(Taxon, tree["eggs"]).display_name == "Egg<Copepoda_x"
        assert s.get(Taxon, tree["cal"]).display_name == "Calanoida"
    with instance.sessions.begin() as s:
        result = rename_taxon(s, tree["egg"], "egg_other", admin.id)
    with instance.sessions() as s:
        labels = _labels(s)
    assert labels[tree["eggs"]] == "Egg" and labels[tree["egg"]] == "egg_other"
    assert len(set(labels.values())) == len(labels)


def test_rename_refuses_a_sibling_name_and_bad_names(instance, admin, tree):
    with instance.sessions() as s:
        before = _labels(s)
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyEditError, match="its sibling 'Calanoida'.*already has that name"):
            rename_taxon(s, tree["eggs"], "calanoida", admin.id)
    for bad in ("a<b", "  ", "tab\there"):
        with instance.sessions.begin() as s:
            with pytest.raises(TaxonomyEditError, match="cannot rename"):
                rename_taxon(s, tree["eggs"], bad, admin.id)
    with instance.sessions() as s:
        assert _labels(s) == before
        assert s.get(Taxon, tree["eggs"]).name == "eggs"


def _objects(instance, admin, tree):
    """Objects of two projects in Copepoda: validated by an annotator, predicted, dubious."""
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    with instance.sessions.begin() as s:
        annotator = create_user(s, "ann@example.org", "Ann")
        ids = {}
        for title in ("p1", "p2"):
            p = create_project(s, title)
            rows = [Object(project_id=p.id, orig_id="v", status="validated", taxon_id=tree["cop"],
                           annotator_id=annotator.id, annotation_date=when),
                    Object(project_id=p.id, orig_id="p", status="predicted", taxon_id=tree["cop"],
                           score=0.8),
                    Object(project_id=p.id, orig_id="d", status="dubious", taxon_id=tree["cop"],
                           annotator_id=annotator.id, annotation_date=when),
                    Object(project_id=p.id, orig_id="o", status="validated", taxon_id=tree["det"])]
            s.add_all(rows)
            s.flush()
            ids[title] = {o.orig_id: o.id for o in rows}
        return ids, annotator.id, when


def test_merge_moves_every_object_keeping_its_state_and_history(instance, admin, tree):
    ids, annotator_id, when = _objects(instance, admin, tree)
    with instance.sessions.begin() as s:
        target = get_or_create_taxon(s, "Crustacea", s.get(Taxon, tree["biota"])).id
        get_or_create_taxon(s, "Calanoida", s.get(Taxon, target))  # same name under the target
    with instance.sessions.begin() as s:
        result = merge_taxa(s, tree["cop"], target, admin.id)
    assert (result.taxon_id, result.objects_moved, result.children_moved) == (target, 6, 1)
    with instance.sessions() as s:
        for title in ("p1", "p2"):
            v, p, d, o = (s.get(Object, ids[title][k]) for k in "vpdo")
            assert [x.taxon_id for x in (v, p, d)] == [target] * 3
            assert (v.status, v.annotator_id, _utc(v.annotation_date)) == ("validated", annotator_id, when)
            assert (p.status, p.score) == ("predicted", 0.8)
            assert (d.status, d.annotator_id) == ("dubious", annotator_id)
            assert o.taxon_id == tree["det"] and object_history(s, o.id) == []
            hist = object_history(s, v.id)
            assert [(h.taxon_id, h.status, h.annotator_id, _utc(h.annotation_date), h.changed_by_id)
                    for h in hist] == [(tree["cop"], "validated", annotator_id, when, admin.id)]
            assert object_history(s, p.id)[0].score == 0.8
        cop = s.get(Taxon, tree["cop"])
        assert (cop.deprecated, cop.merged_into_id) == (True, target)
        # eggs moved under the target; Calanoida exists there, so it was merged into that one.
        assert s.get(Taxon, tree["eggs"]).parent_id == target
        cal = s.get(Taxon, tree["cal"])
        assert cal.deprecated and s.get(Taxon, cal.merged_into_id).parent_id == target
        offered = {c.taxon_id for c in taxa_for_picker(s, "", limit=100)}
        assert tree["cop"] not in offered and tree["cal"] not in offered and target in offered
        labels = _labels(s)
        assert len({lb.lower() for lb in labels.values()}) == len(labels)


def test_merge_refuses_itself_descendants_and_deprecated_targets(instance, admin, tree):
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyEditError, match="into its own descendant 'eggs'"):
            merge_taxa(s, tree["cop"], tree["eggs"], admin.id)
        with pytest.raises(TaxonomyEditError, match="into itself"):
            merge_taxa(s, tree["cop"], tree["cop"], admin.id)
    with instance.sessions.begin() as s:
        deprecate_taxon(s, tree["det"], admin.id)
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyEditError, match="it is deprecated"):
            merge_taxa(s, tree["egg"], tree["det"], admin.id)
    with instance.sessions() as s:
        assert s.get(Taxon, tree["eggs"]).parent_id == tree["cop"]
        assert not s.get(Taxon, tree["cop"]).deprecated


def test_merging_into_the_parent_moves_the_children_up(instance, admin, tree):
    with instance.sessions.begin() as s:
        result = merge_taxa(s, tree["cop"], tree["biota"], admin.id)
    assert result.children_moved == 2
    with instance.sessions() as s:
        assert {s.get(Taxon, tree[k]).parent_id for k in ("cal", "eggs")} == {tree["biota"]}


def test_taxa_merged_earlier_follow_their_target_when_it_is_merged(instance, admin, tree):
    with instance.sessions.begin() as s:
        merge_taxa(s, tree["egg"], tree["eggs"], admin.id)
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyEditError, match="already merged into id"):
            merge_taxa(s, tree["egg"], tree["cal"], admin.id)
    with instance.sessions.begin() as s:
        merge_taxa(s, tree["eggs"], tree["cal"], admin.id)
    with instance.sessions() as s:
        assert s.get(Taxon, tree["egg"]).merged_into_id == tree["cal"]
        assert s.get(Taxon, tree["eggs"]).merged_into_id == tree["cal"]


def test_deprecated_taxa_are_not_offered_but_objects_keep_them(instance, admin, tree):
    ids, _, _ = _objects(instance, admin, tree)
    with instance.sessions.begin() as s:
        deprecate_taxon(s, tree["cop"], admin.id)
    with instance.sessions() as s:
        assert taxa_for_picker(s, "copep") == []
        assert s.get(Object, ids["p1"]["v"]).taxon_id == tree["cop"]
        assert object_history(s, ids["p1"]["v"]) == []
    with instance.sessions.begin() as s:
        restore_taxon(s, tree["cop"], admin.id)
    with instance.sessions() as s:
        assert [c.taxon_id for c in taxa_for_picker(s, "copep")] == [tree["cop"]]


def test_only_administrators_edit_the_taxonomy(instance, tree):
    with instance.sessions.begin() as s:
        user_id = create_user(s, "someone@example.org", "Someone", "pw").id
    edits = [lambda s: rename_taxon(s, tree["cop"], "X", user_id),
             lambda s: merge_taxa(s, tree["eggs"], tree["egg"], user_id),
             lambda s: deprecate_taxon(s, tree["cop"], user_id),
             lambda s: restore_taxon(s, tree["cop"], user_id)]
    for edit in edits:
        with instance.sessions.begin() as s:
            with pytest.raises(PermissionDenied, match="only administrators"):
                edit(s)
    with instance.sessions() as s:
        cop = s.get(Taxon, tree["cop"])
        assert (cop.name, cop.deprecated) == ("Copepoda", False)


def test_merge_flow(sqlite_instance, prefect_server, monkeypatch):
    from flows.taxonomy import merge_taxa_flow

    inst = sqlite_instance
    monkeypatch.setenv("ECOTAXA_HOME", str(inst.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", inst.settings.database_url)
    with inst.sessions.begin() as s:
        a, b = get_or_create_taxon(s, "a").id, get_or_create_taxon(s, "b").id
        p = create_project(s, "p")
        s.add(Object(project_id=p.id, orig_id="o", status="validated", taxon_id=a))
    result = merge_taxa_flow(a, b)
    assert result == {"taxon_id": b, "display_name": "b", "objects_moved": 1, "children_moved": 0,
                      "relabelled": {}}
    with inst.sessions() as s:
        assert s.scalar(select(Object.taxon_id)) == b


def test_import_labels_naming_a_merged_taxon_land_in_its_target(instance, admin):
    from ecotaxa_core.taxonomy import CategoryResolver, get_or_create_taxon
    from ecotaxa_core.taxonomy_edit import merge_taxa

    with instance.sessions.begin() as s:
        old = get_or_create_taxon(s, "Oithona_old").id
        new = get_or_create_taxon(s, "Oithona").id
        merge_taxa(s, old, new, admin.id)
    resolver = CategoryResolver()
    resolver.add("Oithona_old", "a.tsv line 3")
    with instance.sessions.begin() as s:
        assert resolver.resolve(s) == {"Oithona_old": new}
