"""The images of an import, checked and staged in one pass over their files.

Each distinct file is read once: its bytes are decoded to the last pixel (a
truncated file, a text file named ``.jpg`` or a decompression bomb is refused
here, with the file, line and column that name it), its thumbnail is made from
the decoded pixels (unless the image is its own thumbnail, see
:func:`~ecotaxa_core.vault.needs_thumbnail`), and the original bytes and the
thumbnail are written straight to the run's own folders of the vault
(:class:`StagingDirs`: ``images/run_<id>/<bucket>/<k>/f<n><ext>`` and
``thumbs/run_<id>/<bucket>/<k>/f<n>.jpg``, 10,000 files a bucket spread over 16
folders ``k``), outside any
transaction, where they stay once the import commits: nothing is moved after.
The import's journal names those folders, so a failed or killed import removes
them. Files of the import's own extraction area are hard-linked rather than
copied; a user's file is copied, so that changing it later cannot change the
vault.

An :class:`ImageStager` works in threads (Pillow releases the GIL while it
decodes and encodes, the kernel while it creates files), then, for a large
import, in worker processes, while the caller goes on: the bundle reader hands it each image as it reads the line naming it,
so reading the TSV and staging the images overlap. Only the images the import
will store count in the end (:meth:`ImageStager.finish`): a problem with a file
the import does not store (an object already present) is not reported.

>>> from ecotaxa_core.import_plan import ImagePlan
>>> report = ImportReport()
>>> im = ImagePlan("/no/such.png", 0, "such.png", "ecotaxa_a.tsv", 3)
>>> with ImageStager(None) as stager:  # None: check only
...     stager.finish(lambda: [im], report)
>>> print(report.issues[0])
ecotaxa_a.tsv line 3, column img_file_name: cannot read image 'such.png' (file not found)
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import threading
from array import array
from collections import deque
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from PIL import Image as PILImage

from ecotaxa_core.image_files import (DISPLAY_MODES, MAX_IMAGE_PIXELS, ImageTooLarge,
                                      describe_image_error, open_image, vault_extension)
from ecotaxa_core.import_plan import ImagePlan
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.vault import make_thumbnail, needs_thumbnail

__all__ = ["ImageStager", "StagingDirs", "StagedImage", "ImageProblem", "default_workers"]

# Larger files are decoded from their path and copied, not read into memory whole.
_READ_WHOLE_BYTES = 32 * 1024 * 1024
_IN_FLIGHT = 64  # batches handed to the workers and not done yet, at most
_PROGRESS_EVERY = 64
_THREAD_BATCH = 8  # files a thread checks in one go
_PROCESS_BATCH = 64  # files a worker process checks in one go
_THREADS_UP_TO = 2048  # files done by threads before worker processes start
_BUCKET = 10_000  # files a vault folder (of _SPREAD sub-folders) holds at most
_SPREAD = 16


def default_workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def default_processes() -> int:
    """Worker processes of a large import: one core is left to the TSV reading."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class ImageProblem:
    """Why an image file is refused: ``code`` for programs, ``reason`` for people."""

    code: str  # "bad_image" | "image_too_large"
    reason: str


def _bucket(number: int) -> str:
    """The folder of file ``number`` in a run's folder: ``<n // 10,000>/<n % 16>``, so
    that consecutive files, written at once by several workers, land in different
    folders (creating files in one folder takes turns on its lock)."""
    return f"{number // _BUCKET:04d}/{number % _SPREAD:x}"


@dataclass(frozen=True)
class StagingDirs:
    """Where an import run writes its images and thumbnails, and what it may link from."""

    originals: Path  # the run's folder under the vault's images/
    thumbs: Path  # the run's folder under the vault's thumbs/
    link_from: Path | None = None  # files under it are the import's own: linked, not copied

    @staticmethod
    def vault_folders(run_id: str) -> list[str]:
        """The run's folders, relative to the vault: ``images/run_<id>``, ``thumbs/run_<id>``."""
        return [f"images/run_{run_id}", f"thumbs/run_{run_id}"]

    @classmethod
    def for_run(cls, vault_root: Path, run_id: str, work_dir: Path | None) -> "StagingDirs":
        """``vault_root``: the vault's folder, or the local mirror of a vault behind a URL
        (:meth:`~ecotaxa_core.vault.Vault.staging_root`)."""
        originals, thumbs = cls.vault_folders(run_id)
        return cls(Path(vault_root) / originals, Path(vault_root) / thumbs, work_dir)

    def original(self, number: int, ext: str) -> Path:
        return self.originals / _bucket(number) / f"f{number}{ext}"

    def thumb(self, number: int) -> Path:
        return self.thumbs / _bucket(number) / f"f{number}.jpg"
    # ImageStager.staged() spells the same paths as text, faster


@dataclass(frozen=True)
class _Decoded:
    width: int
    height: int
    image_format: str | None
    thumbnail: PILImage.Image | None  # None: the image is its own thumbnail


class ImageStager:
    """Checks and stages image files in the background, as they are handed to it.

    Use it in a ``with`` block (its workers stop at its end). ``staging`` None:
    check only. ``progress(done, total)`` is called from the caller's thread now
    and then; ``total`` counts the files handed so far, so it grows while the
    bundle is read.

    The first ``threads_up_to`` files go to a thread pool; past them, a large
    import, batches go to worker processes (``processes`` of them), which
    do not compete with the caller for Python's GIL while it reads the TSV.
    Where processes cannot start (inside a daemonic process ...), threads do it all.
    """

    def __init__(self, staging: StagingDirs | None, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 workers: int | None = None, processes: int | None = None,
                 threads_up_to: int = _THREADS_UP_TO,
                 progress: Callable[[int, int], None] | None = None):
        self.staging, self.max_pixels, self.progress = staging, max_pixels, progress
        self._threads_up_to = threads_up_to
        self._threads = ThreadPoolExecutor(max_workers=workers or default_workers())
        self._n_processes = processes if processes is not None else default_processes()
        self._processes: ProcessPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(_IN_FLIGHT)
        self._files: dict[str, int] = {}  # file -> its number
        self._results = _Results()
        self._batch: list[tuple[int, str]] = []
        self._pending: deque[tuple[Future, _Job]] = deque()
        self._done = 0
        self._stage = staging is not None
        self._prefixes: tuple[str, str] | None = None  # the staging folders, as text

    def __enter__(self) -> "ImageStager":
        return self

    def __exit__(self, *exc) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)

    def submit(self, image: ImagePlan) -> None:
        """Check (and stage) the file of ``image``, unless it is missing or already handed."""
        if image.missing or image.src in self._files:
            return
        number = self._files[image.src] = len(self._files)
        self._results.grow()
        self._batch.append((number, image.src))
        if len(self._batch) >= self._batch_size():
            self._send()
        while self._pending and self._pending[0][0].done():
            self._collect()

    def finish(self, images: Callable[[], Iterable[ImagePlan]], report: ImportReport, *,
               all_handed: bool = False) -> None:
        """Wait for the files of the images ``images()`` gives (the images the import
        stores), handing those not handed yet (none when ``all_handed``), and report
        each one whose file cannot be read.

        Once ``report`` holds a problem, files are only checked, not staged (the
        import will be refused).
        """
        if report.n_issues:
            self._stage = False
        if not all_handed:
            for image in images():
                self.submit(image)
        self._send()
        while self._pending:
            self._collect()
        self._tell(force=True)
        if not self._results.problems:
            return
        for im in images():
            if im.missing:
                continue
            problem = self._results.problems.get(self._files[im.src])
            if problem is not None:
                column = "img_file_name" if im.line is not None else None
                report.add(im.rel, im.line, column, im.original_name, problem.code,
                           f"cannot read image {im.original_name!r} ({problem.reason})")

    def number(self, image: ImagePlan) -> int:
        """The number of ``image``'s file (images naming one file share it)."""
        return self._files[image.src]

    def staged(self, image: ImagePlan) -> StagedImage:
        """Where ``image``'s file was staged, and what it holds."""
        number = self._files[image.src]
        found = self._results.get(number)
        if found is None or not found.staged or self.staging is None:
            raise RuntimeError(f"{image.original_name!r} was not staged")
        ext = vault_extension(os.path.splitext(image.src)[1], found.image_format)
        if self._prefixes is None:
            self._prefixes = (str(self.staging.originals), str(self.staging.thumbs))
        bucket = _bucket(number)
        return StagedImage(f"{self._prefixes[0]}/{bucket}/f{number}{ext}",
                           f"{self._prefixes[1]}/{bucket}/f{number}.jpg" if found.thumbnail
                           else None, found.width, found.height, found.image_format)

    # -- internals --------------------------------------------------------------------
    def _batch_size(self) -> int:
        return _THREAD_BATCH if len(self._files) <= self._threads_up_to else _PROCESS_BATCH

    def _send(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        job = _Job(self.staging, self._stage,
                   self.max_pixels, batch)
        pool = self._pool_for(batch[0][0])
        self._slots.acquire()
        try:
            try:
                future = pool.submit(_stage_batch, job)
            except (AssertionError, OSError, BrokenExecutor):  # processes start here (a
                # daemon has none), or one died
                if pool is self._threads:
                    raise
                self._no_processes()
                future = self._threads.submit(_stage_batch, job)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append((future, job))

    def _pool_for(self, first_number: int):
        if first_number < self._threads_up_to or self._n_processes < 1:
            return self._threads
        if self._processes is None:
            try:
                self._processes = ProcessPoolExecutor(
                    self._n_processes, mp_context=multiprocessing.get_context("spawn"))
            except (OSError, AssertionError, ValueError):  # no children here: threads only
                self._no_processes()
                return self._threads
        return self._processes

    def _no_processes(self) -> None:
        self._n_processes = 0
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
            self._processes = None

    def _collect(self) -> None:
        future, job = self._pending.popleft()
        try:
            outcome = future.result()  # raises what the work raised (a full disk ...)
        except BrokenExecutor:  # a worker process died (killed, out of memory): threads
            self._no_processes()
            outcome = self._threads.submit(_stage_batch, job).result()
        for number, result in outcome:
            self._results.set(number, result)
            self._done += 1
            self._tell()

    def _tell(self, force: bool = False) -> None:
        if self.progress is not None and (force or self._done % _PROGRESS_EVERY == 0):
            self.progress(self._done, len(self._files))


@dataclass(frozen=True, slots=True)
class StagedImage:
    """An image file as staged: the paths of its copy in the vault and of its thumbnail
    there (None: the image is its own), its size and real format (a PNG named ``.jpg``
    is ``"PNG"``)."""

    original: str
    thumb: str | None
    width: int
    height: int
    image_format: str | None


class _Results:
    """What became of each file, by number, packed: a few bytes a file, so that the
    stager's memory stays flat however many files an import holds. A problem is kept
    whole (they are few: an import with any is refused)."""

    def __init__(self) -> None:
        self.width, self.height = array("I"), array("I")
        self.format = bytearray()  # index in ``formats`` + 1; 0: not done yet
        self.flags = bytearray()  # _STAGED | _THUMB
        self.formats: list[str | None] = []
        self.problems: dict[int, ImageProblem] = {}

    def grow(self) -> None:
        self.width.append(0)
        self.height.append(0)
        self.format.append(0)
        self.flags.append(0)

    def set(self, number: int, result: "_Result") -> None:
        if result.problem is not None:
            self.problems[number] = result.problem
            return
        if result.image_format not in self.formats:
            self.formats.append(result.image_format)
        self.width[number], self.height[number] = result.width, result.height
        self.format[number] = self.formats.index(result.image_format) + 1
        self.flags[number] = ((_STAGED if result.original is not None else 0)
                              | (_THUMB if result.thumb is not None else 0))

    def get(self, number: int) -> _Found | None:
        if number in self.problems or not self.format[number]:
            return None
        flags = self.flags[number]
        return _Found(self.width[number], self.height[number],
                      self.formats[self.format[number] - 1], bool(flags & _STAGED),
                      bool(flags & _THUMB))


_STAGED, _THUMB = 1, 2


@dataclass(frozen=True, slots=True)
class _Found:
    width: int
    height: int
    image_format: str | None
    staged: bool
    thumbnail: bool


@dataclass(frozen=True)
class _Job:
    staging: StagingDirs | None
    stage: bool
    max_pixels: int
    files: list[tuple[int, str]]  # (number, path)
    parent: int = field(default_factory=os.getpid)  # the importing process


@dataclass(frozen=True, slots=True)
class _Result:
    """What became of one image file."""

    problem: ImageProblem | None = None
    width: int = 0
    height: int = 0
    image_format: str | None = None
    thumbnail: bool = True
    original: str | None = None  # its copy in the vault (None: not written)
    thumb: str | None = None


_batch_threads: ThreadPoolExecutor | None = None


def _stage_batch(job: _Job) -> list[tuple[int, _Result]]:
    """Check (and stage) a batch of files; in a worker process, a few at a time (their
    file writes overlap)."""
    global _batch_threads
    staging = job.staging
    ours = (_under(staging.link_from.resolve()) if staging is not None
            and staging.link_from is not None else lambda path: False)
    if os.getppid() != job.parent and os.getpid() != job.parent:
        staging = None  # the import was killed (its recovery removes the staging): check only
    work = [(number, Path(path), staging if job.stage else None, ours, job.max_pixels)
            for number, path in job.files]
    if len(work) <= _THREAD_BATCH:
        return [(w[0], _stage_file(*w)) for w in work]
    if _batch_threads is None:
        _batch_threads = ThreadPoolExecutor(max_workers=4)
    return list(zip((w[0] for w in work), _batch_threads.map(lambda w: _stage_file(*w), work)))


def _stage_file(number: int, path: Path, staging: StagingDirs | None, ours, max_pixels: int
                ) -> _Result:
    data = None
    try:
        if path.stat().st_size <= _READ_WHOLE_BYTES:
            data = path.read_bytes()
        decoded = _decode(io.BytesIO(data) if data is not None else path, path, max_pixels)
    except OSError as e:
        decoded = ImageProblem("bad_image", _reason(e, path))
    if isinstance(decoded, ImageProblem):
        return _Result(problem=decoded)
    result = dict(width=decoded.width, height=decoded.height,
                  image_format=decoded.image_format, thumbnail=decoded.thumbnail is not None)
    if staging is None:
        return _Result(**result)
    ext = vault_extension(path.suffix, decoded.image_format)
    original = staging.original(number, ext)
    _make_parent(original)
    if ours(path):
        _link_or_copy(path, original)
    elif data is not None:
        original.write_bytes(data)
    else:
        shutil.copyfile(path, original)
    thumb = None
    if decoded.thumbnail is not None:
        thumb = staging.thumb(number)
        _make_parent(thumb)
        decoded.thumbnail.save(thumb, format="JPEG", quality=90)
    return _Result(original=str(original), thumb=str(thumb) if thumb is not None else None,
                   **result)


def _reason(e: BaseException, path: Path) -> str:
    return describe_image_error(e).replace(str(path), path.name)


def _decode(src, path: Path, max_pixels: int) -> _Decoded | ImageProblem:
    try:
        with open_image(src, max_pixels=max_pixels) as im:
            im.load()
            if im.mode not in DISPLAY_MODES:
                return ImageProblem("bad_image", f"unsupported image mode {im.mode!r}")
            (width, height), image_format = im.size, im.format  # before the thumbnail shrinks it
            thumbnail = make_thumbnail(im) if needs_thumbnail(im) else None
            return _Decoded(width, height, image_format, thumbnail)
    except ImageTooLarge as e:
        return ImageProblem("image_too_large", str(e))
    except Exception as e:  # any decoder failure is a bad image, reported to the user
        return ImageProblem("bad_image", _reason(e, path))


_made: set[Path] = set()  # folders this process has created


def _make_parent(path: Path) -> None:
    if path.parent not in _made:
        path.parent.mkdir(parents=True, exist_ok=True)
        _made.add(path.parent)


def _link_or_copy(src: Path, dest: Path) -> None:
    try:  # a file we extracted, removed after the import: a link is a free copy
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _under(folder: Path) -> Callable[[Path], bool]:
    """Whether a path, resolved, lies under ``folder`` (resolved), resolving each parent once."""
    parents: dict[Path, Path] = {}

    def under(path: Path) -> bool:
        if path.is_symlink():
            return path.resolve().is_relative_to(folder)
        parent = parents.get(path.parent)
        if parent is None:
            parent = parents[path.parent] = path.parent.resolve()
        return parent.is_relative_to(folder)

    return under
