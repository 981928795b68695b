"""Prediction: what is predicted, what is never touched, top-3, history, per-chunk transactions."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from ecotaxa_core.annotation import Prediction, object_history
from ecotaxa_core.db.models import AnnotationHistory, Object
from ecotaxa_core.learn import (FeatureSetUnavailable, predict_chunk, predict_project,
                                predictable_object_ids, train_model, write_predictions)
from ecotaxa_core.learn.prediction import _cached_model
from learn_data import make_project, write_feature_set


def _snapshot(session, project_id):
    return {o.id: (o.status, o.taxon_id, o.score, o.annotator_id, o.annotation_date, o.model_id,
                   o.top_predictions)
            for o in session.scalars(select(Object).where(Object.project_id == project_id))}


def test_prediction_never_touches_validated_or_dubious_objects(instance):
    sp = make_project(instance, n_validated=(20, 20, 20), n_unclassified=9, n_dubious=3,
                      n_predicted=3)
    write_feature_set(instance, sp, "morpho", 5)
    row = train_model(instance, sp.project_id, "deep_logreg", feature_sets=["morpho"])
    with instance.sessions() as s:
        before = _snapshot(s, sp.project_id)
        assert predictable_object_ids(s, sp.project_id).tolist() == sorted(
            sp.ids_with("unclassified") + sp.ids_with("predicted"))

    summary = predict_project(instance, sp.project_id, row.id, chunk_size=5)

    assert summary["n_predictable"] == 12 and summary["n_predicted"] == 12
    with instance.sessions() as s:
        after = _snapshot(s, sp.project_id)
        human = sp.ids_with("validated") + sp.ids_with("dubious")
        assert {i: after[i] for i in human} == {i: before[i] for i in human}
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)
                        .where(AnnotationHistory.object_id.in_(human))) == 0
        for i in sp.ids_with("unclassified") + sp.ids_with("predicted"):
            status, taxon, score, annotator, _, model_id, top = after[i]
            assert (status, taxon, model_id, annotator) == ("predicted", sp.truth[i], row.id, None)
            assert len(top) == 3 and top[0] == [taxon, pytest.approx(score)]
            assert {t for t, _ in top} == set(sp.taxon_ids.values())
            assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
            assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-6)
            (previous,) = object_history(s, i)
            assert (previous.status, previous.taxon_id, previous.score) == before[i][:3]


def test_a_failing_chunk_leaves_its_objects_unchanged(instance):
    sp = make_project(instance, n_validated=(0, 0, 0), n_unclassified=4)
    ids = sp.ids_with("unclassified")
    cop = sp.taxon_ids["Copepoda"]
    first = [Prediction(i, cop, 0.8, [(cop, 0.8)]) for i in ids[:2]]
    assert write_predictions(instance, sp.project_id, first, model_id=None) == 2
    # The second chunk names a taxon that does not exist: its transaction rolls back.
    broken = [Prediction(ids[2], cop, 0.6, [(cop, 0.6)]),
              Prediction(ids[3], 999999, 0.7, [(999999, 0.7)])]
    with pytest.raises(Exception, match="(?i)foreign key"):
        write_predictions(instance, sp.project_id, broken, model_id=None)
    with instance.sessions() as s:
        state = {o.id: (o.status, o.taxon_id) for o in
                 s.scalars(select(Object).where(Object.project_id == sp.project_id))}
        assert state == {ids[0]: ("predicted", cop), ids[1]: ("predicted", cop),
                         ids[2]: ("unclassified", None), ids[3]: ("unclassified", None)}
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 2


def test_predict_chunk_skips_objects_without_features_and_loads_the_model_once(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(15, 15, 15), n_unclassified=6)
    todo = sp.ids_with("unclassified")
    write_feature_set(inst, sp, "morpho", 4, ids=sp.ids_with("validated") + todo[:4])
    write_feature_set(inst, sp, "tsv", 2, ids=sp.ids_with("validated") + todo[:2], seed=4)
    row = train_model(inst, sp.project_id, "classic_rf", n_jobs=1)
    assert row.feature_sets == ["tsv", "morpho"]
    args = (str(inst.models_dir), row.id, row.path, str(inst.features.root), sp.project_id)
    _cached_model.cache_clear()
    preds = predict_chunk(*args, todo[::-1])
    # todo[4:] have no row in any set; todo[2:4] only morpho rows (tsv imputed).
    assert [p.object_id for p in preds] == todo[:4][::-1]
    assert [p.taxon_id for p in preds] == [sp.truth[i] for i in todo[:4][::-1]]
    assert all(p.top[0] == (p.taxon_id, p.score) and len(p.top) == 3 for p in preds)
    predict_chunk(*args, todo[:2])
    info = _cached_model.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert predict_chunk(*args, todo[4:]) == []


def test_model_from_another_project_needs_the_same_features(sqlite_instance):
    inst = sqlite_instance
    a = make_project(inst, title="A", n_validated=(15, 15, 15))
    b = make_project(inst, title="B", n_validated=(0, 0, 0), n_unclassified=6)
    c = make_project(inst, title="C", n_validated=(0, 0, 0), n_unclassified=3)
    write_feature_set(inst, a, "morpho", 3)
    b_names = write_feature_set(inst, b, "morpho", 3)
    write_feature_set(inst, c, "morpho", 3, names=["area", "feret", "perim"])
    row = train_model(inst, a.project_id, "deep_logreg", feature_sets=["morpho"])
    summary = predict_project(inst, b.project_id, row.id)
    assert summary["n_predicted"] == 6 and b_names == ["f000", "f001", "f002"]
    with pytest.raises(FeatureSetUnavailable, match="lacks 3 features model"):
        predict_project(inst, c.project_id, row.id)
    d = make_project(inst, title="D", n_validated=(0, 0, 0), n_unclassified=2)
    with pytest.raises(FeatureSetUnavailable, match="has no feature set 'morpho'"):
        predict_project(inst, d.project_id, row.id)
    with inst.sessions() as s:
        c_objects = s.scalars(select(Object.status).where(Object.project_id == c.project_id)).all()
    assert set(c_objects) == {"unclassified"}
    assert np.all(np.isfinite(inst.features.read(b.project_id, "morpho").values))
