"""Prefect tasks and Dask plumbing of the features flow.

Each Prefect task wraps one core function and works on a whole chunk (or a
whole project), never on one image. The heavy computation itself,
:func:`~ecotaxa_core.features.pipeline.compute_chunk`, runs on Dask workers
as a plain function (no Prefect inside workers); :func:`compute_on_dask`
submits every chunk at once, so decoding and forward passes of several chunks
overlap, and yields the results as they complete, for the flow process to
write (one writer per feature store).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np
from distributed import Client, as_completed
from prefect import task
from prefect.cache_policies import NO_CACHE

from ecotaxa_core.features.extractor import FeatureExtractor
from ecotaxa_core.features.pca import DEEP_SET, pca_set_of, refit_pca
from ecotaxa_core.features.pipeline import (append_chunk, compute_chunk, journaled_write,
                                            pending_objects, split_chunks)
from ecotaxa_core.instance import Instance
from ecotaxa_core.progress import Progress, report
from tasks.retries import ON_TRANSIENT_ERRORS

__all__ = ["find_pending_objects", "append_features", "refit_deep_pca", "compute_on_dask",
           "extract_on_dask", "threads_per_task", "total_threads"]


@task(name="pending_objects", cache_policy=NO_CACHE, **ON_TRANSIENT_ERRORS)
def find_pending_objects(inst: Instance, project_id: int,
                         feature_set: str) -> tuple[np.ndarray, list[str]]:
    return pending_objects(inst, project_id, feature_set)


@task(name="append_chunk", cache_policy=NO_CACHE, **ON_TRANSIENT_ERRORS)
def append_features(inst: Instance, project_id: int, extractor: FeatureExtractor,
                    object_ids: np.ndarray, values: np.ndarray) -> int:
    return append_chunk(inst, project_id, extractor, object_ids, values)


@task(name="refit_pca", cache_policy=NO_CACHE, **ON_TRANSIENT_ERRORS)
def refit_deep_pca(inst: Instance, project_id: int, source: str = DEEP_SET) -> dict[str, Any]:
    start = time.perf_counter()
    target = pca_set_of(source)
    # The refit rewrites the PCA set from scratch: a killed refit leaves it to be deleted.
    with journaled_write(inst, project_id, target, keep_rows=0):
        refit = refit_pca(inst.features, project_id, source=source, target=target)
    return {"objects": refit.n_samples, "n_components": refit.n_components,
            "explained_variance": round(refit.explained_variance, 4),
            "seconds": round(time.perf_counter() - start, 3)}


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def total_threads(client: Client) -> int:
    """Dask threads of the whole cluster: how many chunks run at once."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return max(1, sum(int(info.get("nthreads", 1)) for info in workers.values()))


def threads_per_task(client: Client) -> int:
    """Torch threads each running chunk may use without oversubscribing its host.

    Usable CPUs of a host divided by the Dask threads of all the workers on
    that host (the smallest over hosts); Dask runs that many chunks at once.
    Dask itself sets ``OMP_NUM_THREADS=1`` in its workers, which would leave a
    chunk on a many-core host with one thread.
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if not workers:
        return 1
    cpus = client.run(_usable_cpus)
    host_threads: Counter[str] = Counter()
    host_cpus: dict[str, int] = {}
    for address, info in workers.items():
        host = info.get("host", address)
        host_threads[host] += int(info.get("nthreads", 1))
        host_cpus[host] = int(cpus.get(address, 1))
    return max(1, min(host_cpus[h] // host_threads[h] for h in host_threads))


def compute_on_dask(client: Client, extractor_name: str, extractor_kwargs: dict[str, Any],
                    object_ids: np.ndarray, paths: Sequence[str],
                    chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Run ``compute_chunk`` on every chunk; yield ``(object_ids, rows)`` as chunks finish.

    A chunk's result is released on the cluster once yielded. If the caller
    stops early or a chunk fails, the chunks still pending are cancelled.
    """
    pending: dict[str, np.ndarray] = {}
    futures = []
    for chunk in split_chunks(len(object_ids), chunk_size):
        future = client.submit(compute_chunk, extractor_name, extractor_kwargs,
                               list(paths[chunk]), pure=False)
        pending[future.key] = object_ids[chunk]
        futures.append(future)
    try:
        for future in as_completed(futures):
            rows = future.result()
            ids = pending.pop(future.key)
            future.release()
            yield ids, rows
    finally:
        if pending:
            client.cancel([f for f in futures if f.key in pending])


def extract_on_dask(client: Client, inst: Instance, project_id: int, extractor: FeatureExtractor,
                    extractor_kwargs: dict[str, Any], object_ids: np.ndarray,
                    paths: Sequence[str], chunk_size: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Compute one feature set's pending rows on Dask and append each chunk as it completes.

    ``progress`` hears of the rows written after each chunk. Returns the objects
    written, the chunks, the seconds and the images per second.
    """
    start = time.perf_counter()
    written = n_chunks = 0
    what = f"objects ({extractor.name})"
    report(progress, what, 0, len(object_ids))  # the rate counts from here
    for chunk_ids, rows in compute_on_dask(client, extractor.name, extractor_kwargs,
                                           object_ids, paths, chunk_size):
        written += append_features(inst, project_id, extractor, chunk_ids, rows)
        n_chunks += 1
        report(progress, what, written, len(object_ids))
    seconds = time.perf_counter() - start
    return {"objects": written, "chunks": n_chunks, "seconds": round(seconds, 3),
            "images_per_s": round(written / seconds, 1) if written and seconds > 0 else 0.0}
