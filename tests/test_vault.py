"""The image vault: stored files, thumbnails of every image mode, refused files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from ecotaxa_core.features.preprocessing import read_image
from ecotaxa_core.image_files import (DISPLAY_MODES, ImageTooLarge, NotAnImage, open_image,
                                      to_display)
from ecotaxa_core.vault import THUMB_SIZE, Vault

GRADIENT16 = (np.arange(200 * 300, dtype=np.uint32).reshape(200, 300) * 7 % 65536
              ).astype(np.uint16)


def _save(path, im: PILImage.Image, **params):
    im.save(path, **params)
    return path


def _palette(transparent: bool) -> PILImage.Image:
    im = PILImage.fromarray((np.arange(40 * 50).reshape(40, 50) % 4).astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    if transparent:
        im.info["transparency"] = 0
    return im


def _files(folder):
    """One file per mode Pillow gives the formats instruments write."""
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 45:, 3] = 255  # left half transparent
    floats = np.linspace(-10, 3000, 60 * 90, dtype=np.float32).reshape(60, 90)
    cmyk = PILImage.merge("CMYK", [PILImage.new("L", (64, 48), v) for v in (0, 200, 200, 0)])
    tifffile.imwrite(folder / "rgb16.tif", (np.random.default_rng(1).integers(
        0, 65535, (50, 70, 3))).astype(np.uint16), photometric="rgb")
    pages = folder / "pages.tif"
    PILImage.new("L", (80, 40), 5).save(pages, save_all=True,
                                        append_images=[PILImage.new("L", (30, 30), 250)])
    return {
        "grey16.png": _save(folder / "grey16.png", PILImage.fromarray(GRADIENT16)),
        "grey16.tif": _save(folder / "grey16.tif", PILImage.fromarray(GRADIENT16)),
        "grey16b.tif": _save(folder / "grey16b.tif",
                             PILImage.fromarray(GRADIENT16.astype(">u2"))),
        "int32.tif": _save(folder / "int32.tif", PILImage.fromarray(GRADIENT16.astype(np.int32))),
        "float.tif": _save(folder / "float.tif", PILImage.fromarray(floats)),
        "palette.png": _save(folder / "palette.png", _palette(False)),
        "palette_alpha.png": _save(folder / "palette_alpha.png", _palette(True)),
        "palette.gif": _save(folder / "palette.gif", _palette(False)),
        "la.png": _save(folder / "la.png", PILImage.fromarray(rgba[..., [0, 3]], mode="LA")),
        "rgba.png": _save(folder / "rgba.png", PILImage.fromarray(rgba, mode="RGBA")),
        "cmyk.jpg": _save(folder / "cmyk.jpg", cmyk),
        "cmyk.tif": _save(folder / "cmyk.tif", cmyk),
        "bilevel.bmp": _save(folder / "bilevel.bmp", PILImage.new("1", (33, 17), 1)),
        "bilevel.tif": _save(folder / "bilevel.tif", PILImage.new("1", (33, 17), 0)),
        "rgb.bmp": _save(folder / "rgb.bmp", PILImage.new("RGB", (33, 17), (10, 20, 30))),
        "grey.jpg": _save(folder / "grey.jpg", PILImage.new("L", (500, 250), 128)),
        "rgb16.tif": folder / "rgb16.tif",
        "pages.tif": pages,
    }


def test_every_image_mode_gets_an_8bit_jpeg_thumbnail(tmp_path):
    files = _files(tmp_path)
    modes = set()
    for name, path in files.items():
        with open_image(path) as im:
            modes.add(im.mode)
            size = im.size
        dest = tmp_path / "thumbs" / f"{name}.jpg"
        Vault.write_thumbnail(path, dest)
        with PILImage.open(dest) as th:
            assert th.format == "JPEG" and th.mode in ("L", "RGB"), name
            assert max(th.size) == min(THUMB_SIZE, max(size)), name
    assert modes >= {"I;16", "I;16B", "I", "F", "P", "LA", "RGBA", "CMYK", "1", "L", "RGB"}
    assert modes <= DISPLAY_MODES


def _thumb_array(tmp_path, path, mode="L"):
    dest = tmp_path / "t.jpg"
    Vault.write_thumbnail(path, dest)
    with PILImage.open(dest) as th:
        return np.asarray(th.convert(mode), dtype=np.int16)


def test_thumbnails_keep_contrast_transparency_and_the_first_page(tmp_path):
    files = _files(tmp_path)
    grey16 = _thumb_array(tmp_path, files["grey16.png"])
    assert grey16.min() < 20 and grey16.max() > 230  # the 16-bit range, not clipped to white
    assert np.abs(_thumb_array(tmp_path, files["grey16b.tif"]) - grey16).max() <= 2
    rgba = _thumb_array(tmp_path, files["rgba.png"], "RGB")
    assert (rgba[:, :20] > 245).all()  # transparent half on white
    assert abs(rgba[:, -20:, 0].mean() - 200) < 5 and rgba[:, -20:, 1].mean() < 10
    la = _thumb_array(tmp_path, files["la.png"])
    assert (la[:, :20] > 245).all() and abs(la[:, -20:].mean() - 200) < 5
    assert (_thumb_array(tmp_path, files["pages.tif"]) < 15).all()  # page 1 of 2
    palette = _thumb_array(tmp_path, files["palette_alpha.png"], "RGB")
    assert palette.max() == 255 and (palette > 245).all(axis=2).any()  # index 0 transparent


@pytest.mark.parametrize("name", ["grey16.png", "grey16b.tif", "int32.tif", "float.tif",
                                  "palette.png", "la.png", "rgba.png", "cmyk.tif",
                                  "bilevel.bmp", "rgb16.tif"])
def test_thumbnails_show_what_the_classifier_sees(tmp_path, name):
    path = _files(tmp_path)[name]
    with open_image(path) as im:
        im.load()
        shown = np.asarray(to_display(im).convert("RGB"), dtype=np.int16)
    seen = np.asarray(read_image(path).convert("RGB"), dtype=np.int16)
    assert np.abs(shown - seen).max() <= 1


def test_premultiplied_and_other_in_memory_modes_display():
    for mode in ("La", "RGBa", "PA", "RGBX", "YCbCr", "LAB", "HSV", "I;16L", "I;16N"):
        out = to_display(PILImage.new(mode, (5, 4)))
        assert out.mode in ("L", "RGB") and out.size == (5, 4), mode
    assert to_display(PILImage.new("La", (2, 2), (0, 0))).getpixel((0, 0)) == 255


def test_store_keeps_bytes_and_uses_the_real_format_extension(tmp_path):
    vault = Vault(tmp_path / "vault")
    png = tmp_path / "named.jpg"
    PILImage.new("L", (20, 10), 9).save(png, format="PNG")
    rel, thumb = vault.store(png, 123, 0)
    assert rel == "images/0000/123_0.png" and thumb == "thumbs/0000/123_0.jpg"
    assert vault.path(rel).read_bytes() == png.read_bytes()
    jpeg = tmp_path / "x.JPEG"
    PILImage.new("L", (20, 10), 9).save(jpeg, format="JPEG")
    assert vault.store(jpeg, 10001, 2)[0] == "images/0001/10001_2.jpeg"
    assert vault.rel_paths(10001, 2, ".JPEG") == ("images/0001/10001_2.jpeg",
                                                   "thumbs/0001/10001_2.jpg")


def test_store_refuses_what_is_not_a_plain_image_and_writes_nothing(tmp_path):
    vault = Vault(tmp_path / "vault")
    eps = tmp_path / "x.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    with pytest.raises(NotAnImage, match="not an image file"):
        vault.store(eps, 1, 0)
    big = tmp_path / "big.png"
    PILImage.new("L", (100, 100)).save(big)
    with pytest.raises(ImageTooLarge, match=r"image of 100 x 100 = 10,000 pixels is above the "
                                            r"limit of 5,000 pixels"):
        vault.store(big, 2, 0, max_pixels=5000)
    assert not (tmp_path / "vault").exists() or not any((tmp_path / "vault").rglob("*.*"))


def test_pillow_bomb_errors_become_our_refusal():
    buf = io.BytesIO()
    PILImage.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, 60_000, 60_000)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    with pytest.raises(ImageTooLarge, match="3,600,000,000 pixels is above the limit of "
                                            "100,000,000 pixels"):
        open_image(io.BytesIO(bytes(data)))


def test_small_browser_ready_images_are_their_own_thumbnail(tmp_path):
    from ecotaxa_core.vault import THUMB_SIZE, needs_thumbnail

    cases = {("JPEG", "L", 40): False, ("PNG", "RGB", THUMB_SIZE): False,
             ("PNG", "L", THUMB_SIZE + 1): True, ("TIFF", "L", 40): True,
             ("PNG", "I;16", 40): True, ("JPEG", "CMYK", 40): True, ("BMP", "RGB", 40): True}
    for (fmt, mode, side), expected in cases.items():
        path = tmp_path / f"x_{fmt}_{mode.replace(';', '')}_{side}.img"
        PILImage.new(mode, (side, side // 2 or 1)).save(path, format=fmt)
        with PILImage.open(path) as im:
            assert needs_thumbnail(im) is expected, (fmt, mode, side)
