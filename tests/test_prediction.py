"""Prediction: what is predicted, what is never touched, top-3, history, per-chunk transactions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import func, select

from ecotaxa_core.annotation import (Prediction, PredictionBatch, move_objects, object_history,
                                     set_dubious)
from ecotaxa_core.db.models import AnnotationHistory, Object
from ecotaxa_core.learn import (FeatureSetUnavailable, predict_chunk, predict_project,
                                predictable_object_ids, train_model, write_predictions)
from ecotaxa_core.learn.prediction import (MIN_RAMP_CHUNK, _cached_model, predict_chunk_batch,
                                           prediction_chunks, top_predictions)
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


def _batch(ids, taxa, scores):
    """A batch predicting ``taxa[0]`` with ``scores[0]`` for every object, top as given."""
    n = len(ids)
    return PredictionBatch(np.asarray(ids, dtype=np.int64), np.full(n, taxa[0], dtype=np.int64),
                           np.full(n, scores[0]), np.tile(np.asarray(taxa, dtype=np.int64), (n, 1)),
                           np.tile(np.asarray(scores, dtype=float), (n, 1)))


def test_a_batch_changes_only_predictable_objects_and_keeps_their_previous_state(instance):
    sp = make_project(instance, n_validated=(2, 0, 0), n_unclassified=3, n_dubious=2,
                      n_predicted=3)
    other = make_project(instance, title="other", n_validated=(0, 0, 0), n_unclassified=2)
    cop, cha, det = (sp.taxon_ids[c] for c in ("Copepoda", "Chaetognatha", "detritus"))
    with instance.sessions() as s:
        before = _snapshot(s, sp.project_id)
        other_before = _snapshot(s, other.project_id)
    everything = sorted(before) + sorted(other_before)
    batch = _batch(everything[::-1], [cha, det, cop], [0.5, 0.3, 0.2])

    n = write_predictions(instance, sp.project_id, batch, model_id=None)

    predictable = sp.ids_with("unclassified") + sp.ids_with("predicted")
    assert n == len(predictable) == 6
    with instance.sessions() as s:
        after = _snapshot(s, sp.project_id)
        assert _snapshot(s, other.project_id) == other_before
        human = sp.ids_with("validated") + sp.ids_with("dubious")
        assert {i: after[i] for i in human} == {i: before[i] for i in human}
        for i in predictable:
            status, taxon, score, annotator, when, model_id, top = after[i]
            assert (status, taxon, score, annotator, model_id) == ("predicted", cha, 0.5, None,
                                                                    None)
            assert when is not None and top == [[cha, 0.5], [det, 0.3], [cop, 0.2]]
        history = s.execute(select(AnnotationHistory)).scalars().all()
        assert sorted(h.object_id for h in history) == sorted(predictable)
        for h in history:
            assert (h.status, h.taxon_id, h.score, h.annotator_id, h.annotation_date,
                    h.model_id) == before[h.object_id][:6]
            assert h.changed_by_id is None
        assert len({h.changed_at for h in history}) == 1


def test_a_batch_keeps_the_last_prediction_of_an_object_and_short_tops(instance):
    """Lists of Prediction still work: tops of 1 or 2 pairs, an object given twice."""
    sp = make_project(instance, n_validated=(0, 0, 0), n_unclassified=2)
    a, b = sp.ids_with("unclassified")
    cop, det = sp.taxon_ids["Copepoda"], sp.taxon_ids["detritus"]
    preds = [Prediction(a, cop, 0.6, [(cop, 0.6), (det, 0.4)]), Prediction(b, det, 1.0, [(det, 1.0)]),
             Prediction(a, det, 0.9, [(det, 0.9), (cop, 0.1)])]
    assert write_predictions(instance, sp.project_id, preds, model_id=None) == 2
    with instance.sessions() as s:
        state = _snapshot(s, sp.project_id)
        assert state[a][1:3] == (det, 0.9) and state[a][6] == [[det, 0.9], [cop, 0.1]]
        assert state[b][1:3] == (det, 1.0) and state[b][6] == [[det, 1.0]]
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 2


def test_an_object_validated_while_a_chunk_waits_to_be_written_is_not_overwritten(instance,
                                                                                   admin):
    sp = make_project(instance, n_validated=(0, 0, 0), n_unclassified=4)
    ids = sp.ids_with("unclassified")
    cop, det = sp.taxon_ids["Copepoda"], sp.taxon_ids["detritus"]
    # Computed while all four were unclassified.
    batch = _batch(ids, [cop, det], [0.8, 0.2])
    # A validator moves ids[0]; their transaction is still open when the chunk is written.
    validator = instance.sessions()
    move_objects(validator, sp.project_id, [ids[0]], det, admin.id)
    written = []
    writer = threading.Thread(
        target=lambda: written.append(write_predictions(instance, sp.project_id, batch, None)))
    writer.start()
    writer.join(timeout=1.0)
    assert writer.is_alive(), "the chunk was written while another transaction held the object"
    validator.commit()
    validator.close()
    writer.join(timeout=60)
    assert written == [3]
    with instance.sessions() as s:
        state = _snapshot(s, sp.project_id)
        assert state[ids[0]][:2] == ("validated", det) and state[ids[0]][3] == admin.id
        assert all(state[i][:3] == ("predicted", cop, 0.8) for i in ids[1:])
        # ids[0]: one history row, the validator's (its unclassified state), none from the chunk.
        assert [(h.status, h.changed_by_id) for h in object_history(s, ids[0])] == [
            ("unclassified", admin.id)]


def test_an_object_validated_after_the_prediction_was_computed_is_skipped(instance, admin):
    sp = make_project(instance, n_validated=(20, 20, 20), n_unclassified=6)
    write_feature_set(instance, sp, "morpho", 4)
    row = train_model(instance, sp.project_id, "deep_logreg", feature_sets=["morpho"])
    todo = sp.ids_with("unclassified")
    batch = predict_chunk_batch(str(instance.models_dir), row.id, row.path,
                                str(instance.features.root), sp.project_id, todo)
    assert batch.object_ids.tolist() == todo
    with instance.sessions.begin() as s:
        move_objects(s, sp.project_id, todo[:2], sp.taxon_ids["detritus"], admin.id)
        set_dubious(s, sp.project_id, todo[1:2], admin.id)
    assert write_predictions(instance, sp.project_id, batch, row.id) == 4
    with instance.sessions() as s:
        state = _snapshot(s, sp.project_id)
        assert [state[i][0] for i in todo] == ["validated", "dubious"] + ["predicted"] * 4
        assert all(state[i][5] == row.id for i in todo[2:])
        assert state[todo[0]][5] is None and state[todo[1]][5] is None


def test_a_bad_batch_is_refused_before_anything_is_written(instance):
    sp = make_project(instance, n_validated=(0, 0, 0), n_unclassified=2)
    ids = sp.ids_with("unclassified")
    cop = sp.taxon_ids["Copepoda"]
    with pytest.raises(ValueError, match=rf"objects \[{ids[1]}\] have a non-finite"):
        write_predictions(instance, sp.project_id,
                          [Prediction(ids[0], cop, 0.5, [(cop, 0.5)]),
                           Prediction(ids[1], cop, float("nan"), [(cop, float("nan"))])], None)
    with pytest.raises(ValueError, match="at most 3"):
        write_predictions(instance, sp.project_id,
                          [Prediction(ids[0], cop, 0.4, [(cop, 0.4)] * 4)], None)
    with pytest.raises(ValueError, match="prediction arrays do not match"):
        PredictionBatch(np.array(ids), np.array([cop]), np.array([0.5]), np.zeros((2, 1)),
                        np.zeros((2, 1)))
    with instance.sessions() as s:
        assert set(s.scalars(select(Object.status).where(Object.project_id == sp.project_id))) \
            == {"unclassified"}


def test_top_predictions_rank_like_a_stable_sort():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(120), 500)
    proba[:50, 7] = proba[:50, 9] = proba[:50, 11] = 0.3  # ties: lower class first
    classes = np.arange(1000, 1120)
    batch = top_predictions(proba, classes, np.arange(500))
    expected = np.argsort(-proba, axis=1, kind="stable")[:, :3]
    assert (batch.top_taxon_ids == classes[expected]).all()
    assert np.array_equal(batch.top_scores, np.take_along_axis(proba, expected, axis=1))
    assert (batch.taxon_ids == batch.top_taxon_ids[:, 0]).all()
    two = top_predictions(proba[:3, :2] / proba[:3, :2].sum(1, keepdims=True), [5, 6], [1, 2, 3])
    assert two.top_taxon_ids.shape == (3, 2)


@pytest.mark.parametrize("chunk_size", [1, 100, 1024, 8192, 16384])
@pytest.mark.parametrize("n", [0, 1, 1023, 5000, 30_000, 100_000, 1_000_003])
def test_prediction_chunks_cover_every_object_once_small_at_both_ends(n, chunk_size):
    chunks = prediction_chunks(n, chunk_size)
    sizes = [c.stop - c.start for c in chunks]
    assert [c.start for c in chunks] == [0, *[c.stop for c in chunks]][:len(chunks)]  # no gap
    assert sum(sizes) == n and all(0 < s <= chunk_size for s in sizes)
    ramp = [chunk_size >> k for k in (3, 2, 1) if chunk_size >> k >= MIN_RAMP_CHUNK]
    if n >= 2 * sum(ramp) + chunk_size:
        assert sizes[:len(ramp)] == ramp and sizes[len(sizes) - len(ramp):] == ramp[::-1]
        assert chunk_size in sizes  # the middle is in full chunks
        # a ramp costs a few chunks, never a multiple of them
        assert len(chunks) <= -(-n // chunk_size) + 2 * len(ramp) + 1
    if not ramp:  # small chunk sizes: plain chunks, as before
        assert sizes == [min(chunk_size, n - i) for i in range(0, n, chunk_size)]


def test_prediction_chunks_refuse_nonsense():
    with pytest.raises(ValueError, match="chunk_size=0"):
        prediction_chunks(10, 0)
    with pytest.raises(ValueError, match="n=-1"):
        prediction_chunks(-1, 10)
