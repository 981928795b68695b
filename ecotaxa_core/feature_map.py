"""A 2-D map of objects from their deep features, for choosing look-alikes with a lasso.

Objects close on the map have close feature vectors: the map is the plane of
the two main axes of the vectors of the set similarity uses
(:func:`~ecotaxa_core.similarity.similarity_feature_set`, PCA-50 of the deep
features by default), computed over the objects mapped. A batch classifier
circles a cloud of points, looks at their images and gives them a category in
one step. Objects without a vector are left off the map (and counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ecotaxa_core.similarity import similarity_feature_set
from ecotaxa_core.store.feature_store import FeatureStore

__all__ = ["FeatureMap", "feature_map"]


@dataclass(frozen=True)
class FeatureMap:
    feature_set: str
    object_ids: np.ndarray  # int64, the mapped objects, in the order asked
    xy: np.ndarray  # (n, 2) float32
    n_without_vector: int


def feature_map(store: FeatureStore, project_id: int, object_ids: Sequence[int],
                feature_set: str | None = None) -> FeatureMap:
    """Coordinates of the objects on the plane of their vectors' two main axes."""
    feature_set = feature_set or similarity_feature_set(store, project_id)
    ids = np.asarray(object_ids, dtype=np.int64)
    X = store.read(project_id, feature_set, ids).values.astype(np.float64)
    present = np.isfinite(X).any(axis=1)
    X, ids_present = X[present], ids[present]
    if len(X) == 0:
        return FeatureMap(feature_set, ids_present, np.zeros((0, 2), np.float32), int(len(ids)))
    X = np.where(np.isfinite(X), X, np.nanmean(X, axis=0))
    X = np.nan_to_num(X - X.mean(axis=0))
    # The two main axes: the first right singular vectors (a small SVD: n x d, d <= 1,280).
    k = min(2, *X.shape)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    xy = np.zeros((len(X), 2), dtype=np.float32)
    xy[:, :k] = (X @ vt[:k].T).astype(np.float32)
    # Signs fixed by the largest coordinate, so the same objects give the same picture.
    for j in range(k):
        if xy[np.argmax(np.abs(xy[:, j])), j] < 0:
            xy[:, j] *= -1
    return FeatureMap(feature_set, ids_present, xy, int((~present).sum()))
