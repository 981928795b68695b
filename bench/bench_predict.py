"""Benchmark prediction: N objects to predict, a realistic model, SQLite or PostgreSQL.

Builds a temporary instance (SQLite file, or a new PostgreSQL database that is
dropped at the end) with ``n`` unclassified objects and ``--train-size``
validated ones over ``--classes`` categories, whose feature rows are Gaussian
clusters (throughput does not depend on the values): ``deep_effnetlite0``
(1280 features) for ``deep_logreg``/``deep_mlp``, ``morpho`` (50) for
``classic_rf``, both (1280 + 41, as on NDSB) for ``deep_logreg_rf``, the
default model (``FEATURE_SETS``). It trains the model, then times

1. where the time goes, chunk by chunk in this process: feature read (Zarr),
   ``predict_proba``, top-3, database write (history + update, one
   transaction per chunk);
2. ``predict_project`` (the same, end to end, as ``ecotaxa predict`` without Dask);
3. ``predict_flow`` (Prefect + embedded Dask LocalCluster; the flow's own figure
   starts after the cluster is up);
4. ``predict_flow`` on one running cluster, once cold then ``--repeat`` times
   warm: the warm runs' worker has its imports and the model loaded (a
   long-lived cluster's steady state).

Each timed run starts from the same state: every object unclassified.

    python bench/bench_predict.py 100000
    python bench/bench_predict.py 100000 --postgres
    python bench/bench_predict.py 100000 --kind classic_rf --database-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("ECOTAXA_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
#: Feature sets (name, number of features) of each kind's model.
FEATURE_SETS = {"deep_logreg": [("deep_effnetlite0", 1280)],
                "deep_mlp": [("deep_effnetlite0", 1280)],
                "deep_logreg_rf": [("deep_effnetlite0", 1280), ("morpho", 41)],
                "classic_rf": [("morpho", 50)], "deep_rf": [("deep_effnetlite0_pca50", 50)]}


def _pg_database(admin_url: str, action: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"' if action == "create"
                       else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _build(inst, args, rng):
    """The project: ``n`` unclassified + ``train_size`` validated objects with feature rows."""
    from sqlalchemy import select

    from ecotaxa_core.db.bulk import insert_rows
    from ecotaxa_core.db.models import Object
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.taxonomy import get_or_create_taxon

    total = args.n + args.train_size
    labels = rng.integers(0, args.classes, total)
    labels[:args.classes] = np.arange(args.classes)  # every category has validated objects
    with inst.sessions.begin() as s:
        pid = create_project(s, "bench").id
        taxa = [get_or_create_taxon(s, f"class_{i}").id for i in range(args.classes)]
    with inst.sessions.begin() as s:
        insert_rows(s, Object.__table__, [
            dict(project_id=pid, orig_id=f"o{i}", extra={},
                 status="validated" if i < args.train_size else "unclassified",
                 taxon_id=taxa[labels[i]] if i < args.train_size else None)
            for i in range(total)])
    with inst.sessions() as s:
        ids = np.array(s.scalars(select(Object.id).where(Object.project_id == pid)
                                 .order_by(Object.id)).all())
    # Clusters that overlap (noise twice the spread of the centres), as real classes do.
    sets = FEATURE_SETS[args.kind]
    if args.features:  # the first set's width
        sets = [(sets[0][0], args.features)] + sets[1:]
    for feature_set, dim in sets:
        centres = rng.normal(0, 1, (args.classes, dim)).astype(np.float32)
        for start in range(0, total, 20_000):
            part = labels[start:start + 20_000]
            x = centres[part] + rng.normal(0, 2.0, (len(part), dim)).astype(np.float32)
            inst.features.append(pid, feature_set, ids[start:start + 20_000], x,
                                 [f"f{j:04d}" for j in range(dim)], {"kind": "bench"})
    return pid, [name for name, _ in sets]


def _reset(inst, pid: int) -> None:
    """Every predicted object back to unclassified, history emptied (same start for each run)."""
    from sqlalchemy import delete, update

    from ecotaxa_core.db.models import AnnotationHistory, Object

    with inst.sessions.begin() as s:
        s.execute(delete(AnnotationHistory))
        s.execute(update(Object).where(Object.project_id == pid, Object.status == "predicted")
                  .values(status="unclassified", taxon_id=None, score=None, model_id=None,
                          annotation_date=None, top_predictions=None))


def _breakdown(inst, pid: int, model_row, chunk_size: int) -> dict[str, float]:
    """Seconds spent in each phase over all chunks, in this process."""
    from ecotaxa_core.learn import prediction as P
    from ecotaxa_core.store.feature_store import FeatureStore

    with inst.sessions() as s:
        ids = P.predictable_object_ids(s, pid)
    model = P._cached_model(str(inst.models_dir), model_row.id, model_row.path,
                            os.stat(inst.models_dir / model_row.path).st_mtime_ns)
    store = FeatureStore(inst.features.where)
    phases = dict(read=0.0, predict_proba=0.0, top3=0.0, write=0.0)
    n_written = 0
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start:start + chunk_size]
        t0 = time.perf_counter()
        X = P.model_features(model, store, pid, chunk)
        t1 = time.perf_counter()
        proba = model.predict_proba(X)
        t2 = time.perf_counter()
        batch = P.top_predictions(proba, model.classes, chunk)
        t3 = time.perf_counter()
        n_written += P.write_predictions(inst, pid, batch, model.model_id)
        t4 = time.perf_counter()
        for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phases[name] += dt
    assert n_written == len(ids), (n_written, len(ids))
    return phases


def _warm_flows(inst, pid: int, model_id: int, n: int, repeat: int = 1) -> None:
    """The flow on one running cluster (as ``ECOTAXA_DASK_SCHEDULER_ADDRESS``
    gives it), once cold then ``repeat`` times warm: the warm runs find their
    worker's imports and model loaded."""
    from flows.predict import predict_flow
    from ecotaxa_core.settings import Settings
    from tasks.dask_cluster import local_cluster

    settings = Settings()
    with local_cluster(settings.dask_n_workers, settings.dask_threads_per_worker) as cluster:
        os.environ["ECOTAXA_DASK_SCHEDULER_ADDRESS"] = cluster.scheduler_address
        try:
            for run in ["cold"] + ["warm"] * repeat:
                summary = predict_flow(project_id=pid, model_id=model_id)
                assert summary["n_predicted"] == n, summary
                print(f"predict_flow, running cluster, {run} worker: {summary['seconds']:.2f} s, "
                      f"{summary['objects_per_second']:,.0f} objects/s", flush=True)
                _reset(inst, pid)
        finally:
            del os.environ["ECOTAXA_DASK_SCHEDULER_ADDRESS"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="objects to predict")
    parser.add_argument("--kind", default="deep_logreg", choices=sorted(FEATURE_SETS))
    parser.add_argument("--features", type=int, default=None,
                        help="width of the first feature set (default: 1280 deep, 50 classic)")
    parser.add_argument("--classes", type=int, default=120)
    parser.add_argument("--train-size", type=int, default=6000,
                        help="validated objects the model is trained on")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="objects per chunk (default: the settings' ECOTAXA_PREDICT_CHUNK_SIZE)")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--postgres", action="store_true",
                    help=f"a new database on the server of {PG_ADMIN_URL} (ECOTAXA_TEST_PG_URL)")
    db.add_argument("--database-url", default=None,
                    help="an existing, empty database (its tables are created)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="warm runs of the flow on the running cluster")
    parser.add_argument("--skip", nargs="*", default=[], choices=["breakdown", "project", "flow", "warm-flow"],
                        help="parts not to run")
    args = parser.parse_args()

    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.learn.prediction import predict_project
    from ecotaxa_core.learn.training import train_model
    from ecotaxa_core.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    pg_name = None
    url = args.database_url
    if args.postgres:
        pg_name = f"ecotaxa_bench_{uuid.uuid4().hex[:12]}"
        _pg_database(PG_ADMIN_URL, "create", pg_name)
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_name
    env = dict(ECOTAXA_HOME=str(home), PREFECT_HOME=str(home / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    if url:
        env["ECOTAXA_DATABASE_URL"] = url
    if args.chunk_size:
        env["ECOTAXA_PREDICT_CHUNK_SIZE"] = str(args.chunk_size)
    os.environ.update(env)
    inst = None
    try:
        settings = Settings()
        chunk_size = settings.predict_chunk_size
        inst = init_instance(settings, "bench@localhost", "bench")
        backend = inst.engine.dialect.name
        t = time.perf_counter()
        pid, feature_sets = _build(inst, args, np.random.default_rng(0))
        print(f"built {args.n} + {args.train_size} objects on {backend} in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        model = train_model(inst, pid, args.kind, feature_sets=feature_sets)
        print(f"trained {args.kind} on {args.train_size} objects, {args.classes} classes, "
              f"{'+'.join(feature_sets)}: {time.perf_counter() - t:.1f} s", flush=True)
        print(f"predicting {args.n} objects, chunks of {chunk_size}, on {backend}", flush=True)
        if "breakdown" not in args.skip:
            phases = _breakdown(inst, pid, model, chunk_size)
            total = sum(phases.values())
            for name, seconds in phases.items():
                print(f"  {name:14s} {seconds:6.2f} s  {100 * seconds / total:4.0f} %  "
                      f"({args.n / seconds:,.0f} objects/s alone)", flush=True)
            print(f"  {'sum':14s} {total:6.2f} s        ({args.n / total:,.0f} objects/s)",
                  flush=True)
            _reset(inst, pid)
        if "project" not in args.skip:
            t = time.perf_counter()
            summary = predict_project(inst, pid, model.id, chunk_size=chunk_size)
            seconds = time.perf_counter() - t
            assert summary["n_predicted"] == args.n, summary
            print(f"predict_project        {seconds:6.2f} s  {args.n / seconds:,.0f} objects/s",
                  flush=True)
            _reset(inst, pid)
        if "flow" not in args.skip:
            from flows.predict import predict_flow

            t = time.perf_counter()
            summary = predict_flow(project_id=pid, model_id=model.id)
            seconds = time.perf_counter() - t
            assert summary["n_predicted"] == args.n, summary
            print(f"predict_flow (Dask)    {seconds:6.2f} s wall, {args.n / seconds:,.0f} "
                  f"objects/s; after cluster start {summary['seconds']:.2f} s, "
                  f"{summary['objects_per_second']:,.0f} objects/s", flush=True)
        if "warm-flow" not in args.skip:
            _reset(inst, pid)
            _warm_flows(inst, pid, model.id, args.n, args.repeat)
    finally:
        if inst is not None:
            inst.close()
        if pg_name:
            _pg_database(PG_ADMIN_URL, "drop", pg_name)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
