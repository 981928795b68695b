"""Benchmark feature extraction on real NDSB images.

Measures, at each input size:

(a) the raw forward pass of EfficientNet-Lite0 at batch size B on tensors
    already preprocessed (the network alone);
(b) decoding + EcoTaxa preprocessing alone;
(c) the whole features flow (``morpho`` + ``deep_effnetlite0`` + PCA-50) on a
    temporary instance: Prefect, an embedded Dask LocalCluster, the vault and
    the Zarr store included;

and the morphological extractor on its own. Prints a table of images/s, and
the deep set's rate in the flow as a share of (a), both measured in this run.
``bench_features_scaling.py`` compares 1 and 2 Dask worker processes.

    python bench/bench_features.py 2000 --sizes 224 128 --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NDSB_ZIP = Path(os.environ.get("ECOTAXA_SHARED_DATASETS", ROOT.parent / "shared" / "datasets")) \
    / "ndsb_planktonset1_dev.zip"


def extract_images(n: int, dest: Path, seed: int = 0) -> list[Path]:
    """``n`` NDSB images drawn at random over all classes, written under ``dest``."""
    with zipfile.ZipFile(NDSB_ZIP) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".jpg"))
        chosen = random.Random(seed).sample(names, min(n, len(names)))
        paths = []
        for name in chosen:
            path = dest / name.replace("/", "_")
            path.write_bytes(z.read(name))
            paths.append(path)
    return paths


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def bench_forward(paths: list[Path], size: int, batch_size: int) -> tuple[float, float]:
    """(a) network alone and (b) decode + preprocess alone, in images/s."""
    from ecotaxa_core.features import get_extractor

    ex = get_extractor("deep_effnetlite0", input_size=size, batch_size=batch_size)
    start = time.perf_counter()
    batch = ex.preprocess_batch(paths)
    preprocess_rate = rate(len(paths), time.perf_counter() - start)
    for _ in range(2):  # load the model, warm up (the first passes are slower)
        ex.forward(batch[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(batch), batch_size):
        ex.forward(batch[i:i + batch_size])
    return rate(len(paths), time.perf_counter() - start), preprocess_rate


def bench_morphology(paths: list[Path]) -> float:
    from ecotaxa_core.features import get_extractor

    ex = get_extractor("morpho")
    start = time.perf_counter()
    ex.extract(paths)
    return rate(len(paths), time.perf_counter() - start)


def make_project(inst, paths: list[Path], title: str) -> int:
    """A project with one object and rank-0 image per file (the importer is not needed)."""
    from PIL import Image as PILImage

    from ecotaxa_core.db.models import Image, Object
    from ecotaxa_core.projects import create_project

    with inst.sessions.begin() as s:
        project_id = create_project(s, title, instrument="ISIIS").id
        for path in paths:
            with PILImage.open(path) as im:
                width, height = im.size
            image = Image(rank=0, file_path="", original_name=path.name, width=width,
                          height=height)
            s.add(Object(project_id=project_id, orig_id=path.stem, status="unclassified",
                         extra={}, images=[image]))
            s.flush()
            image.file_path, image.thumb_path = inst.vault.store(path, image.id, 0)
    return project_id


def bench_flow(paths: list[Path], sizes: list[int], home: Path, batch_size: int,
               n_workers: int, chunk_size: int) -> dict[int, dict]:
    """(c) the features flow, one project per input size, in a temporary instance."""
    # A private Prefect home and API, set before Prefect is first imported.
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.update({"PREFECT_HOME": str(home / "prefect"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_LOGGING_LEVEL": "WARNING"})
    from prefect.testing.utilities import prefect_test_harness

    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.settings import Settings

    inst = init_instance(Settings(home=home), "bench@example.org", "bench-password")
    os.environ.update({"ECOTAXA_HOME": str(home),
                       "ECOTAXA_DATABASE_URL": inst.settings.database_url,
                       "ECOTAXA_DASK_N_WORKERS": str(n_workers),
                       "ECOTAXA_CHUNK_SIZE": str(chunk_size),
                       "ECOTAXA_DEEP_BATCH_SIZE": str(batch_size)})
    os.environ.pop("ECOTAXA_DASK_SCHEDULER_ADDRESS", None)
    results = {}
    with prefect_test_harness(server_startup_timeout=120):
        from flows.features import features_flow

        for size in sizes:
            project_id = make_project(inst, paths, f"bench {size}px")
            os.environ["ECOTAXA_DEEP_INPUT_SIZE"] = str(size)
            start = time.perf_counter()
            summary = features_flow(project_id=project_id)
            wall = time.perf_counter() - start
            results[size] = {"summary": summary["feature_sets"], "wall": wall}
    inst.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("n", nargs="?", type=int, default=2000, help="number of images")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="embedded Dask workers")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--no-flow", action="store_true", help="skip (c), the whole flow")
    args = parser.parse_args(argv)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # workers inherit it

    import torch

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        paths = extract_images(args.n, tmp / "images")
        print(f"{len(paths)} NDSB images, batch size {args.batch_size}, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs", file=sys.stderr)
        rows: dict[str, dict[int, str]] = {}
        forward_rates: dict[int, float] = {}
        for size in args.sizes:
            forward, prep = bench_forward(paths, size, args.batch_size)
            forward_rates[size] = forward
            rows.setdefault("(a) forward pass alone", {})[size] = f"{forward:8.1f}"
            rows.setdefault("(b) decode + preprocess", {})[size] = f"{prep:8.1f}"
        morpho = bench_morphology(paths)
        if not args.no_flow:
            flow = bench_flow(paths, args.sizes, tmp / "home", args.batch_size, args.workers,
                              args.chunk_size)
            for size, res in flow.items():
                sets = res["summary"]
                deep, mor = sets["deep_effnetlite0"], sets["morpho"]
                rows.setdefault("(c) flow: deep_effnetlite0", {})[size] = \
                    f"{deep['images_per_s']:8.1f}"
                rows.setdefault("(c) deep in flow / (a)", {})[size] = \
                    f"{deep['images_per_s'] / forward_rates[size]:8.0%}"
                rows.setdefault("(c) flow: morpho", {})[size] = f"{mor['images_per_s']:8.1f}"
                pca = sets.get("deep_effnetlite0_pca50", {}).get("seconds", float("nan"))
                rows.setdefault("(c) flow: PCA-50 refit (s)", {})[size] = f"{pca:8.2f}"
                rows.setdefault("(c) flow: whole run (img/s)", {})[size] = \
                    f"{rate(len(paths), res['wall']):8.1f}"
                rows.setdefault("(c) flow: whole run (s)", {})[size] = f"{res['wall']:8.1f}"

    header = f"{'images/s':32s}" + "".join(f"{str(s) + ' px':>10s}" for s in args.sizes)
    print(header)
    print("-" * len(header))
    for label, by_size in rows.items():
        print(f"{label:32s}" + "".join(f"{by_size.get(s, ''):>10s}" for s in args.sizes))
    print(f"{'morphology alone (1 thread)':32s}{morpho:10.1f}")


if __name__ == "__main__":
    main()
