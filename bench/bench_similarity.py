"""Similarity sort at scale: a million objects ranked by resemblance to one of them.

Builds a feature store with ``--objects`` rows of ``deep_effnetlite0_pca50``
(50 floats, Gaussian clusters: the time does not depend on the values), then
times :func:`ecotaxa_core.similarity.rank_by_similarity` (read the vectors from
Zarr, distances, ranking) for: the first page of 100 among every object, the
first page among a filtered fifth (a category filter), the whole ranking, and
the most dissimilar first page. The issue's target: under 1 s.

    python bench/bench_similarity.py [--objects 1000000] [--repeat 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each case (best kept)")
    args = parser.parse_args()

    from ecotaxa_core.features.pca import PCA_SET
    from ecotaxa_core.similarity import rank_by_similarity
    from ecotaxa_core.store.feature_store import FeatureStore

    root = Path(tempfile.mkdtemp(prefix="bench_similarity_"))
    try:
        store = FeatureStore(root)
        rng = np.random.default_rng(0)
        ids = np.arange(1, args.objects + 1, dtype=np.int64)
        centres = rng.normal(0, 3, (120, 50)).astype(np.float32)
        t = time.perf_counter()
        for start in range(0, args.objects, 200_000):
            part = ids[start:start + 200_000]
            x = centres[rng.integers(0, 120, len(part))] + rng.normal(0, 1, (len(part), 50))
            store.append(1, PCA_SET, part, x.astype(np.float32), [f"c{i}" for i in range(50)],
                         producer={"kind": "bench"})
        print(f"{args.objects:,} objects x 50 features written in {time.perf_counter() - t:.1f} s",
              flush=True)
        fifth = np.sort(rng.choice(ids, args.objects // 5, replace=False))
        cases = [("first 100 of all objects", ids, dict(limit=100)),
                 ("first 100 of a filtered fifth", fifth, dict(limit=100)),
                 ("most dissimilar 100 of all", ids, dict(limit=100, most_similar_first=False)),
                 ("whole ranking of all objects", ids, {})]
        for name, candidates, options in cases:
            best = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                ranked = rank_by_similarity(store, 1, int(ids[12345 % len(ids)]), candidates,
                                            **options)
                best = min(best, time.perf_counter() - t)
            print(f"  {name:32s} {best * 1000:7.0f} ms  ({len(candidates):,} objects, "
                  f"{len(ranked):,} returned)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
