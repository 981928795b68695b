"""Training: learning set -> held-out evaluation -> final fit -> model registry."""

from __future__ import annotations

import time
from typing import Sequence

from ecotaxa_core.db.models import TrainedModel
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.learn.classifiers import (DEFAULT_FEATURE_SETS, classifier_parameters,
                                            default_feature_sets, make_classifier)
from ecotaxa_core.learn.evaluation import evaluate_holdout, holdout_split
from ecotaxa_core.learn.learning_set import build_learning_set
from ecotaxa_core.learn.registry import save_model
from ecotaxa_core.taxonomy import taxon_names

__all__ = ["TrainingError", "train_model", "common_feature_sets"]


class TrainingError(EcoTaxaError):
    """A model cannot be trained as asked."""


def common_feature_sets(inst, project_ids: Sequence[int]) -> list[str]:
    """The feature sets every one of ``project_ids`` holds."""
    sets = [set(inst.features.feature_sets(pid)) for pid in project_ids]
    return sorted(set.intersection(*sets)) if sets else []


def train_model(inst, project_id: int, kind: str = "deep_logreg", *,
                feature_sets: Sequence[str] | None = None, user_id: int | None = None,
                other_project_ids: Sequence[int] = (), categories: Sequence[int] | None = None,
                max_per_category: int | None = None, test_size: float = 0.2, seed: int = 0,
                n_jobs: int | None = -1, name: str | None = None) -> TrainedModel:
    """Train a classifier on the validated objects and register it.

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
    other_project_ids, categories, max_per_category, seed
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
                                      max_per_category=max_per_category, seed=seed)
    if len(learning_set.categories) < 2:
        raise TrainingError(
            f"a classifier needs validated objects of at least 2 categories; the learning set "
            f"of project {project_id} has {learning_set.n_samples} objects of "
            f"{len(learning_set.categories)} category")
    with inst.sessions() as session:
        names = taxon_names(session, learning_set.categories)

    split = holdout_split(learning_set.y, test_size=test_size, seed=seed)
    metrics = evaluate_holdout(make_classifier(kind, n_jobs=n_jobs, random_state=seed),
                               learning_set.X, learning_set.y, split, names)
    t1 = time.perf_counter()
    final = make_classifier(kind, n_jobs=n_jobs, random_state=seed)
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
                    "steps": classifier_parameters(final)},
        metrics=metrics, created_by=user_id)
