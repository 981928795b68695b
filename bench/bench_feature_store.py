"""Benchmark the Zarr feature store at a million rows: appends, then reads of id lists.

Builds a store of ``--rows`` rows (default 1,000,000) x ``--features`` float32
features (default 50, the size of a PCA-50 or morphological set) in appends of
``--append-rows`` (as the features flow appends chunk after chunk), with object
ids that are not contiguous (every third id, shuffled by blocks, as a project's
objects after deletions and several imports). Then reads, through
:meth:`FeatureStore.read`, lists of ids the way the learning and similarity code
asks for them: two chunks of a prediction (the first read of the set, which
reads its whole id column, then the next chunk, whose read finds the ids'
positions kept by the process), random ids (1,000 / 10,000 / 100,000), a run of
consecutive objects, ids absent from the store mixed in, and every row. Prints
each timing and rows/s, and the store's size on disk.

    python bench/bench_feature_store.py [--rows 1000000] [--features 50] [--workdir DIR]
    python bench/bench_feature_store.py --rows 10000000 --features 4   # a large project's ids
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecotaxa_core.store import feature_store  # noqa: E402
from ecotaxa_core.store.feature_store import FeatureStore  # noqa: E402


def _size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--append-rows", type=int, default=50_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    n, k = args.rows, args.features
    # Ids as a project's: increasing by import, with gaps (deleted objects).
    ids = np.arange(1, 3 * n + 1, 3, dtype=np.int64)
    names = [f"f{i:03d}" for i in range(k)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.workdir))
    try:
        store = FeatureStore(tmp)
        t = time.perf_counter()
        for start in range(0, n, args.append_rows):
            part = ids[start:start + args.append_rows]
            values = rng.standard_normal((len(part), k), dtype=np.float32)
            store.append(1, "bench", part, values, names, producer={"kind": "bench"})
        write_s = time.perf_counter() - t
        print(f"store of {n:,} rows x {k} features: appended in {write_s:.1f} s "
              f"({n / write_s:,.0f} rows/s, {args.append_rows:,} a call), "
              f"{_size_mib(store.store_path(1, 'bench')):,.0f} MiB on disk")
        assert store.n_rows(1, "bench") == n

        feature_store._POSITIONS.clear()
        chunk = 16_384
        middle = n // 2
        for label, wanted in ((f"{chunk:,} consecutive, first read", ids[middle:middle + chunk]),
                              (f"the next {chunk:,} (positions kept)",
                               ids[middle + chunk:middle + 2 * chunk])):
            t, cpu = time.perf_counter(), time.process_time()
            got = store.read(1, "bench", wanted)
            sec, cpu = time.perf_counter() - t, time.process_time() - cpu
            assert got.values.shape == (len(wanted), k)
            print(f"  read {label:32s} {sec * 1000:9.1f} ms {len(wanted) / sec:14,.0f} rows/s "
                  f"({cpu * 1000:.0f} ms CPU)")

        cases = [(f"{m:,} random ids", rng.choice(ids, m, replace=False))
                 for m in (1_000, 10_000, 100_000)]
        first = int(rng.integers(0, n - 20_000))
        cases.append(("20,000 consecutive objects", ids[first:first + 20_000]))
        mixed = np.concatenate([rng.choice(ids, 5_000, replace=False),
                                ids[-1] + 1 + np.arange(5_000)])  # half have no row
        rng.shuffle(mixed)
        cases.append(("10,000 ids, half without a row", mixed))
        cases.append(("every row (ids given)", ids))
        for label, wanted in cases:
            t = time.perf_counter()
            got = store.read(1, "bench", wanted)
            sec = time.perf_counter() - t
            assert got.values.shape == (len(wanted), k)
            print(f"  read {label:32s} {sec * 1000:9.1f} ms {len(wanted) / sec:14,.0f} rows/s")
        t = time.perf_counter()
        whole = store.read(1, "bench")
        sec = time.perf_counter() - t
        print(f"  read {'the whole store (no ids)':32s} {sec * 1000:9.1f} ms "
              f"{whole.n_samples / sec:14,.0f} rows/s")
        # Spot check: what was read is what was written, row by row.
        probe = rng.choice(n, 100, replace=False)
        back = store.read(1, "bench", ids[probe])
        np.testing.assert_array_equal(back.values, whole.values[probe])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
