"""What a features flow needs: the objects still to compute, and one chunk's computation.

:func:`pending_objects` asks the database and the feature store which objects
of a project have no row yet in a feature set. :func:`compute_chunk` is the
plain function a Dask worker runs on a list of image paths; it keeps one
extractor per worker process (:func:`cached_extractor`), so a deep network is
loaded once per process and per producer settings, not once per chunk.
:func:`append_chunk` writes a computed chunk from the single writer.

A killed writer leaves nothing half written. The writer of a project's
feature sets holds :func:`feature_writer_lock` (``fcntl.flock``, which the
system releases when the process dies), and every write goes through
:func:`journaled_write`: a journal file under ``work_dir/feature_journals``
names the row count to go back to, is written before the store is touched and
removed once the write is complete. An error undoes the write at once; a
killed process leaves its journal, and :func:`recover_interrupted_writes`,
run by the next writer under the lock, cuts the store back. Appends skip ids
already stored, so the objects whose rows were cut are simply computed again:
each object ends with exactly one row.

>>> rows = compute_chunk("morpho", {}, [])
>>> rows.shape == (0, len(get_extractor("morpho").feature_names)), rows.dtype
(True, dtype('float32'))
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from sqlalchemy import select

from ecotaxa_core.db.models import Image, Object
from ecotaxa_core.durable_files import file_lock, write_json_atomically
from ecotaxa_core.features.extractor import FeatureExtractor, get_extractor
from ecotaxa_core.projects import get_project
from ecotaxa_core.store.feature_store import FeatureSetMismatch
from ecotaxa_core.storage import is_url

if TYPE_CHECKING:
    from ecotaxa_core.instance import Instance

__all__ = ["pending_objects", "compute_chunk", "cached_extractor", "append_chunk",
           "check_producer", "split_chunks", "balanced_chunk_size", "project_bottom_crop",
           "project_pixel_size_um",
           "feature_writer_lock", "journaled_write", "recover_interrupted_writes",
           "JOURNAL_DIR", "LOCK_DIR"]

JOURNAL_DIR = "feature_journals"
LOCK_DIR = "feature_locks"


def pending_objects(inst: "Instance", project_id: int,
                    feature_set: str) -> tuple[np.ndarray, list[str]]:
    """Objects of the project without a row in ``feature_set``, with their image.

    Returns the object ids (int64, ascending) and where each one's rank-0 image
    is (:meth:`~ecotaxa_core.vault.Vault.url`: a local path or a URL). Objects without a rank-0 image have
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
    return ids[todo], [inst.vault.url(rows[i][1]) for i in todo]


def project_bottom_crop(inst: "Instance", project_id: int) -> int:
    """Scale-bar rows to crop for this project's instrument (ZooScan: 31)."""
    from ecotaxa_core.features.preprocessing import default_bottom_crop

    with inst.sessions() as session:
        return default_bottom_crop(get_project(session, project_id).instrument)


def project_pixel_size_um(inst: "Instance", project_id: int) -> float | None:
    """The size of a pixel of this project's images in micrometres (None: unknown)."""
    with inst.sessions() as session:
        return get_project(session, project_id).pixel_size_um


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


_BUILDING = threading.Lock()  # a worker's threads start their first chunks together


def cached_extractor(name: str, extractor_kwargs: dict[str, Any]) -> FeatureExtractor:
    """This process's extractor for ``(name, extractor_kwargs)``, built on first use.

    Keyed by the settings, so a worker serving two input sizes keeps two
    networks, and a network is loaded once per process whatever the number of
    chunks.
    """
    with _BUILDING:
        return _cached_extractor(name, json.dumps(extractor_kwargs, sort_keys=True))


def compute_chunk(extractor_name: str, extractor_kwargs: dict[str, Any],
                  paths: Sequence[str]) -> np.ndarray:
    """Feature rows of the images at ``paths``: float32 ``(len(paths), n_features)``.

    Runs anywhere (a Dask worker, a notebook); ``extractor_kwargs`` are
    :func:`~ecotaxa_core.features.extractor.get_extractor` keywords.
    """
    extractor = cached_extractor(extractor_name, extractor_kwargs)
    return extractor.extract([p if is_url(p) else Path(p) for p in paths])


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
            f"not {wanted}; keep the settings it was made with, or compute it again with "
            f"`ecotaxa features {project_id} --set {extractor.name} --recompute`")


def append_chunk(inst: "Instance", project_id: int, extractor: FeatureExtractor,
                 object_ids: np.ndarray, values: np.ndarray) -> int:
    """Append one computed chunk to the extractor's feature set; rows written.

    Ids already stored are skipped. The append is journaled
    (:func:`journaled_write`): if it fails half-way the store is cut back to
    its former length before the error propagates, and if the process dies
    the next writer cuts it back. Call it from the project's single writer
    (the features flow holds :func:`feature_writer_lock`).
    """
    store = inst.features
    recover_interrupted_writes(inst, project_id, [extractor.name])
    with journaled_write(inst, project_id, extractor.name,
                         store.n_rows(project_id, extractor.name)):
        return store.append(project_id, extractor.name, object_ids, values,
                            extractor.feature_names, extractor.producer())


# -- one writer per project, and nothing half written when it dies -------------------
def _work_path(inst: "Instance", folder: str, project_id: int) -> Path:
    return Path(inst.settings.work_dir) / folder / f"project_{int(project_id)}"


@contextmanager
def feature_writer_lock(inst: "Instance", project_id: int) -> Iterator[None]:
    """Hold the lock of the writer of a project's feature sets; waits for a running one.

    A lock file under ``work_dir/feature_locks``, locked with ``fcntl.flock``:
    the system releases it when its process dies, so holding it means no other
    live process writes the project's feature stores, and journals left behind
    belong to a dead one. The lock is taken once per process (a second take in
    the same process waits forever).

    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> from ecotaxa_core.settings import Settings
    >>> inst = SimpleNamespace(settings=Settings(home=tempfile.mkdtemp()))
    >>> with feature_writer_lock(inst, 1), feature_writer_lock(inst, 2):
    ...     sorted(p.name for p in (inst.settings.work_dir / LOCK_DIR).iterdir())
    ['project_1.lock', 'project_2.lock']
    """
    with file_lock(_work_path(inst, LOCK_DIR, project_id).with_suffix(".lock")):
        yield


def _journal_path(inst: "Instance", project_id: int, feature_set: str) -> Path:
    inst.features.store_rel(project_id, feature_set)  # validates the name
    return _work_path(inst, JOURNAL_DIR, project_id) / f"{feature_set}.json"


@contextmanager
def journaled_write(inst: "Instance", project_id: int, feature_set: str,
                    keep_rows: int) -> Iterator[None]:
    """Around a write to a feature set whose first ``keep_rows`` rows must survive it.

    The journal is on disk before the block runs and removed after it ends
    (that removal is the commit). If the block raises, the store is cut back
    to ``keep_rows`` rows (deleted when 0: a rewrite from scratch); if the
    process dies, :func:`recover_interrupted_writes` does it later.
    """
    path = _journal_path(inst, project_id, feature_set)
    write_json_atomically(path, {"feature_set": feature_set, "keep_rows": int(keep_rows),
                          "pid": os.getpid()})
    try:
        yield
    except BaseException:
        _cut_back(inst, project_id, feature_set, int(keep_rows))
        path.unlink(missing_ok=True)
        raise
    path.unlink()


def recover_interrupted_writes(inst: "Instance", project_id: int,
                               feature_sets: Sequence[str] | None = None) -> dict[str, int]:
    """Undo the feature-store writes of the project that a dead process left half done.

    Each journaled feature set (of ``feature_sets``, or all) is cut back to
    the row count its journal names, then the journal is removed; returns the
    rows kept per feature set recovered. Run it from the project's single
    writer (under :func:`feature_writer_lock`): a live writer's journal would
    be undone too.
    """
    folder = _work_path(inst, JOURNAL_DIR, project_id)
    if not folder.is_dir():
        return {}
    if feature_sets is None:
        journals = sorted(folder.glob("*.json"))
        for tmp in folder.glob("*.json.tmp"):  # a journal never finished: nothing written
            tmp.unlink(missing_ok=True)
    else:
        journals = [p for p in (_journal_path(inst, project_id, n) for n in feature_sets)
                    if p.exists()]
    recovered = {}
    for path in journals:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            feature_set, keep_rows = str(data["feature_set"]), int(data["keep_rows"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable feature-store journal {path}: {exc}; the feature "
                             f"set it names may be half written: delete that feature set "
                             f"and this file, then run the features flow again") from exc
        recovered[feature_set] = _cut_back(inst, project_id, feature_set, keep_rows)
        path.unlink()
    return recovered


def _cut_back(inst: "Instance", project_id: int, feature_set: str, keep_rows: int) -> int:
    """Cut a possibly half-appended feature set back to ``keep_rows`` rows; rows left."""
    store = inst.features
    if keep_rows <= 0:
        store.delete(project_id, feature_set)
        return 0
    store.truncate(project_id, feature_set, keep_rows)
    try:
        return store.n_rows(project_id, feature_set)
    except ValueError:
        # xarray appends the ``object`` coordinate before ``values``, and
        # FeatureStore.truncate only shortens ``object`` along with a longer
        # ``values``: a process killed between the two leaves ``object`` longer
        # than ``values``, which no cut to ``keep_rows`` mends. One row less
        # makes both arrays shorter; that row's object is computed again.
        store.truncate(project_id, feature_set, keep_rows - 1)
        return store.n_rows(project_id, feature_set)
