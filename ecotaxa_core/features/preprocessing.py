"""Image decoding and EcoTaxa's preprocessing for deep feature extractors.

Every extractor reads images through :func:`read_image`, which turns any
file Pillow decodes (8- or 16-bit grey, RGB, RGBA, palette, bilevel) into a
Pillow image of mode ``L`` (grey) or ``RGB`` (real colour), and
:func:`read_grey`, which gives a 2-D grey array for morphology.

:func:`preprocess` then does what EcoTaxa does before a CNN:

1. crop ``bottom_crop`` pixels off the bottom (ZooScan vignettes carry a
   1 mm scale bar in their bottom 31 pixels);
2. resize so that the longest side is ``input_size``, keeping the aspect
   ratio;
3. pad to an ``input_size`` square, the image centred, with the median
   colour of the border of the cropped image (the background, whatever the
   instrument);
4. grey to 3 channels.

Pillow sizes are ``(width, height)`` and NumPy shapes ``(height, width)``;
swapping them is EcoTaxa's classic bug, so the code names them explicitly.

>>> import numpy as np
>>> from PIL import Image
>>> wide = np.full((30, 60), 200, dtype=np.uint8)     # 60 px wide, 30 px high
>>> wide[10:20, 20:40] = 0                            # a dark organism
>>> out = preprocess(Image.fromarray(wide), input_size=32)
>>> out.shape, out.dtype
((32, 32, 3), dtype('uint8'))
>>> int(out[0, 0, 0]), int(out[16, 16, 0])           # padding = border median
(200, 0)
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.storage import is_url, read_bytes

__all__ = ["ImageReadError", "read_image", "read_grey", "crop_bottom", "preprocess",
           "border_median", "ZOOSCAN_BOTTOM_CROP", "default_bottom_crop"]

ZOOSCAN_BOTTOM_CROP = 31  # pixels of ZooScan scale bar under each vignette


class ImageReadError(EcoTaxaError):
    """An image file that cannot be decoded; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: cannot read image ({reason})")
        self.path = path if is_url(path) else Path(path)  # a URL: a vault behind fsspec


def default_bottom_crop(instrument: str | None) -> int:
    """Pixels to crop under each image of an instrument (ZooScan: its scale bar).

    >>> default_bottom_crop("ZooScan"), default_bottom_crop("uvp6"), default_bottom_crop(None)
    (31, 0, 0)
    """
    return ZOOSCAN_BOTTOM_CROP if (instrument or "").strip().lower() == "zooscan" else 0


def _flatten_on_white(im: Image.Image) -> Image.Image:
    im = im.convert("RGBA")
    bg = Image.new("RGB", im.size, (255, 255, 255))
    bg.paste(im, mask=im.getchannel("A"))
    return bg


def _is_grey_rgb(im: Image.Image) -> bool:
    """Whether an RGB image's three channels are equal (NDSB JPEGs are)."""
    a = np.asarray(im)
    # JPEG chroma noise leaves channels differing by a grey level or two.
    return bool(np.abs(a[..., 0].astype(np.int16) - a[..., 1]).max() <= 2
                and np.abs(a[..., 0].astype(np.int16) - a[..., 2]).max() <= 2)


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` (a local path or an fsspec URL) into a Pillow image of mode ``L`` or ``RGB``.

    16-bit and 32-bit grey images are scaled to 0-255 (divided by 257, so
    65535 gives 255); transparent pixels are flattened on white; palette and
    bilevel images are expanded; RGB images whose channels are equal become
    grey. Raises :class:`ImageReadError` naming the file when it cannot be
    decoded.
    """
    try:
        # One read of the whole file: Pillow's own reads are many and small.
        with Image.open(io.BytesIO(read_bytes(path))) as im:
            im.load()
            return _normalise_mode(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageReadError(path, str(e) or type(e).__name__) from e


def _normalise_mode(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "L":
        return im.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float32)
        scale = 255.0 / 65535.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 1.0
        return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), mode="L")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = _flatten_on_white(im)
    elif mode != "RGB":
        im = im.convert("RGB")
    return im.convert("L") if _is_grey_rgb(im) else im


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as a 2-D uint8 grey array, shape ``(height, width)``."""
    im = read_image(path)
    return np.asarray(im if im.mode == "L" else im.convert("L"))


def crop_bottom(im: Image.Image, bottom_crop: int) -> Image.Image:
    """Drop ``bottom_crop`` rows at the bottom, always keeping at least one row."""
    if bottom_crop <= 0:
        return im
    width, height = im.size
    return im.crop((0, 0, width, max(1, height - bottom_crop)))


def border_median(a: np.ndarray) -> np.ndarray:
    """Median value (per channel) of the outer one-pixel frame of ``a`` (H, W[, C]).

    >>> a = np.zeros((4, 5), dtype=np.uint8); a[0] = 9; a[-1] = 9; a[:, 0] = 9
    >>> border_median(a).tolist()
    [9]
    """
    if a.ndim == 2:
        a = a[:, :, None]
    frame = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]], axis=0)
    return np.median(frame, axis=0).round().astype(a.dtype)


def preprocess(im: Image.Image, input_size: int, bottom_crop: int = 0) -> np.ndarray:
    """EcoTaxa's CNN input: crop, resize the longest side, pad square, 3 channels.

    Parameters
    ----------
    im : Pillow image of mode ``L`` or ``RGB`` (see :func:`read_image`).
    input_size : side of the square output, in pixels.
    bottom_crop : rows cropped off the bottom first.

    Returns
    -------
    uint8 array of shape ``(input_size, input_size, 3)``.
    """
    if im.mode not in ("L", "RGB"):
        im = _normalise_mode(im)
    im = crop_bottom(im, bottom_crop)
    # The background colour is read before resizing blurs the edges.
    fill = border_median(np.asarray(im))
    width, height = im.size
    scale = input_size / max(width, height)
    new_width = min(input_size, max(1, round(width * scale)))
    new_height = min(input_size, max(1, round(height * scale)))
    if (new_width, new_height) != (width, height):
        im = im.resize((new_width, new_height), resample=Image.Resampling.BILINEAR)
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    out = np.empty((input_size, input_size, a.shape[2]), dtype=np.uint8)
    out[...] = fill
    top, left = (input_size - new_height) // 2, (input_size - new_width) // 2
    out[top:top + new_height, left:left + new_width] = a
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out
