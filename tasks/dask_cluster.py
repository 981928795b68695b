"""The Dask client a flow runs its heavy work on.

Embedded default: a LocalCluster of worker processes, started for the flow run
and closed after it. With ``ECOTAXA_DASK_SCHEDULER_ADDRESS`` set, the flow
connects to that scheduler instead and leaves the cluster running.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from distributed import Client, LocalCluster

from ecotaxa_core.settings import Settings

__all__ = ["dask_client"]


@contextmanager
def dask_client(settings: Settings) -> Iterator[Client]:
    if settings.dask_scheduler_address:
        with Client(settings.dask_scheduler_address) as client:
            yield client
        return
    with LocalCluster(n_workers=settings.dask_n_workers,
                      threads_per_worker=settings.dask_threads_per_worker,
                      processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        yield client
