"""The image vault: original image files and their thumbnails, by image id.

Paths are derived from the image id (``images/0012/123456_0.jpg``) so the vault
needs no index of its own and a folder never holds more than 10,000 files.
Files are written to a temporary name and renamed, so a reader never sees half
an image; :meth:`Vault.remove` undoes a failed import.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image as PILImage

__all__ = ["Vault", "THUMB_SIZE"]

THUMB_SIZE = 128  # longest side of a thumbnail, in pixels


class Vault:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _rel(self, kind: str, image_id: int, rank: int, ext: str) -> str:
        return f"{kind}/{image_id // 10000:04d}/{image_id}_{rank}{ext}"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def store(self, src: str | os.PathLike, image_id: int, rank: int) -> tuple[str, str]:
        """Copy ``src`` into the vault and write its thumbnail.

        Returns the relative paths (original, thumbnail).
        """
        src = Path(src)
        rel = self._rel("images", image_id, rank, src.suffix.lower())
        dest = self.path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        thumb_rel = self._rel("thumbs", image_id, rank, ".jpg")
        self.write_thumbnail(dest, self.path(thumb_rel))
        return rel, thumb_rel

    @staticmethod
    def write_thumbnail(src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with PILImage.open(src) as im:
            im.thumbnail((THUMB_SIZE, THUMB_SIZE))
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB") if "A" not in im.mode else _flatten_on_white(im)
            tmp = dest.with_name(dest.name + ".part")
            im.save(tmp, format="JPEG", quality=90)
        os.replace(tmp, dest)

    def remove(self, *rels: str | None) -> None:
        for rel in rels:
            if rel:
                self.path(rel).unlink(missing_ok=True)


def _flatten_on_white(im: PILImage.Image) -> PILImage.Image:
    im = im.convert("RGBA")
    bg = PILImage.new("RGB", im.size, (255, 255, 255))
    bg.paste(im, mask=im.getchannel("A"))
    return bg
