"""The images of an import, checked and staged in one pass over their files.

Each distinct file is read once: its bytes are decoded to the last pixel (a
truncated file, a text file named ``.jpg`` or a decompression bomb is refused
here, with the file, line and column that name it), its thumbnail is made from
the decoded pixels (unless the image is its own thumbnail, see
:func:`~ecotaxa_core.vault.needs_thumbnail`), and the original bytes and the thumbnail are written
to the import's staging folder (under the work dir, outside any transaction),
named by the image's position in the import: ``<index><ext>`` and
``<index>.thumb.jpg``. The writer later renames them into the vault. Files of
the import's own extraction area are hard-linked rather than copied; a user's
file is copied, so that changing it later cannot change the vault.

Decoding runs in a thread pool (Pillow releases the GIL while it decodes and
encodes). Nothing is staged when the report already holds problems or once an
image fails (the import will be refused; the images are still all checked, to
report every problem at once).

>>> from ecotaxa_core.import_plan import ImagePlan
>>> report = ImportReport()
>>> im = ImagePlan(Path("/no/such.png"), 0, "such.png", "ecotaxa_a.tsv", 3)
>>> check_and_stage_images([im], report, None)
>>> print(report.issues[0])
ecotaxa_a.tsv line 3, column img_file_name: cannot read image 'such.png' (file not found)
"""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image as PILImage

from ecotaxa_core.image_files import (DISPLAY_MODES, MAX_IMAGE_PIXELS, ImageTooLarge,
                                      describe_image_error, open_image, vault_extension)
from ecotaxa_core.import_plan import ImagePlan
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.vault import make_thumbnail, needs_thumbnail, save_thumbnail

__all__ = ["check_and_stage_images", "staged_paths", "ImageProblem", "default_workers"]

# Larger files are decoded from their path and copied, not read into memory whole.
_READ_WHOLE_BYTES = 32 * 1024 * 1024
_WINDOW = 1024  # files submitted to the thread pool at a time


def default_workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class ImageProblem:
    """Why an image file is refused: ``code`` for programs, ``reason`` for people."""

    code: str  # "bad_image" | "image_too_large"
    reason: str


def staged_paths(staging: Path, index: int, image: ImagePlan) -> tuple[Path, Path]:
    """Where image number ``index`` of an import and its thumbnail are staged."""
    ext = vault_extension(image.src.suffix, image.image_format)
    return staging / f"{index}{ext}", staging / f"{index}.thumb.jpg"


@dataclass(frozen=True)
class _Decoded:
    width: int
    height: int
    image_format: str | None
    thumbnail: PILImage.Image | None  # None: the image is its own thumbnail


def check_and_stage_images(images: Sequence[ImagePlan], report: ImportReport,
                           staging: Path | None, *,
                           progress: Callable[[int], None] | None = None,
                           workers: int | None = None,
                           max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Check every image of ``images`` that is not ``missing``; stage it unless there are
    problems, or ``staging`` is None.

    Each checked :class:`ImagePlan` gets its width, height and real format (a
    PNG named ``.jpg`` is ``"PNG"``); each unreadable one a problem in ``report``.
    ``progress`` is called now and then with the number of distinct files done.
    """
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
    stager = _Stager(None if report.n_issues else staging, max_pixels)
    by_file: dict[Path, list[int]] = {}
    for index, image in enumerate(images):
        if not image.missing:
            by_file.setdefault(image.src, []).append(index)
    files = list(by_file.items())
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for done, (problem, (_, named)) in enumerate(zip(_in_order(pool, stager, images, files),
                                                         files), 1):
            if problem is not None:
                stager.failed = True  # stage nothing more: the import is refused
                for im in (images[i] for i in named):
                    column = "img_file_name" if im.line is not None else None
                    report.add(im.rel, im.line, column, im.original_name, problem.code,
                               f"cannot read image {im.original_name!r} ({problem.reason})")
            if progress is not None and (done % 64 == 0 or done == len(by_file)):
                progress(done)


def _in_order(pool: ThreadPoolExecutor, stager: "_Stager", images: Sequence[ImagePlan],
              files: list[tuple[Path, list[int]]]) -> Iterator[ImageProblem | None]:
    """Each file's outcome, in order, with a bounded number of files in flight."""
    for start in range(0, len(files), _WINDOW):
        yield from pool.map(lambda job: stager.file(job[0], [images[i] for i in job[1]], job[1]),
                            files[start:start + _WINDOW])


class _Stager:
    def __init__(self, staging: Path | None, max_pixels: int):
        self.staging, self.max_pixels = staging, max_pixels
        self.ours = _under(staging.parent.resolve()) if staging is not None else None
        self.failed = False

    def file(self, path: Path, images: list[ImagePlan],
             indices: list[int]) -> ImageProblem | None:
        """Check one file and stage it for each image naming it; the problem, if any."""
        data = None
        try:
            if path.stat().st_size <= _READ_WHOLE_BYTES:
                data = path.read_bytes()
            decoded = _decode(io.BytesIO(data) if data is not None else path, path,
                              self.max_pixels)
        except OSError as e:
            decoded = ImageProblem("bad_image", _reason(e, path))
        if isinstance(decoded, ImageProblem):
            return decoded
        for im in images:
            im.width, im.height, im.image_format = (decoded.width, decoded.height,
                                                    decoded.image_format)
            im.thumbnail = decoded.thumbnail is not None
        if self.staging is None or self.failed:
            return None
        first_original, first_thumb = staged_paths(self.staging, indices[0], images[0])
        if self.ours(path):
            _link_or_copy(path, first_original)
        elif data is not None:
            first_original.write_bytes(data)
        else:
            shutil.copyfile(path, first_original)
        if decoded.thumbnail is not None:
            decoded.thumbnail.save(first_thumb, format="JPEG", quality=90)
        for index, im in zip(indices[1:], images[1:]):  # the same file named again
            original, thumb = staged_paths(self.staging, index, im)
            os.link(first_original, original)
            if decoded.thumbnail is not None:
                os.link(first_thumb, thumb)
        return None


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
