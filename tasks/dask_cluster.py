"""The Dask client a flow runs its heavy work on, and the environment of our workers.

Embedded default: a LocalCluster of worker processes, started for the flow run
and closed after it. With ``ECOTAXA_DASK_SCHEDULER_ADDRESS`` set, the flow
connects to that scheduler instead and leaves the cluster running (``ecotaxa
up`` starts its ``dask worker`` processes with :data:`WORKER_ENVIRON` too).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dask
from distributed import Client, LocalCluster

from ecotaxa_core.settings import Settings

__all__ = ["WORKER_ENVIRON", "dask_client", "local_cluster"]

#: glibc allocator thresholds of the worker processes (bytes). Dask's nanny starts
#: its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting a threshold also
#: fixes glibc's mmap threshold at 128 KiB: every larger buffer (each 1 MiB chunk a
#: feature read decodes, each matrix of a prediction) is then mapped, faulted in
#: page by page and unmapped again. Feature reads ran 2-3 times slower and a
#: prediction 20-25 % slower (``bench/bench_predict.py``). These are the largest
#: values glibc's own adaptive thresholds reach on 64-bit: buffers up to 32 MiB
#: come from the heap, and up to 64 MiB of free heap top is kept.
WORKER_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                  "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


@contextmanager
def local_cluster(n_workers: int, threads_per_worker: int) -> Iterator[LocalCluster]:
    """A LocalCluster of ``n_workers`` processes (nanny) started with :data:`WORKER_ENVIRON`."""
    # The nanny sets its pre-spawn environment before it starts each worker
    # process, whose allocator reads it at start-up.
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": value
                          for name, value in WORKER_ENVIRON.items()}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                               processes=True, dashboard_address=":0", host="127.0.0.1")
    with cluster:
        yield cluster


@contextmanager
def dask_client(settings: Settings) -> Iterator[Client]:
    if settings.dask_scheduler_address:
        with Client(settings.dask_scheduler_address) as client:
            yield client
        return
    with local_cluster(settings.dask_n_workers, settings.dask_threads_per_worker) as cluster, \
            Client(cluster) as client:
        yield client
