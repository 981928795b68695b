"""The float32 prediction path gives scikit-learn's probabilities, for every kind."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ecotaxa_core.learn.classifiers import CLASSIFIER_KINDS, make_classifier
from ecotaxa_core.learn.fast_inference import compile_predict_proba

NAMES = [f"deep_effnetlite0:f{i}" for i in range(24)] + [f"morpho:m{i}" for i in range(6)]


def _data(n_classes: int, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.normal(0, 3, (n_classes, len(NAMES)))
    X = (centres[y] + rng.normal(0, 4, (n, len(NAMES)))) * rng.uniform(0.1, 50, len(NAMES))
    X[rng.random(X.shape) < 0.05] = np.nan  # gaps for the imputer
    return X.astype(np.float32), y * 10 + 7


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
@pytest.mark.parametrize("n_classes", [2, 5])
def test_every_kind_gives_the_pipelines_probabilities(kind, n_classes):
    X, y = _data(n_classes)
    pipeline = make_classifier(kind, n_jobs=1, feature_names=NAMES)
    if kind == "deep_mlp":
        pipeline.set_params(classify__max_iter=30)
    pipeline.fit(X[:200], y[:200])
    expected = pipeline.predict_proba(X[200:])
    got = compile_predict_proba(pipeline)(X[200:].copy())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.98  # ties may round either way


def test_steps_it_does_not_know_go_through_scikit_learn():
    X, y = _data(4)
    pipeline = Pipeline([("impute", SimpleImputer(strategy="mean")), ("pca", PCA(8)),
                         ("scale", StandardScaler(with_mean=False)),
                         ("classify", LogisticRegression(max_iter=500))]).fit(X, y)
    np.testing.assert_allclose(compile_predict_proba(pipeline)(X.copy()),
                               pipeline.predict_proba(X), atol=2e-5)


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_an_imputer_that_drops_an_empty_column_is_left_to_scikit_learn():
    X, y = _data(3)
    X[:, 3] = np.nan  # scikit-learn drops a column with no value at all
    pipeline = Pipeline([("impute", SimpleImputer(strategy="median")),
                         ("classify", LogisticRegression(max_iter=500))]).fit(X, y)
    np.testing.assert_allclose(compile_predict_proba(pipeline)(X.copy()),
                               pipeline.predict_proba(X), atol=2e-5)


def _compile_in_daemon(pipeline, queue):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proba = compile_predict_proba(pipeline)(_data(4)[0])
    forest = pipeline.named_steps["classify"].forest_
    queue.put((forest.n_jobs, proba.shape, [str(w.message) for w in caught]))


def test_in_a_daemon_process_forests_predict_with_one_job_and_no_warning():
    import multiprocessing

    X, y = _data(4)
    pipeline = make_classifier("deep_logreg_rf", n_jobs=-1, feature_names=NAMES).fit(X, y)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_compile_in_daemon, args=(pipeline, queue), daemon=True)
    child.start()
    n_jobs, shape, warned = queue.get(timeout=120)
    child.join()
    assert (n_jobs, shape) == (1, (300, 4))
    assert not [w for w in warned if "n_jobs" in w or "daemon" in w], warned
    assert pipeline.named_steps["classify"].forest_.n_jobs == -1  # this process: unchanged


def test_a_forest_too_large_for_its_leaf_table_goes_through_scikit_learn(monkeypatch):
    from ecotaxa_core.learn import fast_inference

    X, y = _data(4)
    pipeline = make_classifier("classic_rf", n_jobs=1, feature_names=NAMES).fit(X, y)
    assert fast_inference._forest_op(pipeline[-1]) is not None
    monkeypatch.setattr(fast_inference, "MAX_LEAF_TABLE_BYTES", 0)
    assert fast_inference._forest_op(pipeline[-1]) is None
    np.testing.assert_allclose(compile_predict_proba(pipeline)(X.copy()),
                               pipeline.predict_proba(X), atol=2e-5)
