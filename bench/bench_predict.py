"""Benchmark the prediction flow: N objects, 1280-d deep vectors, the deep classifier.

Builds a temporary SQLite instance with ``n`` objects of 12 categories (20 %
validated, the rest unclassified) whose ``deep_effnetlite0`` rows are Gaussian
clusters (throughput does not depend on the values), trains ``deep_logreg``,
then times ``predict_flow`` (Prefect + embedded Dask LocalCluster + one DB
transaction per chunk) and the same prediction in-process without Dask.

    python bench/bench_predict.py 50000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("n", nargs="?", type=int, default=50_000)
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args()

    from sqlalchemy import insert, select, update

    from ecotaxa_core.db.models import Object
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.learn.prediction import predict_project
    from ecotaxa_core.learn.training import train_model
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.settings import Settings
    from ecotaxa_core.taxonomy import get_or_create_taxon

    home = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    os.environ.update(ECOTAXA_HOME=str(home), ECOTAXA_CHUNK_SIZE=str(args.chunk_size),
                      PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_LEVEL="WARNING")
    settings = Settings()
    inst = init_instance(settings, "bench@localhost", "bench")
    rng = np.random.default_rng(0)
    n, n_classes, dim = args.n, 12, 1280
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(0, 1, (n_classes, dim)).astype(np.float32)
    with inst.sessions.begin() as s:
        pid = create_project(s, "bench").id
        taxa = [get_or_create_taxon(s, f"class_{i}").id for i in range(n_classes)]
        validated = rng.random(n) < 0.2
        s.execute(insert(Object), [
            dict(project_id=pid, orig_id=f"o{i}", extra={},
                 status="validated" if validated[i] else "unclassified",
                 taxon_id=taxa[labels[i]] if validated[i] else None) for i in range(n)])
        ids = np.array(s.scalars(select(Object.id).where(Object.project_id == pid)
                                 .order_by(Object.id)).all())
    for start in range(0, n, 20_000):
        sl = slice(start, start + 20_000)
        x = centres[labels[sl]] + rng.normal(0, 2.0, (len(labels[sl]), dim)).astype(np.float32)
        inst.features.append(pid, "deep_effnetlite0", ids[sl], x,
                             [f"f{j}" for j in range(dim)], {"kind": "bench"})
    t = time.perf_counter()
    model = train_model(inst, pid, "deep_logreg")
    t_train = time.perf_counter() - t
    n_pred = int((~validated).sum())

    from flows.predict import predict_flow

    t = time.perf_counter()
    summary = predict_flow(project_id=pid, model_id=model.id)
    t_flow = time.perf_counter() - t
    with inst.sessions.begin() as s:  # back to unclassified for the in-process run
        s.execute(update(Object).where(Object.project_id == pid, Object.status == "predicted")
                  .values(status="unclassified", taxon_id=None, score=None))
    t = time.perf_counter()
    predict_project(inst, pid, model.id, chunk_size=args.chunk_size)
    t_local = time.perf_counter() - t
    print(f"objects to predict      {n_pred}  (of {n}, 1280-d features, 12 classes)")
    print(f"training deep_logreg    {t_train:.1f} s on {int(validated.sum())} validated objects")
    print(f"predict_flow (Dask)     {t_flow:.1f} s wall, {n_pred / t_flow:,.0f} objects/s "
          f"(flow's own figure: {summary['objects_per_second']:,.0f}/s after cluster start)")
    print(f"in-process, no Dask     {t_local:.1f} s, {n_pred / t_local:,.0f} objects/s")
    inst.close()


if __name__ == "__main__":
    main()
