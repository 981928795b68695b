"""Benchmark the import of a synthetic EcoTaxa bundle (a folder, not zipped).

For each size (default 25,000, 50,000 and 100,000 objects) a child process
generates a reproducible bundle in a temporary folder (seeded): one
``ecotaxa_bench.tsv`` with 60 numeric ``object_*`` columns, a few sample,
acquisition and process columns (about 100 samples), a category among 20 and
one 40x40 grey PNG vignette per object (a pool of 500 distinct encoded images
written under each object's own name). It imports the folder into a fresh
temporary instance with ``import_path(..., create_missing_taxa=True,
create_missing_users=True)`` and prints the objects/s of each phase and of the
whole import, and the peak RSS of the process (``resource.getrusage``): flat
figures across sizes mean memory does not grow with the bundle.

    python bench/bench_import_bundle.py [--sizes 25000,50000,100000] [--postgres]
           [--database-url URL] [--seed 0] [--profile FILE] [--workdir DIR]
           [--names created|existing]

``--names created`` (default): the instance starts without the bundle's 20
categories and its annotator, and the import creates them. ``--names existing``:
an instance that has them already (as one with its taxonomy loaded): a 20-row
bundle naming them all is imported into another project first, untimed. On
PostgreSQL an import that creates names stages all its images before its
transaction; one that does not writes its rows while the last images are staged.

``--workdir`` holds the bundle and the instance home (default: the system's
temporary folder). File creation speed differs between folders of one machine
(on the 2-core development VM, 1,000 files/s under /tmp against 20,000 under
/work, same disk): put it where an instance's home would live.

``--postgres`` creates a database ``ecotaxa_bench_<random>`` on
postgresql+psycopg://postgres@127.0.0.1:5432 for each size and drops it after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
N_FEATURES, N_SAMPLES, N_CATEGORIES, POOL = 60, 100, 20, 500


def make_names_bundle(folder: Path) -> None:
    """A bundle of one object per category of :func:`make_bundle`, all validated by its
    annotator, images included: importing it creates every name the bench bundle uses."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["object_id\timg_file_name\tobject_annotation_status\t"
             "object_annotation_category\tobject_annotation_person_name", "[t]\t[t]\t[t]\t[t]\t[t]"]
    for c in range(N_CATEGORIES):
        Image.new("L", (8, 8), 128).save(folder / f"names_{c:02d}.png")
        lines.append(f"names_{c:02d}\tnames_{c:02d}.png\tvalidated\tbench_cat_{c:02d}\t"
                     "Bench Annotator")
    (folder / "ecotaxa_names.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_bundle(folder: Path, n: int, seed: int) -> None:
    """Write the TSV and the vignettes of ``n`` objects into ``folder``."""
    from PIL import Image

    rng = random.Random(seed)
    pool = []
    for _ in range(POOL):
        im = Image.new("L", (40, 40), 255)
        px = im.load()
        cx, cy, r = rng.randint(10, 30), rng.randint(10, 30), rng.randint(4, 12)
        for y in range(40):
            for x in range(40):
                if (x - cx) ** 2 + (y - cy) ** 2 < r * r:
                    px[x, y] = rng.randint(0, 200)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pool.append(buf.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    features = [f"object_f{i:02d}" for i in range(N_FEATURES)]
    header = (["object_id", "img_file_name", "img_rank", "object_lat", "object_lon",
               "object_date", "object_annotation_status", "object_annotation_category",
               "object_annotation_person_name"] + features
              + ["sample_id", "sample_ship", "sample_volconc", "acq_id", "acq_instrument",
                 "acq_pixel", "process_id", "process_software"])
    types = (["[t]", "[t]", "[f]", "[f]", "[f]", "[t]", "[t]", "[t]", "[t]"]
             + ["[f]"] * N_FEATURES + ["[t]", "[t]", "[f]", "[t]", "[t]", "[f]", "[t]", "[t]"])
    with open(folder / "ecotaxa_bench.tsv", "w", encoding="utf-8") as out:
        out.write("\t".join(header) + "\n" + "\t".join(types) + "\n")
        for i in range(n):
            s = i * N_SAMPLES // n
            name = f"obj_{i:07d}.png"
            (folder / name).write_bytes(pool[rng.randrange(POOL)])
            validated = rng.random() < 0.5
            row = [f"obj_{i:07d}", name, "0", f"{rng.uniform(-60, 60):.4f}",
                   f"{rng.uniform(-180, 180):.4f}", "20240101",
                   "validated" if validated else "predicted",
                   f"bench_cat_{rng.randrange(N_CATEGORIES):02d}",
                   "Bench Annotator" if validated else ""]
            row += [f"{rng.gauss(100, 30):.5g}" for _ in range(N_FEATURES)]
            row += [f"s{s:03d}", "bench ship", "1.5", f"s{s:03d}_a", "uvp5", "0.088",
                    f"s{s:03d}_p", "zooprocess"]
            out.write("\t".join(row) + "\n")


class _Phases:
    """Wall time spent in the import's steps, by wrapping the functions the importer calls.

    A step run inside the transaction (``write_delta``) is counted under its label
    with `` (in transaction)`` added, and left out of "transaction: rest + commit".
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.in_transaction = False

    def wrap(self, module, name: str, label: str) -> None:
        fn = getattr(module, name)

        def timed(*args, **kwargs):
            transaction = name == "write_delta"
            key = label + (" (in transaction)" if self.in_transaction and not
                           label.startswith(("DB", "features", "  ")) else "")
            t = time.perf_counter()
            self.in_transaction |= transaction
            try:
                return fn(*args, **kwargs)
            finally:
                self.in_transaction &= not transaction
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t

        setattr(module, name, timed)


def run_one(n: int, seed: int, database_url: str, profile: str | None,
            workdir: str | None, names: str = "created") -> dict:
    from ecotaxa_core import import_writer, importer
    from ecotaxa_core.import_images import ImageStager
    from ecotaxa_core.importer import import_path
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.settings import Settings

    phases = _Phases()
    for label, name in [("read + check TSV (+ images)", "plan_bundle"),
                        ("compare with project", "plan_delta"), ("check names", "check_names"),
                        ("check against project", "check_against_project"),
                        ("transaction (all)", "write_delta")]:
        phases.wrap(importer, name, label)
    # Images are checked and staged while the TSV is read: this is the wait after it
    # (on PostgreSQL, once the object and feature rows are in, inside the transaction).
    phases.wrap(ImageStager, "finish", "images: wait for the rest")
    for label, name in [("DB rows: objects", "_insert_objects"),
                        ("DB rows: images", "_insert_images"),
                        ("features", "write_features"), ("DB rows: parents", "_parents")]:
        phases.wrap(import_writer, name, label)

    tmp = Path(tempfile.mkdtemp(prefix="bench_bundle_", dir=workdir))
    try:
        bundle = tmp / "bundle"
        t = time.perf_counter()
        make_bundle(bundle, n, seed)
        os.sync()  # a bundle to import lies on disk, not in dirty pages being written back
        generated = time.perf_counter() - t
        inst = init_instance(Settings(home=tmp / "home", database_url=database_url),
                             "admin@example.org", "bench-password")
        with inst.sessions.begin() as s:
            project_id = create_project(s, "bundle bench").id
            seed_project = create_project(s, "names").id
        if names == "existing":
            make_names_bundle(tmp / "names")
            import_path(inst, seed_project, tmp / "names", user_id=1, create_missing_taxa=True,
                        create_missing_users=True)
            phases.seconds.clear()
        prof = None
        if profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        start = time.perf_counter()
        result = import_path(inst, project_id, bundle, user_id=1, create_missing_taxa=True,
                             create_missing_users=True)
        total = time.perf_counter() - start
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        dialect = inst.engine.dialect.name
        inst.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    inner = sum(v for k, v in phases.seconds.items()
                if k.startswith(("DB rows", "features")) or k.endswith("(in transaction)"))
    phases.seconds["transaction: rest + commit"] = phases.seconds["transaction (all)"] - inner
    return dict(n=result.n_objects, images=result.n_images, dialect=dialect, names=names,
                generated_s=round(generated, 1), total_s=total, phases=phases.seconds,
                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _pg_database(action: str, name: str) -> None:
    import psycopg
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                         autocommit=True) as conn:
        if action == "create":
            conn.execute(f'CREATE DATABASE "{name}"')
            conn.execute("CHECKPOINT")  # the copy of the template, written now, not mid-import
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _print(r: dict) -> None:
    n, total = r["n"], r["total_s"]
    print(f"\n== {n:,} objects ({r['images']:,} images) on {r['dialect']}, names "
          f"{r['names']} (bundle generated in {r['generated_s']} s)")
    for label, sec in r["phases"].items():
        if label == "transaction (all)":
            continue
        rate = f"{n / sec:12,.0f} obj/s" if sec > 0.001 else ""
        print(f"  {label:44s} {sec:7.1f} s {rate}")
    print(f"  {'TOTAL end to end':44s} {total:7.1f} s {n / total:12,.0f} obj/s")
    print(f"  peak RSS {r['peak_rss_mib']:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="one size (overrides --sizes)")
    parser.add_argument("--sizes", default="25000,50000,100000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--profile", default=None, help="cProfile output file (one size)")
    parser.add_argument("--workdir", default=None, help="folder for the bundle and the home")
    parser.add_argument("--names", choices=["created", "existing"], default="created",
                        help="whether the import creates its categories and annotator")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [args.n] if args.n else [int(x) for x in args.sizes.split(",")]
    if args.child:
        print(json.dumps(run_one(sizes[0], args.seed, args.database_url, args.profile,
                                 args.workdir, args.names)))
        return
    results = []
    for n in sizes:  # one process per size: each peak RSS is that size's alone
        url, db = args.database_url, None
        if args.postgres:
            db = f"ecotaxa_bench_{uuid.uuid4().hex[:8]}"
            _pg_database("create", db)
            url = f"{PG_SERVER}/{db}"
        try:
            cmd = [sys.executable, __file__, "--child", "--n", str(n), "--seed",
                   str(args.seed), "--database-url", url, "--names", args.names]
            if args.profile:
                cmd += ["--profile", args.profile]
            if args.workdir:
                cmd += ["--workdir", args.workdir]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        finally:
            if db:
                _pg_database("drop", db)
        results.append(json.loads(out.strip().splitlines()[-1]))
        _print(results[-1])
    if len(results) > 1:
        print("\nsize -> obj/s, peak RSS: " + "; ".join(
            f"{r['n']:,} -> {r['n'] / r['total_s']:,.0f}/s, {r['peak_rss_mib']:,.0f} MiB"
            for r in results))


if __name__ == "__main__":
    main()
