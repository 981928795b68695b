"""Held-out metrics weighted by support, and per-category score thresholds for a precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from ecotaxa_core.learn.evaluation import HoldoutSplit, evaluate_holdout, score_probabilities
from ecotaxa_core.learn.thresholds import category_thresholds

NAMES = {1: "Copepoda", 2: "Chaetognatha", 3: "detritus", 4: "Appendicularia", 5: "Salpida"}
CLASSES = [1, 2, 3, 4, 5]


def _held_out(rows):
    """y_true and probabilities from (predicted class, top-1 score, true class) rows.

    The rest of each row's probability is spread evenly over the other classes,
    below the top-1 score, so the predicted class is the argmax.
    """
    y_true, proba = [], []
    for predicted, score, true in rows:
        p = np.full(len(CLASSES), (1.0 - score) / (len(CLASSES) - 1))
        p[CLASSES.index(predicted)] = score
        assert np.argmax(p) == CLASSES.index(predicted)
        y_true.append(true)
        proba.append(p)
    return np.array(y_true), np.array(proba)


# Copepoda: the 0.9 tie holds an error; 0.7 is the lowest score keeping >= 80 % right.
COPEPODA = [(1, 0.99, 1), (1, 0.95, 1), (1, 0.9, 1), (1, 0.9, 2), (1, 0.9, 1), (1, 0.8, 1),
            (1, 0.7, 1), (1, 0.6, 3), (1, 0.5, 3)]
# Chaetognatha: five sure and right, then a tie at 0.6 holding one right and two wrong.
# Cutting inside the tie (six objects, all right) is not allowed: the tie comes in whole.
CHAETOGNATHA = [(2, 0.9, 2)] * 5 + [(2, 0.6, 2), (2, 0.6, 1), (2, 0.6, 1)]
# detritus: right half of the time at every score: never 80 %.
DETRITUS = [(3, 0.95, 3), (3, 0.9, 1), (3, 0.85, 3), (3, 0.8, 1), (3, 0.75, 3), (3, 0.7, 1)]
# Appendicularia: three sure and right predictions, fewer than the five needed.
APPENDICULARIA = [(4, 0.99, 4)] * 3


def test_thresholds_on_hand_made_probabilities():
    y, proba = _held_out(COPEPODA + CHAETOGNATHA + DETRITUS + APPENDICULARIA)
    t = category_thresholds(y, proba, CLASSES, NAMES, target_precision=0.8, min_objects=5)
    cop = t["per_class"]["Copepoda"]
    assert cop == {"taxon_id": 1, "threshold": 0.7, "precision": pytest.approx(6 / 7),
                   "n_above": 7, "n_predicted": 9, "coverage": pytest.approx(7 / 9),
                   "reason": None}
    chaet = t["per_class"]["Chaetognatha"]
    assert (chaet["threshold"], chaet["precision"], chaet["n_above"]) == (0.9, 1.0, 5)
    assert chaet["coverage"] == pytest.approx(5 / 8)
    det = t["per_class"]["detritus"]
    assert det["threshold"] is None and det["n_above"] == 0 and det["n_predicted"] == 6
    assert det["reason"] == ("precision stays below 0.8 at every threshold that keeps at least "
                             "5 objects (best 0.600)")
    app = t["per_class"]["Appendicularia"]
    assert app["threshold"] is None
    assert app["reason"] == ("only 3 held-out objects predicted as this category; "
                             "at least 5 needed")
    assert t["per_class"]["Salpida"]["reason"] == "never predicted on the held-out part"
    assert t["n_categories_with_threshold"] == 2
    # 7 Copepoda (6 right) and 5 Chaetognatha (all right) of 26 held-out objects.
    assert (t["n_test"], t["n_bulk_validatable"]) == (26, 12)
    assert t["fraction_bulk_validatable"] == pytest.approx(12 / 26)
    assert t["expected_error_rate"] == pytest.approx(1 / 12)
    assert (t["target_precision"], t["min_objects"]) == (0.8, 5)
    json.dumps(t, allow_nan=False)


def test_a_stricter_target_or_fewer_needed_objects_move_the_thresholds():
    y, proba = _held_out(COPEPODA + CHAETOGNATHA)
    strict = category_thresholds(y, proba, CLASSES, NAMES, target_precision=1.0, min_objects=5)
    # Copepoda: the first five (0.99 .. the 0.9 tie) hold an error: no 100 % set of five.
    assert strict["per_class"]["Copepoda"]["threshold"] is None
    assert "best 0.857" in strict["per_class"]["Copepoda"]["reason"]
    assert strict["per_class"]["Chaetognatha"]["threshold"] == 0.9
    few = category_thresholds(y, proba, CLASSES, NAMES, target_precision=1.0, min_objects=2)
    assert few["per_class"]["Copepoda"]["threshold"] == 0.95
    assert few["per_class"]["Copepoda"]["n_above"] == 2
    # 19 right of 20 is exactly the target: reached (the test is on counts).
    y, proba = _held_out([(1, 0.9, 1)] * 19 + [(1, 0.8, 2)])
    exact = category_thresholds(y, proba, CLASSES, NAMES, target_precision=0.95)
    assert exact["per_class"]["Copepoda"]["n_above"] == 20
    assert exact["per_class"]["Copepoda"]["threshold"] == 0.8


def test_threshold_parameters_and_shapes_are_checked():
    y, proba = _held_out(COPEPODA)
    with pytest.raises(ValueError, match=r"target_precision must be in \(0, 1\], got 1.5"):
        category_thresholds(y, proba, CLASSES, NAMES, target_precision=1.5)
    with pytest.raises(ValueError, match="min_objects must be a positive integer, got 0"):
        category_thresholds(y, proba, CLASSES, NAMES, min_objects=0)
    with pytest.raises(ValueError, match=r"proba must have shape \(9, 4\)"):
        category_thresholds(y, proba, CLASSES[:4], NAMES)
    empty = category_thresholds(np.empty(0), np.empty((0, 5)), CLASSES, NAMES)
    assert empty["n_bulk_validatable"] == 0 and empty["fraction_bulk_validatable"] is None


def _identity_split(train_labels, test_rows):
    """X, y and split where a tree learns 'X is the class' and test rows say what to predict.

    ``test_rows`` are (true class, predicted class) pairs.
    """
    train_y = np.array(train_labels)
    test_y = np.array([t for t, _ in test_rows])
    X = np.concatenate([train_y, [p for _, p in test_rows]]).astype(float).reshape(-1, 1)
    y = np.concatenate([train_y, test_y])
    split = HoldoutSplit(np.arange(len(train_y)), np.arange(len(train_y), len(y)), (), 0.5, 0)
    return X, y, split


def test_support_weighted_metrics_over_all_and_over_plankton_categories_by_hand():
    # True -> predicted on the held-out part:
    #   Copepoda x4 -> C, C, C, Ch;  Chaetognatha x2 -> Ch, C;  detritus x4 -> d, d, C, C.
    # precision: C 3/6, Ch 1/2, d 2/2; recall: C 3/4, Ch 1/2, d 2/4; support 4, 2, 4.
    C, CH, D = 1, 2, 3
    test_rows = ([(C, C)] * 3 + [(C, CH)] + [(CH, CH), (CH, C)] + [(D, D)] * 2 + [(D, C)] * 2)
    X, y, split = _identity_split([C, CH, D] * 3, test_rows)
    m = evaluate_holdout(DecisionTreeClassifier(random_state=0), X, y, split, NAMES)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["weighted_precision"] == pytest.approx((0.5 * 4 + 0.5 * 2 + 1.0 * 4) / 10)
    assert m["weighted_recall"] == pytest.approx(0.6)  # weighted recall is the accuracy
    f1 = {C: 2 * 0.5 * 0.75 / 1.25, CH: 0.5, D: 2 * 1.0 * 0.5 / 1.5}
    assert m["weighted_f1"] == pytest.approx((f1[C] * 4 + f1[CH] * 2 + f1[D] * 4) / 10)
    assert m["plankton_weighted_precision"] == pytest.approx((0.5 * 4 + 0.5 * 2) / 6)
    assert m["plankton_weighted_recall"] == pytest.approx((0.75 * 4 + 0.5 * 2) / 6)
    assert m["plankton_weighted_f1"] == pytest.approx((f1[C] * 4 + f1[CH] * 2) / 6)
    # The macro figures stay, and differ: each category counts once.
    assert m["plankton_macro_recall"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["plankton_macro_f1"] == pytest.approx((f1[C] + f1[CH]) / 2)
    assert m["non_plankton_categories"] == ["detritus"]
    # One-hot probabilities: every score is 1.0; Copepoda's six predictions are half wrong.
    t = m["thresholds"]
    assert t["target_precision"] == 0.95 and t["n_test"] == 10
    assert t["per_class"]["Copepoda"]["threshold"] is None
    assert t["per_class"]["Copepoda"]["n_predicted"] == 6
    json.dumps(m, allow_nan=False)


def test_evaluate_holdout_passes_the_target_precision_on():
    C, CH = 1, 2
    test_rows = [(C, C)] * 5 + [(CH, CH)] * 5 + [(CH, C)]
    X, y, split = _identity_split([C, CH] * 3, test_rows)
    tree = DecisionTreeClassifier(random_state=0)
    loose = evaluate_holdout(tree, X, y, split, NAMES, target_precision=0.8)["thresholds"]
    assert loose["per_class"]["Copepoda"]["threshold"] == 1.0
    assert loose["per_class"]["Copepoda"]["precision"] == pytest.approx(5 / 6)
    strict = evaluate_holdout(tree, X, y, split, NAMES)["thresholds"]
    assert strict["per_class"]["Copepoda"]["threshold"] is None
    assert strict["per_class"]["Chaetognatha"]["threshold"] == 1.0
    assert strict["n_bulk_validatable"] == 5 and strict["expected_error_rate"] == 0.0
    few = evaluate_holdout(tree, X, y, split, NAMES, min_threshold_objects=6)["thresholds"]
    assert few["n_categories_with_threshold"] == 0
    with pytest.raises(ValueError, match="target_precision must be in"):
        evaluate_holdout(tree, X, y, split, NAMES, target_precision=0.0)


def test_score_probabilities_of_a_network_without_a_fitted_estimator():
    # As the fine-tuning bench scores its network: classes are column indices.
    names = {0: "Copepoda", 1: "Chaetognatha", 2: "detritus"}
    proba = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.1, 0.5]])
    y_true = np.array([0, 1, 1, 2])  # predicted 0, 0, 1, 2
    m = score_probabilities(y_true, proba, np.arange(3), names)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.5, 0.5])))
    # Plankton: Copepoda precision 1/2 (support 1), Chaetognatha 1/1 (support 2).
    assert m["plankton_weighted_precision"] == pytest.approx((0.5 * 1 + 1.0 * 2) / 3)
    assert m["plankton_weighted_recall"] == pytest.approx((1.0 * 1 + 0.5 * 2) / 3)
    assert m["non_plankton_categories"] == ["detritus"]
    assert m["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    json.dumps(m, allow_nan=False)
