"""The embedded Dask cluster: real worker processes, started with our allocator settings."""

from __future__ import annotations

import os

import pytest
from distributed import Client

from tasks.dask_cluster import WORKER_ENVIRON, dask_client, local_cluster


def test_local_cluster_workers_start_with_the_worker_environ():
    with local_cluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        for name, value in WORKER_ENVIRON.items():
            # os.getenv runs in each worker process: what its allocator read at start-up.
            assert set(client.run(os.getenv, name).values()) == {value}, name
        # Dask's own default (65536) would fix the mmap threshold at 128 KiB.
        assert int(WORKER_ENVIRON["MALLOC_MMAP_THRESHOLD_"]) >= 1 << 20


@pytest.mark.parametrize("running_cluster", [False, True])
def test_dask_client_embedded_or_given_scheduler(sqlite_instance, running_cluster):
    settings = sqlite_instance.settings.model_copy(update={"dask_n_workers": 1,
                                                           "dask_threads_per_worker": 1})
    if not running_cluster:
        with dask_client(settings) as client:
            assert client.submit(pow, 2, 10).result() == 1024
            assert set(client.run(os.getenv, "MALLOC_MMAP_THRESHOLD_").values()) == {
                WORKER_ENVIRON["MALLOC_MMAP_THRESHOLD_"]}
        return
    with local_cluster(n_workers=1, threads_per_worker=1) as cluster:
        given = settings.model_copy(update={"dask_scheduler_address": cluster.scheduler_address})
        with dask_client(given) as client:
            assert client.scheduler.address == cluster.scheduler_address
            assert client.submit(pow, 3, 2).result() == 9
        # The given cluster is left running for the next flow.
        with Client(cluster.scheduler_address) as again:
            assert len(again.scheduler_info()["workers"]) == 1
