"""The image vault: original image files and their thumbnails, by image id.

Each image row holds the paths of its file and thumbnail. An import writes its
images into its own run folders (``images/run_<id>/0000/f12.png``, see
:mod:`~ecotaxa_core.import_images`); other writers (project copies ...) use
paths derived from the image id (``images/0012/123456_0.jpg``). A folder never
holds more than 10,000 files.
Files are written to a temporary name and renamed, so a reader never sees half
an image; :meth:`Vault.remove` undoes a failed import.

An image is stored under the extension of its real format (a PNG named
``.jpg`` is stored as ``.png``; its original name stays in the database), and
its thumbnail (see :func:`needs_thumbnail`) is an 8-bit JPEG whatever its mode (16-bit grey, floating point,
palette, CMYK, with alpha ...; see :func:`~ecotaxa_core.image_files.to_display`).
Images are opened with :func:`~ecotaxa_core.image_files.open_image`: known
formats only, at most ``max_pixels`` pixels.

The vault is a local folder or an fsspec URL (``s3://bucket/vault``, see
:mod:`~ecotaxa_core.storage`). Behind a URL, an import stages its run folders
on local disk (:meth:`Vault.staging_root`) and :meth:`Vault.publish` uploads
them before its commit; readers name files by :meth:`Vault.url`.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from PIL import Image as PILImage

from ecotaxa_core.image_files import MAX_IMAGE_PIXELS, open_image, to_display, vault_extension
from ecotaxa_core.storage import Location

__all__ = ["Vault", "THUMB_SIZE", "make_thumbnail", "save_thumbnail", "needs_thumbnail"]

THUMB_SIZE = 128  # longest side of a thumbnail, in pixels


class Vault:
    def __init__(self, root: str | os.PathLike):
        self.location = Location(root)
        self.is_url = self.location.is_url
        self.root = None if self.is_url else Path(root)

    def _rel(self, kind: str, image_id: int, rank: int, ext: str) -> str:
        return f"{kind}/{image_id // 10000:04d}/{image_id}_{rank}{ext}"

    def path(self, rel: str) -> Path:
        """The file ``rel`` on local disk (a vault behind a URL has none: use :meth:`url`)."""
        return self.location.local_path(rel)

    def url(self, rel: str) -> str:
        """Where the file ``rel`` is: a local path, or its URL (what feature extractors read)."""
        return self.location.url(rel)

    def read_bytes(self, rel: str) -> bytes:
        return self.location.read_bytes(rel)

    def exists(self, rel: str) -> bool:
        return self.location.exists(rel)

    def copy(self, src: str, dest: str) -> None:
        """Copy the file ``src`` of the vault to ``dest``."""
        if self.is_url:
            self.location.copy(src, dest)
        else:
            self.path(dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path(src), self.path(dest))

    def staging_root(self, work_dir: str | os.PathLike) -> Path:
        """The local folder an import writes its run folders into (``images/run_<id>``
        ...): the vault itself, or behind a URL a mirror of it under ``work_dir``,
        which :meth:`publish` uploads."""
        return Path(work_dir) / "vault_staging" if self.is_url else self.root

    def publish(self, staging_root: str | os.PathLike, rels: list[str]) -> int:
        """Upload the folders ``rels`` of ``staging_root`` to a vault behind a URL, then drop
        them from local disk; the number of files. Nothing to do for a local vault."""
        if not self.is_url:
            return 0
        n = 0
        for rel in rels:
            local = Path(staging_root) / rel
            if local.is_dir():
                n += self.location.put_folder(local, rel)
        for rel in rels:
            shutil.rmtree(Path(staging_root) / rel, ignore_errors=True)
        return n

    def remove_folder(self, rel: str) -> int:
        """Remove the folder ``rel`` and its files; the number of files removed."""
        return self.location.remove_folder(rel)

    def rel_paths(self, image_id: int, rank: int, suffix: str) -> tuple[str, str]:
        """The relative paths (original, thumbnail) :meth:`store` gives an image."""
        return (self._rel("images", image_id, rank, suffix.lower()),
                self._rel("thumbs", image_id, rank, ".jpg"))

    def store(self, src: str | os.PathLike, image_id: int, rank: int, *,
              max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, str]:
        """Copy ``src`` into the vault and write its thumbnail.

        Returns the relative paths (original, thumbnail). Raises
        :class:`~ecotaxa_core.image_files.ImageRefused` for a file that is not
        an image of a known format or has more than ``max_pixels`` pixels.
        """
        src = Path(src)
        with open_image(src, max_pixels=max_pixels) as im:
            ext = vault_extension(src.suffix, im.format)
            thumb = make_thumbnail(im)
        rel, thumb_rel = self.rel_paths(image_id, rank, ext)
        if self.is_url:
            self.location.put_file(src, rel)
            buffer = io.BytesIO()
            thumb.save(buffer, format="JPEG", quality=90)
            self.location.write_bytes(thumb_rel, buffer.getvalue())
            return rel, thumb_rel
        dest = self.path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        save_thumbnail(thumb, self.path(thumb_rel))
        return rel, thumb_rel

    @staticmethod
    def write_thumbnail(src: Path, dest: Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        """An 8-bit JPEG of the first page or frame of ``src``, longest side THUMB_SIZE."""
        with open_image(src, max_pixels=max_pixels) as im:
            thumb = make_thumbnail(im)
        save_thumbnail(thumb, dest)

    def remove(self, *rels: str | None) -> int:
        """Remove the files ``rels`` (None and missing files are skipped); the count removed."""
        return self.location.remove(r for r in rels if r)


# Formats and modes every browser shows as they are (no transparency: a thumbnail shows
# transparent pixels as white, whatever the page's background).
_BROWSER_READY = {"JPEG": {"L", "RGB"}, "PNG": {"L", "P", "RGB"}}


def needs_thumbnail(im: PILImage.Image) -> bool:
    """Whether ``im`` needs a thumbnail, or can be shown as it is.

    As in EcoTaxa, a vignette no larger than :data:`THUMB_SIZE` that a browser
    shows as it is (an 8-bit grey, colour or palette JPEG or PNG without
    transparency) is its own thumbnail: the vault keeps
    one file for it, not two. 16-bit, TIFF, BMP, CMYK ... images get one.
    """
    return (max(im.size) > THUMB_SIZE or "transparency" in im.info
            or im.mode not in _BROWSER_READY.get(im.format or "", ()))


def make_thumbnail(im: PILImage.Image) -> PILImage.Image:
    """``im`` (first page or frame) shrunk to THUMB_SIZE, as 8-bit L or RGB, in memory."""
    opened = im
    if im.mode in ("1", "P", "PA"):
        # Palette and bilevel images only resize by nearest neighbour: expand them first.
        im = im.convert("L") if im.mode == "1" else im.convert(
            "RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode.startswith("I;16"):
        im = to_display(im)  # Pillow resizes big-endian 16-bit images wrongly
    im.thumbnail((THUMB_SIZE, THUMB_SIZE))
    thumb = to_display(im)
    return thumb.copy() if thumb is opened else thumb  # the opened image dies with its file


def save_thumbnail(im: PILImage.Image, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    im.save(tmp, format="JPEG", quality=90)
    os.replace(tmp, dest)
