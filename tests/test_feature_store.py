"""The Zarr feature store: appends, reads of any id list, chunks, producers, truncation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecotaxa_core.store.feature_store import FeatureSetMismatch, FeatureStore, rows_per_chunk


def _filled(tmp_path, n: int, k: int, appends: int = 3) -> tuple[FeatureStore, np.ndarray,
                                                                   np.ndarray]:
    store = FeatureStore(tmp_path / "features")
    ids = np.arange(10, 10 + 7 * n, 7, dtype=np.int64)  # ids with gaps, as a project's
    values = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    names = [f"f{i}" for i in range(k)]
    for part in np.array_split(np.arange(n), appends):
        store.append(1, "s", ids[part], values[part], names, producer={"kind": "test"})
    return store, ids, values


@pytest.mark.parametrize("k", [3, 1280])  # 4,096 rows a chunk, and 128 (wide deep vectors)
def test_any_list_of_ids_reads_its_rows_in_order_with_nan_for_absent_ones(tmp_path, k):
    n = 9000
    store, ids, values = _filled(tmp_path, n, k)
    chunk = rows_per_chunk(k)
    assert json.loads((store.store_path(1, "s") / "values" / "zarr.json").read_text())[
        "chunk_grid"]["configuration"]["chunk_shape"] == [chunk, k]
    rng = np.random.default_rng(1)
    few = rng.choice(n, 12, replace=False)  # a few chunks: read as slices (runs of them)
    few[:2] = [0, n - 1]  # the first and the last row
    near = np.arange(chunk - 5, chunk + 5)  # across a chunk boundary
    many = rng.permutation(n)  # most chunks: all read at once
    # Increasing rows in one run of chunks: one slice (no copy when consecutive).
    increasing = np.sort(rng.choice(np.arange(chunk, min(n, 3 * chunk)), 40, replace=False))
    for positions in (few, near, many, increasing, np.array([n // 2])):
        got = store.read(1, "s", ids[positions])
        np.testing.assert_array_equal(got.object_ids, ids[positions])
        np.testing.assert_array_equal(got.values, values[positions])
    wanted = np.array([ids[5], 3, ids[5], ids[-1], 10 ** 9])  # absent ids and a repeat
    got = store.read(1, "s", wanted)
    np.testing.assert_array_equal(got.values[[0, 2, 3]], values[[5, 5, n - 1]])
    assert np.isnan(got.values[[1, 4]]).all()
    assert store.read(1, "s", []).values.shape == (0, k)
    whole = store.read(1, "s")
    np.testing.assert_array_equal(whole.object_ids, ids)
    np.testing.assert_array_equal(whole.values, values)


def test_appends_skip_stored_ids_and_refuse_other_names_or_producers(tmp_path):
    store, ids, values = _filled(tmp_path, 100, 3)
    again = store.append(1, "s", ids[90:], values[90:] + 1, ["f0", "f1", "f2"],
                         producer={"kind": "test"})
    assert again == 0 and store.n_rows(1, "s") == 100
    np.testing.assert_array_equal(store.read(1, "s", ids[90:]).values, values[90:])
    with pytest.raises(FeatureSetMismatch, match="holds 3 features"):
        store.append(1, "s", [1], np.zeros((1, 2)), ["f0", "f1"], producer={"kind": "test"})
    with pytest.raises(FeatureSetMismatch, match="use a new feature set name"):
        store.append(1, "s", [1], np.zeros((1, 3)), ["f0", "f1", "f2"],
                     producer={"kind": "test", "version": 2})
    with pytest.raises(ValueError, match="appended twice"):
        store.append(1, "s", [1, 1], np.zeros((2, 3)), ["f0", "f1", "f2"],
                     producer={"kind": "test"})
    assert store.n_rows(1, "s") == 100


def test_truncate_undoes_the_last_appends(tmp_path):
    store, ids, values = _filled(tmp_path, 5000, 4)
    store.truncate(1, "s", 1234)
    np.testing.assert_array_equal(store.object_ids(1, "s"), ids[:1234])
    np.testing.assert_array_equal(store.read(1, "s").values, values[:1234])
    store.append(1, "s", ids[1234:], values[1234:], [f"f{i}" for i in range(4)],
                 producer={"kind": "test"})
    np.testing.assert_array_equal(store.read(1, "s", ids[::-1]).values, values[::-1])
    store.truncate(1, "s", 0)
    assert not store.exists(1, "s") and store.n_rows(1, "s") == 0


# -- the per-process cache of id positions ---------------------------------------------------
def _cached_keys(store: FeatureStore) -> list[tuple]:
    from ecotaxa_core.store import feature_store

    url = store.store_url(1, "s")
    return [key for key in feature_store._POSITIONS if key[0] == url]


def test_reads_keep_the_id_positions_of_a_set_until_it_changes(tmp_path):
    store, ids, values = _filled(tmp_path, 3000, 4)
    wanted = ids[[5, 2999, 0]]
    np.testing.assert_array_equal(store.read(1, "s", wanted).values, values[[5, 2999, 0]])
    [key] = _cached_keys(store)
    assert key[2] == 3000
    np.testing.assert_array_equal(store.read(1, "s", wanted).values, values[[5, 2999, 0]])
    assert _cached_keys(store) == [key]

    # An append adds rows after those counted: a new key, the new rows found.
    more = np.array([5, 6], dtype=np.int64)
    store.append(1, "s", more, np.full((2, 4), 7, np.float32), [f"f{i}" for i in range(4)],
                 producer={"kind": "test"})
    np.testing.assert_array_equal(store.read(1, "s", more).values, np.full((2, 4), 7))
    assert {k[2] for k in _cached_keys(store)} == {3000, 3002}
    assert len({k[1] for k in _cached_keys(store)}) == 1  # same generation


def test_rows_appended_after_a_truncation_are_never_read_through_stale_positions(tmp_path):
    store, ids, values = _filled(tmp_path, 3000, 4)
    names = [f"f{i}" for i in range(4)]
    tail = np.array([1, 2, 3], dtype=np.int64)
    store.append(1, "s", tail, np.ones((3, 4), np.float32), names, producer={"kind": "test"})
    np.testing.assert_array_equal(store.read(1, "s", tail).values, np.ones((3, 4)))
    # A failed writer's rows are cut off, then other rows fill the same places.
    store.truncate(1, "s", 3000)
    other = np.array([3, 2, 4], dtype=np.int64)
    store.append(1, "s", other, np.arange(12, dtype=np.float32).reshape(3, 4), names,
                 producer={"kind": "test"})
    got = store.read(1, "s", np.array([2, 3, 4, 1]))
    np.testing.assert_array_equal(got.values[:3], np.arange(12).reshape(3, 4)[[1, 0, 2]])
    assert np.isnan(got.values[3]).all()  # id 1 is gone


def test_a_set_made_again_in_another_order_is_read_right(tmp_path):
    store, ids, values = _filled(tmp_path, 3000, 4)
    store.read(1, "s", ids[:10])
    store.delete(1, "s")
    order = np.random.default_rng(1).permutation(3000)
    store.append(1, "s", ids[order], values[order], [f"f{i}" for i in range(4)],
                 producer={"kind": "test"})
    np.testing.assert_array_equal(store.read(1, "s", ids[:10]).values, values[:10])


def test_a_column_with_unwritten_ids_or_no_generation_is_not_cached(tmp_path):
    import zarr

    store, ids, values = _filled(tmp_path, 3000, 4)
    group = zarr.open_group(store.store_url(1, "s"), mode="r+")
    del group.attrs["generation"]  # a store written before generations
    np.testing.assert_array_equal(store.read(1, "s", ids[:3]).values, values[:3])
    assert _cached_keys(store) == []
    group.attrs["generation"] = "g"
    group["object"].resize((3100,))  # an append under way: its ids not written yet
    group["values"].resize((3100, 4))
    np.testing.assert_array_equal(store.read(1, "s", ids[:3]).values, values[:3])
    assert _cached_keys(store) == []
