"""Benchmark the predict flow on 1 then 2 Dask worker processes (the scaling ratio).

Builds a temporary instance as ``bench_predict.py`` does (``n`` unclassified
objects, a trained model of ``--kind``, feature rows in the Zarr store), then,
for 1 and for 2 ``dask worker`` processes of 1 thread each (worker ``i`` pinned
to CPU ``i``, on a ``dask scheduler`` given to the flow as
``ECOTAXA_DASK_SCHEDULER_ADDRESS``), runs ``predict_flow`` twice: the first run
loads the imports and the model into the workers, the second (timed) is a
long-lived cluster's steady state. Every run starts with every object
unclassified. The flow's own rate counts from the first chunk submitted to the
last chunk written (reads of the store and ``predict_proba`` on the workers,
database writes in the flow process, one transaction per chunk). It prints
objects/s, the 2-vs-1 ratio, and the CPU seconds the workers and the flow
process spent (on 2 cores the flow process and the database share the CPUs
with the workers: the ratio says how much of the work the workers do).

    python bench/bench_predict_scaling.py 100000 --kind deep_logreg_rf
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features_scaling import dask_processes, usable_cpus  # noqa: E402
from bench_predict import FEATURE_SETS, ROOT, _build, _reset  # noqa: E402


def process_cpu_seconds() -> float:
    """CPU seconds of the calling process (defined here: Dask workers, which cannot import
    this folder's modules, get it by value)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="objects to predict")
    parser.add_argument("--kind", default="deep_logreg_rf", choices=sorted(FEATURE_SETS))
    parser.add_argument("--features", type=int, default=None,
                        help="width of the first feature set (default: 1280 deep, 50 classic)")
    parser.add_argument("--classes", type=int, default=120)
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--chunk-size", type=int, default=8192,
                        help="ECOTAXA_PREDICT_CHUNK_SIZE (smaller than the default 16384 so "
                             "that 2 workers get several chunks each)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per worker count; the fastest is kept")
    args = parser.parse_args(argv)
    cpus = usable_cpus()
    if len(cpus) < 2:
        parser.error("needs at least 2 usable CPUs (one per worker)")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    home = Path(tempfile.mkdtemp(prefix="bench_predict_scaling_"))
    os.environ.update(ECOTAXA_HOME=str(home), PREFECT_HOME=str(home / "prefect"),
                      PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
                      ECOTAXA_PREDICT_CHUNK_SIZE=str(args.chunk_size))
    os.environ.pop("ECOTAXA_DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    from prefect.testing.utilities import prefect_test_harness

    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.learn.training import train_model
    from ecotaxa_core.settings import Settings
    from flows.predict import predict_flow

    inst = init_instance(Settings(), "bench@localhost", "bench")
    results: dict[int, dict[str, float]] = {}
    try:
        t = time.perf_counter()
        pid, feature_sets = _build(inst, args, np.random.default_rng(0))
        model = train_model(inst, pid, args.kind, feature_sets=feature_sets)
        print(f"built {args.n} objects to predict and trained {args.kind} on "
              f"{'+'.join(feature_sets)} in {time.perf_counter() - t:.1f} s; chunks of "
              f"{args.chunk_size} ({-(-args.n // args.chunk_size)} tasks); CPUs {cpus}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        with prefect_test_harness(server_startup_timeout=120):
            for n_workers in (1, 2):
                with dask_processes(n_workers, cpus, home) as client:
                    os.environ["ECOTAXA_DASK_SCHEDULER_ADDRESS"] = client.scheduler.address
                    predict_flow(project_id=pid, model_id=model.id)  # warm the workers up
                    _reset(inst, pid)
                    for _ in range(args.repeat):
                        workers_before = client.run(process_cpu_seconds)
                        cpu = process_cpu_seconds()
                        start = time.perf_counter()
                        summary = predict_flow(project_id=pid, model_id=model.id)
                        wall = time.perf_counter() - start
                        assert summary["n_predicted"] == args.n, summary
                        after = client.run(process_cpu_seconds)
                        run = {"objects/s": summary["objects_per_second"],
                               "whole flow objects/s": args.n / wall, "wall_s": wall,
                               "workers cpu_s": sum(after[w] - workers_before[w] for w in after),
                               "flow process cpu_s": process_cpu_seconds() - cpu}
                        print(f"  {n_workers} worker(s): " + ", ".join(
                            f"{k} {v:,.1f}" for k, v in run.items()), flush=True)
                        if n_workers not in results or \
                                run["objects/s"] > results[n_workers]["objects/s"]:
                            results[n_workers] = run
                        _reset(inst, pid)
                    del os.environ["ECOTAXA_DASK_SCHEDULER_ADDRESS"]
    finally:
        inst.close()
        shutil.rmtree(home, ignore_errors=True)

    print(f"predict flow, {args.n:,} objects, {args.kind}, fastest of {args.repeat}")
    print(f"{'workers':>8s}{'objects/s':>12s}{'whole flow/s':>14s}{'wall (s)':>10s}"
          f"{'workers CPU s':>15s}{'flow CPU s':>12s}")
    for n_workers, r in results.items():
        print(f"{n_workers:8d}{r['objects/s']:12,.0f}{r['whole flow objects/s']:14,.0f}"
              f"{r['wall_s']:10.1f}{r['workers cpu_s']:15.1f}{r['flow process cpu_s']:12.1f}")
    print(f"2 workers / 1 worker: {results[2]['objects/s'] / results[1]['objects/s']:.2f}x "
          f"(flow rate), {results[2]['whole flow objects/s'] / results[1]['whole flow objects/s']:.2f}x"
          " (whole flow)")


if __name__ == "__main__":
    main()
