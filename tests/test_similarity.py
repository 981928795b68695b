"""Ordering objects by resemblance to a chosen one (deep features, PCA-50 by default)."""

from __future__ import annotations

import numpy as np
import pytest

from ecotaxa_core.similarity import (NoSimilarityFeatures, rank_by_similarity,
                                     similarity_feature_set)
from ecotaxa_core.store.feature_store import FeatureStore

PCA = "deep_effnetlite0_pca50"


def _store(tmp_path, vectors: dict[int, list[float]], feature_set: str = PCA) -> FeatureStore:
    store = FeatureStore(tmp_path / "features")
    ids = sorted(vectors)
    store.append(1, feature_set, ids, np.array([vectors[i] for i in ids], dtype=np.float32),
                 ["c0", "c1"], producer={"kind": "test"})
    return store


def test_nearest_first_then_farthest_first_and_objects_without_vector_last(tmp_path):
    # Object 10 is the reference; 11 is at distance 1, 12 and 13 at 5 (a tie), 14 at 2.
    store = _store(tmp_path, {10: [0, 0], 11: [1, 0], 12: [3, 4], 13: [0, -5], 14: [0, 2],
                              15: [np.nan, np.nan]})
    everyone = [15, 14, 13, 12, 11, 10, 99]  # 99 has no row at all
    assert rank_by_similarity(store, 1, 10, everyone).tolist() == [10, 11, 14, 12, 13, 15, 99]
    assert rank_by_similarity(store, 1, 10, everyone, most_similar_first=False).tolist() == [
        12, 13, 14, 11, 10, 15, 99]
    # The first page alone is the head of the full ranking, ties included.
    for limit in range(0, 8):
        assert rank_by_similarity(store, 1, 10, everyone, limit=limit).tolist() == [
            10, 11, 14, 12, 13, 15, 99][:limit]


def test_a_first_page_of_a_long_list_is_the_head_of_the_full_ranking(tmp_path):
    rng = np.random.default_rng(0)
    vectors = np.round(rng.normal(0, 1, (2000, 2)), 1)  # rounded: many equal distances
    store = FeatureStore(tmp_path / "features")
    ids = np.arange(1, 2001)
    store.append(1, PCA, ids, vectors.astype(np.float32), ["c0", "c1"], producer={"kind": "t"})
    full = rank_by_similarity(store, 1, 7, ids[::-1])
    distance = np.linalg.norm(vectors - vectors[6], axis=1)
    assert np.all(np.diff(distance[full - 1]) >= -1e-6)  # nearest first
    assert rank_by_similarity(store, 1, 7, ids, limit=100).tolist() == full[:100].tolist()
    # Farthest first, equal distances by id (float32 distances, as the ranking computes them).
    d32 = np.sqrt(((vectors.astype(np.float32) - vectors[6].astype(np.float32)) ** 2).sum(1,
                  dtype=np.float64))
    expected = ids[np.lexsort((ids, -d32))][:50]
    assert rank_by_similarity(store, 1, 7, ids, most_similar_first=False,
                              limit=50).tolist() == expected.tolist()


def test_which_set_and_clear_refusals(tmp_path):
    store = _store(tmp_path, {1: [0, 0], 2: [np.nan, np.nan]}, feature_set="deep_mine")
    assert similarity_feature_set(store, 1) == "deep_mine"  # no PCA set: the deep one
    _store(tmp_path, {1: [0, 0]}, feature_set="deep_mine_pca50")
    assert similarity_feature_set(store, 1) == "deep_mine_pca50"
    _store(tmp_path, {1: [0, 0]})
    assert similarity_feature_set(store, 1) == PCA
    with pytest.raises(NoSimilarityFeatures, match="object 2 has no deep_mine vector"):
        rank_by_similarity(store, 1, 2, [1, 2], feature_set="deep_mine")
    with pytest.raises(NoSimilarityFeatures, match="object 3 has no"):
        rank_by_similarity(store, 1, 3, [1, 2])
    with pytest.raises(NoSimilarityFeatures, match="project 2 has no deep features .* compute"):
        rank_by_similarity(store, 2, 1, [1])


def test_the_feature_map_separates_clusters_and_leaves_out_objects_without_vector(tmp_path):
    from ecotaxa_core.feature_map import feature_map

    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, (20, 2)) + [5, 0]
    b = rng.normal(0, 0.1, (20, 2)) - [5, 0]
    vectors = {i: list(v) for i, v in enumerate(np.vstack([a, b]), start=1)}
    vectors[99] = [np.nan, np.nan]
    store = _store(tmp_path, vectors)
    m = feature_map(store, 1, list(range(1, 41)) + [99, 500])
    assert m.feature_set == PCA and m.n_without_vector == 2
    assert m.object_ids.tolist() == list(range(1, 41)) and m.xy.shape == (40, 2)
    first_axis = m.xy[:, 0]
    assert (np.sign(first_axis[:20]) == np.sign(first_axis[0])).all()
    assert (np.sign(first_axis[20:]) == -np.sign(first_axis[0])).all()
    assert abs(first_axis[:20].mean() - first_axis[20:].mean()) == pytest.approx(10, abs=0.3)
    again = feature_map(store, 1, list(range(1, 41)))
    np.testing.assert_array_equal(again.xy, m.xy)  # the same picture each time
