"""The classifier pipelines: scikit-learn's contract, imputation, and learning separable data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from ecotaxa_core.learn import (UnknownClassifierKind, classifier_parameters, default_feature_sets,
                                make_classifier)

# A Pipeline fits its steps in place (they are its `steps` parameter) and the
# median imputer accepts NaN by design: these three checks cannot hold for it.
PIPELINE_BY_DESIGN = {
    "check_estimators_overwrite_params": "a Pipeline fits the estimators in its `steps`",
    "check_dont_overwrite_parameters": "a Pipeline fits the estimators in its `steps`",
    "check_estimators_nan_inf": "NaN are imputed with the learning-set medians",
}


def _small(kind: str):
    est = make_classifier(kind, n_jobs=1)
    if kind == "classic_rf":
        est.set_params(classify__n_estimators=10)  # same contract, a faster check
    return est


def _blend():
    est = make_classifier("deep_logreg_rf", n_jobs=1, feature_names=["morpho:a"])
    est.set_params(classify__forest__n_estimators=10)
    return est


@parametrize_with_checks([_small("classic_rf"), _small("deep_logreg"), _small("deep_mlp"),
                          _blend()],
                         expected_failed_checks=lambda est: PIPELINE_BY_DESIGN)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def _clusters(n_per_class=40, n_features=12, taxa=(101, 205, 3007), seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (len(taxa), n_features))
    y = np.repeat(np.array(taxa), n_per_class)
    X = centres[np.repeat(np.arange(len(taxa)), n_per_class)] + rng.normal(0, 1, (len(y), n_features))
    return X.astype(np.float32), y


@pytest.mark.parametrize("kind", ["classic_rf", "deep_logreg", "deep_rf", "deep_mlp"])
def test_learns_separable_clusters_with_taxon_ids_as_classes(kind):
    X, y = _clusters(seed=1)
    X_new, y_new = _clusters(n_per_class=20, seed=1)
    X_new = X_new + np.random.default_rng(2).normal(0, 0.5, X_new.shape).astype(np.float32)
    model = make_classifier(kind, n_jobs=1).fit(X, y)
    assert model.classes_.tolist() == [101, 205, 3007]
    assert (model.predict(X_new) == y_new).mean() > 0.95
    proba = model.predict_proba(X_new)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert (proba.max(axis=1) > 0.5).mean() > 0.9


@pytest.mark.parametrize("kind", ["classic_rf", "deep_logreg", "deep_mlp"])
def test_missing_values_take_the_learning_set_medians(kind):
    X, y = _clusters(seed=3)
    X[::7, 2] = np.nan
    model = make_classifier(kind, n_jobs=1).fit(X, y)
    medians = model.named_steps["impute"].statistics_
    np.testing.assert_allclose(medians, np.nanmedian(X, axis=0), rtol=1e-6)
    row = X[1:2].copy()
    row[0, [0, 5]] = np.nan
    filled = row.copy()
    filled[0, [0, 5]] = medians[[0, 5]]
    np.testing.assert_allclose(model.predict_proba(row), model.predict_proba(filled))


def test_classic_rf_is_ecotaxas_forest():
    rf = make_classifier("classic_rf").named_steps["classify"]
    assert (rf.n_estimators, rf.min_samples_leaf, rf.class_weight) == (300, 5, "balanced")
    params = classifier_parameters(make_classifier("classic_rf"))
    assert json.loads(json.dumps(params))["classify"]["n_estimators"] == 300
    assert params["impute"] == {"class": "SimpleImputer", **params["impute"], "strategy": "median"}
    logreg = classifier_parameters(make_classifier("deep_logreg"))
    assert [*logreg] == ["impute", "log", "scale", "classify"]
    assert logreg["classify"]["class"] == "LogisticRegression"
    # EcoTaxa's recipe on deep features: the same forest, on their 50 principal components.
    assert classifier_parameters(make_classifier("deep_rf")) == params
    assert default_feature_sets("deep_rf", ["deep_effnetlite0", "deep_effnetlite0_pca50"]) == [
        "deep_effnetlite0_pca50"]
    mlp = make_classifier("deep_mlp").named_steps["classify"]
    assert (mlp.hidden_layer_sizes, mlp.early_stopping) == ((512,), True)


def test_default_feature_sets_and_unknown_kinds():
    assert default_feature_sets("classic_rf", ["morpho", "deep_effnetlite0"]) == ["morpho"]
    assert default_feature_sets("classic_rf", ["morpho", "tsv"]) == ["tsv", "morpho"]
    assert default_feature_sets("deep_logreg", ["deep_effnetlite0", "deep_effnetlite0_pca50"]) == [
        "deep_effnetlite0"]
    with pytest.raises(UnknownClassifierKind, match="unknown classifier kind 'svm'; known kinds: "
                                                    "classic_rf, deep_logreg, deep_rf, "
                                                    "deep_mlp, deep_logreg_rf"):
        make_classifier("svm")
    with pytest.raises(UnknownClassifierKind):
        default_feature_sets("svm", ["morpho"])


def test_deep_logreg_rf_blends_the_forest_on_classic_columns_geometrically():
    X, y = _clusters(n_features=6, seed=5)
    names = [f"deep_effnetlite0:f{i}" for i in range(4)] + ["morpho:area", "morpho:feret"]
    model = make_classifier("deep_logreg_rf", n_jobs=1, feature_names=names).fit(X, y)
    blend = model.named_steps["classify"]
    assert blend.forest_columns == (4, 5) and blend.forest_weight == 0.3
    assert blend.forest_.n_features_in_ == 2 and blend.linear_.n_features_in_ == 6
    X_new, _ = _clusters(n_per_class=5, n_features=6, seed=6)
    p_lin = blend.linear_.predict_proba(X_new)
    p_rf = blend.forest_.predict_proba(X_new[:, 4:])
    expected = p_lin ** 0.7 * np.clip(p_rf, 1e-12, None) ** 0.3
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X_new), expected, rtol=1e-6, atol=1e-9)
    assert (model.predict(X_new) == model.classes_[expected.argmax(axis=1)]).all()
    # Without classic columns it is the logistic regression alone.
    deep_only = make_classifier("deep_logreg_rf", n_jobs=1, feature_names=names[:4])
    deep_only.fit(X[:, :4], y)
    plain = make_classifier("deep_logreg", n_jobs=1).fit(X[:, :4], y)
    np.testing.assert_allclose(deep_only.predict_proba(X_new[:, :4]),
                               plain.predict_proba(X_new[:, :4]), rtol=1e-6)
    assert default_feature_sets("deep_logreg_rf", ["morpho", "tsv"]) == []
    assert default_feature_sets("deep_logreg_rf", ["morpho", "deep_effnetlite0"]) == [
        "deep_effnetlite0", "morpho"]


def test_the_default_blend_uses_a_lighter_forest_than_the_baseline():
    names = ["deep_effnetlite0:f0", "morpho:area"]
    blend = make_classifier("deep_logreg_rf", feature_names=names).named_steps["classify"]
    assert (blend.forest.n_estimators, blend.forest.min_samples_leaf) == (100, 5)
    assert blend.forest_columns == (1,) and blend.forest_weight == 0.3
