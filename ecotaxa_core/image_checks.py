"""Checking image files before an import: each one is opened and fully decoded.

Decoding runs in a thread pool (Pillow releases the GIL while it decodes), and
each distinct file is decoded once even when several objects name it.

>>> from ecotaxa_core.import_plan import ImagePlan
>>> from ecotaxa_core.tsv.issues import ImportReport
>>> report = ImportReport()
>>> im = ImagePlan(Path("/no/such.png"), 0, "such.png", "ecotaxa_a.tsv", 3)
>>> check_images([im], report)
>>> print(report.issues[0])
ecotaxa_a.tsv line 3, column img_file_name: cannot read image 'such.png' (FileNotFoundError: ...)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image as PILImage

from ecotaxa_core.import_plan import ImagePlan
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["decode_size", "check_images", "default_workers"]


def default_workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def decode_size(path: Path) -> tuple[int, int] | str:
    """(width, height) after a full decode, or the reason it failed."""
    try:
        with PILImage.open(path) as im:
            im.load()
            return im.size
    except Exception as e:  # any decoder failure is a bad image, reported to the user
        detail = str(e).replace(str(path), Path(path).name)
        return f"{type(e).__name__}: {detail}" if detail else type(e).__name__


def check_images(images: Sequence[ImagePlan], report: ImportReport, *,
                 progress: Callable[[int], None] | None = None,
                 workers: int | None = None) -> None:
    """Fill each image's width and height, or report why it cannot be read."""
    paths = list(dict.fromkeys(im.src for im in images))
    sizes: dict[Path, tuple[int, int] | str] = {}
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for i, (path, size) in enumerate(zip(paths, pool.map(decode_size, paths,
                                                              chunksize=64)), 1):
            sizes[path] = size
            if progress is not None and (i % 256 == 0 or i == len(paths)):
                progress(i)
    for im in images:
        size = sizes[im.src]
        if isinstance(size, str):
            column = "img_file_name" if im.line is not None else None
            report.add(im.rel, im.line, column, im.original_name, "bad_image",
                       f"cannot read image {im.original_name!r} ({size})")
        else:
            im.width, im.height = size
