"""Training: learning set -> held-out evaluation -> final fit -> model registry.

:func:`train_model` trains one model. :func:`plan_training` decides which
models a training runs: the candidates the settings name, or the automatic
choice (:func:`~ecotaxa_core.learn.candidates.plan_automatic`) when they name
none, within the time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ecotaxa_core.db.models import TrainedModel
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.learn.classifiers import (DEFAULT_FEATURE_SETS, classifier_parameters,
                                            default_feature_sets, make_classifier)
from ecotaxa_core.learn.evaluation import evaluate_holdout, holdout_split
from ecotaxa_core.learn.candidates import Candidate, estimated_training_seconds, plan_automatic
from ecotaxa_core.learn.learning_set import build_learning_set, select_learning_objects
from ecotaxa_core.learn.registry import model_with_fingerprint, save_model
from ecotaxa_core.learn.training_settings import TrainingSettings
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["TrainingError", "train_model", "common_feature_sets", "TrainingPlan",
           "PlannedModel", "plan_training", "fine_tuned_feature_sets"]


class TrainingError(EcoTaxaError):
    """A model cannot be trained as asked."""


def common_feature_sets(inst, project_ids: Sequence[int]) -> list[str]:
    """The feature sets every one of ``project_ids`` holds."""
    sets = [set(inst.features.feature_sets(pid)) for pid in project_ids]
    return sorted(set.intersection(*sets)) if sets else []


def training_fingerprint(kind: str, learning_set, class_names: Mapping[int, str], *,
                         test_size: float, seed: int) -> str:
    """A digest of everything a trained model depends on: the kind, the learning set
    (its definition, objects, categories, feature names and values), the held-out
    split, the seed, and the versions of this package and scikit-learn.

    >>> import numpy as np
    >>> from types import SimpleNamespace as NS
    >>> ls = NS(definition={}, feature_names=["a"], object_ids=np.array([1, 2]),
    ...         y=np.array([5, 6]), X=np.array([[0.5], [1.5]], dtype=np.float32))
    >>> one = training_fingerprint("classic_rf", ls, {5: "a", 6: "b"}, test_size=0.2, seed=0)
    >>> one == training_fingerprint("classic_rf", ls, {5: "a", 6: "b"}, test_size=0.2, seed=0)
    True
    >>> one == training_fingerprint("classic_rf", ls, {5: "a", 6: "b"}, test_size=0.2, seed=1)
    False
    """
    import hashlib
    import json
    from importlib.metadata import version

    import numpy as np
    import sklearn

    digest = hashlib.sha256(json.dumps({
        "kind": kind, "definition": learning_set.definition,
        "feature_names": list(learning_set.feature_names),
        "classes": {str(k): v for k, v in sorted(class_names.items())},
        "test_size": test_size, "seed": seed, "sklearn": sklearn.__version__,
        "ecotaxa": version("ecotaxa-flow")}, sort_keys=True, default=str).encode())
    for array, dtype in ((learning_set.object_ids, np.int64), (learning_set.y, np.int64),
                         (learning_set.X, np.float32)):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.hexdigest()


def train_model(inst, project_id: int, kind: str = "deep_logreg", *,
                feature_sets: Sequence[str] | None = None, user_id: int | None = None,
                other_project_ids: Sequence[int] = (), categories: Sequence[int] | None = None,
                max_per_category: int | None = None, test_size: float = 0.2, seed: int = 0,
                n_jobs: int | None = -1, name: str | None = None,
                appear_as: Mapping[int, int] | None = None, reuse: bool = True) -> TrainedModel:
    """Train a classifier on the validated objects and register it.

    With ``reuse``, a model of the project trained the same way on the same
    learning set (same objects, categories, feature values, settings and code
    versions: :func:`training_fingerprint`) is returned as it is, not trained
    again: training is deterministic, it would be the same model.

    The model is first fitted on a stratified ``1 - test_size`` part of the
    learning set and scored on the rest (the metrics); then the registered
    model is refitted on the whole learning set.

    Parameters
    ----------
    inst : Instance
    project_id : int
    kind : {"deep_logreg", "classic_rf"}
    feature_sets : sequence of str, optional
        Default: the kind's default sets that every project involved holds.
    user_id : int, optional
        Who asked for the training (``created_by``).
    other_project_ids, categories, max_per_category, seed, appear_as
        The learning-set definition, see :func:`build_learning_set`.
    test_size : float
        Held-out fraction of each category.
    n_jobs : int or None
        Parallel jobs of the random forest.

    Raises
    ------
    TrainingError
        No usable feature set, or fewer than two categories to learn.
    LearningSetError
        No validated object, or a feature set missing or different in a project.
    """
    make_classifier(kind)  # an unknown kind fails before any reading
    if feature_sets is None:
        available = common_feature_sets(inst, [project_id, *other_project_ids])
        feature_sets = default_feature_sets(kind, available)
        if not feature_sets:
            raise TrainingError(
                f"{kind} needs one of the feature sets {list(DEFAULT_FEATURE_SETS[kind])} in "
                f"project {project_id}" + (" and the other projects" if other_project_ids else "")
                + f", which hold {available or 'none'} in common; compute the features first")
    t0 = time.perf_counter()
    learning_set = build_learning_set(inst, project_id, feature_sets,
                                      other_project_ids=other_project_ids, categories=categories,
                                      max_per_category=max_per_category, seed=seed,
                                      appear_as=appear_as)
    if len(learning_set.categories) < 2:
        raise TrainingError(
            f"a classifier needs validated objects of at least 2 categories; the learning set "
            f"of project {project_id} has {learning_set.n_samples} objects of "
            f"{len(learning_set.categories)} category")
    with inst.sessions() as session:
        names = taxon_names(session, learning_set.categories)
    fingerprint = training_fingerprint(kind, learning_set, names, test_size=test_size, seed=seed)
    if reuse:
        with inst.sessions() as session:
            same = model_with_fingerprint(session, inst.models_dir, project_id, fingerprint)
        if same is not None:
            return same

    split = holdout_split(learning_set.y, test_size=test_size, seed=seed)
    metrics = evaluate_holdout(make_classifier(kind, n_jobs=n_jobs, random_state=seed,
                                               feature_names=learning_set.feature_names),
                               learning_set.X, learning_set.y, split, names)
    t1 = time.perf_counter()
    final = make_classifier(kind, n_jobs=n_jobs, random_state=seed,
                            feature_names=learning_set.feature_names)
    final.fit(learning_set.X, learning_set.y)
    metrics.update(final_model="refitted on the whole learning set after the held-out evaluation",
                   n_final_train=learning_set.n_samples,
                   final_fit_seconds=round(time.perf_counter() - t1, 3),
                   total_seconds=round(time.perf_counter() - t0, 3))
    return save_model(
        inst, project_id,
        name=name or f"{kind} on {'+'.join(feature_sets)} ({learning_set.n_samples} objects, "
                     f"{len(learning_set.categories)} categories)",
        kind=kind, pipeline=final, feature_sets=list(learning_set.definition["feature_sets"]),
        feature_names=learning_set.feature_names, class_names=names,
        learning_set_definition=learning_set.definition,
        parameters={"n_jobs": n_jobs, "test_size": test_size, "seed": seed,
                    "steps": classifier_parameters(final), "fingerprint": fingerprint},
        metrics=metrics, created_by=user_id)


def fine_tuned_feature_sets(inst, available: Sequence[str]) -> list[str]:
    """The fine-tuned deep feature sets (registered backbones with a bottleneck) among
    ``available``, newest registration last."""
    from ecotaxa_core.features.backbones import read_backbones

    specs = read_backbones(inst.settings.backbones_path)
    return [fs for fs, spec in specs.items()
            if getattr(spec, "bottleneck", None) and fs in set(available)]


@dataclass(frozen=True)
class PlannedModel:
    candidate: Candidate
    feature_sets: list[str]
    estimated_seconds: float
    role: str  # "asked", "best that fits" or "baseline"

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": str(self.candidate), "kind": self.candidate.kind,
                "feature_sets": self.feature_sets,
                "estimated_seconds": round(self.estimated_seconds, 1), "role": self.role}


@dataclass(frozen=True)
class TrainingPlan:
    """The models a training runs, those it cannot run (with why), and notes."""

    models: list[PlannedModel]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_objects: int = 0
    available: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models], "skipped": list(self.skipped),
                "notes": list(self.notes), "n_objects": self.n_objects,
                "available_feature_sets": list(self.available)}


def plan_training(inst, project_id: int, settings: TrainingSettings) -> TrainingPlan:
    """Which models a training with ``settings`` runs on project ``project_id``.

    Raises
    ------
    LearningSetError
        No validated object, bad "appear as" mapping ... (before any fit).
    UnknownClassifierKind, ValueError
        A candidate that does not parse.
    """
    settings.check()
    candidates = ([Candidate.parse(c) for c in settings.candidates]
                  if settings.candidates is not None else None)
    project_ids = [project_id, *settings.other_project_ids]
    available = common_feature_sets(inst, project_ids)
    chosen = select_learning_objects(
        inst, project_id, other_project_ids=settings.other_project_ids,
        categories=settings.categories, max_per_category=settings.max_per_category,
        seed=settings.seed, appear_as=settings.appear_as)
    n_objects = len(chosen.object_ids)
    n_features_of = {fs: len(inst.features.feature_names(project_id, fs)) for fs in available}
    where = (f"project {project_id}" if not settings.other_project_ids
             else f"projects {', '.join(map(str, project_ids))} in common")
    if candidates is None:
        planned, notes = plan_automatic(
            available, n_objects, fine_tuned_sets=fine_tuned_feature_sets(inst, available),
            time_budget_s=settings.time_budget_s, n_features_of=n_features_of)
        return TrainingPlan([PlannedModel(p.candidate, p.feature_sets, p.estimated_seconds,
                                          p.role) for p in planned],
                            skipped=[], notes=notes, n_objects=n_objects, available=available)
    models, skipped = [], []
    for c in candidates:
        sets = c.sets_among(available)
        if not sets:
            needs = (" and ".join(c.feature_sets) if c.feature_sets
                     else " or ".join(DEFAULT_FEATURE_SETS[c.kind]))
            skipped.append(f"{c}: needs feature set {needs}, {where} has "
                           f"{', '.join(available) or 'none'}")
            continue
        models.append(PlannedModel(c, sets, estimated_training_seconds(c, n_objects,
                                                                        n_features_of), "asked"))
    return TrainingPlan(models, skipped=skipped, notes=[], n_objects=n_objects,
                        available=available)
