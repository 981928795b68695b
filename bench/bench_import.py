"""Benchmark the class-folder import of the full NDSB zip (21,277 images, 121 classes).

Creates a temporary instance (SQLite unless ``--database-url`` names another
database), imports the zip with its categories created, and prints the time of
each phase and the images/s of the whole import: unzip, checks (every image
decoded), database rows, vault copies and thumbnails.

    python bench/bench_import.py [--zip PATH] [--database-url URL] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NDSB_ZIP = Path(os.environ.get("ECOTAXA_SHARED_DATASETS", ROOT.parent / "shared" / "datasets")) \
    / "ndsb_planktonset1_dev.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=NDSB_ZIP)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance")
    args = parser.parse_args()

    from ecotaxa_core.importer import import_path
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="bench_import_"))
    try:
        inst = init_instance(Settings(home=home, database_url=args.database_url),
                             "admin@example.org", "bench-password")
        with inst.sessions.begin() as s:
            project_id = create_project(s, "NDSB bench").id
        marks: list[tuple[float, int, int]] = []

        def progress(done: int, total: int) -> None:
            marks.append((time.perf_counter(), done, total))

        start = time.perf_counter()
        result = import_path(inst, project_id, args.zip, user_id=1, create_missing_taxa=True,
                             progress=progress)
        seconds = time.perf_counter() - start
        n_files = marks[-1][2] - result.n_images
        checked = next(t for t, d, _ in marks if d >= n_files)
        first = marks[0][0]
        print(f"database            {inst.engine.dialect.name}")
        print(f"images              {result.n_images}  ({len(result.taxa_created)} categories)")
        print(f"unzip, listing, first checks {first - start:7.1f} s")
        print(f"other image checks  {checked - first:7.1f} s")
        print(f"rows + vault + thumbnails {marks[-1][0] - checked:7.1f} s")
        print(f"commit and cleanup  {seconds - (marks[-1][0] - start):7.1f} s")
        print(f"total               {seconds:7.1f} s  ->  {result.n_images / seconds:,.0f} images/s")
        inst.close()
    finally:
        if args.keep:
            print(f"instance kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
