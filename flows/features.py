"""Features flow: compute a project's missing feature rows on Dask, then refit its PCA-50.

For each feature set it asks which objects have no row yet, submits their
images in chunks of at most ``ECOTAXA_CHUNK_SIZE`` (smaller when that keeps
every Dask thread busy) to the Dask cluster
(``tasks.dask_cluster``: an embedded LocalCluster or
``ECOTAXA_DASK_SCHEDULER_ADDRESS``) and appends each chunk's rows as it
completes. A re-run computes only objects added since. When the deep vectors
changed, the project's ``deep_effnetlite0_pca50`` set is refitted.

A run holds the project's feature-writer lock (a second run waits for it) and
first undoes what a killed run left half written
(:func:`~ecotaxa_core.features.pipeline.recover_interrupted_writes`), so a run
that died half way is finished by the next one, every object written once.
A Dask worker that dies mid-chunk is replaced by its nanny and its chunks
are computed again elsewhere.

Run it::

    python -m flows.features 1 --feature-sets morpho deep_effnetlite0
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow, get_run_logger

from ecotaxa_core.features.extractor import UnknownExtractor, available_extractors, get_extractor
from ecotaxa_core.features.pca import DEEP_SET, PCA_SET
from ecotaxa_core.features.pipeline import (balanced_chunk_size, check_producer,
                                            feature_writer_lock, project_bottom_crop,
                                            project_pixel_size_um,
                                            recover_interrupted_writes)
from flows._instance import open_instance, stage_job
from tasks.dask_cluster import dask_client
from tasks.features import (extract_on_dask, find_pending_objects, refit_deep_pca,
                            threads_per_task, total_threads)

DEFAULT_FEATURE_SETS = ["morpho", DEEP_SET]


@flow(name="features", log_prints=True)
def features_flow(project_id: int,
                  feature_sets: list[str] = DEFAULT_FEATURE_SETS) -> dict[str, Any]:
    """Compute the missing rows of ``feature_sets`` for project ``project_id``.

    ``feature_sets`` may also name ``deep_effnetlite0_pca50`` to force a PCA
    refit. Returns, per feature set, the objects processed, the seconds taken
    and the images per second, and what the PCA refit did.
    """
    logger = get_run_logger()
    for name in feature_sets:
        if name not in available_extractors() and name != PCA_SET:
            raise UnknownExtractor(name)
    with open_instance() as inst, stage_job(inst, "features", project_id,
                                            {"feature_sets": list(feature_sets)}) as job, \
            feature_writer_lock(inst, project_id):
        recovered = recover_interrupted_writes(inst, project_id)
        if recovered:
            logger.warning("a killed run left feature sets half written; cut back to %s rows",
                           recovered)
        settings = inst.settings
        extractor_kwargs = {"input_size": settings.deep_input_size,
                            "batch_size": settings.deep_batch_size,
                            "bottom_crop": project_bottom_crop(inst, project_id),
                            "pixel_size_um": project_pixel_size_um(inst, project_id)}
        extractors = {name: get_extractor(name, **extractor_kwargs)
                      for name in feature_sets if name != PCA_SET}
        pending = {}
        for name, extractor in extractors.items():
            check_producer(inst, project_id, extractor)
            pending[name] = find_pending_objects(inst, project_id, name)
        summary: dict[str, Any] = {"project_id": project_id, "feature_sets": {}}
        if recovered:
            summary["recovered"] = recovered
        if any(len(ids) for ids, _ in pending.values()):
            with dask_client(settings) as client:
                kwargs = {**extractor_kwargs, "num_threads": threads_per_task(client)}
                n_slots = total_threads(client)
                for name, extractor in extractors.items():
                    ids, paths = pending[name]
                    chunk_size = balanced_chunk_size(len(ids), settings.chunk_size, n_slots)
                    summary["feature_sets"][name] = extract_on_dask(
                        client, inst, project_id, extractor, kwargs, ids, paths, chunk_size,
                        log=logger.info)
        for name in extractors:
            summary["feature_sets"].setdefault(name, {"objects": 0, "chunks": 0, "seconds": 0.0,
                                                      "images_per_s": 0.0})
        store = inst.features
        stale = (DEEP_SET in extractors
                 and store.n_rows(project_id, PCA_SET) != store.n_rows(project_id, DEEP_SET))
        deep_written = summary["feature_sets"].get(DEEP_SET, {}).get("objects", 0)
        if PCA_SET in feature_sets or deep_written > 0 or stale or PCA_SET in recovered:
            summary["feature_sets"][PCA_SET] = refit_deep_pca(inst, project_id)
        job["result"] = summary
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("--feature-sets", nargs="+", default=DEFAULT_FEATURE_SETS,
                        help=f"among {', '.join(available_extractors() + [PCA_SET])}")
    args = parser.parse_args(argv)
    return features_flow(project_id=args.project_id, feature_sets=args.feature_sets)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
