"""Features flow: compute a project's missing feature rows on Dask, then refit its PCA-50.

For each feature set it asks which objects have no row yet, submits their
images in chunks of at most ``ECOTAXA_CHUNK_SIZE`` (smaller when that keeps
every Dask thread busy) to the Dask cluster
(``tasks.dask_cluster``: an embedded LocalCluster or
``ECOTAXA_DASK_SCHEDULER_ADDRESS``) and appends each chunk's rows as it
completes. A re-run computes only objects added since. When the deep vectors
changed, the project's ``deep_effnetlite0_pca50`` set is refitted (the same for
each registered backbone's ``deep_NAME``: see
:mod:`ecotaxa_core.features.backbones`).

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

from ecotaxa_core.features.backbones import read_backbones
from ecotaxa_core.features.deep import DeepExtractor
from ecotaxa_core.features.extractor import UnknownExtractor, available_extractors, get_extractor
from ecotaxa_core.features.pca import DEEP_SET, PCA_SET, pca_set_of, source_of_pca_set
from ecotaxa_core.features.pipeline import (balanced_chunk_size, check_producer,
                                            feature_writer_lock, project_bottom_crop,
                                            project_pixel_size_um,
                                            recover_interrupted_writes)
from ecotaxa_core.settings import Settings
from flows._instance import open_instance, stage_job
from flows._progress import RunProgress
from tasks.dask_cluster import dask_client
from tasks.features import (extract_on_dask, find_pending_objects, refit_deep_pca,
                            threads_per_task, total_threads)

DEFAULT_FEATURE_SETS = ["morpho", DEEP_SET]


@flow(name="features", log_prints=True)
def features_flow(project_id: int, feature_sets: list[str] = DEFAULT_FEATURE_SETS,
                  recompute: bool = False) -> dict[str, Any]:
    """Compute the missing rows of ``feature_sets`` for project ``project_id``.

    ``feature_sets`` may name the instance's registered backbones
    (``deep_NAME``, see ``ecotaxa backbone add``), and a deep set's PCA
    (``deep_effnetlite0_pca50``) to force its refit. Returns, per feature set,
    the objects processed, the seconds taken and the images per second, and
    what each PCA refit did. With ``recompute``, the project's rows of
    ``feature_sets`` are deleted first and computed again (after a change of
    extractor version or settings, which otherwise refuses to add rows).
    """
    logger = get_run_logger()
    backbones = read_backbones(Settings().backbones_path)
    pca_only = {name for name in feature_sets if source_of_pca_set(name)}
    for name in feature_sets:  # before anything else: a typo is not a failed job
        if (source_of_pca_set(name) or name) not in available_extractors(backbones):
            raise UnknownExtractor(name, backbones)
    with open_instance() as inst, stage_job(inst, "features", project_id,
                                            {"feature_sets": list(feature_sets),
                                             "recompute": recompute}) as job:
        settings = inst.settings
        with feature_writer_lock(inst, project_id):
            recovered = recover_interrupted_writes(inst, project_id)
            if recovered:
                logger.warning("a killed run left feature sets half written; cut back to %s "
                               "rows", recovered)
            extractor_kwargs = {"input_size": settings.deep_input_size,
                                "batch_size": settings.deep_batch_size,
                                "device": settings.deep_device,
                                "views": settings.deep_views,
                                "bottom_crop": project_bottom_crop(inst, project_id),
                                "pixel_size_um": project_pixel_size_um(inst, project_id)}
            wanted = [name for name in feature_sets if name not in pca_only]
            used = {name: backbones[name].to_dict() for name in wanted if name in backbones}
            if used:
                extractor_kwargs["backbones"] = used
            extractors = {name: get_extractor(name, **extractor_kwargs) for name in wanted}
            if recompute:
                for name in wanted:
                    inst.features.delete(project_id, name)
                    logger.info("%s: stored rows deleted, computing them again", name)
            pending = {}
            for name, extractor in extractors.items():
                check_producer(inst, project_id, extractor)
                pending[name] = find_pending_objects(inst, project_id, name)
            summary: dict[str, Any] = {"project_id": project_id, "feature_sets": {}}
            if recovered:
                summary["recovered"] = recovered
            if any(len(ids) for ids, _ in pending.values()):
                progress = RunProgress("features", logger.info)
                with dask_client(settings) as client:
                    kwargs = {**extractor_kwargs, "num_threads": threads_per_task(client)}
                    n_slots = total_threads(client)
                    for name, extractor in extractors.items():
                        ids, paths = pending[name]
                        chunk_size = balanced_chunk_size(len(ids), settings.chunk_size,
                                                         n_slots)
                        summary["feature_sets"][name] = extract_on_dask(
                            client, inst, project_id, extractor, kwargs, ids, paths,
                            chunk_size, progress=progress)
            for name in extractors:
                summary["feature_sets"].setdefault(name, {"objects": 0, "chunks": 0,
                                                          "seconds": 0.0, "images_per_s": 0.0})
            store = inst.features
            deep_sets = {name for name in extractors if isinstance(extractors[name], DeepExtractor)}
            deep_sets |= {source_of_pca_set(name) for name in pca_only}
            for source in sorted(deep_sets):
                target = pca_set_of(source)
                stale = store.n_rows(project_id, target) != store.n_rows(project_id, source)
                written = summary["feature_sets"].get(source, {}).get("objects", 0)
                if target in pca_only or written > 0 or stale or target in recovered:
                    summary["feature_sets"][target] = refit_deep_pca(inst, project_id, source)
            job["result"] = summary
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("--recompute", action="store_true",
                        help="delete the stored rows of these sets first")
    parser.add_argument("--feature-sets", nargs="+", default=DEFAULT_FEATURE_SETS,
                        help=f"among {', '.join(available_extractors() + [PCA_SET])}")
    args = parser.parse_args(argv)
    return features_flow(project_id=args.project_id, feature_sets=args.feature_sets,
                         recompute=args.recompute)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
