"""Checking image files before an import: each one is opened and fully decoded.

Each file is opened with :func:`~ecotaxa_core.image_files.open_image` (known
formats only, at most ``max_pixels`` pixels, checked before decoding), then
decoded to the last pixel, so a truncated file, a text file named ``.jpg`` or
a decompression bomb is refused here, with the file, line and column that name
it, before anything is written. Decoding runs in a thread pool (Pillow releases
the GIL while it decodes), and each distinct file is decoded once even when
several objects name it.

>>> from ecotaxa_core.import_plan import ImagePlan
>>> from ecotaxa_core.tsv.issues import ImportReport
>>> report = ImportReport()
>>> im = ImagePlan(Path("/no/such.png"), 0, "such.png", "ecotaxa_a.tsv", 3)
>>> check_images([im], report)
>>> print(report.issues[0])
ecotaxa_a.tsv line 3, column img_file_name: cannot read image 'such.png' (file not found)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from ecotaxa_core.image_files import (DISPLAY_MODES, MAX_IMAGE_PIXELS, ImageTooLarge,
                                      describe_image_error, open_image)
from ecotaxa_core.import_plan import ImagePlan
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["ImageProblem", "decode_size", "check_images", "default_workers", "MAX_IMAGE_PIXELS"]


def default_workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class ImageProblem:
    """Why an image file is refused: ``code`` for programs, ``reason`` for people."""

    code: str  # "bad_image" | "image_too_large"
    reason: str


def decode_size(path: Path,
                max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int] | ImageProblem:
    """(width, height) after a full decode, or the problem that stopped it."""
    decoded = _decode(path, max_pixels)
    return decoded if isinstance(decoded, ImageProblem) else decoded[:2]


def _decode(path: Path, max_pixels: int) -> tuple[int, int, str | None] | ImageProblem:
    try:
        with open_image(path, max_pixels=max_pixels) as im:
            im.load()
            if im.mode not in DISPLAY_MODES:
                return ImageProblem("bad_image", f"unsupported image mode {im.mode!r}")
            return im.size[0], im.size[1], im.format
    except ImageTooLarge as e:
        return ImageProblem("image_too_large", str(e))
    except Exception as e:  # any decoder failure is a bad image, reported to the user
        return ImageProblem("bad_image", describe_image_error(e).replace(str(path),
                                                                         Path(path).name))


def check_images(images: Sequence[ImagePlan], report: ImportReport, *,
                 progress: Callable[[int], None] | None = None,
                 workers: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Fill each image's width and height, or report why it cannot be read.

    An :class:`ImagePlan` with an ``image_format`` field gets its real format
    too (``"PNG"`` for a PNG named ``.jpg``).
    """
    paths = list(dict.fromkeys(im.src for im in images))
    decoded: dict[Path, tuple[int, int, str | None] | ImageProblem] = {}
    decode = partial(_decode, max_pixels=max_pixels)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for i, (path, result) in enumerate(zip(paths, pool.map(decode, paths, chunksize=64)), 1):
            decoded[path] = result
            if progress is not None and (i % 256 == 0 or i == len(paths)):
                progress(i)
    for im in images:
        result = decoded[im.src]
        if isinstance(result, ImageProblem):
            column = "img_file_name" if im.line is not None else None
            report.add(im.rel, im.line, column, im.original_name, result.code,
                       f"cannot read image {im.original_name!r} ({result.reason})")
        else:
            im.width, im.height = result[0], result[1]
            if hasattr(im, "image_format"):  # the vault stores it under its real extension
                im.image_format = result[2]
