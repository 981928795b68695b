"""Benchmark the validation page's server calls on a project of a million objects.

Builds a temporary instance (SQLite file, or a new PostgreSQL database dropped
at the end) with ``n`` objects over 120 categories under 6 parents (sizes
uneven), 60 % predicted with scores, 25 % validated (with a history row
each), 5 % dubious, 10 % unclassified, 50 samples, one image per object; then
times, best of ``--repeat``, in milliseconds of server time:

1. the first page of 100 sorted by score with a category filter (the count of
   matching objects included), and variants (status, ascending, last change,
   random order, a parent with its sub-categories);
2. validating 100 selected objects with their history (one transaction), and
   undoing that change;
   and the thresholds banner (what the current model's thresholds cover), read when
   the page opens;
3. the taxonomy counts (the category tree with subtree counts);
4. the stale-tile check of a page (current states of 100 objects);
5. the similarity sort is :mod:`bench_similarity` (it does not touch the database).

Targets (issue): first page < 300 ms, validate 100 < 200 ms, taxonomy counts
< 500 ms, similarity < 1 s.

    python bench/bench_dashboard.py 1000000
    python bench/bench_dashboard.py 1000000 --postgres
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("ECOTAXA_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGETS_MS = {"page": 300, "validate": 200, "counts": 500}


def _pg_database(admin_url: str, action: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"' if action == "create"
                       else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _build(inst, n: int, rng) -> dict:
    from sqlalchemy import select

    from ecotaxa_core.db.bulk import insert_rows
    from ecotaxa_core.db.ids import reserve_ids
    from ecotaxa_core.db.models import (AnnotationHistory, Image, Object, Role, Sample,
                                        TrainedModel)
    from ecotaxa_core.db.models import Project
    from ecotaxa_core.projects import create_project, set_member
    from ecotaxa_core.taxonomy import get_or_create_taxon
    from ecotaxa_core.users import create_user

    with inst.sessions.begin() as s:
        pid = create_project(s, "bench dashboard").id
        parents = [get_or_create_taxon(s, f"group_{g}") for g in range(6)]
        s.flush()
        taxa = [get_or_create_taxon(s, f"class_{i}", parents[i % 6]).id for i in range(120)]
        user = create_user(s, "annotator@bench", "Annotator", "pw")
        s.flush()
        set_member(s, pid, user.id, Role.ANNOTATOR)
        samples = [Sample(project_id=pid, orig_id=f"st{k:02d}") for k in range(50)]
        s.add_all(samples)
        s.flush()
        sample_ids = [x.id for x in samples]
        s.get(Project, pid).free_columns = {"object": {"area": "f"}}
        uid, parent_ids = user.id, [p.id for p in parents]
        # The model behind the predictions, with a threshold per category (as training stores
        # them): what the thresholds banner reads when the page opens.
        model = TrainedModel(project_id=pid, name="bench", kind="deep_logreg", feature_sets=[],
                             path="", settings={"classes": taxa,
                                                "class_names": [f"class_{i}" for i in range(120)]},
                             metrics={"thresholds": {"target_precision": 0.95, "per_class": {
                                 str(t): {"taxon_id": t, "threshold": 0.5 + (i % 40) / 100,
                                          "precision": 0.95} for i, t in enumerate(taxa)}}})
        s.add(model)
        s.flush()
        model_id = model.id
    weights = 1.0 / np.arange(1, 121) ** 0.8  # uneven category sizes
    category = rng.choice(120, n, p=weights / weights.sum())
    status = rng.choice(["predicted", "validated", "dubious", "unclassified"], n,
                        p=[0.60, 0.25, 0.05, 0.10])
    score = rng.uniform(0.05, 1.0, n).round(4)
    sample = rng.integers(0, 50, n)
    area = rng.lognormal(6, 1, n).round(1)  # a free numeric column, to sort by
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    chunk = 50_000
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        with inst.sessions.begin() as s:
            if s.get_bind().dialect.name == "sqlite":  # ids are reserved under the write lock
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            ids = list(reserve_ids(s, Object, hi - lo))
            rows = []
            for k, oid in zip(range(lo, hi), ids):
                st = str(status[k])
                rows.append(dict(
                    id=oid, project_id=pid, orig_id=f"o{k}", sample_id=sample_ids[sample[k]],
                    status=st, taxon_id=None if st == "unclassified" else taxa[category[k]],
                    score=float(score[k]) if st == "predicted" else None,
                    model_id=model_id if st == "predicted" else None,
                    annotator_id=uid if st in ("validated", "dubious") else None,
                    annotation_date=(start + timedelta(seconds=k)) if st != "unclassified"
                    else None, extra={"area": float(area[k])}))
            insert_rows(s, Object.__table__, rows)
            image_ids = list(reserve_ids(s, Image, hi - lo))
            insert_rows(s, Image.__table__, [
                dict(id=i, object_id=oid, rank=0, file_path=f"images/{oid}.png",
                     thumb_path=None, original_name=f"{oid}.png", width=100, height=100)
                for i, oid in zip(image_ids, ids)])
            validated = [(oid, k) for k, oid in zip(range(lo, hi), ids)
                         if status[k] in ("validated", "dubious")]
            if validated:
                history_ids = list(reserve_ids(s, AnnotationHistory, len(validated)))
                insert_rows(s, AnnotationHistory.__table__, [
                    dict(id=h, object_id=oid, changed_at=start + timedelta(seconds=k),
                         changed_by_id=uid, status="predicted", taxon_id=taxa[category[k]],
                         score=float(score[k]), annotator_id=None, annotation_date=None,
                         model_id=None, action=None)
                    for h, (oid, k) in zip(history_ids, validated)])
    # Planner statistics (and, on PostgreSQL, the visibility map that index-only scans
    # need) as autovacuum would leave them on a live server.
    with inst.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE" if inst.engine.dialect.name == "postgresql"
                          else "ANALYZE")
    with inst.sessions() as s:
        predicted_ids = s.scalars(select(Object.id).where(
            Object.project_id == pid, Object.status == "predicted").order_by(Object.id)
            .limit(20_000)).all()
    return dict(pid=pid, uid=uid, big=taxa[0], parent=parent_ids[0],
                predicted=list(predicted_ids))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def _report(name: str, ms: float, target: str | None = None) -> None:
    goal = TARGETS_MS.get(target) if target else None
    verdict = "" if goal is None else (" PASS" if ms < goal else " MISS") + f" (< {goal} ms)"
    print(f"  {name:58s} {ms:8.1f} ms{verdict}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("n", nargs="?", type=int, default=1_000_000, help="objects")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", action="store_true",
                        help=f"a new database on the server of {PG_ADMIN_URL}")
    args = parser.parse_args()

    from ecotaxa_core.annotation import validate_objects
    from ecotaxa_core.annotation_undo import undo_last_change
    from ecotaxa_core.category_tree import category_tree
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.learn.thresholds import bulk_validation_candidates, current_prediction_model
    from ecotaxa_core.object_filter import ObjectFilter
    from ecotaxa_core.queries import current_states, list_objects
    from ecotaxa_core.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    pg_name = url = None
    if args.postgres:
        pg_name = f"ecotaxa_bench_{uuid.uuid4().hex[:12]}"
        _pg_database(PG_ADMIN_URL, "create", pg_name)
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_name
    inst = None
    try:
        settings = Settings(home=home, **({"database_url": url} if url else {}))
        inst = init_instance(settings, "admin@bench", "bench")
        t = time.perf_counter()
        b = _build(inst, args.n, np.random.default_rng(0))
        print(f"built {args.n:,} objects on {inst.engine.dialect.name} in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        pid, uid = b["pid"], b["uid"]

        def page(**kw):
            with inst.sessions() as s:
                rows, total = list_objects(s, pid, limit=100, **kw)
            return rows

        for name, kw, target in [
            ("first page, category, by score (high first)", dict(taxon_id=b["big"]), "page"),
            ("first page, category + predicted, by score", dict(taxon_id=b["big"],
                                                               status="predicted"), "page"),
            ("first page, category, by score (low first)", dict(taxon_id=b["big"],
                                                               sort="score_asc"), "page"),
            ("first page, category, by last change", dict(taxon_id=b["big"],
                                                         sort="annotated_desc"), "page"),
            ("first page, category, random order", dict(taxon_id=b["big"], sort="random"), "page"),
            ("first page, parent with sub-categories, by score", dict(
                object_filter=ObjectFilter(taxon_ids=(b["parent"],), with_children=True)), "page"),
            ("first page, whole project, by score", dict(), "page"),
            ("first page, category, by a free numeric field (area)", dict(
                taxon_id=b["big"], sort="field:area:desc"), None),
        ]:
            _report(name, _best(lambda: page(**kw), args.repeat), target)

        def banner():
            with inst.sessions() as s:
                model_id = current_prediction_model(s, pid)
                bulk_validation_candidates(s, pid, model_id)

        _report("thresholds banner (model, predictions above thresholds)",
                _best(banner, args.repeat), "page")

        chunks = iter([b["predicted"][k:k + 100] for k in range(0, len(b["predicted"]), 100)])

        def validate():
            with inst.sessions.begin() as s:
                assert validate_objects(s, pid, next(chunks), uid) == 100

        def undo():
            with inst.sessions.begin() as s:
                assert len(undo_last_change(s, pid, uid).restored) == 100

        _report("validate 100 selected objects (with history)", _best(validate, args.repeat),
                "validate")
        _report("undo the last change (100 objects)", _best(undo, args.repeat), "validate")

        def counts():
            with inst.sessions() as s:
                category_tree(s, pid)

        _report("taxonomy counts (tree with subtree counts)", _best(counts, args.repeat),
                "counts")
        shown = [r.id for r in page(taxon_id=b["big"])]

        def stale():
            with inst.sessions() as s:
                current_states(s, pid, shown)

        _report("stale-tile check of a page (100 objects)", _best(stale, args.repeat))
        print("  similarity sort: python bench/bench_similarity.py --objects "
              f"{args.n} (no database)", flush=True)
    finally:
        if inst is not None:
            inst.close()
        shutil.rmtree(home, ignore_errors=True)
        if pg_name:
            _pg_database(PG_ADMIN_URL, "drop", pg_name)


if __name__ == "__main__":
    main()
