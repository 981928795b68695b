"""The feature store: one Zarr v3 array per (project, feature set), written via xarray.

Each store is a dataset with a float32 variable ``values`` of dims
``(object, feature)``, the object ids as the ``object`` coordinate and the
feature names as the ``feature`` coordinate; its attributes say what produced
the vectors (extractor name, version, settings). Rows are chunked by thousands
(:func:`rows_per_chunk`: chunks of about 1 MiB), and :meth:`FeatureStore.read`
decompresses each chunk the wanted rows touch once.

Appends are idempotent: ids already present are skipped, so a re-run writes
nothing twice. There must be one writer per store at a time (flows write from
a single task). A failed writer calls :meth:`FeatureStore.truncate` with the
row count :meth:`FeatureStore.n_rows` gave before it began.

The store's root is a local folder or an fsspec URL (``s3://bucket/features``,
see :mod:`~ecotaxa_core.storage`); xarray and Zarr reach either.

Reads find the wanted rows through the set's id column. Each process keeps the
positions of the last few sets it read (:data:`_POSITIONS`), so the chunks of a
prediction over a 10-million-object project do not each read 80 MB of ids. The
cache is keyed by the set's ``generation``, a random attribute given to each new
store and renewed by every truncation, and its number of rows: appends only add
rows after those counted, anything else makes a new generation. A column still
being appended (unwritten rows read as id 0) is never cached.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecotaxa_core.storage import Location

__all__ = ["FeatureStore", "FeatureMatrix", "FeatureSetMismatch", "ROW_CHUNK", "rows_per_chunk"]

ROW_CHUNK = 4096  # rows a chunk holds at most
GENERATION_ATTR = "generation"
# Positions of the ids of recently read sets: (url, generation, n_rows) -> pandas Index.
_POSITIONS: "OrderedDict[tuple[str, str, int], Any]" = OrderedDict()
_POSITIONS_KEPT = 4
_POSITIONS_LOCK = threading.Lock()
_CHUNK_BYTES = 1 << 20  # ... and about this many bytes: wide sets get fewer rows a chunk


def rows_per_chunk(n_features: int) -> int:
    """Rows of a chunk of a set of ``n_features``: up to :data:`ROW_CHUNK`, about 1 MiB,
    a power of two, at least 64. Reading some rows decompresses the chunks they lie in:
    1 MiB keeps that cheap for 1,280-float deep vectors as for 50 morphological ones.

    >>> rows_per_chunk(50), rows_per_chunk(1280), rows_per_chunk(100_000)
    (4096, 128, 64)
    """
    rows = _CHUNK_BYTES // (4 * max(1, n_features))
    return max(64, min(ROW_CHUNK, 1 << max(0, rows.bit_length() - 1)))


class FeatureSetMismatch(ValueError):
    """Rows appended with other feature names than the store holds."""


@dataclass(frozen=True)
class FeatureMatrix:
    """Rows of one feature set: ``values[i]`` belongs to object ``object_ids[i]``."""

    object_ids: np.ndarray  # int64, (n_samples,)
    feature_names: list[str]
    values: np.ndarray  # float32, (n_samples, n_features)

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])


class FeatureStore:
    def __init__(self, root: str | os.PathLike):
        self.location = Location(root)
        self.root = None if self.location.is_url else Path(root)

    @property
    def where(self) -> str:
        """The store's folder or URL, as text (what a Dask worker opens it with)."""
        return self.location.where

    # -- layout ---------------------------------------------------------------
    @staticmethod
    def _check_name(feature_set: str) -> None:
        if not feature_set or "/" in feature_set or feature_set.startswith("."):
            raise ValueError(f"invalid feature set name {feature_set!r}")

    @staticmethod
    def project_folder(project_id: int) -> str:
        """The folder of a project's sets, relative to the store's root."""
        return f"project_{int(project_id)}"

    def store_rel(self, project_id: int, feature_set: str) -> str:
        """The Zarr store of a set, relative to the store's root."""
        self._check_name(feature_set)
        return f"{self.project_folder(project_id)}/{feature_set}.zarr"

    def store_url(self, project_id: int, feature_set: str) -> str:
        """The Zarr store of a set: a local path or a URL, as xarray and Zarr open it."""
        return self.location.url(self.store_rel(project_id, feature_set))

    def store_path(self, project_id: int, feature_set: str) -> Path:
        """The Zarr store of a set on local disk (a store behind a URL has none)."""
        return self.location.local_path(self.store_rel(project_id, feature_set))

    def exists(self, project_id: int, feature_set: str) -> bool:
        return self.location.is_file(f"{self.store_rel(project_id, feature_set)}/zarr.json")

    def feature_sets(self, project_id: int) -> list[str]:
        folder = self.project_folder(project_id)
        return [name[:-5] for name in self.location.names(folder)
                if name.endswith(".zarr") and not name.startswith(".")
                and self.location.is_file(f"{folder}/{name}/zarr.json")]

    # -- reading --------------------------------------------------------------
    def _zarr_args(self) -> dict[str, Any]:
        options = self.location.storage_options
        return {"storage_options": options} if options else {}

    def _open(self, project_id: int, feature_set: str):
        import xarray as xr

        # chunks=None: lazily indexed numpy-backed arrays, no dask graph (reads
        # happen inside Dask tasks, where a nested graph only adds overhead).
        return xr.open_zarr(self.store_url(project_id, feature_set), consolidated=False,
                            zarr_format=3, chunks=None, **self._zarr_args())

    def _group(self, project_id: int, feature_set: str):
        """The set's Zarr group, read from its metadata only (no id column loaded).

        Raises ValueError when its ``object`` and ``values`` arrays disagree in length
        (a writer killed between them), as opening it with xarray would.
        """
        import zarr

        group = zarr.open_group(self.store_url(project_id, feature_set), mode="r",
                                zarr_format=3, **self._zarr_args())
        n_ids, n_values = group["object"].shape[0], group["values"].shape[0]
        if n_ids != n_values:
            raise ValueError(f"feature set {feature_set!r} of project {project_id}: conflicting "
                             f"sizes for dimension 'object': {n_ids} ids, {n_values} rows")
        return group

    def n_rows(self, project_id: int, feature_set: str) -> int:
        if not self.exists(project_id, feature_set):
            return 0
        return int(self._group(project_id, feature_set)["object"].shape[0])

    def object_ids(self, project_id: int, feature_set: str) -> np.ndarray:
        if not self.exists(project_id, feature_set):
            return np.empty(0, dtype=np.int64)
        return _int64(self._group(project_id, feature_set)["object"][:])

    def feature_names(self, project_id: int, feature_set: str) -> list[str]:
        return [str(f) for f in self._group(project_id, feature_set)["feature"][:]]

    def attrs(self, project_id: int, feature_set: str) -> dict[str, Any]:
        return json.loads(self._group(project_id, feature_set).attrs.get("producer", "{}"))

    def missing(self, project_id: int, feature_set: str, object_ids: Sequence[int]) -> np.ndarray:
        """The ids among ``object_ids`` that have no row yet, in their given order."""
        ids = _int64(object_ids)
        return ids[~np.isin(ids, self.object_ids(project_id, feature_set))]

    def read(self, project_id: int, feature_set: str,
             object_ids: Sequence[int] | None = None) -> FeatureMatrix:
        """Rows for ``object_ids`` in that order (all rows if None).

        Objects without a row get a row of NaN, so callers can align several
        feature sets on one id list and impute the gaps.
        """
        url = self.store_url(project_id, feature_set)
        group = self._group(project_id, feature_set)
        names = [str(f) for f in group["feature"][:]]
        arr = group["values"]
        if object_ids is None:
            return FeatureMatrix(_int64(group["object"][:]), names,
                                 np.asarray(arr[:], dtype=np.float32))
        index = _stored_positions(url, group)
        wanted = _int64(object_ids)
        pos = index.get_indexer(wanted)
        found = pos >= 0
        chunk, n_rows = arr.chunks[0], len(index)
        if len(wanted) and found.all():
            return FeatureMatrix(wanted, names, _rows_at(arr, pos, chunk, n_rows))
        out = np.full((len(wanted), len(names)), np.nan, dtype=np.float32)
        if found.any():
            out[found] = _rows_at(arr, pos[found], chunk, n_rows)
        return FeatureMatrix(wanted, names, out)

    # -- writing --------------------------------------------------------------
    def append(self, project_id: int, feature_set: str, object_ids: Sequence[int],
               values: np.ndarray, feature_names: Sequence[str],
               producer: dict[str, Any] | None = None) -> int:
        """Append rows, skipping ids already stored; returns the number written.

        ``producer`` describes what computed the vectors; it is stored with the
        first rows and later appends must come from the same producer, so a
        matrix never mixes vectors of two extractor versions.
        """
        import xarray as xr

        ids = _int64(object_ids)
        values = np.asarray(values, dtype=np.float32)
        names = [str(f) for f in feature_names]
        if values.ndim != 2 or values.shape != (len(ids), len(names)):
            raise ValueError(f"values of shape {values.shape} do not match "
                             f"{len(ids)} ids x {len(names)} features")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("object ids appended twice in one call")
        url = self.store_url(project_id, feature_set)
        producer_json = json.dumps(producer or {}, sort_keys=True)
        exists = self.exists(project_id, feature_set)
        if exists:
            ds0 = self._open(project_id, feature_set)
            stored_names = [str(f) for f in ds0["feature"].values]
            if stored_names != names:
                raise FeatureSetMismatch(
                    f"feature set {feature_set!r} of project {project_id} holds "
                    f"{len(stored_names)} features, got {len(names)} others")
            if ds0.attrs.get("producer", "{}") != producer_json:
                raise FeatureSetMismatch(
                    f"feature set {feature_set!r} of project {project_id} was made by "
                    f"{ds0.attrs.get('producer')}, not {producer_json}; use a new feature set name")
            keep = ~np.isin(ids, ds0["object"].values.astype(np.int64))
            ids, values = ids[keep], values[keep]
        if len(ids) == 0:
            return 0
        ds = xr.Dataset(
            {"values": (("object", "feature"), values)},
            coords={"object": ids, "feature": np.asarray(names, dtype=object)},
        )
        # xarray rewrites the group attributes on every write: always pass them.
        ds.attrs["producer"] = producer_json
        # Appends keep the generation (they only add rows); a new store gets one.
        ds.attrs[GENERATION_ATTR] = (ds0.attrs.get(GENERATION_ATTR) if exists else None) \
            or uuid.uuid4().hex
        if exists:
            ds = ds.drop_vars("feature")
            ds.to_zarr(url, append_dim="object", consolidated=False, zarr_format=3,
                       **self._zarr_args())
        else:
            self.location.make_folder(self.project_folder(project_id))
            ds.to_zarr(url, mode="w-", consolidated=False, zarr_format=3, **self._zarr_args(),
                       encoding={"values": {"chunks": (rows_per_chunk(len(names)),
                                                       max(1, len(names)))},
                                 "object": {"chunks": (ROW_CHUNK * 16,)}})
        return int(len(ids))

    def truncate(self, project_id: int, feature_set: str, n_rows: int) -> None:
        """Drop every row past the first ``n_rows`` (undo of a failed append)."""
        import zarr

        if not self.exists(project_id, feature_set):
            return
        if n_rows == 0:
            self.delete(project_id, feature_set)
            return
        group = zarr.open_group(self.store_url(project_id, feature_set), mode="r+",
                                zarr_format=3, **self._zarr_args())
        # Each array on its own: a writer killed between them leaves them of unequal length.
        values, ids = group["values"], group["object"]
        if values.shape[0] > n_rows:
            values.resize((n_rows, values.shape[1]))
        if ids.shape[0] > n_rows:
            ids.resize((n_rows,))
        # After the cut: rows appended later at the same places are other rows.
        group.attrs[GENERATION_ATTR] = uuid.uuid4().hex

    def delete(self, project_id: int, feature_set: str) -> None:
        self.location.remove_folder(self.store_rel(project_id, feature_set))

    def delete_project(self, project_id: int) -> None:
        """Remove every set of a project."""
        self.location.remove_folder(self.project_folder(project_id))

    def rename(self, project_id: int, feature_set: str, new_name: str) -> None:
        """Give a set another name (replacing nothing: ``new_name`` must be free)."""
        self.location.move(self.store_rel(project_id, feature_set),
                           self.store_rel(project_id, new_name))

    # -- a copy kept while a set is rewritten -----------------------------------------
    def backup_rel(self, project_id: int, feature_set: str, tag: str) -> str:
        """Where :meth:`set_aside` keeps a set (hidden from :meth:`feature_sets`)."""
        self._check_name(feature_set)
        return f"{self.project_folder(project_id)}/.{feature_set}.zarr.before-{tag}"

    def set_aside(self, project_id: int, feature_set: str, tag: str) -> str:
        """Move the set out of the way before it is rewritten; returns its backup's name."""
        backup = self.backup_rel(project_id, feature_set, tag)
        self.location.move(self.store_rel(project_id, feature_set), backup)
        return backup

    def put_back(self, project_id: int, feature_set: str, backup: str) -> bool:
        """Replace the set by its backup ``backup``; False when there is none."""
        if not self.location.exists(backup):
            return False
        self.delete(project_id, feature_set)
        self.location.move(backup, self.store_rel(project_id, feature_set))
        return True

    def drop_backup(self, backup: str) -> None:
        self.location.remove_folder(backup)

    def remove_partial_files(self, project_id: int, feature_set: str) -> int:
        """Remove the temporary files of a write killed half-way (Zarr's ``*.partial``)."""
        rel = self.store_rel(project_id, feature_set)
        return self.location.remove(p for p in self.location.files_under(rel)
                                    if p.endswith(".partial"))


def _stored_positions(url: str, group) -> Any:
    """A pandas Index of the set's stored ids (positions by id), from this process's cache
    when the set is the one it was read from (see the module's doc)."""
    import pandas as pd

    generation = group.attrs.get(GENERATION_ATTR)
    key = (url, str(generation), int(group["object"].shape[0]))
    if generation:
        with _POSITIONS_LOCK:
            if key in _POSITIONS:
                _POSITIONS.move_to_end(key)
                return _POSITIONS[key]
    stored = _int64(group["object"][:])
    unwritten = stored == 0
    if unwritten.any():  # rows of an append under way: ids no object has, distinct
        stored = stored.copy()
        stored[unwritten] = -1 - np.flatnonzero(unwritten)
    index = pd.Index(stored)
    if generation and len(stored) == key[2] and not unwritten.any():
        with _POSITIONS_LOCK:
            _POSITIONS[key] = index
            while len(_POSITIONS) > _POSITIONS_KEPT:
                _POSITIONS.popitem(last=False)
    return index


def _rows_at(arr, positions: np.ndarray, chunk: int, n_rows: int) -> np.ndarray:
    """Rows ``positions`` of the 2-D Zarr array ``arr``, reading each chunk of
    rows they touch once, whole (a chunk is the unit Zarr decompresses): runs of
    touched chunks are read as slices; when most chunks are touched, all of it."""
    touched = np.unique(positions // chunk)
    if len(touched) * chunk >= n_rows // 2:
        return np.asarray(arr[:n_rows], dtype=np.float32)[positions]
    # Runs of consecutive chunks: [first, last] chunk numbers of each.
    breaks = np.flatnonzero(np.diff(touched) > 1)
    firsts = np.concatenate([touched[:1], touched[breaks + 1]])
    lasts = np.concatenate([touched[breaks], touched[-1:]])
    if len(firsts) == 1 and np.all(positions[1:] > positions[:-1]):
        # Increasing rows in one run of chunks (predicting objects in id order):
        # one slice, and no copy at all when the rows are consecutive.
        start, stop = int(positions[0]), int(positions[-1]) + 1
        block = np.asarray(arr[start:stop], dtype=np.float32)
        return block if stop - start == len(positions) else block[positions - start]
    out = np.empty((len(positions), arr.shape[1]), dtype=np.float32)
    order = np.argsort(positions, kind="stable")
    sorted_pos = positions[order]
    for first, last in zip(firsts, lasts):
        start, stop = int(first) * chunk, min(n_rows, (int(last) + 1) * chunk)
        lo, hi = np.searchsorted(sorted_pos, [start, stop])
        block = np.asarray(arr[start:stop], dtype=np.float32)
        out[order[lo:hi]] = block[sorted_pos[lo:hi] - start]
    return out


def _int64(values) -> np.ndarray:
    """``values`` as int64 (an ``array("q")`` reads as numpy's longlong, which zarr
    does not know though it is the same type)."""
    return np.asarray(values).astype(np.int64, copy=False).view(np.int64)
