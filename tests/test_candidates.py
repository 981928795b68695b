"""Candidate models and the automatic choice of a training within its time budget."""

from __future__ import annotations

import pytest

from ecotaxa_core.learn import UnknownClassifierKind
from ecotaxa_core.learn.candidates import (BASELINE, RANKED_CANDIDATES, Candidate,
                                           estimated_training_seconds, plan_automatic)

DEEP = "deep_effnetlite0"


def test_parse_and_print_round_trip_and_refusals():
    for text in ("classic_rf", "deep_rf", f"deep_logreg:{DEEP}+morpho", f"deep_mlp:{DEEP}",
                 f"deep_logreg_rf:{DEEP}+morpho"):
        assert str(Candidate.parse(text)) == text
    with pytest.raises(UnknownClassifierKind, match="unknown classifier kind 'svm'"):
        Candidate.parse("svm:morpho")
    with pytest.raises(ValueError, match="distinct names"):
        Candidate.parse("deep_logreg:morpho+morpho")
    with pytest.raises(ValueError, match="distinct names"):
        Candidate.parse("deep_logreg:morpho+")


def test_sets_among_needs_every_named_set_or_one_default():
    assert Candidate.parse(f"deep_logreg:{DEEP}+morpho").sets_among([DEEP]) == []
    assert Candidate.parse(f"deep_logreg:{DEEP}+morpho").sets_among(["morpho", DEEP]) == [
        DEEP, "morpho"]
    assert BASELINE.sets_among(["morpho", DEEP]) == ["morpho"]


def test_estimates_grow_with_objects_and_features():
    c = Candidate.parse(f"deep_logreg:{DEEP}")
    one = estimated_training_seconds(c, 1000, {DEEP: 1280})
    assert estimated_training_seconds(c, 2000, {DEEP: 1280}) == pytest.approx(2 * one)
    assert estimated_training_seconds(c, 1000, {DEEP: 640}) == pytest.approx(one / 2)


def test_plan_takes_the_best_ranked_runnable_then_the_baseline():
    plan, notes = plan_automatic(["morpho", DEEP, DEEP + "_pca50"], 5000)
    assert [(str(p.candidate), p.role) for p in plan] == [
        (str(RANKED_CANDIDATES[0]), "best that fits"), ("classic_rf", "baseline")]
    assert notes == []
    # Without classic features: no baseline; the best candidate reading the deep set alone.
    plan, _ = plan_automatic([DEEP], 5000)
    assert [str(p.candidate) for p in plan] == [f"deep_logreg:{DEEP}"]
    # Classic features only: the baseline is the best that fits, once.
    plan, _ = plan_automatic(["tsv", "morpho"], 5000)
    assert [(str(p.candidate), p.feature_sets, p.role) for p in plan] == [
        ("classic_rf", ["tsv", "morpho"], "best that fits")]


def test_fine_tuned_sets_rank_first():
    plan, _ = plan_automatic(["morpho", DEEP, "deep_ft1"], 5000, fine_tuned_sets=["deep_ft1"])
    assert str(plan[0].candidate) == "deep_logreg_rf:deep_ft1+morpho"


def test_budget_passes_over_what_does_not_fit_and_says_why():
    sizes = {DEEP: 1280, "morpho": 50}
    first, second = RANKED_CANDIDATES[0], RANKED_CANDIDATES[1]
    budget = estimated_training_seconds(second, 20000, sizes)
    assert estimated_training_seconds(first, 20000, sizes) > budget
    plan, notes = plan_automatic(["morpho", DEEP], 20000, time_budget_s=budget, n_features_of=sizes)
    assert str(plan[0].candidate) == str(second)
    assert notes == [f"{first}: about {estimated_training_seconds(first, 20000, sizes):.3g} s "
                     f"estimated, more than the {budget:.3g} s budget"]
    plan, notes = plan_automatic(["morpho", DEEP], 20000, time_budget_s=1e-6, n_features_of=sizes)
    runnable = [c for c in RANKED_CANDIDATES if c.sets_among(["morpho", DEEP])]
    quickest = min(runnable, key=lambda c: estimated_training_seconds(c, 20000, sizes))
    assert str(plan[0].candidate) == str(quickest)
    assert notes[-1].startswith("nothing fits the 1e-06 s budget; taking the quickest")


def test_nothing_runnable_is_said():
    plan, notes = plan_automatic([], 100)
    assert plan == [] and "compute morpho and deep_effnetlite0 features first" in notes[0]


def test_the_blend_costs_its_regression_plus_its_forest():
    sizes = {DEEP: 1280, "morpho": 50}
    blend = estimated_training_seconds(Candidate.parse(f"deep_logreg_rf:{DEEP}+morpho"), 1000, sizes)
    logreg = estimated_training_seconds(Candidate.parse(f"deep_logreg:{DEEP}+morpho"), 1000, sizes)
    forest = estimated_training_seconds(Candidate.parse("classic_rf:morpho"), 1000, sizes)
    assert blend == pytest.approx(logreg + forest)
