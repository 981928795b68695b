"""Hostile import sources: each is refused clearly, writes nothing, leaves nothing behind.

Every fixture is made here, in ``tmp_path``: crafted zip entries, a real zip
bomb of compressed zeros, PNG files declaring huge sizes, binary and enormous
TSV files. Each goes through the real :func:`import_path`.
"""

from __future__ import annotations

import io
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import IMPORT_CASES
from ecotaxa_core.import_sources import ImportLimits, open_source
from ecotaxa_core.importer import import_path
from ecotaxa_core.tsv import TsvFormatError
from test_import import new_project, objects_by_orig_id, row_counts, vault_files

JPG = IMPORT_CASES / "import_test" / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1.jpg"
HEADER = "object_id\timg_file_name\n[t]\t[t]\n"


# -- fixtures made on the spot ---------------------------------------------------------------
def bundle(folder: Path, images: dict[str, bytes], tsv: str | bytes | None = None,
           tsv_name: str = "ecotaxa_h.tsv") -> Path:
    """A bundle folder: the TSV (one object per image by default) and the images."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if tsv is None:
        tsv = HEADER + "".join(f"o{i}\t{name}\n" for i, name in enumerate(images))
    (folder / tsv_name).write_bytes(tsv if isinstance(tsv, bytes) else tsv.encode())
    return folder


def write_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]],
              compression: int = zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def good_entries(prefix: str = "b/") -> list[tuple[str, bytes]]:
    return [(f"{prefix}ecotaxa_a.tsv", (HEADER + "o1\ta.jpg\n").encode()),
            (f"{prefix}a.jpg", JPG.read_bytes())]


def patch_central_directory(path: Path, offset: int, fmt: str, value: int) -> None:
    """Set one field of every central directory record of the zip at ``path``."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into(fmt, data, at + offset, value)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""
    buf = io.BytesIO()
    PILImage.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR data follows signature, length, type
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def encoded(im: PILImage.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def refused(inst, source: Path, *, project_id: int | None = None) -> TsvFormatError:
    """Import ``source``; check it is refused and that nothing at all was written."""
    pid = project_id or new_project(inst)
    before, files = row_counts(inst), vault_files(inst)
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, pid, source, user_id=None)
    assert row_counts(inst) == before
    assert row_counts(inst, pid)["objects"] == row_counts(inst, pid)["images"] == 0
    assert vault_files(inst) == files
    assert not inst.features.exists(pid, "tsv")
    assert scratch_left(inst) == [], "temporary files left behind"
    return err.value


def scratch_left(inst) -> list[Path]:
    """Files in the work dir, but the importer's lock files."""
    work = inst.settings.work_dir
    return [p for p in work.rglob("*") if p.is_file() and "import_locks" not in p.parts] \
        if work.exists() else []


def codes(err: TsvFormatError) -> set[str]:
    return {i.code for i in err.issues}


def escaped(root: Path) -> list[Path]:
    return [p for p in root.rglob("evil*") if p.suffix != ".zip"]


# -- zip entries that escape, link, collide ----------------------------------------------------
@pytest.mark.parametrize("name", ["../evil.txt", "../../../../evil.txt", "/tmp/evil_abs.txt",
                                  "C:/evil.txt", "b/../../evil.txt", "..\\..\\evil.txt"])
def test_zip_entries_escaping_the_extraction_folder_are_refused(sqlite_instance, tmp_path, name):
    source = write_zip(tmp_path / "src" / "x.zip", good_entries() + [(name, b"pwned")])
    err = refused(sqlite_instance, source)
    assert [(i.path, i.line, i.column, i.code, i.value) for i in err.issues] == [
        ("x.zip", None, None, "unsafe_zip_entry", name)]
    assert f"zip entry {name!r} would be written outside the extraction folder" in str(err)
    assert escaped(tmp_path) == [] and not Path("/tmp/evil_abs.txt").exists()


def test_zip_traversal_is_refused_on_each_database(instance, tmp_path):
    source = write_zip(tmp_path / "x.zip", good_entries() + [("../../evil.txt", b"pwned")])
    err = refused(instance, source)
    assert codes(err) == {"unsafe_zip_entry"}
    assert escaped(tmp_path) == []


def test_symlink_entries_are_refused(sqlite_instance, tmp_path):
    link = zipfile.ZipInfo("b/a.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    source = write_zip(tmp_path / "x.zip", [good_entries()[0], (link, b"/etc/passwd")])
    err = refused(sqlite_instance, source)
    assert [(i.code, i.value) for i in err.issues] == [("unsafe_zip_entry", "b/a.jpg")]
    assert "'b/a.jpg' is a symbolic link" in str(err)


def test_folder_images_named_or_linked_out_of_the_bundle_are_refused(sqlite_instance, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.jpg").write_bytes(JPG.read_bytes())
    src = bundle(tmp_path / "b", {"a.jpg": JPG.read_bytes()}, HEADER + "".join(
        f"o{i}\t{name}\n" for i, name in enumerate(
            ["a.jpg", "../secret/s.jpg", "link.jpg", "dir/s.jpg", "sub/../a.jpg", "inner.jpg"])))
    (src / "link.jpg").symlink_to(outside / "s.jpg")  # a file linked from outside
    (src / "dir").symlink_to(outside)  # a folder linked from outside
    (src / "inner.jpg").symlink_to(src / "a.jpg")  # a link inside the bundle: fine
    err = refused(sqlite_instance, src)
    assert [(i.line, i.column, i.code, i.value) for i in err.issues] == [
        (4, "img_file_name", "unsafe_image_path", "../secret/s.jpg"),
        (5, "img_file_name", "unsafe_image_path", "link.jpg"),
        (6, "img_file_name", "unsafe_image_path", "dir/s.jpg")]
    assert "image '../secret/s.jpg' is outside the bundle" in str(err)


@pytest.mark.parametrize("first, second", [
    ("b/img.jpg", "b/IMG.jpg"),
    ("b/" + unicodedata.normalize("NFC", "é.jpg"), "b/" + unicodedata.normalize("NFD", "é.jpg")),
    ("b/x", "b/x/y.jpg")])
def test_entries_that_would_be_one_file_are_refused(sqlite_instance, tmp_path, first, second):
    source = write_zip(tmp_path / "x.zip", good_entries() + [(first, b"1"), (second, b"2")])
    err = refused(sqlite_instance, source)
    assert codes(err) == {"zip_name_collision"}
    assert len(err.issues) == 1 and err.issues[0].value in (first, second)


# -- zip bombs ------------------------------------------------------------------------------
def test_a_real_zip_bomb_is_refused_before_extraction(sqlite_instance, tmp_path):
    source = tmp_path / "bomb.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in good_entries():
            z.writestr(name, data)
        z.writestr("b/zeros.bin", bytes(32 * 1024 * 1024))
    assert source.stat().st_size < 100_000
    err = refused(sqlite_instance, source)
    assert [(i.code, i.value) for i in err.issues] == [("zip_bomb", "b/zeros.bin")]
    assert "'b/zeros.bin' expands 1,0" in str(err)
    assert "more than the 200 times allowed" in str(err)


def test_zips_declaring_more_than_the_size_limit_are_refused(sqlite_instance, tmp_path):
    # Six stored entries whose directory declares ~4 GiB each: 24 GiB, past the 20 GiB limit.
    source = write_zip(tmp_path / "big.zip", [(f"b/f{i}.bin", b"x" * 100) for i in range(6)],
                       zipfile.ZIP_STORED)
    patch_central_directory(source, 24, "<I", 0xFFFFFF00)
    err = refused(sqlite_instance, source)
    assert "zip_too_large" in codes(err)
    assert "more than the 21,474,836,480 bytes an import may extract" in str(err)


def test_entries_larger_than_declared_are_refused(sqlite_instance, tmp_path):
    source = write_zip(tmp_path / "liar.zip", good_entries() + [("b/big.txt", b"y" * 5000)],
                       zipfile.ZIP_STORED)
    data = bytearray(source.read_bytes())
    at = data.find(b"PK\x01\x02")
    while data[at + 46:at + 55] != b"b/big.txt":  # the directory record of b/big.txt
        at = data.find(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", data, at + 24, 10)  # declares 10 bytes instead of 5000
    source.write_bytes(bytes(data))
    err = refused(sqlite_instance, source)
    assert [(i.code, i.value) for i in err.issues] == [("bad_zip", "b/big.txt")]
    assert "is corrupt or truncated" in str(err)


def test_too_many_entries_are_refused_before_reading_the_directory(tmp_path):
    source = write_zip(tmp_path / "many.zip", [(f"b/{i}.txt", b"") for i in range(30)])
    limits = ImportLimits(max_zip_entries=20)
    with pytest.raises(TsvFormatError) as err:
        with open_source(source, tmp_path / "work", limits=limits):
            pass
    assert [(i.code, i.path) for i in err.value.issues] == [("zip_too_many_entries", "many.zip")]
    assert "declares 30 entries, more than the 20" in str(err.value)
    assert not any((tmp_path / "work").iterdir())


def test_limits_are_shared_by_the_zips_of_one_import(tmp_path):
    inner = write_zip(tmp_path / "x_Images.zip", good_entries(""), zipfile.ZIP_STORED)
    outer = write_zip(tmp_path / "outer.zip", [("one_Images.zip", inner.read_bytes()),
                                               ("two_Images.zip", inner.read_bytes())],
                      zipfile.ZIP_STORED)
    size = inner.stat().st_size
    unpacked = sum(i.file_size for i in zipfile.ZipFile(inner).infolist())
    # Room for the outer zip and one inner zip, not two.
    limits = ImportLimits(max_unzipped_bytes=2 * size + unpacked + 10)
    with pytest.raises(TsvFormatError) as err:
        with open_source(outer, tmp_path / "work", limits=limits):
            pass
    assert [(i.code, i.path) for i in err.value.issues] == [("zip_too_large", "two_Images.zip")]
    with open_source(outer, tmp_path / "work") as source:
        assert [f.rel for f in source.tsv_files] == ["one_Images.zip/ecotaxa_a.tsv",
                                                     "two_Images.zip/ecotaxa_a.tsv"]
    assert not any((tmp_path / "work").iterdir())


# -- nesting, encryption, corruption ----------------------------------------------------------
def test_one_level_of_nested_zips_imports_deeper_ones_are_refused(sqlite_instance, tmp_path):
    inner = write_zip(tmp_path / "inner.zip", good_entries(""))
    ok = write_zip(tmp_path / "ok.zip", [("cast1_Images.zip", inner.read_bytes())])
    pid = new_project(sqlite_instance)
    result = import_path(sqlite_instance, pid, ok, user_id=None)
    assert (result.n_objects, result.tsv_files) == (1, ["cast1_Images.zip/ecotaxa_a.tsv"])

    deeper = write_zip(tmp_path / "deeper.zip", [("cast1_Images.zip", ok.read_bytes())])
    err = refused(sqlite_instance, deeper)
    assert [(i.path, i.code, i.value) for i in err.issues] == [
        ("cast1_Images.zip", "nested_zip", "cast1_Images.zip")]
    assert "only one level of zips is opened" in str(err)


def test_encrypted_zips_are_refused(sqlite_instance, tmp_path):
    source = write_zip(tmp_path / "secret.zip", good_entries())
    data = bytearray(source.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        while at >= 0:
            data[at + flag_at] |= 0x1
            at = data.find(sig, at + 4)
    source.write_bytes(bytes(data))
    err = refused(sqlite_instance, source)
    assert codes(err) == {"encrypted_zip"}
    assert "'b/a.jpg' is encrypted" in str(err)


def test_unknown_compression_methods_are_refused(sqlite_instance, tmp_path):
    source = write_zip(tmp_path / "odd.zip", good_entries(), zipfile.ZIP_STORED)
    patch_central_directory(source, 10, "<H", 99)
    err = refused(sqlite_instance, source)
    assert codes(err) == {"bad_zip"}
    assert "uses compression method 99" in str(err)


def test_corrupt_and_truncated_zips_are_refused(sqlite_instance, tmp_path):
    source = write_zip(tmp_path / "crc.zip", good_entries(), zipfile.ZIP_STORED)
    data = bytearray(source.read_bytes())
    at = data.find(b"\xff\xd8\xff")  # inside the stored JPEG
    data[at + 100] ^= 0xFF
    source.write_bytes(bytes(data))
    err = refused(sqlite_instance, source)
    assert [(i.code, i.value) for i in err.issues] == [("bad_zip", "b/a.jpg")]
    assert "Bad CRC-32" in str(err)

    whole = write_zip(tmp_path / "whole.zip", good_entries()).read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[:len(whole) // 2])
    err = refused(sqlite_instance, tmp_path / "cut.zip")
    assert [(i.path, i.code) for i in err.issues] == [("cut.zip", "bad_zip")]
    assert "truncated or corrupt" in str(err)


# -- images ----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("width, height", [(12_000, 10_000), (40_000, 40_000)])
def test_images_declaring_huge_sizes_are_refused(instance, tmp_path, width, height):
    # 120 Mpx: past our 100 Mpx limit; 1.6 Gpx: past Pillow's own bomb limit as well.
    source = bundle(tmp_path / "b", {"ok.jpg": JPG.read_bytes(),
                                     "bomb.png": png_declaring(width, height)})
    assert (source / "bomb.png").stat().st_size < 200
    err = refused(instance, source)
    assert [(i.path, i.line, i.column, i.code) for i in err.issues] == [
        ("ecotaxa_h.tsv", 4, "img_file_name", "image_too_large")]
    assert f"{width * height:,} pixels is above the limit of 100,000,000 pixels" in str(err)


def test_a_bad_image_found_while_rows_are_written_leaves_nothing(instance, tmp_path):
    """On PostgreSQL object and feature rows go in while the last images are checked:
    a refused image there rolls them back."""
    jpg = JPG.read_bytes()
    images = {f"v{i}.jpg": jpg for i in range(40)} | {"zz_cut.jpg": jpg[:len(jpg) // 2]}
    tsv = "object_id\timg_file_name\tobject_area\n[t]\t[t]\t[f]\n" + "".join(
        f"o{i}\t{name}\t{i}.5\n" for i, name in enumerate(images))
    err = refused(instance, bundle(tmp_path / "b", images, tsv))
    assert [(i.line, i.column, i.code, i.value) for i in err.issues] == [
        (43, "img_file_name", "bad_image", "zz_cut.jpg")]


def test_truncated_and_fake_images_are_refused(sqlite_instance, tmp_path):
    jpg = JPG.read_bytes()
    png = encoded(PILImage.new("L", (64, 64), 3), "PNG")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    source = bundle(tmp_path / "b", {"cut.jpg": jpg[:len(jpg) // 2], "text.jpg": b"hello\n" * 50,
                                     "empty.png": b"", "cut.png": png[:60],
                                     "vector.jpg": eps, "html.png": b"<html></html>"})
    err = refused(sqlite_instance, source)
    found = {i.value: (i.line, i.column, i.code) for i in err.issues}
    assert found == {name: (line, "img_file_name", "bad_image") for line, name in enumerate(
        ["cut.jpg", "text.jpg", "empty.png", "cut.png", "vector.jpg", "html.png"], start=3)}
    message = str(err)
    assert "line 3, column img_file_name: cannot read image 'cut.jpg' (truncated image" in message
    assert "'text.jpg' (not an image file" in message
    assert "'vector.jpg' (not an image file" in message  # PostScript is never interpreted


def _odd_images() -> dict[str, bytes]:
    grad16 = (np.arange(60 * 80, dtype=np.uint32).reshape(60, 80) * 13 % 65536).astype(np.uint16)
    tif_pages = io.BytesIO()
    PILImage.new("L", (40, 30), 10).save(tif_pages, format="TIFF", save_all=True,
                                         append_images=[PILImage.new("L", (90, 90), 250)])
    palette = PILImage.new("P", (50, 40))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    floats = np.linspace(-5, 5000, 30 * 20, dtype=np.float32).reshape(20, 30)
    return {
        "grey16.png": encoded(PILImage.fromarray(grad16), "PNG"),
        "grey16.tif": encoded(PILImage.fromarray(grad16), "TIFF"),
        "grey8.tif": encoded(PILImage.new("L", (33, 21), 77), "TIFF", compression="tiff_lzw"),
        "pages.tif": tif_pages.getvalue(),
        "float.tif": encoded(PILImage.fromarray(floats), "TIFF"),
        "int32.tif": encoded(PILImage.fromarray(grad16.astype(np.int32) * 4), "TIFF"),
        "cmyk.jpg": encoded(PILImage.new("CMYK", (25, 25), (0, 255, 255, 0)), "JPEG"),
        "palette.png": encoded(palette, "PNG"),
        "anim.gif": encoded(PILImage.new("P", (16, 12)), "GIF", save_all=True,
                            append_images=[PILImage.new("P", (16, 12), 1)]),
        "rgba.png": encoded(PILImage.new("RGBA", (20, 20), (255, 0, 0, 128)), "PNG"),
        "la.png": encoded(PILImage.new("LA", (20, 20), (0, 0)), "PNG"),
        "bilevel.bmp": encoded(PILImage.new("1", (17, 9), 1), "BMP"),
        "rgb.bmp": encoded(PILImage.new("RGB", (17, 9), (1, 2, 3)), "BMP"),
        "png_named.jpg": encoded(PILImage.new("L", (10, 10), 200), "PNG"),
    }


def test_odd_but_valid_images_import_with_their_sizes_and_thumbnails(sqlite_instance, tmp_path):
    images = _odd_images()
    source = bundle(tmp_path / "b", images)
    pid = new_project(sqlite_instance)
    result = import_path(sqlite_instance, pid, source, user_id=None)
    assert result.n_images == len(images)
    objs = objects_by_orig_id(sqlite_instance, pid)
    by_name = {o.images[0].original_name: o.images[0] for o in objs.values()}
    expected_size = {"grey16.png": (80, 60), "pages.tif": (40, 30), "float.tif": (30, 20),
                     "anim.gif": (16, 12), "bilevel.bmp": (17, 9), "png_named.jpg": (10, 10)}
    for name, size in expected_size.items():
        assert (by_name[name].width, by_name[name].height) == size, name
    extrema: dict[str, tuple[int, int]] = {}
    for name, image in by_name.items():
        assert sqlite_instance.vault.path(image.file_path).read_bytes() == images[name]
        # What the dashboard shows: a thumbnail, or a small 8-bit PNG/JPEG as it is.
        shown = image.thumb_path or image.file_path
        assert (image.thumb_path is None) == (name == "png_named.jpg"), name
        with PILImage.open(sqlite_instance.vault.path(shown)) as th:
            assert th.format in ("JPEG", "PNG") and th.mode in ("L", "RGB"), name
            assert max(th.size) <= 128
            extrema[name] = th.convert("L").getextrema()
    # 16-bit gradients keep their contrast (not clipped to white); the first TIFF page is shown.
    assert extrema["grey16.png"][1] - extrema["grey16.png"][0] > 200
    assert extrema["grey16.tif"] == extrema["grey16.png"]
    assert extrema["pages.tif"][1] < 30
    assert extrema["la.png"][0] > 245  # fully transparent: white


# -- TSV files -------------------------------------------------------------------------------
def test_binary_files_named_tsv_are_refused_with_their_line(sqlite_instance, tmp_path):
    source = bundle(tmp_path / "b", {"a.jpg": JPG.read_bytes()},
                    tsv=(HEADER + "o1\ta.jpg\no2\tb\x00c.jpg\n").encode())
    err = refused(sqlite_instance, source)
    assert [(i.path, i.line, i.column, i.code) for i in err.issues] == [
        ("ecotaxa_h.tsv", 4, "img_file_name", "not_text")]
    assert "not a text file: NUL character (binary data) at line 4, character 5" in str(err)

    (source / "ecotaxa_h.tsv").write_bytes(JPG.read_bytes())  # an image named .tsv
    err = refused(sqlite_instance, source)
    assert codes(err) == {"not_text"} and err.issues[0].line >= 1


def test_enormous_lines_and_values_are_refused_with_their_location(sqlite_instance, tmp_path):
    huge = HEADER + "o1\ta.jpg\n" + "o2\t" + "x" * (5 * 1024 * 1024) + "\n"
    source = bundle(tmp_path / "b", {"a.jpg": JPG.read_bytes()}, tsv=huge)
    err = refused(sqlite_instance, source)
    assert [(i.line, i.code) for i in err.issues] == [(4, "line_too_long")]
    assert "line 4 holds 5,242,884 characters, more than the 4,194,304" in str(err)

    long_value = HEADER.replace("\n", "\tobject_note\n", 1).replace("[t]\n", "[t]\t[t]\n", 1)
    long_value += "o1\ta.jpg\t" + "y" * 200_000 + "\n"
    (source / "ecotaxa_h.tsv").write_text(long_value)
    err = refused(sqlite_instance, source)
    assert [(i.line, i.column, i.code) for i in err.issues] == [
        (3, "object_note", "field_too_long")]
    assert len(str(err)) < 1000  # the value itself is not repeated in the message


def test_values_too_long_for_the_database_are_refused(instance, tmp_path):
    source = bundle(tmp_path / "b", {"a.jpg": JPG.read_bytes()},
                    tsv="object_id\timg_file_name\tacq_id\tacq_instrument\n[t]\t[t]\t[t]\t[t]\n"
                        f"{'o' * 300}\ta.jpg\tacq1\t{'uvp' * 30}\n")
    err = refused(instance, source)
    assert {(i.line, i.column, i.code) for i in err.issues} == {
        (3, "object_id", "text_too_long"), (3, "acq_instrument", "text_too_long")}
    assert "is longer than the 255 characters it may hold" in str(err)


def test_numbers_out_of_the_database_range_are_refused(sqlite_instance, tmp_path):
    source = bundle(tmp_path / "b", {"a.jpg": JPG.read_bytes()},
                    tsv="object_id\timg_file_name\timg_rank\tobject_annotation_category_id\t"
                        "object_annotation_status\n[t]\t[t]\t[f]\t[f]\t[t]\n"
                        "o1\ta.jpg\t1e12\t99999999999\tV\n")
    err = refused(sqlite_instance, source)
    assert {(i.line, i.column) for i in err.issues} >= {
        (3, "img_rank"), (3, "object_annotation_category_id")}
    assert "integer '1e12' is out of range" in str(err)


def test_encodings_line_ends_and_quotes_of_real_files_import(sqlite_instance, tmp_path):
    rows = ["object_id\timg_file_name\tobject_site\tobject_lat\t\t",
            "[t]\t[t]\t[t]\t[t]\t\t", "o1\ta.jpg\tBaie de Villefranche é\t43°30 36 N\t\t",
            'o2\ta.jpg\t"quoted ""site"""\t-7°15.5\t', "o3\ta.jpg\tit's 5\" long\t12.5S"]
    variants = {
        "latin1": "\r\n".join(rows).encode("latin-1"),
        "utf8_bom": b"\xef\xbb\xbf" + "\n".join(rows).encode(),
        "utf16": "\r\n".join(rows).encode("utf-16"),
        "mixed": "\n".join(rows[:2]).encode() + b"\r" + rows[2].encode("latin-1") + b"\r\n"
                 + "\n".join(rows[3:]).encode() + b"\n",
    }
    for name, data in variants.items():
        source = bundle(tmp_path / name, {"a.jpg": JPG.read_bytes()}, tsv=data)
        pid = new_project(sqlite_instance, name)
        result = import_path(sqlite_instance, pid, source, user_id=None)
        assert result.n_objects == 3, name
        objs = objects_by_orig_id(sqlite_instance, pid)
        assert objs["o1"].extra["site"] == "Baie de Villefranche é", name
        assert objs["o2"].extra["site"] == 'quoted "site"', name
        assert objs["o3"].extra["site"] == "it's 5\" long", name
        assert (objs["o1"].lat, objs["o3"].lat) == (43.51, -12.5), name
        assert objs["o2"].lat == pytest.approx(-7.258333, abs=1e-6), name


def test_an_unclosed_quote_is_refused_not_swallowing_the_file(sqlite_instance, tmp_path):
    source = bundle(tmp_path / "b", {"a.jpg": JPG.read_bytes()},
                    tsv=HEADER + 'o1\ta.jpg\n"o2\ta.jpg\no3\ta.jpg\n')
    err = refused(sqlite_instance, source)
    assert [(i.line, i.code) for i in err.issues] == [(4, "unclosed_quote")]
    assert "a quote (\") opened on line 4 is never closed" in str(err)


def test_refusals_leave_the_work_folder_empty_even_for_zips(sqlite_instance, tmp_path):
    images = {"a.jpg": JPG.read_bytes(), "b.png": png_declaring(50_000, 50_000)}
    folder = bundle(tmp_path / "b", images)
    source = tmp_path / "z.zip"
    with zipfile.ZipFile(source, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"b/{f.name}")
    err = refused(sqlite_instance, source)
    assert codes(err) == {"image_too_large"}
    assert scratch_left(sqlite_instance) == []
    shutil.rmtree(folder)


def test_duplicate_entries_and_windows_separators(sqlite_instance, tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        source = write_zip(tmp_path / "dup.zip", good_entries() + [("b/a.jpg", b"other")])
    err = refused(sqlite_instance, source)
    assert [(i.code, i.value) for i in err.issues] == [("zip_name_collision", "b/a.jpg")]
    assert "'b/a.jpg' appears twice" in str(err)
    # Backslashes are folder separators: a zip made by an old Windows tool imports.
    windows = write_zip(tmp_path / "win.zip", [("b\\", b"")] + [
        (name.replace("/", "\\"), data) for name, data in good_entries()])
    result = import_path(sqlite_instance, new_project(sqlite_instance), windows, user_id=None)
    assert result.n_objects == 1 and result.tsv_files == ["b/ecotaxa_a.tsv"]


def test_image_limit_from_the_settings_refuses_the_import(tmp_path):
    """ECOTAXA_IMPORT_MAX_IMAGE_MEGAPIXELS bounds the images an import accepts."""
    from sqlalchemy import func, select

    from ecotaxa_core.db.models import Object
    from ecotaxa_core.importer import import_path
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.settings import Settings
    from ecotaxa_core.tsv import TsvFormatError
    from conftest import IMPORT_CASES

    inst = init_instance(Settings(home=tmp_path / "home", import_max_image_megapixels=0.001),
                         "a@b.org", "pw")
    with inst.sessions.begin() as s:
        pid = create_project(s, "P").id
    with pytest.raises(TsvFormatError, match=r"line 3, column img_file_name: .* above the limit of 1,000 pixels"):
        import_path(inst, pid, IMPORT_CASES / "import_test", user_id=None,
                    create_missing_taxa=True, create_missing_users=True)
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)) == 0
    inst.close()
