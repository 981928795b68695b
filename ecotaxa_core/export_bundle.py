"""Writing a project as an EcoTaxa TSV bundle: a zip that imports back unchanged.

The zip holds either one ``ecotaxa_<project>.tsv`` at its root or, split by
sample as EcoTaxa's backups are, one folder per sample holding
``ecotaxa_<sample>.tsv`` (rows: :mod:`~ecotaxa_core.export_tsv`). Images, when
included, lie next to the TSV that names them, under their original name
(``img_file_name`` as imported), so a re-import gives them the same name;
rows of a bundle that named one file for several objects share it again.
As EcoTaxa does, a name already used in the folder by other bytes is prefixed
with the image rank (then with the image id).
"""

from __future__ import annotations

import csv
import filecmp
import io
import os
import queue
import re
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ecotaxa_core.export_tsv import NEEDS_QUOTES, ProjectRows
from ecotaxa_core.instance import Instance

__all__ = ["BundleStats", "write_bundle"]

# zlib level of the TSV files: 1 is several times faster than the default 6 and
# the TSV of numbers it writes is only a little larger.
_TSV_COMPRESSLEVEL = 1


@dataclass(frozen=True)
class BundleStats:
    """What :func:`write_bundle` wrote."""

    n_objects: int
    n_images: int  # image rows of the TSV files (files in the zip when images are included)
    tsv_files: list[str]


def write_bundle(inst: Instance, project_id: int, path: Path, *, with_images: bool = True,
                 split_by_sample: bool = False,
                 progress: Callable[[int], None] | None = None) -> BundleStats:
    """Write the project's bundle zip at ``path`` (replaced only once complete).

    Parameters
    ----------
    inst : the instance holding the project.
    project_id : the project to export.
    path : the zip to write; a ``.part`` file next to it holds the work in progress.
    with_images : copy the image files into the zip; without them the TSV still
        names the files it would hold.
    split_by_sample : one folder and TSV per sample instead of one TSV.
    progress : called now and then with the number of objects written.
    """
    part = path.with_name(path.name + ".part")
    try:
        with inst.sessions() as s, zipfile.ZipFile(
                part, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_TSV_COMPRESSLEVEL,
                allowZip64=True) as zf:
            source = ProjectRows(s, project_id)
            writer = _BundleWriter(zf, source, inst, with_images, progress,
                                   source.shared_image_names())
            if split_by_sample:
                folders = _Names()
                for sample_id, orig_id in source.samples_in_order():
                    folder = folders.take(_folder_name(orig_id))
                    writer.write_tsv(f"{folder}/ecotaxa_{folder}.tsv", folder, sample_id,
                                     by_sample=True)
            else:
                writer.write_tsv(f"ecotaxa_{project_id}.tsv", "", None, by_sample=False)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return BundleStats(n_objects=writer.n_objects, n_images=writer.n_images,
                       tsv_files=writer.tsv_files)


# -- zip ------------------------------------------------------------------------------
_UNSAFE_FOLDER = re.compile(r"[^A-Za-z0-9 ._()-]+")


def _folder_name(orig_id: str) -> str:
    """A folder name for a sample (EcoTaxa keeps letters, digits, space, ``.-()``)."""
    name = _UNSAFE_FOLDER.sub("_", orig_id).strip(" .")
    return name or "sample"


class _Names:
    """Paths already used in one folder of the zip (files and the folders they make)."""

    def __init__(self, shared: frozenset[str] = frozenset()) -> None:
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        # Original names several images of the folder have; for these only, the
        # image written under a name: name -> (vault path, object id).
        self.shared = shared
        self.sources: dict[str, tuple[str, int]] = {}

    def free(self, name: str) -> bool:
        if name in self.files or name in self.dirs:
            return False
        return "/" not in name or not any(p in self.files for p in _parents(name))

    def take(self, name: str, source: tuple[str, int] | None = None) -> str:
        candidate, n = name, 2
        while not self.free(candidate):
            candidate, n = f"{name}_{n}", n + 1
        self.use(candidate, source)
        return candidate

    def use(self, name: str, source: tuple[str, int] | None = None) -> None:
        self.files.add(name)
        if source is not None:
            self.sources[name] = source
        if "/" in name:
            self.dirs.update(_parents(name))


def _parents(name: str) -> list[str]:
    """The folders a zip path makes: ``a/b/c.jpg`` -> ``['a/b', 'a']``."""
    out = []
    cut = name.rfind("/")
    while cut > 0:
        name = name[:cut]
        out.append(name)
        cut = name.rfind("/")
    return out


def _safe_relative(name: str) -> str:
    """The original image name as a relative path inside the zip ('' if nothing is left)."""
    if "\\" not in name and not name.startswith((".", "/")) and "/." not in name \
            and "//" not in name and not name.endswith("/"):
        return name  # already a plain relative path (the usual case)
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


@dataclass
class _BundleWriter:
    zf: zipfile.ZipFile
    source: ProjectRows
    inst: Instance
    with_images: bool
    progress: Callable[[int], None] | None
    shared: frozenset[str]  # original names several images have (see _Names)
    n_objects: int = 0
    n_images: int = 0
    tsv_files: list[str] = field(default_factory=list)

    def write_tsv(self, tsv_name: str, folder: str, sample_id: int | None, *,
                  by_sample: bool) -> None:
        names = _Names(self.shared)
        names.use(PurePosixPath(tsv_name).name)
        with self._tsv_stream(tsv_name) as out:
            writer = csv.writer(out, delimiter="\t", lineterminator="\n")
            writer.writerow([c for c, _ in self.source.columns])
            writer.writerow([f"[{k}]" for _, k in self.source.columns])
            last_id = None
            write = out.write
            for oid, head, tail, (image_id, rank, original, file_path) in \
                    self.source.rows(sample_id, by_sample):
                if oid != last_id:
                    last_id = oid
                    self.n_objects += 1
                    if self.progress is not None and self.n_objects % 10000 == 0:
                        self.progress(self.n_objects)
                if image_id is None:
                    name, rank_text = "", ""
                else:
                    name, new_file = self._image_name(names, oid, original, rank, image_id,
                                                      file_path)
                    rank_text = str(rank)
                    self.n_images += 1
                    if self.with_images and new_file:
                        arcname = f"{folder}/{name}" if folder else name
                        self._add_image(file_path, arcname)
                if head.text is not None and tail.text is not None \
                        and NEEDS_QUOTES.search(name) is None:
                    write(f"{head.text}\t{name}\t{rank_text}\t{tail.text}\n")
                else:
                    writer.writerow(head.cells + [name, rank_text] + tail.cells)
        self.tsv_files.append(tsv_name)

    def _add_image(self, rel: str, arcname: str) -> None:
        """Store the vault file ``rel`` as ``arcname`` (images are compressed already)."""
        vault = self.inst.vault
        if vault.is_url:
            self.zf.writestr(arcname, vault.read_bytes(rel), compress_type=zipfile.ZIP_STORED)
        else:
            self.zf.write(vault.path(rel), arcname, compress_type=zipfile.ZIP_STORED)

    def _same_bytes(self, a: str, b: str) -> bool:
        """Whether the vault files ``a`` and ``b`` hold the same bytes."""
        vault = self.inst.vault
        try:
            if vault.is_url:
                return vault.read_bytes(a) == vault.read_bytes(b)
            return filecmp.cmp(vault.path(a), vault.path(b), shallow=False)
        except OSError:
            return False

    def _image_name(self, names: _Names, object_id: int, original: str, rank: int,
                    image_id: int, file_path: str) -> tuple[str, bool]:
        """The image's name in its folder, and whether it is a new file of the zip.

        Rows of a bundle may name one file for several objects; an image with the
        name and the bytes of one already written for another object shares its
        entry, as it did in the bundle it came from.
        """
        name = _safe_relative(original or "")
        if not name:
            name = f"{image_id}{PurePosixPath(file_path).suffix.lower()}"
        source = (file_path, object_id) if original in names.shared else None
        if source is not None and name in names.files:
            first = names.sources.get(name)
            if first is not None and first[1] != object_id and self._same_bytes(
                    first[0], file_path):
                return name, False
        for candidate in (name, f"{rank}/{name}", f"{image_id}/{name}"):
            if names.free(candidate):
                names.use(candidate, source)
                return candidate, True
        return names.take(f"{image_id}/{name}", source), True

    @contextmanager
    def _tsv_stream(self, tsv_name: str) -> Iterator["_ChunkSink"]:
        """A text stream into the zip entry, or into a temporary file while images go in."""
        if not self.with_images:
            with self.zf.open(tsv_name, "w", force_zip64=True) as raw:
                sink = _ChunkSink(raw)
                try:
                    yield sink
                except BaseException:
                    sink.abort()
                    raise
                sink.close()
            return
        tmp = Path(self.zf.filename).with_name(Path(self.zf.filename).name + ".tsv")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                yield out
            with open(tmp, "rb") as src, self.zf.open(tsv_name, "w", force_zip64=True) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        finally:
            tmp.unlink(missing_ok=True)


class _ChunkSink:
    """A text stream whose UTF-8 bytes a second thread writes into ``raw``, by 1 MiB chunks.

    The zip entry compresses what it is given; zlib releases the GIL, so the
    compression runs on another core while this one formats the next rows.
    """

    _CHUNK = 1 << 20

    def __init__(self, raw: io.RawIOBase):
        self.raw = raw
        self.parts: list[str] = []
        self.size = 0
        self.error: BaseException | None = None
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self.thread = threading.Thread(target=self._drain, name="tsv-zip-writer", daemon=True)
        self.thread.start()

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= self._CHUNK:
            self._flush()
        return len(text)

    def close(self) -> None:
        self._flush()
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop the writer thread after a failure of the producer."""
        self.parts = []
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join()

    def _flush(self) -> None:
        if self.parts:
            data = "".join(self.parts).encode("utf-8")
            self.parts, self.size = [], 0
            self._put(data)

    def _put(self, item: bytes | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.raw.write(item)
                except BaseException as e:  # handed to the producer by _put / close
                    self.error = e
