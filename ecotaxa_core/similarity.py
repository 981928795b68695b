"""Objects ordered by their resemblance to a chosen one, from the deep features.

A validator who has found one copepod in a sea of detritus sorts the page by
similarity to it and validates the look-alikes together; sorted the other way,
the objects least like a category's typical member come first (the likely
mistakes). The resemblance is the Euclidean distance between feature vectors,
by default those of the PCA-50 reduction of the deep features
(``deep_effnetlite0_pca50``, or another backbone's ``deep_NAME_pca50``): 50
floats an object, so a million objects are read and ranked in well under a
second, and the ranking keeps the neighbourhoods of the full 1,280-d vectors
(the first 50 components hold most of their variance).

Objects without a vector of that set (not extracted yet) come last, in id
order; equal distances rank by id, so a ranking is stable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.features.pca import PCA_SET, source_of_pca_set
from ecotaxa_core.store.feature_store import FeatureStore

__all__ = ["NoSimilarityFeatures", "similarity_feature_set", "rank_by_similarity"]


class NoSimilarityFeatures(EcoTaxaError):
    """The project (or the chosen object) has no vector to compare."""


def similarity_feature_set(store: FeatureStore, project_id: int) -> str:
    """The set similarity uses for ``project_id``: ``deep_effnetlite0_pca50`` when the
    project has it, else its first other PCA-50 set, else its first deep set."""
    sets = store.feature_sets(project_id)
    if PCA_SET in sets:
        return PCA_SET
    reduced = [s for s in sets if source_of_pca_set(s) is not None]
    deep = [s for s in sets if s.startswith("deep_")]
    if reduced or deep:
        return (reduced or deep)[0]
    raise NoSimilarityFeatures(
        f"project {project_id} has no deep features to compare objects with "
        f"(it has: {', '.join(sets) or 'no feature set'}); compute them first "
        "(ecotaxa features PROJECT)")


def rank_by_similarity(store: FeatureStore, project_id: int, reference_id: int,
                       object_ids: Sequence[int], *, most_similar_first: bool = True,
                       feature_set: str | None = None, limit: int | None = None) -> np.ndarray:
    """``object_ids`` ordered by the distance of their vectors to ``reference_id``'s.

    Parameters
    ----------
    store : FeatureStore
    project_id : int
    reference_id : int
        The chosen object; it needs a vector of the set (it ranks first when it is
        among ``object_ids`` and ``most_similar_first``).
    object_ids : sequence of int
        The objects to order (the page's filter result, say).
    most_similar_first : bool
        False: the most dissimilar first (objects without vector still last).
    feature_set : str, optional
        Default: :func:`similarity_feature_set`.
    limit : int, optional
        Only the first ``limit`` of the ranking (the first pages), found without
        sorting the rest.

    Returns
    -------
    ndarray of int64
        Object ids, best first.

    Raises
    ------
    NoSimilarityFeatures
        No deep set in the project, or no vector for ``reference_id``.
    """
    feature_set = feature_set or similarity_feature_set(store, project_id)
    if not store.exists(project_id, feature_set):
        raise NoSimilarityFeatures(f"project {project_id} has no feature set {feature_set!r}")
    reference = store.read(project_id, feature_set, [int(reference_id)]).values[0]
    if not np.isfinite(reference).any():
        raise NoSimilarityFeatures(
            f"object {reference_id} has no {feature_set} vector in project {project_id} "
            "(its features were not computed yet)")
    ids = np.asarray(object_ids, dtype=np.int64)
    vectors = store.read(project_id, feature_set, ids).values
    distance = _distances(vectors, reference)
    absent = np.isnan(distance)
    key = np.where(absent, np.inf, distance if most_similar_first else -distance)
    n = len(ids) if limit is None else max(0, min(int(limit), len(ids)))
    if n < len(ids) // 4:  # a first page of a long list: only its candidates are sorted
        # Everything tied with the n-th key is kept, so ties still rank by id.
        cut = np.partition(key, n - 1)[n - 1] if n else -np.inf
        candidates = np.flatnonzero(key <= cut)
    else:
        candidates = np.arange(len(ids))
    order = candidates[np.lexsort((ids[candidates], key[candidates]))]
    return ids[order[:n]]


def _distances(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row to ``reference`` over the dimensions both have
    (NaN where a row has no value at all)."""
    vectors = vectors.astype(np.float32, copy=False)
    diff = vectors - reference.astype(np.float32)
    missing = np.isnan(diff)
    if missing.any():
        diff[missing] = 0.0
        empty = missing.all(axis=1)
    else:
        empty = None
    distance = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
    if empty is not None:
        distance[empty] = np.nan
    return distance
