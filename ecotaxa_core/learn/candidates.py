"""Candidate models of a training, and the automatic choice within a time budget.

A candidate is a classifier kind and the feature sets it reads, written
``KIND`` (the kind's default sets, see
:data:`~ecotaxa_core.learn.classifiers.DEFAULT_FEATURE_SETS`) or
``KIND:SET+SET``. With no candidate given, a training takes the automatic
choice (:func:`plan_automatic`): the best-ranked candidate whose features the
project holds and whose estimated training time fits the budget, and EcoTaxa's
baseline (``classic_rf`` on classic features) beside it as the reference.

The ranking comes from ``bench/bench_quality.py`` on the NDSB sample (121
categories, 17,000 training images, see docs/learning.md): fine-tuned deep
features first, then the pretrained ones with the classic features joined
(the logistic regression blended with EcoTaxa's forest, then alone), then
pretrained alone, then EcoTaxa's recipes.

>>> Candidate.parse("deep_logreg:deep_effnetlite0+morpho")
Candidate(kind='deep_logreg', feature_sets=('deep_effnetlite0', 'morpho'))
>>> str(Candidate.parse("classic_rf"))
'classic_rf'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ecotaxa_core.learn.classifiers import DEFAULT_FEATURE_SETS, UnknownClassifierKind

__all__ = ["Candidate", "RANKED_CANDIDATES", "BASELINE", "estimated_training_seconds",
           "plan_automatic", "PlannedCandidate"]

_SET = "deep_effnetlite0"


@dataclass(frozen=True)
class Candidate:
    """A classifier kind and its feature sets (None: the kind's defaults)."""

    kind: str
    feature_sets: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> "Candidate":
        kind, _, sets = str(text).strip().partition(":")
        if kind not in DEFAULT_FEATURE_SETS:
            raise UnknownClassifierKind(kind)
        names = tuple(s.strip() for s in sets.split("+")) if sets else None
        if names is not None and (not all(names) or len(set(names)) != len(names)):
            raise ValueError(f"candidate {text!r}: feature sets must be distinct names "
                             "joined by +, e.g. deep_logreg:deep_effnetlite0+morpho")
        return cls(kind, names)

    def __str__(self) -> str:
        return self.kind + (":" + "+".join(self.feature_sets) if self.feature_sets else "")

    def sets_among(self, available: Sequence[str]) -> list[str]:
        """The sets it reads among ``available``; empty when it cannot run."""
        have = set(available)
        if self.feature_sets is None:
            return [fs for fs in DEFAULT_FEATURE_SETS[self.kind] if fs in have]
        return list(self.feature_sets) if set(self.feature_sets) <= have else []


BASELINE = Candidate("classic_rf")

#: Best first, on pretrained features (fine-tuned sets are ranked above them).
RANKED_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("deep_logreg_rf", (_SET, "morpho")),
    Candidate("deep_logreg", (_SET, "morpho")),
    Candidate("deep_logreg", (_SET,)),
    Candidate("deep_mlp", (_SET, "morpho")),
    Candidate("deep_rf", (_SET + "_pca50",)),
    BASELINE,
)

# Seconds per (object x feature) of one fit on this 2-core machine (held-out fit
# and final refit are two fits), measured by bench/bench_quality.py on NDSB
# (17,000 training objects, 121 categories); rough, for planning only.
_SECONDS_PER_OBJECT_FEATURE = {"classic_rf": 2.0e-5, "deep_rf": 2.0e-5, "deep_logreg": 1.5e-6,
                               "deep_mlp": 3.0e-6}
_TYPICAL_FEATURES = {"morpho": 50, "tsv": 30, "deep_effnetlite0_pca50": 50}


def estimated_training_seconds(candidate: Candidate, n_objects: int,
                               n_features_of: dict[str, int] | None = None) -> float:
    """Rough seconds a training of ``candidate`` on ``n_objects`` takes (two fits)."""
    n_features_of = n_features_of or {}
    sets = candidate.feature_sets or DEFAULT_FEATURE_SETS[candidate.kind]
    sizes = {fs: n_features_of.get(fs, _TYPICAL_FEATURES.get(fs, 1280)) for fs in sets}
    n_features = sum(sizes.values())
    if candidate.kind == "deep_logreg_rf":  # the regression on all, the forest on classic ones
        n_classic = sum(n for fs, n in sizes.items() if not fs.startswith("deep_"))
        per_fit = (_SECONDS_PER_OBJECT_FEATURE["deep_logreg"] * n_features
                   + _SECONDS_PER_OBJECT_FEATURE["classic_rf"] * n_classic)
    else:
        per_fit = _SECONDS_PER_OBJECT_FEATURE[candidate.kind] * n_features
    return 2.0 * per_fit * n_objects


@dataclass(frozen=True)
class PlannedCandidate:
    candidate: Candidate
    feature_sets: list[str]
    estimated_seconds: float
    role: str  # "best that fits" or "baseline"


def plan_automatic(available: Sequence[str], n_objects: int, *,
                   fine_tuned_sets: Sequence[str] = (), time_budget_s: float | None = None,
                   n_features_of: dict[str, int] | None = None,
                   ) -> tuple[list[PlannedCandidate], list[str]]:
    """The candidates an automatic training runs, and why the better ones were passed over.

    The best-ranked candidate the features allow and the budget fits, then the
    baseline when the project has classic features and it is not that one.
    When nothing fits the budget, the cheapest runnable candidate is taken.
    """
    ranked = [Candidate("deep_logreg_rf", (fs, "morpho")) for fs in fine_tuned_sets]
    ranked += [Candidate("deep_logreg", (fs,)) for fs in fine_tuned_sets]
    ranked += list(RANKED_CANDIDATES)
    runnable = [(c, c.sets_among(available)) for c in ranked]
    runnable = [(c, sets, estimated_training_seconds(c, n_objects, n_features_of))
                for c, sets in runnable if sets]
    notes: list[str] = []
    if not runnable:
        return [], [f"no candidate can run on the feature sets {list(available) or 'none'}; "
                    "compute morpho and deep_effnetlite0 features first"]
    chosen = None
    for c, sets, seconds in runnable:
        if time_budget_s is None or seconds <= time_budget_s:
            chosen = (c, sets, seconds)
            break
        notes.append(f"{c}: about {seconds:.3g} s estimated, more than the "
                     f"{time_budget_s:.3g} s budget")
    if chosen is None:
        chosen = min(runnable, key=lambda r: r[2])
        notes.append(f"nothing fits the {time_budget_s:.3g} s budget; taking the quickest, "
                     f"{chosen[0]}")
    plan = [PlannedCandidate(chosen[0], chosen[1], chosen[2], "best that fits")]
    baseline_sets = BASELINE.sets_among(available)
    if chosen[0] != BASELINE and baseline_sets:
        plan.append(PlannedCandidate(BASELINE, baseline_sets,
                                     estimated_training_seconds(BASELINE, n_objects,
                                                                n_features_of), "baseline"))
    return plan, notes
