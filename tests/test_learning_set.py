"""Learning sets: which objects, which features, the cap, and multi-project rules."""

from __future__ import annotations

import numpy as np
import pytest

from ecotaxa_core.db.models import Object
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.learn import (EmptyLearningSet, FeatureSetUnavailable, LearningSetError,
                                build_learning_set)
from learn_data import make_project, write_feature_set


def test_validated_objects_of_every_set_with_prefixed_names(instance):
    sp = make_project(instance, n_validated=(10, 8, 6), n_unclassified=5, n_dubious=3,
                      n_predicted=2)
    write_feature_set(instance, sp, "morpho", 4)
    write_feature_set(instance, sp, "tsv", 2, names=["area", "feret"], seed=1)
    ls = build_learning_set(instance, sp.project_id, ["tsv", "morpho"])
    validated = sp.ids_with("validated")
    assert ls.object_ids.tolist() == validated
    assert ls.y.tolist() == [sp.truth[i] for i in validated]
    assert ls.feature_names == ["tsv:area", "tsv:feret", "morpho:f000", "morpho:f001",
                                "morpho:f002", "morpho:f003"]
    assert ls.X.dtype == np.float32 and ls.X.shape == (24, 6)
    stored = instance.features.read(sp.project_id, "tsv", validated).values
    np.testing.assert_array_equal(ls.X[:, :2], stored)
    d = ls.definition
    assert d["feature_sets"] == ["tsv", "morpho"] and d["n_objects"] == 24
    assert {c["taxon_id"]: c["n_used"] for c in d["per_category"]} == {
        sp.taxon_ids["Copepoda"]: 10, sp.taxon_ids["Chaetognatha"]: 8, sp.taxon_ids["detritus"]: 6}
    assert d["dropped_features"] == {"too_many_missing": [], "constant": []}


def test_cap_per_category_is_stable_and_seeded(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(40, 10, 25))
    write_feature_set(inst, sp, "morpho", 3)
    a = build_learning_set(inst, sp.project_id, ["morpho"], max_per_category=20, seed=7)
    b = build_learning_set(inst, sp.project_id, ["morpho"], max_per_category=20, seed=7)
    c = build_learning_set(inst, sp.project_id, ["morpho"], max_per_category=20, seed=8)
    counts = dict(zip(*np.unique(a.y, return_counts=True)))
    assert counts == {sp.taxon_ids["Copepoda"]: 20, sp.taxon_ids["Chaetognatha"]: 10,
                      sp.taxon_ids["detritus"]: 20}
    assert a.object_ids.tolist() == b.object_ids.tolist()
    assert a.object_ids.tolist() != c.object_ids.tolist()
    assert {x["taxon_id"]: (x["n_validated"], x["n_used"]) for x in a.definition["per_category"]}[
        sp.taxon_ids["Copepoda"]] == (40, 20)
    assert a.definition["max_per_category"] == 20 and a.definition["seed"] == 7


def test_cap_keeps_its_choice_when_the_project_grows(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(40, 5, 5))
    write_feature_set(inst, sp, "morpho", 3)
    before = set(build_learning_set(inst, sp.project_id, ["morpho"], max_per_category=20).object_ids)
    cop = sp.taxon_ids["Copepoda"]
    with inst.sessions.begin() as s:
        new = [Object(project_id=sp.project_id, orig_id=f"new{i}", status="validated",
                      taxon_id=cop, extra={}) for i in range(6)]
        s.add_all(new)
        s.flush()
        new_ids = [o.id for o in new]
    inst.features.append(sp.project_id, "morpho", new_ids, np.ones((6, 3)), ["f000", "f001", "f002"],
                         producer={"test": "clusters"})
    after = set(build_learning_set(inst, sp.project_id, ["morpho"], max_per_category=20).object_ids)
    # Only newcomers can push old objects out, one each at most.
    entered = after - before
    assert entered <= set(new_ids)
    assert len(before - after) == len(entered)


def test_drops_features_mostly_missing_or_constant_and_reports_them(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(10, 10, 10))
    ids = np.array(sp.ids_with("validated"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4)).astype(np.float32)
    X[:, 1] = 7.0                       # constant
    X[:8, 2] = np.nan                   # 8/30 = 27 % missing: dropped
    X[10:17, 3] = np.nan                # 7/30 = 23 % missing: kept, imputed later
    X[20, 0] = np.inf                   # a ratio over zero: becomes missing
    inst.features.append(sp.project_id, "morpho", ids, X, ["area", "flat", "sparse", "holey"])
    ls = build_learning_set(inst, sp.project_id, ["morpho"])
    assert ls.feature_names == ["morpho:area", "morpho:holey"]
    assert ls.definition["dropped_features"] == {"too_many_missing": ["morpho:sparse"],
                                                 "constant": ["morpho:flat"]}
    assert np.isnan(ls.X[:, 1]).sum() == 7
    assert np.isnan(ls.X[20, 0])


def test_objects_without_any_feature_row_are_left_out_and_counted(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(10, 10, 10))
    validated = sp.ids_with("validated")
    write_feature_set(inst, sp, "morpho", 3, ids=validated[:25])
    write_feature_set(inst, sp, "tsv", 2, ids=validated[:20], seed=3)
    ls = build_learning_set(inst, sp.project_id, ["morpho", "tsv"])
    assert ls.object_ids.tolist() == validated[:25]
    assert ls.definition["n_without_features"] == 5
    # tsv misses 5 of the 25 (20 %): kept, with NaN where the row is absent.
    assert ls.feature_names[-2:] == ["tsv:f000", "tsv:f001"]
    assert np.isnan(ls.X[20:, -2:]).all() and not np.isnan(ls.X[:20]).any()


def test_categories_restrict_the_learning_set(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(10, 10, 10))
    write_feature_set(inst, sp, "morpho", 3)
    keep = [sp.taxon_ids["Copepoda"], sp.taxon_ids["detritus"]]
    ls = build_learning_set(inst, sp.project_id, ["morpho"], categories=keep)
    assert sorted(set(ls.y.tolist())) == sorted(keep) and ls.n_samples == 20
    assert ls.definition["categories"] == sorted(keep)


def test_other_projects_join_when_their_features_match(sqlite_instance):
    inst = sqlite_instance
    a = make_project(inst, title="A", n_validated=(10, 10, 0), n_unclassified=4)
    b = make_project(inst, title="B", n_validated=(5, 5, 5))
    for sp in (a, b):
        write_feature_set(inst, sp, "morpho", 3)
    ls = build_learning_set(inst, a.project_id, ["morpho"], other_project_ids=[b.project_id])
    assert ls.object_ids.tolist() == a.ids_with("validated") + b.ids_with("validated")
    assert ls.n_samples == 35 and len(ls.categories) == 3
    assert ls.definition["project_ids"] == [a.project_id, b.project_id]
    np.testing.assert_array_equal(
        ls.X[20:], inst.features.read(b.project_id, "morpho", b.ids_with("validated")).values)


def test_other_project_lacking_a_set_or_with_other_features_is_refused(sqlite_instance):
    inst = sqlite_instance
    a = make_project(inst, title="A")
    b = make_project(inst, title="B")
    c = make_project(inst, title="C")
    write_feature_set(inst, a, "morpho", 3)
    write_feature_set(inst, c, "morpho", 3, names=["area", "feret", "perim"])
    with pytest.raises(FeatureSetUnavailable, match=f"project {b.project_id} has no feature set 'morpho'"):
        build_learning_set(inst, a.project_id, ["morpho"], other_project_ids=[b.project_id])
    with pytest.raises(FeatureSetUnavailable,
                       match=f"'morpho' differs between project {a.project_id} .* and project "
                             f"{c.project_id}.*only in {c.project_id}: \\['area', 'feret', 'perim'\\]"):
        build_learning_set(inst, a.project_id, ["morpho"], other_project_ids=[c.project_id])
    with pytest.raises(ProjectNotFound):
        build_learning_set(inst, a.project_id, ["morpho"], other_project_ids=[99999])


def test_clear_errors_without_validated_objects_or_feature_set(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(0, 0, 0), n_unclassified=5)
    write_feature_set(inst, sp, "morpho", 3)
    with pytest.raises(EmptyLearningSet, match=f"no validated object in project {sp.project_id}"):
        build_learning_set(inst, sp.project_id, ["morpho"])
    with pytest.raises(FeatureSetUnavailable, match="has no feature set 'deep_effnetlite0' "
                                                    r"\(it has: morpho\)"):
        build_learning_set(inst, sp.project_id, ["deep_effnetlite0"])
    with pytest.raises(LearningSetError, match="at least one feature set"):
        build_learning_set(inst, sp.project_id, [])
    with pytest.raises(LearningSetError, match="max_per_category must be at least 1"):
        build_learning_set(inst, sp.project_id, ["morpho"], max_per_category=0)


def test_appear_as_learns_a_category_under_another_and_caps_the_learned_one(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(12, 8, 6))
    write_feature_set(inst, sp, "morpho", 3)
    cop, chaeto, det = (sp.taxon_ids[n] for n in ("Copepoda", "Chaetognatha", "detritus"))
    ls = build_learning_set(inst, sp.project_id, ["morpho"], appear_as={chaeto: cop})
    assert ls.categories == sorted([cop, det])
    truth = np.array([sp.truth[i] for i in ls.object_ids])
    assert (ls.y[truth == chaeto] == cop).all() and (ls.y[truth == det] == det).all()
    assert ls.definition["appear_as"] == {str(chaeto): cop}
    assert {c["taxon_id"]: c["n_validated"] for c in ls.definition["per_category"]} == {
        cop: 20, det: 6}
    # The cap applies to the learned category (Copepoda + Chaetognatha together).
    capped = build_learning_set(inst, sp.project_id, ["morpho"], appear_as={chaeto: cop},
                                max_per_category=10)
    assert dict(zip(*np.unique(capped.y, return_counts=True))) == {cop: 10, det: 6}


def test_appear_as_refuses_unknown_self_and_chained_mappings(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(5, 5, 5))
    write_feature_set(inst, sp, "morpho", 3)
    cop, chaeto, det = (sp.taxon_ids[n] for n in ("Copepoda", "Chaetognatha", "detritus"))
    with pytest.raises(LearningSetError, match="no category with id 999999"):
        build_learning_set(inst, sp.project_id, ["morpho"], appear_as={chaeto: 999999})
    with pytest.raises(LearningSetError, match=f"category {cop} is mapped onto itself"):
        build_learning_set(inst, sp.project_id, ["morpho"], appear_as={cop: cop})
    with pytest.raises(LearningSetError, match=f"map {chaeto} to {det} directly"):
        build_learning_set(inst, sp.project_id, ["morpho"], appear_as={chaeto: cop, cop: det})
