"""What a features flow needs: the objects still to compute, and one chunk's computation.

:func:`pending_objects` asks the database and the feature store which objects
of a project have no row yet in a feature set. :func:`compute_chunk` is the
plain function a Dask worker runs on a list of image paths; it keeps one
extractor per worker process (:func:`cached_extractor`), so a deep network is
loaded once per process and per producer settings, not once per chunk.
:func:`append_chunk` writes a computed chunk from the single writer, undoing a
half-written append.

>>> rows = compute_chunk("morpho", {}, [])
>>> rows.shape, rows.dtype
((0, 29), dtype('float32'))
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from sqlalchemy import select

from ecotaxa_core.db.models import Image, Object
from ecotaxa_core.features.extractor import FeatureExtractor, get_extractor
from ecotaxa_core.projects import get_project
from ecotaxa_core.store.feature_store import FeatureSetMismatch

if TYPE_CHECKING:
    from ecotaxa_core.instance import Instance

__all__ = ["pending_objects", "compute_chunk", "cached_extractor", "append_chunk",
           "check_producer", "split_chunks", "balanced_chunk_size", "project_bottom_crop"]


def pending_objects(inst: "Instance", project_id: int,
                    feature_set: str) -> tuple[np.ndarray, list[str]]:
    """Objects of the project without a row in ``feature_set``, with their image.

    Returns the object ids (int64, ascending) and the absolute path of each
    one's rank-0 image in the vault. Objects without a rank-0 image have
    nothing to compute and are left out. Raises ``ProjectNotFound``.
    """
    with inst.sessions() as session:
        get_project(session, project_id)
        rows = session.execute(
            select(Object.id, Image.file_path)
            .join(Image, (Image.object_id == Object.id) & (Image.rank == 0))
            .where(Object.project_id == project_id)
            .order_by(Object.id)).all()
    if not rows:
        return np.empty(0, dtype=np.int64), []
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    done = inst.features.object_ids(project_id, feature_set)
    todo = np.flatnonzero(~np.isin(ids, done))
    return ids[todo], [str(inst.vault.path(rows[i][1])) for i in todo]


def project_bottom_crop(inst: "Instance", project_id: int) -> int:
    """Scale-bar rows to crop for this project's instrument (ZooScan: 31)."""
    from ecotaxa_core.features.preprocessing import default_bottom_crop

    with inst.sessions() as session:
        return default_bottom_crop(get_project(session, project_id).instrument)


def split_chunks(n_items: int, chunk_size: int) -> list[slice]:
    """Consecutive slices of at most ``chunk_size`` items covering ``range(n_items)``.

    >>> split_chunks(5, 2)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [slice(start, min(start + chunk_size, n_items))
            for start in range(0, n_items, chunk_size)]


def balanced_chunk_size(n_items: int, chunk_size: int, n_slots: int) -> int:
    """A chunk size of at most ``chunk_size`` that gives every one of ``n_slots`` work.

    A project smaller than ``chunk_size x n_slots`` is split evenly over the
    cluster's threads rather than left to one of them.

    >>> balanced_chunk_size(10_000, 2048, 2), balanced_chunk_size(1000, 2048, 2)
    (2048, 500)
    >>> balanced_chunk_size(3, 2048, 8)
    1
    """
    if n_items <= 0:
        return max(1, chunk_size)
    return max(1, min(chunk_size, -(-n_items // max(1, n_slots))))


@lru_cache(maxsize=4)
def _cached_extractor(name: str, kwargs_json: str) -> FeatureExtractor:
    return get_extractor(name, **json.loads(kwargs_json))


def cached_extractor(name: str, extractor_kwargs: dict[str, Any]) -> FeatureExtractor:
    """This process's extractor for ``(name, extractor_kwargs)``, built on first use.

    Keyed by the settings, so a worker serving two input sizes keeps two
    networks, and a network is loaded once per process whatever the number of
    chunks.
    """
    return _cached_extractor(name, json.dumps(extractor_kwargs, sort_keys=True))


def compute_chunk(extractor_name: str, extractor_kwargs: dict[str, Any],
                  paths: Sequence[str]) -> np.ndarray:
    """Feature rows of the images at ``paths``: float32 ``(len(paths), n_features)``.

    Runs anywhere (a Dask worker, a notebook); ``extractor_kwargs`` are
    :func:`~ecotaxa_core.features.extractor.get_extractor` keywords.
    """
    extractor = cached_extractor(extractor_name, extractor_kwargs)
    return extractor.extract([Path(p) for p in paths])


def check_producer(inst: "Instance", project_id: int, extractor: FeatureExtractor) -> None:
    """Raise ``FeatureSetMismatch`` if the project's rows were made by another producer.

    Called before computing anything, so a change of settings (another input
    size, another crop) fails at once instead of after the first chunk.
    """
    store = inst.features
    if not store.exists(project_id, extractor.name):
        return
    stored = store.attrs(project_id, extractor.name)
    wanted = json.loads(json.dumps(extractor.producer()))
    if stored != wanted:
        raise FeatureSetMismatch(
            f"feature set {extractor.name!r} of project {project_id} was made by {stored}, "
            f"not {wanted}; delete it or keep the settings it was made with")


def append_chunk(inst: "Instance", project_id: int, extractor: FeatureExtractor,
                 object_ids: np.ndarray, values: np.ndarray) -> int:
    """Append one computed chunk to the extractor's feature set; rows written.

    Ids already stored are skipped. If the append fails half-way, the store
    is truncated back to its former length before the error propagates.
    """
    store = inst.features
    n_before = store.n_rows(project_id, extractor.name)
    try:
        return store.append(project_id, extractor.name, object_ids, values,
                            extractor.feature_names, extractor.producer())
    except BaseException:
        store.truncate(project_id, extractor.name, n_before)
        raise
