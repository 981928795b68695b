"""Where the vault and the feature store keep their files: a local folder or an fsspec URL.

A plain path (``/data/ecotaxa/vault``) is a folder of this machine; a URL
(``s3://bucket/ecotaxa/vault``, ``gs://…``, ``file:///mnt/share/vault``) is
reached through `fsspec <https://filesystem-spec.readthedocs.io>`_, so that
every Dask worker of a cluster reads the same files. A :class:`Location` gives
both the same calls; the writers that take fast local paths (an import's
hard links and renames) ask :attr:`Location.is_url` first.

Credentials and endpoints never pass through EcoTaxa's settings: fsspec's
protocol libraries read their usual places (s3fs: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``~/.aws``), and fsspec its own configuration
(``FSSPEC_S3='{"endpoint_url": "http://minio:9000"}'``, or a JSON file in
``FSSPEC_CONFIG_DIR``), on every machine that runs a worker.

>>> Location("/data/vault").is_url, Location("s3://bucket/vault").is_url
(False, True)
>>> Location("file:///tmp/eco/vault").url("images/0001/12_0.png")
'file:///tmp/eco/vault/images/0001/12_0.png'
"""

from __future__ import annotations

import os
import re
import uuid
from functools import cached_property
from pathlib import Path
from typing import IO, Iterable

__all__ = ["Location", "is_url", "read_bytes"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")


def is_url(where: str | os.PathLike) -> bool:
    """Whether ``where`` is an fsspec URL (``scheme://…``) rather than a local path.

    >>> is_url("s3://b/k"), is_url("/tmp/x"), is_url("simplecache::s3://b/k"), is_url("C:/x")
    (True, False, True, False)
    """
    return bool(_URL.match(str(where)))


def read_bytes(where: str | os.PathLike) -> bytes:
    """The whole content of the file at ``where`` (a local path or a URL), in one read."""
    if is_url(where):
        import fsspec

        with fsspec.open(str(where), "rb") as f:
            return f.read()
    return Path(where).read_bytes()


class Location:
    """A folder, local or behind an fsspec URL; files in it are named by relative paths
    with ``/`` separators (as the database keeps them)."""

    def __init__(self, where: str | os.PathLike):
        self.where = str(where)
        self.is_url = is_url(self.where)

    @cached_property
    def _fs_and_base(self):
        import fsspec

        fs, base = fsspec.core.url_to_fs(self.where, **self.storage_options)
        return fs, base.rstrip("/")

    @property
    def fs(self):
        """The fsspec file system (its library, s3fs ..., is imported on first use)."""
        return self._fs_and_base[0]

    @property
    def base(self) -> str:
        """The location as a path of :attr:`fs`."""
        return self._fs_and_base[1]

    @property
    def storage_options(self) -> dict:
        """Options for fsspec and Zarr: a ``file://`` location makes the folders it
        writes into (object stores have none to make)."""
        return {"auto_mkdir": True} if self.where.startswith("file://") else {}

    def __repr__(self) -> str:
        return f"Location({self.where!r})"

    # -- names --------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def url(self, rel: str = "") -> str:
        """Where the file ``rel`` is: a local path for a local folder, else a URL."""
        path = self._path(rel)
        return path if not self.is_url else self.fs.unstrip_protocol(path)

    def local_path(self, rel: str = "") -> Path:
        """The file ``rel`` on this machine's disk; a location behind a URL has none."""
        if self.is_url:
            raise ValueError(f"{self.where} is not a local folder")
        return Path(self.where) / rel

    # -- reading ------------------------------------------------------------------------
    def _fresh(self, path: str) -> str:
        """``path``, with what fsspec remembers of its listings forgotten: other processes
        (Dask workers, the dashboard) write to the same bucket."""
        if self.is_url:
            self.fs.invalidate_cache(path)
        return path

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._fresh(self._path(rel)))

    def is_file(self, rel: str) -> bool:
        return self.fs.isfile(self._fresh(self._path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def open(self, rel: str, mode: str = "rb") -> IO[bytes]:
        return self.fs.open(self._path(rel), mode)

    def names(self, rel: str = "") -> list[str]:
        """Names of the entries of folder ``rel`` (none if it does not exist)."""
        try:
            entries = self.fs.ls(self._fresh(self._path(rel)), detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def files_under(self, rel: str) -> list[str]:
        """Relative paths of the files under folder ``rel``, at any depth."""
        prefix = self._path(rel).rstrip("/") + "/"
        try:
            found = self.fs.find(self._fresh(self._path(rel)))
        except FileNotFoundError:
            return []
        return [f"{rel}/{p[len(prefix):]}" for p in found if p.startswith(prefix)]

    # -- writing ------------------------------------------------------------------------
    def make_folder(self, rel: str = "") -> None:
        if not self.is_url or self.where.startswith("file://"):
            self.fs.makedirs(self._path(rel), exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write the file ``rel`` whole: readers see the old file or the new one, never a
        part (a temporary name then a rename; an object store's put is whole anyway)."""
        path = self._path(rel)
        if self.is_url and not self.where.startswith("file://"):
            self.fs.pipe_file(path, data)
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def put_file(self, local: str | os.PathLike, rel: str) -> None:
        """Copy the local file ``local`` to ``rel``, whole (see :meth:`write_bytes`)."""
        self.write_bytes(rel, Path(local).read_bytes())

    def put_folder(self, local: str | os.PathLike, rel: str) -> int:
        """Copy the local folder ``local`` (files at any depth) under ``rel``; the count."""
        local = Path(local)
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        if not files:
            return 0
        self.fs.put([str(p) for p in files],
                    [self._path(f"{rel}/{p.relative_to(local).as_posix()}") for p in files])
        return len(files)

    def copy(self, src: str, dest: str) -> None:
        """Copy the file ``src`` to ``dest``, both relative to this location."""
        self.make_folder(dest.rsplit("/", 1)[0] if "/" in dest else "")
        self.fs.copy(self._path(src), self._path(dest))

    def move(self, src: str, dest: str) -> None:
        """Rename ``src`` (a file or a folder) to ``dest``; atomic on a local disk, a copy
        then a removal on an object store."""
        if not self.is_url:
            os.replace(self.local_path(src), self.local_path(dest))
            return
        src_path, dest_path = self._fresh(self._path(src)), self._path(dest)
        files = self.fs.find(src_path)
        if not files:
            raise FileNotFoundError(self.url(src))
        # Key by key (an object store has no folders to rename; fsspec's own recursive
        # move trips over the folder's name on some of them).
        targets = [dest_path + f[len(src_path):] if f != src_path else dest_path for f in files]
        self.fs.copy(files, targets)
        self.fs.rm(files)

    def remove(self, rels: Iterable[str]) -> int:
        """Remove the files ``rels`` that exist; the number removed (on an object store,
        which does not tell, the number asked)."""
        paths = [self._path(r) for r in rels if r]
        if not paths:
            return 0
        if not self.is_url:
            removed = 0
            for p in paths:
                try:
                    os.unlink(p)
                    removed += 1
                except FileNotFoundError:
                    pass
            return removed
        removed = 0
        for start in range(0, len(paths), 1000):  # one request per 1,000 keys on S3
            batch = paths[start:start + 1000]
            try:
                self.fs.rm(batch)
                removed += len(batch)  # an object store does not say which were there
            except FileNotFoundError:
                there = [p for p in batch if self.fs.exists(p)]
                if there:
                    self.fs.rm(there)
                removed += len(there)
        return removed

    def remove_folder(self, rel: str) -> int:
        """Remove the folder ``rel`` with everything in it; the number of files removed."""
        files = self.files_under(rel)
        if self.fs.exists(self._path(rel)):
            self.fs.rm(self._path(rel), recursive=True)
        return len(files)
