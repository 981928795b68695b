"""Learning sets: the validated objects a classifier learns from, as a feature matrix.

A learning set takes the VALIDATED objects of a project (and optionally of
other projects), keeps the chosen categories, caps the number of objects per
category with a stable pseudo-random choice, and joins the chosen feature sets
of the feature store column-wise. "Appear as" relabels categories before
anything else: the objects of a category are learned under another one
(usually its parent), so predictions land on the coarser category; the cap then
applies to each learned category. Feature names are prefixed by their set
(``morpho:area``) so sets never clash.

Features that cannot help are dropped and reported in the definition: those
missing for more than 25 % of the objects, and those with a single value.
Objects with no feature row in any chosen set are left out and counted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import select

from ecotaxa_core.db.models import Object, ObjectStatus, Taxon
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.projects import get_project
from ecotaxa_core.store.feature_store import FeatureStore

__all__ = [
    "LearningSet",
    "LearningSetError",
    "EmptyLearningSet",
    "FeatureSetUnavailable",
    "MAX_MISSING_FRACTION",
    "LearningObjects",
    "select_learning_objects",
    "build_learning_set",
    "read_feature_sets",
    "stable_order",
]

#: A feature missing for more than this fraction of the learning set is dropped.
MAX_MISSING_FRACTION = 0.25

ObjectIDT = int
TaxonIDT = int


class LearningSetError(EcoTaxaError):
    """A learning set cannot be built as asked."""


class EmptyLearningSet(LearningSetError):
    """No validated object (with features) matches the learning-set definition."""


class FeatureSetUnavailable(LearningSetError):
    """A feature set is missing from a project, or differs between projects."""


@dataclass(frozen=True)
class LearningSet:
    """Validated objects as a feature matrix and their categories.

    Attributes
    ----------
    object_ids : ndarray of int64, shape (n_samples,)
    y : ndarray of int64, shape (n_samples,)
        Taxon id of each object.
    X : ndarray of float32, shape (n_samples, n_features)
        Feature values, NaN where missing (imputed by the classifier pipeline).
    feature_names : list of str
        ``<feature set>:<feature>`` for each column of ``X``.
    definition : dict
        JSON-able description (projects, sets, categories, cap, seed, counts,
        dropped features) stored with the trained model.
    """

    object_ids: np.ndarray
    y: np.ndarray
    X: np.ndarray
    feature_names: list[str]
    definition: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def categories(self) -> list[TaxonIDT]:
        """The taxon ids present, sorted."""
        return [int(t) for t in np.unique(self.y)]


@dataclass(frozen=True)
class LearningObjects:
    """The objects of a learning set before any feature is read.

    Attributes
    ----------
    object_ids, y, owner : ndarray of int64
        Object id, learned category (after "appear as") and project of each
        object, sorted by object id.
    project_ids : list of int
        The projects, the main one first.
    n_validated : dict of int to int
        Validated objects per learned category, before the cap.
    appear_as : dict of int to int
        The relabelling applied (category -> learned category).
    """

    object_ids: np.ndarray
    y: np.ndarray
    owner: np.ndarray
    project_ids: list[int]
    n_validated: dict[int, int]
    appear_as: dict[int, int]

    @property
    def where(self) -> str:
        return (f"project {self.project_ids[0]}" if len(self.project_ids) == 1
                else f"projects {', '.join(map(str, self.project_ids))}")


def stable_order(object_ids: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random rank key per object id, fixed by ``(id, seed)``.

    The key of an object does not depend on the other objects, so the objects a
    cap keeps stay the same when the project grows (only newcomers with a
    smaller key enter). It is the splitmix64 finaliser of ``id ^ seed``.

    >>> a = stable_order(np.array([10, 11, 12]), seed=0)
    >>> b = stable_order(np.array([12, 99, 10, 11]), seed=0)
    >>> bool(a[0] == b[2] and a[2] == b[0]), bool(a[0] != stable_order(np.array([10]), seed=1)[0])
    (True, True)
    """
    x = np.asarray(object_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def read_feature_sets(store: FeatureStore, project_id: int, feature_sets: Sequence[str],
                      object_ids: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """The chosen feature sets of ``object_ids`` side by side, with prefixed names.

    Rows of objects a set does not hold are NaN; infinite values become NaN
    too (a ratio over a zero area), so imputation treats them as missing.
    """
    blocks, names = [], []
    for fs in feature_sets:
        if not store.exists(project_id, fs):
            raise FeatureSetUnavailable(
                f"project {project_id} has no feature set {fs!r} "
                f"(it has: {', '.join(store.feature_sets(project_id)) or 'none'})")
        m = store.read(project_id, fs, object_ids)
        blocks.append(m.values)
        names.extend(f"{fs}:{n}" for n in m.feature_names)
    if len(blocks) == 1:
        X = blocks[0].astype(np.float32, copy=False)
    else:
        X = (np.concatenate(blocks, axis=1) if blocks
             else np.empty((len(object_ids), 0), dtype=np.float32)).astype(np.float32, copy=False)
    infinite = np.isinf(X)
    if infinite.any():
        X[infinite] = np.nan
    return X, names


def _check_feature_sets(store: FeatureStore, project_ids: Sequence[int],
                        feature_sets: Sequence[str]) -> None:
    """Every project has every set, with the same feature names as the first project."""
    main = project_ids[0]
    for fs in feature_sets:
        for pid in project_ids:
            if not store.exists(pid, fs):
                raise FeatureSetUnavailable(
                    f"project {pid} has no feature set {fs!r} "
                    f"(it has: {', '.join(store.feature_sets(pid)) or 'none'}); "
                    "compute it there or leave that project or set out")
        reference = store.feature_names(main, fs)
        for pid in project_ids[1:]:
            names = store.feature_names(pid, fs)
            if names != reference:
                only_here = sorted(set(names) - set(reference))[:5]
                only_main = sorted(set(reference) - set(names))[:5]
                raise FeatureSetUnavailable(
                    f"feature set {fs!r} differs between project {main} ({len(reference)} "
                    f"features) and project {pid} ({len(names)} features): only in {pid}: "
                    f"{only_here}, only in {main}: {only_main}"
                    + ("" if only_here or only_main else " (same names, other order)"))


def _cap_per_category(object_ids: np.ndarray, y: np.ndarray, cap: int | None,
                      seed: int) -> np.ndarray:
    """Boolean mask keeping at most ``cap`` objects per category (smallest stable keys)."""
    keep = np.ones(len(object_ids), dtype=bool)
    if cap is None:
        return keep
    keys = stable_order(object_ids, seed)
    for taxon in np.unique(y):
        members = np.flatnonzero(y == taxon)
        if len(members) > cap:
            ranked = members[np.argsort(keys[members], kind="stable")]
            keep[ranked[cap:]] = False
    return keep


def _useless_features(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Mask of the columns to keep, and the names dropped per reason."""
    missing = np.isnan(X).mean(axis=0) if len(X) else np.ones(X.shape[1])
    too_many_missing = missing > MAX_MISSING_FRACTION
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, dropped above
        lo, hi = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
    constant = ~too_many_missing & ~(hi > lo)
    keep = ~too_many_missing & ~constant
    dropped = {"too_many_missing": [n for n, d in zip(names, too_many_missing) if d],
               "constant": [n for n, d in zip(names, constant) if d]}
    return keep, dropped


def _check_appear_as(session, appear_as: Mapping[int, int] | None) -> dict[int, int]:
    """``appear_as`` as ``{int: int}``; refuses unknown taxa, self-maps and chains."""
    mapping = {int(k): int(v) for k, v in (appear_as or {}).items()}
    for source, target in mapping.items():
        for taxon_id in (source, target):
            if session.get(Taxon, taxon_id) is None:
                raise LearningSetError(f"appear as: no category with id {taxon_id} "
                                       f"(in {source} -> {target})")
        if source == target:
            raise LearningSetError(f"appear as: category {source} is mapped onto itself")
        if target in mapping:
            raise LearningSetError(
                f"appear as: category {source} appears as {target}, which itself appears as "
                f"{mapping[target]}; map {source} to {mapping[target]} directly")
    return mapping


def select_learning_objects(inst, project_id: int, *, other_project_ids: Sequence[int] = (),
                            categories: Sequence[int] | None = None,
                            max_per_category: int | None = None, seed: int = 0,
                            appear_as: Mapping[int, int] | None = None) -> LearningObjects:
    """The validated objects a learning set (or a fine-tuning) learns from, and their labels.

    Parameters
    ----------
    inst : Instance
    project_id : int
    other_project_ids : sequence of int
        More projects whose validated objects join.
    categories : sequence of int, optional
        Taxon ids to learn (before "appear as"); default every validated category.
    max_per_category : int, optional
        Keep at most this many objects per learned category, chosen
        pseudo-randomly but stably (the same seed keeps the same objects).
    seed : int
    appear_as : mapping of int to int, optional
        Category -> category it is learned as (e.g. a genus -> its family).

    Raises
    ------
    LearningSetError
        A bad cap or "appear as" mapping.
    ProjectNotFound
        A project does not exist.
    EmptyLearningSet
        No validated object matches.
    """
    if max_per_category is not None and max_per_category < 1:
        raise LearningSetError(f"max_per_category must be at least 1, got {max_per_category}")
    project_ids = list(dict.fromkeys([int(project_id), *(int(p) for p in other_project_ids)]))
    wanted = None if categories is None else sorted({int(c) for c in categories})
    with inst.sessions() as session:
        for pid in project_ids:
            get_project(session, pid)
        mapping = _check_appear_as(session, appear_as)
        q = (select(Object.id, Object.taxon_id, Object.project_id)
             .where(Object.project_id.in_(project_ids),
                    Object.status == ObjectStatus.VALIDATED.value,
                    Object.taxon_id.is_not(None))
             .order_by(Object.id))
        if wanted is not None:
            q = q.where(Object.taxon_id.in_(wanted))
        rows = session.execute(q).all()
    where = (f"project {project_ids[0]}" if len(project_ids) == 1
             else f"projects {', '.join(map(str, project_ids))}")
    if not rows:
        raise EmptyLearningSet(
            f"no validated object in {where}"
            + ("" if wanted is None else f" in categories {wanted}")
            + "; validate some objects first")
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    y = np.fromiter((mapping.get(r[1], r[1]) for r in rows), dtype=np.int64, count=len(rows))
    owner = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
    n_validated = {int(t): int(n) for t, n in zip(*np.unique(y, return_counts=True))}
    keep = _cap_per_category(ids, y, max_per_category, seed)
    return LearningObjects(object_ids=ids[keep], y=y[keep], owner=owner[keep],
                           project_ids=project_ids, n_validated=n_validated, appear_as=mapping)


def build_learning_set(inst, project_id: int, feature_sets: Sequence[str], *,
                       other_project_ids: Sequence[int] = (),
                       categories: Sequence[int] | None = None,
                       max_per_category: int | None = None,
                       seed: int = 0,
                       appear_as: Mapping[int, int] | None = None) -> LearningSet:
    """The learning set of validated objects of ``project_id`` (and other projects).

    Parameters
    ----------
    inst : Instance
    project_id : int
        The project the model is for; its feature names are the reference.
    feature_sets : sequence of str
        Feature sets to join (``tsv``, ``morpho``, ``deep_effnetlite0`` ...).
    other_project_ids : sequence of int
        More projects whose validated objects join the learning set; each must
        hold every chosen set with the same feature names.
    categories : sequence of int, optional
        Taxon ids to learn; default every category with validated objects.
    max_per_category : int, optional
        Keep at most this many objects per category, chosen pseudo-randomly
        but stably: the same seed keeps the same objects.
    seed : int
    appear_as : mapping of int to int, optional
        Category -> the category its objects are learned as (see
        :func:`select_learning_objects`).

    Raises
    ------
    FeatureSetUnavailable
        A set is missing from a project, or its features differ between projects.
    EmptyLearningSet
        No validated object with features matches.
    """
    feature_sets = list(dict.fromkeys(feature_sets))
    if not feature_sets:
        raise LearningSetError("a learning set needs at least one feature set")
    project_ids = list(dict.fromkeys([int(project_id), *(int(p) for p in other_project_ids)]))
    with inst.sessions() as session:
        for pid in project_ids:
            get_project(session, pid)
    _check_feature_sets(inst.features, project_ids, feature_sets)
    chosen = select_learning_objects(inst, project_id, other_project_ids=other_project_ids,
                                     categories=categories, max_per_category=max_per_category,
                                     seed=seed, appear_as=appear_as)
    where = chosen.where
    ids, y, owner = chosen.object_ids, chosen.y, chosen.owner
    n_validated = chosen.n_validated
    wanted = None if categories is None else sorted({int(c) for c in categories})

    names: list[str] = []
    X = np.empty((len(ids), 0), dtype=np.float32)
    for i, pid in enumerate(project_ids):
        rows_of = np.flatnonzero(owner == pid)
        Xp, names_p = read_feature_sets(inst.features, pid, feature_sets, ids[rows_of])
        if i == 0:
            names = names_p
            X = np.full((len(ids), len(names)), np.nan, dtype=np.float32)
        X[rows_of] = Xp

    has_features = ~np.isnan(X).all(axis=1) if X.shape[1] else np.zeros(len(ids), dtype=bool)
    n_without_features = int((~has_features).sum())
    ids, y, X = ids[has_features], y[has_features], X[has_features]
    if len(ids) == 0:
        raise EmptyLearningSet(
            f"none of the {n_without_features} validated objects of {where} has rows in "
            f"feature sets {feature_sets}; compute the features first")

    keep_cols, dropped = _useless_features(X, names)
    X = np.ascontiguousarray(X[:, keep_cols])
    names = [n for n, k in zip(names, keep_cols) if k]
    if not names:
        raise LearningSetError(
            f"every feature of {feature_sets} was dropped for {where} "
            f"({len(dropped['too_many_missing'])} missing for more than "
            f"{MAX_MISSING_FRACTION:.0%} of the objects, {len(dropped['constant'])} constant)")

    n_used = {int(t): int(n) for t, n in zip(*np.unique(y, return_counts=True))}
    definition = {
        "project_id": int(project_id),
        "project_ids": project_ids,
        "feature_sets": feature_sets,
        "categories": wanted,
        "appear_as": {str(k): v for k, v in sorted(chosen.appear_as.items())},
        "max_per_category": max_per_category,
        "seed": int(seed),
        "n_objects": int(len(ids)),
        "n_features": len(names),
        "per_category": [{"taxon_id": t, "n_validated": n, "n_used": n_used.get(t, 0)}
                         for t, n in sorted(n_validated.items())],
        "n_without_features": n_without_features,
        "max_missing_fraction": MAX_MISSING_FRACTION,
        "dropped_features": dropped,
    }
    return LearningSet(object_ids=ids, y=y, X=X, feature_names=names, definition=definition)
