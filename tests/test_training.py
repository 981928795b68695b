"""Held-out evaluation, training and the model registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import func, select

from ecotaxa_core.db.models import TrainedModel
from ecotaxa_core.errors import ModelNotFound
from ecotaxa_core.learn import (EmptyLearningSet, TrainingError, UnknownClassifierKind,
                                best_model, evaluate_holdout, get_model, holdout_split,
                                list_models, load_model, save_model, train_model)
from learn_data import make_project, write_feature_set


# -- evaluation -----------------------------------------------------------------------------

def test_holdout_split_is_stratified_and_keeps_rare_categories_in_training():
    y = np.array([1] * 50 + [2] * 20 + [3] * 4 + [4] * 1)
    split = holdout_split(y, test_size=0.2, seed=3)
    assert split.train_only == (3, 4)
    test_counts = dict(zip(*np.unique(y[split.test_index], return_counts=True)))
    assert test_counts == {1: 10, 2: 4}
    assert sorted(np.concatenate([split.train_index, split.test_index]).tolist()) == list(range(75))
    assert np.isin(np.flatnonzero(y >= 3), split.train_index).all()
    again = holdout_split(y, test_size=0.2, seed=3)
    assert again.test_index.tolist() == split.test_index.tolist()
    assert holdout_split(y, test_size=0.2, seed=4).test_index.tolist() != split.test_index.tolist()


def test_no_test_part_when_fewer_than_two_categories_can_be_tested():
    split = holdout_split(np.array([1] * 30 + [2] * 3), test_size=0.2)
    assert not split.has_test and len(split.train_index) == 33
    metrics = evaluate_holdout(DummyClassifier(), np.zeros((33, 1)), np.array([1] * 30 + [2] * 3),
                               split, {1: "a", 2: "b"})
    assert metrics["evaluation"] == "none" and metrics["accuracy"] is None
    assert "fewer than two categories" in metrics["reason"]


def test_metrics_values_on_a_prior_classifier():
    # 60 of "a", 40 of "b", 20 of "c": the prior classifier always says "a".
    y = np.array([10] * 60 + [20] * 40 + [30] * 20)
    X = np.zeros((len(y), 2))
    split = holdout_split(y, test_size=0.25, seed=0)
    m = evaluate_holdout(DummyClassifier(strategy="prior"), X, y, split,
                         {10: "a", 20: "b", 30: "detritus"})
    assert (m["n_train"], m["n_test"]) == (90, 30)
    assert m["accuracy"] == pytest.approx(15 / 30)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
    prior = np.array([45, 30, 15]) / 90
    expected = -(15 * np.log(prior[0]) + 10 * np.log(prior[1]) + 5 * np.log(prior[2])) / 30
    assert m["log_loss"] == pytest.approx(expected)
    assert m["per_class"]["a"] == {"taxon_id": 10, "precision": 0.5, "recall": 1.0,
                                   "f1": pytest.approx(2 / 3), "support": 15}
    assert m["per_class"]["b"]["recall"] == 0.0 and m["per_class"]["detritus"]["support"] == 5
    assert m["confusion_matrix"]["labels"] == ["a", "b", "detritus"]
    assert m["confusion_matrix"]["matrix"] == [[15, 0, 0], [10, 0, 0], [5, 0, 0]]
    assert m["macro_recall"] == pytest.approx(1 / 3)
    assert m["plankton_macro_recall"] == pytest.approx(1 / 2)
    assert m["non_plankton_categories"] == ["detritus"]
    json.dumps(m)


# -- training -------------------------------------------------------------------------------

def test_train_classic_rf_registers_model_with_metrics_and_settings(instance, admin):
    sp = make_project(instance, n_validated=(30, 30, 30), n_unclassified=4)
    write_feature_set(instance, sp, "morpho", 6)
    write_feature_set(instance, sp, "deep_effnetlite0", 16, seed=5)
    row = train_model(instance, sp.project_id, "classic_rf", user_id=admin.id, n_jobs=1)
    assert row.kind == "classic_rf" and row.feature_sets == ["morpho"]
    assert row.created_by_id == admin.id and row.path == f"{row.id}/model.joblib"
    assert (instance.models_dir / row.path).is_file()
    m = row.metrics
    assert (m["n_train"], m["n_test"], m["n_final_train"]) == (72, 18, 90)
    assert m["accuracy"] > 0.9 and m["balanced_accuracy"] > 0.9 and m["log_loss"] < 0.5
    assert set(m["per_class"]) == {"Copepoda", "Chaetognatha", "detritus"}
    assert sum(map(sum, m["confusion_matrix"]["matrix"])) == 18
    assert "refitted on the whole learning set" in m["final_model"]
    s = row.settings
    assert s["feature_names"] == [f"morpho:f{j:03d}" for j in range(6)]
    assert s["classes"] == sorted(sp.taxon_ids.values())
    assert s["class_names"] == [n for _, n in sorted((t, n) for n, t in sp.taxon_ids.items())]
    assert s["learning_set"]["n_objects"] == 90
    assert s["parameters"]["steps"]["classify"]["n_estimators"] == 300
    with instance.sessions() as session:
        stored = get_model(session, row.id)
        assert stored.metrics == json.loads(json.dumps(m)) and stored.settings["classes"] == s["classes"]


def test_train_deep_logreg_uses_the_deep_set_and_keeps_rare_categories_in_training(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(25, 25, 3))
    write_feature_set(inst, sp, "morpho", 4)
    write_feature_set(inst, sp, "deep_effnetlite0", 32, seed=2)
    row = train_model(inst, sp.project_id)  # deep_logreg by default
    assert row.kind == "deep_logreg" and row.feature_sets == ["deep_effnetlite0"]
    m = row.metrics
    assert m["train_only_categories"] == ["detritus"]
    assert m["per_class"]["detritus"]["support"] == 0
    assert (m["n_test"], m["n_final_train"]) == (10, 53)
    assert m["accuracy"] == 1.0
    model = load_model(inst, row.id)
    assert sp.taxon_ids["detritus"] in model.classes.tolist()


def test_training_errors_are_clear(sqlite_instance):
    inst = sqlite_instance
    one = make_project(inst, title="one", n_validated=(20, 0, 0))
    write_feature_set(inst, one, "morpho", 3)
    with pytest.raises(TrainingError, match="at least 2 categories.* 20 objects of 1 category"):
        train_model(inst, one.project_id, "classic_rf")
    with pytest.raises(TrainingError, match=r"deep_logreg needs one of the feature sets "
                                            r"\['deep_effnetlite0'\] in project .*morpho"):
        train_model(inst, one.project_id, "deep_logreg")
    with pytest.raises(UnknownClassifierKind):
        train_model(inst, one.project_id, "knn")
    none = make_project(inst, title="none", n_validated=(0, 0, 0), n_unclassified=3)
    write_feature_set(inst, none, "morpho", 3)
    with pytest.raises(EmptyLearningSet, match="no validated object"):
        train_model(inst, none.project_id, "classic_rf")


# -- registry -------------------------------------------------------------------------------

def test_registry_round_trip_and_best_model(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(30, 30, 30), n_unclassified=6)
    write_feature_set(inst, sp, "morpho", 5)
    rng = np.random.default_rng(0)
    noise_ids = np.array(sorted(sp.truth))
    inst.features.append(sp.project_id, "tsv", noise_ids,
                         rng.normal(size=(len(noise_ids), 3)), ["a", "b", "c"])
    with inst.sessions() as s:
        with pytest.raises(ModelNotFound, match="has no trained model"):
            best_model(s, sp.project_id)
    good = train_model(inst, sp.project_id, "classic_rf", feature_sets=["morpho"], n_jobs=1)
    noise = train_model(inst, sp.project_id, "deep_logreg", feature_sets=["tsv"])
    assert noise.metrics["accuracy"] < good.metrics["accuracy"]
    with inst.sessions() as s:
        assert [r.id for r in list_models(s, sp.project_id)] == [noise.id, good.id]
        assert best_model(s, sp.project_id).id == good.id
        with pytest.raises(ModelNotFound):
            get_model(s, 12345)
    loaded = load_model(inst, good.id)
    assert loaded.kind == "classic_rf" and loaded.feature_sets == ["morpho"]
    assert loaded.feature_names == good.settings["feature_names"]
    assert loaded.classes.tolist() == good.settings["classes"]
    assert loaded.class_names == good.settings["class_names"]
    X = inst.features.read(sp.project_id, "morpho", sp.ids_with("unclassified")).values
    truth = [sp.truth[i] for i in sp.ids_with("unclassified")]
    assert loaded.pipeline.predict(X).tolist() == truth


def test_save_model_leaves_nothing_when_the_files_cannot_be_written(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(5, 5, 0))
    # A lambda cannot be pickled: joblib fails after the row got its id.
    pipe = Pipeline([("f", FunctionTransformer(lambda x: x)), ("c", LogisticRegression())])
    pipe.fit(np.arange(20.0).reshape(10, 2), [1] * 5 + [2] * 5)
    with pytest.raises(Exception, match="(?i)pickl|lambda"):
        save_model(inst, sp.project_id, name="broken", kind="deep_logreg", pipeline=pipe,
                   feature_sets=["morpho"], feature_names=["morpho:a", "morpho:b"],
                   class_names={1: "x", 2: "y"}, learning_set_definition={}, parameters={},
                   metrics={})
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TrainedModel)) == 0
    assert not any(inst.models_dir.iterdir())
