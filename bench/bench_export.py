"""Benchmark the TSV export of a synthetic 100,000-object project.

Creates a temporary instance (SQLite unless ``--database-url`` names another
database) holding one project of ``--objects`` objects with ``--columns``
numeric free columns each, 100 samples (with their acquisitions and processes)
and one small PNG vignette per object. The rows are inserted directly (the
import has its own benchmark). Then it exports the project three times and
prints the objects/s and the resident memory of each export: TSV without
images, TSV split by sample without images, and TSV with the images; then the
summary (EcoTaxa's default formulas) and the Darwin Core Archive.

    python bench/bench_export.py [--objects 100000] [--columns 60] [--database-url URL]
                                 [--skip-images] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_SAMPLES = 100


class _PeakRss:
    """Resident memory of this process, sampled every 50 ms while the block runs."""

    def __enter__(self):
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _png_bytes(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((24, 24)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def build_project(inst, n_objects: int, n_columns: int, with_files: bool) -> int:
    """Insert the synthetic project; returns its id."""
    import numpy as np
    from sqlalchemy import insert, update

    from ecotaxa_core.db.models import (Acquisition, Image, Object, Process, Project, Sample,
                                        Taxon)
    from ecotaxa_core.projects import create_project

    rng = np.random.default_rng(12345)
    # "area" first, so EcoTaxa's default (ZooScan) formulas apply to the summary.
    names = ["area"] + [f"feature_{i:02d}" for i in range(1, n_columns)]
    with inst.sessions.begin() as s:
        pid = create_project(s, "export bench", instrument="zooscan").id
        s.get(Project, pid).free_columns = {
            "object": {n: "f" for n in names} | {"comment": "t"},
            "sample": {"tot_vol": "f", "ship": "t"}, "acq": {"sub_part": "f"},
            "process": {"pixel_size": "f"}}
        taxa = [Taxon(name=f"bench_taxon_{i}", display_name=f"bench_taxon_{i}") for i in range(20)]
        s.add_all(taxa)
        s.flush()
        taxon_ids = [t.id for t in taxa]
        parents = []
        for i in range(N_SAMPLES):
            sample = Sample(project_id=pid, orig_id=f"sample_{i:03d}", lat=43.0 + i / 100,
                            lon=7.0, extra={"tot_vol": 2.5 + i, "ship": "bench"})
            s.add(sample)
            s.flush()
            acq = Acquisition(project_id=pid, sample_id=sample.id, orig_id=f"acq_{i:03d}",
                              instrument="zooscan", extra={"sub_part": 4.0})
            s.add(acq)
            s.flush()
            process = Process(project_id=pid, acquisition_id=acq.id, orig_id=f"process_{i:03d}",
                              extra={"pixel_size": 0.0106})
            s.add(process)
            s.flush()
            parents.append((sample.id, acq.id, process.id))
    png = [_png_bytes(i) for i in range(16)]
    when = datetime(2024, 5, 2, 9, 30, 12, tzinfo=timezone.utc)
    batch = 5000
    for start in range(0, n_objects, batch):
        n = min(batch, n_objects - start)
        # float32 values, whose float64 reprs are long (as in ZooProcess files)
        values = rng.random((n, n_columns)).astype(np.float32).astype(float) * 1000
        rows = []
        for j in range(n):
            k = start + j
            sid, aid, prid = parents[k * N_SAMPLES // n_objects]  # samples one after another
            extra = dict(zip(names, values[j].tolist()))
            extra["comment"] = f"object {k}"
            rows.append(dict(project_id=pid, orig_id=f"bench_{k:07d}", sample_id=sid,
                             acquisition_id=aid, process_id=prid, lat=43.5, lon=7.3,
                             date="2024-05-01", time="12:00:00", depth_min=0.0, depth_max=10.0,
                             status="validated" if k % 3 else "predicted",
                             taxon_id=taxon_ids[k % len(taxon_ids)], annotator_id=1,
                             annotation_date=when, extra=extra))
        with inst.sessions.begin() as s:
            ids = s.scalars(insert(Object).returning(Object.id, sort_by_parameter_order=True),
                            rows).all()
            image_rows = [dict(object_id=oid, rank=0, file_path="", thumb_path=None,
                               original_name=f"images/bench_{start + j:07d}.png", width=24,
                               height=24) for j, oid in enumerate(ids)]
            image_ids = s.scalars(insert(Image).returning(Image.id, sort_by_parameter_order=True),
                                  image_rows).all()
            updates = []
            for image_id in image_ids:
                rel = f"images/{image_id // 10000:04d}/{image_id}_0.png"
                if with_files:
                    path = inst.vault.path(rel)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(png[image_id % len(png)])
                updates.append(dict(id=image_id, file_path=rel))
            s.execute(update(Image), updates)
    return pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=60)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--skip-images", action="store_true",
                        help="no image files, no export with images")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance")
    args = parser.parse_args()

    from ecotaxa_core.dwca import export_dwca
    from ecotaxa_core.export import export_project
    from ecotaxa_core.summaries import export_summary
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        inst = init_instance(Settings(home=home, database_url=args.database_url),
                             "admin@example.org", "bench-password")
        start = time.perf_counter()
        pid = build_project(inst, args.objects, args.columns, not args.skip_images)
        print(f"database            {inst.engine.dialect.name}")
        print(f"project             {args.objects:,} objects x {args.columns} numeric columns, "
              f"{N_SAMPLES} samples (built in {time.perf_counter() - start:.1f} s)")
        runs = [("TSV, no images", dict(with_images=False)),
                ("TSV by sample, no images", dict(with_images=False, split_by_sample=True))]
        if not args.skip_images:
            runs.append(("TSV + images", dict(with_images=True)))
        for label, options in runs:
            out = home / "out" / label.replace(" ", "_").replace(",", "").replace("+", "and")
            with _PeakRss() as rss:
                t0 = time.perf_counter()
                result = export_project(inst, pid, out, **options)
                seconds = time.perf_counter() - t0
            size = result.bundle.stat().st_size / 2**20
            print(f"{label:26s} {seconds:6.2f} s  {result.n_objects / seconds:9,.0f} objects/s  "
                  f"zip {size:7.1f} MiB  RSS {rss.start:6.0f} -> peak {rss.peak:6.0f} MiB")
        with _PeakRss() as rss:
            t0 = time.perf_counter()
            summary = export_summary(inst, pid, home / "out" / "summary", with_predicted=True)
            seconds = time.perf_counter() - t0
        print(f"{'summary by sample':26s} {seconds:6.2f} s  {args.objects / seconds:9,.0f} "
              f"objects/s  ({summary.n_rows} rows)  RSS peak {rss.peak:6.0f} MiB")
        t0 = time.perf_counter()
        archive = export_dwca(inst, pid, home / "out" / "dwca", contact_email="bench@example.org",
                              license="CC-BY-4.0")
        seconds = time.perf_counter() - t0
        print(f"{'Darwin Core Archive':26s} {seconds:6.2f} s  {args.objects / seconds:9,.0f} "
              f"objects/s  ({archive.n_events} events, {archive.n_occurrences} occurrences)")
        inst.close()
    finally:
        if args.keep:
            print(f"instance kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
