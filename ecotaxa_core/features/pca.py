"""PCA-50 reduction of a project's deep features (``deep_effnetlite0_pca50``, and
``deep_NAME_pca50`` for each registered backbone).

EcoTaxa reduces deep vectors to 50 principal components before classifying
them. The PCA is fitted per project, on that project's own vectors, so it is
refitted and the whole reduced set rewritten (deleted, then appended block by
block) whenever the deep vectors change. A project with fewer than 50 objects
gets ``min(50, n_samples, n_features)`` components. Large projects fit on a
seeded random sample of ``max_fit_samples`` rows and project every row.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
>>> pca = fit_pca(x, n_components=50)
>>> pca.n_components_, pca.transform(x).shape
(8, (30, 8))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ecotaxa_core.store.feature_store import FeatureStore

if TYPE_CHECKING:
    from sklearn.decomposition import PCA

__all__ = ["fit_pca", "refit_pca", "PcaRefit", "DEEP_SET", "PCA_SET", "PCA_COMPONENTS",
           "pca_set_of", "source_of_pca_set"]

PCA_COMPONENTS = 50
_PCA_SUFFIX = f"_pca{PCA_COMPONENTS}"
DEEP_SET = "deep_effnetlite0"


def pca_set_of(source: str) -> str:
    """The name of the PCA-50 feature set of deep feature set ``source``.

    >>> pca_set_of("deep_effnetlite0")
    'deep_effnetlite0_pca50'
    """
    return source + _PCA_SUFFIX


def source_of_pca_set(name: str) -> str | None:
    """The deep feature set whose PCA-50 ``name`` is, or None if it is none.

    >>> source_of_pca_set("deep_convnext_pca50"), source_of_pca_set("morpho")
    ('deep_convnext', None)
    """
    if name.startswith("deep_") and name.endswith(_PCA_SUFFIX):
        return name[:-len(_PCA_SUFFIX)]
    return None


PCA_SET = pca_set_of(DEEP_SET)
_BLOCK_ROWS = 16384


@dataclass(frozen=True)
class PcaRefit:
    """What :func:`refit_pca` wrote."""

    n_samples: int
    n_components: int
    explained_variance: float  # fraction of the variance the components keep


def fit_pca(values: np.ndarray, n_components: int = PCA_COMPONENTS,
            random_state: int = 0) -> "PCA":
    """A fitted scikit-learn PCA with ``min(n_components, n_samples, n_features)`` components."""
    from sklearn.decomposition import PCA

    n_samples, n_features = values.shape
    k = max(1, min(n_components, n_samples, n_features))
    # "auto" picks the randomized solver for 50 of 1280 dimensions: ten times
    # faster than the full SVD, and seeded.
    return PCA(n_components=k, svd_solver="auto", random_state=random_state).fit(values)


def refit_pca(features: FeatureStore, project_id: int, source: str = DEEP_SET,
              target: str = PCA_SET, n_components: int = PCA_COMPONENTS,
              max_fit_samples: int = 200_000, random_state: int = 0) -> PcaRefit:
    """Fit a PCA on every ``source`` row of the project and rewrite ``target``.

    Rows with a non-finite value are left out of the fit and of ``target``.
    With no source rows, ``target`` is deleted. A single row projects to the
    origin of one component.
    """
    features.delete(project_id, target)
    if not features.exists(project_id, source):
        return PcaRefit(0, 0, 0.0)
    ids = features.object_ids(project_id, source)
    source_producer = features.attrs(project_id, source)
    rng = np.random.default_rng(random_state)
    fit_ids = ids if len(ids) <= max_fit_samples else rng.choice(ids, max_fit_samples,
                                                                   replace=False)
    fit_values = features.read(project_id, source, fit_ids).values
    fit_values = fit_values[np.isfinite(fit_values).all(axis=1)]
    if len(fit_values) == 0:
        return PcaRefit(0, 0, 0.0)
    if len(fit_values) == 1:
        k, pca, explained = 1, None, 1.0
    else:
        pca = fit_pca(fit_values, n_components, random_state)
        k, explained = int(pca.n_components_), float(pca.explained_variance_ratio_.sum())
    names = [f"pc{i + 1:02d}" for i in range(k)]
    producer = {"name": target, "version": "1",
                "settings": {"source": source, "source_producer": source_producer,
                             "n_components": k, "n_fit_samples": int(len(fit_values)),
                             "random_state": random_state}}
    n_written = 0
    for start in range(0, len(ids), _BLOCK_ROWS):
        block = features.read(project_id, source, ids[start:start + _BLOCK_ROWS])
        finite = np.isfinite(block.values).all(axis=1)
        if not finite.any():
            continue
        values = block.values[finite]
        reduced = (np.zeros((len(values), k)) if pca is None else pca.transform(values))
        n_written += features.append(project_id, target, block.object_ids[finite],
                                     reduced.astype(np.float32), names, producer)
    return PcaRefit(n_written, k, explained)
