"""Opening image files that come from users: allowed formats, a pixel limit, display modes.

Images reach the instance from import sources nobody vetted, so they are opened
with :func:`open_image`, which

- only lets Pillow try the formats instruments write (:data:`IMAGE_FORMATS`);
  PostScript, PDF, fonts and the other exotic formats Pillow can read (EPS would
  even run Ghostscript) are refused as "not an image";
- refuses an image whose declared size is above a pixel limit before any pixel
  is decoded (:data:`MAX_IMAGE_PIXELS`, 100 Mpx), with a message giving its
  size; Pillow's own decompression-bomb error, raised above twice its global
  ``PIL.Image.MAX_IMAGE_PIXELS`` (about 179 Mpx; left untouched here, so a
  larger ``max_pixels`` needs it raised too), is turned into the same refusal;
  between that global (about 89 Mpx) and ``max_pixels`` Pillow only warns;
- opens the first frame of multi-page TIFF and animated GIF files.

An image whose content does not match its file extension (a PNG named
``.jpg``) is accepted, as EcoTaxa and browsers do; :func:`vault_extension`
gives the extension of its real format, under which the vault stores it.

:func:`to_display` turns any mode Pillow opens (16-bit and 32-bit grey,
floating point, palette, bilevel, CMYK, with or without alpha) into 8-bit ``L``
or ``RGB``, scaled as :func:`ecotaxa_core.features.preprocessing.read_image`
scales them, so a thumbnail shows what the classifier sees.

>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO()
>>> Image.new("I;16", (4, 3), 65535).save(buf, format="PNG")
>>> with open_image(buf) as im:
...     print(im.format, im.mode, im.size, to_display(im).mode, to_display(im).getpixel((0, 0)))
PNG I;16 (4, 3) L 255
>>> with open_image(buf, max_pixels=10) as im:
...     pass
Traceback (most recent call last):
...
ecotaxa_core.image_files.ImageTooLarge: image of 4 x 3 = 12 pixels is above the limit of 10 pixels
"""

from __future__ import annotations

import os
import re
from typing import IO

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from ecotaxa_core.errors import EcoTaxaError

__all__ = [
    "IMAGE_FORMATS",
    "MAX_IMAGE_PIXELS",
    "DISPLAY_MODES",
    "ImageRefused",
    "ImageTooLarge",
    "NotAnImage",
    "open_image",
    "describe_image_error",
    "to_display",
    "vault_extension",
]

# Formats the instruments and tools of the plankton world write. (Pillow opens
# some camera JPEGs, holding a second preview picture, with format "MPO".)
IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP")

MAX_IMAGE_PIXELS = 100_000_000  # 100 Mpx: 10,000 x 10,000; a vignette is far smaller

# Modes :func:`to_display` turns into L or RGB (every mode the formats above open).
DISPLAY_MODES = frozenset({"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX",
                           "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16B", "I;16L",
                           "I;16N", "F"})

# Extension under which the vault stores each format, when the file's own
# extension does not name it.
_FORMAT_EXTENSION = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp",
                     "GIF": ".gif", "WEBP": ".webp"}


class ImageRefused(EcoTaxaError, ValueError):
    """An image file that is not imported; the message says why, for people."""


class NotAnImage(ImageRefused):
    pass


class ImageTooLarge(ImageRefused):
    def __init__(self, pixels: int, limit: int, size: tuple[int, int] | None = None):
        self.pixels, self.limit, self.size = pixels, limit, size
        dims = f"{size[0]} x {size[1]} = " if size else ""
        super().__init__(f"image of {dims}{pixels:,} pixels is above the limit of "
                         f"{limit:,} pixels")


_PIL_BOMB = re.compile(r"Image size \((\d+) pixels\)")


def open_image(src: str | os.PathLike | IO[bytes], *,
               max_pixels: int = MAX_IMAGE_PIXELS) -> PILImage.Image:
    """Open ``src`` lazily (use it in a ``with``), refusing what is not a plain image.

    Raises
    ------
    NotAnImage : not a file of one of :data:`IMAGE_FORMATS`.
    ImageTooLarge : more than ``max_pixels`` pixels (checked before decoding).
    FileNotFoundError, OSError : the file cannot be read.
    """
    try:
        im = PILImage.open(src, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage("not an image file (or not a JPEG, PNG, TIFF, BMP, GIF or WebP "
                         "image)") from None
    except PILImage.DecompressionBombError as e:
        # Pillow refuses above twice its own limit before giving the size.
        m = _PIL_BOMB.search(str(e))
        raise ImageTooLarge(int(m.group(1)) if m else max_pixels + 1, max_pixels) from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise ImageTooLarge(width * height, max_pixels, (width, height))
    if width <= 0 or height <= 0:
        im.close()
        raise NotAnImage(f"image of {width} x {height} pixels holds no pixel")
    return im


def describe_image_error(e: BaseException) -> str:
    """Why an image could not be opened or decoded, in words for people."""
    if isinstance(e, ImageRefused):
        return str(e)
    if isinstance(e, FileNotFoundError):
        return "file not found"
    text = str(e)
    if "truncated" in text.lower() or isinstance(e, EOFError):
        return f"truncated image file ({text or type(e).__name__})"
    if isinstance(e, PILImage.DecompressionBombError):
        return str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def vault_extension(suffix: str, image_format: str | None) -> str:
    """The extension to store a file of ``image_format`` found under ``suffix``.

    >>> vault_extension(".JPEG", "JPEG"), vault_extension(".jpg", "PNG")
    ('.jpeg', '.png')
    >>> vault_extension(".x", None)
    '.x'
    """
    suffix = suffix.lower()
    if image_format is None:
        return suffix
    if PILImage.registered_extensions().get(suffix) == image_format or (
            image_format == "MPO" and suffix in (".jpg", ".jpeg")):
        return suffix
    return _FORMAT_EXTENSION.get(image_format, suffix)


def to_display(im: PILImage.Image) -> PILImage.Image:
    """An 8-bit ``L`` or ``RGB`` version of ``im`` (``im`` itself when it is one).

    16-bit grey is divided by 257 (65535 gives 255); 32-bit integer and
    floating-point grey are kept when at most 255, else scaled the same way
    (negative values and NaN give 0);
    transparent pixels are flattened on white; other modes are converted.

    >>> to_display(PILImage.new("F", (2, 2), 1000.0)).getpixel((0, 0))
    4
    >>> to_display(PILImage.new("LA", (2, 2), (0, 0))).getpixel((0, 0))
    255
    """
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        a = np.where(np.isfinite(a), a, 0.0)
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0
        return PILImage.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("LA", "La"):
        return _flatten_on_white(im, "L")
    if mode in ("RGBA", "RGBa", "PA"):
        return _flatten_on_white(im, "RGB")
    return im.convert("RGB")


def _flatten_on_white(im: PILImage.Image, mode: str) -> PILImage.Image:
    if im.mode == "La":  # premultiplied grey: over white, L + (255 - alpha)
        grey = np.asarray(im.getchannel(0), dtype=np.int32)
        alpha = np.asarray(im.getchannel(1), dtype=np.int32)
        return PILImage.fromarray(np.clip(grey + 255 - alpha, 0, 255).astype(np.uint8), mode="L")
    rgba = im.convert("RGBA")
    bg = PILImage.new("RGB", im.size, (255, 255, 255))
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg.convert("L") if mode == "L" else bg
