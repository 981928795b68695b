"""What an import path holds: an EcoTaxa bundle or class folders, in a folder or a zip.

A path holding ``ecotaxa*.tsv`` (or ``.txt``) files anywhere is an EcoTaxa
bundle; when none is found, the zips it holds that have such files (UVP6
``*Images.zip``) are opened too: one level of zip inside the source, never
deeper. Otherwise it is a class-folder layout: sub-folders named after
categories holding images, possibly under one or two wrapping folders.

Zips come from anyone, so they are extracted by :func:`safe_extract` into a
temporary folder under the instance's work dir, removed afterwards whatever
happens, and refused, every problem listed, before a byte is written, when:

- an entry would land outside that folder (absolute path, drive letter,
  ``..``), is a symbolic link or a device, or has a name the file system
  cannot hold;
- two entries would be one file on a case-insensitive or normalising file
  system (``A.jpg`` and ``a.jpg``; ``é`` composed and decomposed), or an entry
  is both a file and a folder;
- an entry is encrypted or uses a compression method Python cannot read;
- it is a zip bomb: more than :data:`MAX_ZIP_ENTRIES` entries, more than
  :data:`MAX_UNZIPPED_BYTES` once extracted (all zips of the source counted
  together), an entry (or the whole) compressed more than
  :data:`MAX_COMPRESSION_RATIO` times, or more than the free disk space;
- a zip inside a zip of the source holds zips itself (nesting too deep).

While extracting, the bytes really written are counted (an entry may not
exceed its declared size), and a corrupt entry (bad CRC, truncated data)
stops the import with the entry's name.
"""

from __future__ import annotations

import lzma
import re
import shutil
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ecotaxa_core.image_files import MAX_IMAGE_PIXELS
from ecotaxa_core.tsv.issues import ImportReport, TsvFormatError
from ecotaxa_core.tsv.reader import MAX_FIELD_CHARS, MAX_FILE_BYTES, MAX_LINE_CHARS

__all__ = ["IMAGE_SUFFIXES", "TsvSourceFile", "ImportSource", "ImportLimits", "open_source",
           "safe_extract", "MAX_UNZIPPED_BYTES", "MAX_COMPRESSION_RATIO", "MAX_ZIP_ENTRIES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif")
_TSV_SUFFIXES = (".tsv", ".txt")

MAX_UNZIPPED_BYTES = 20 * 1024**3  # 20 GiB for all the zips of one import
MAX_COMPRESSION_RATIO = 200  # JPEG/PNG vignettes barely compress, TSVs ~10x, zeros ~1000x
MAX_ZIP_ENTRIES = 1_000_000
# Entries smaller than this are not judged on their ratio (a blank 100 kB BMP compresses 300x).
_RATIO_MIN_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                     zipfile.ZIP_LZMA)


@dataclass(frozen=True)
class ImportLimits:
    """Bounds an import source must stay within (hostile input is refused past them)."""

    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES
    max_compression_ratio: float = MAX_COMPRESSION_RATIO
    max_zip_entries: int = MAX_ZIP_ENTRIES
    max_image_pixels: int = MAX_IMAGE_PIXELS  # for import_images and the vault
    max_tsv_line_chars: int = MAX_LINE_CHARS  # for tsv.reader.read_tsv
    max_tsv_field_chars: int = MAX_FIELD_CHARS
    max_tsv_bytes: int = MAX_FILE_BYTES


@dataclass(frozen=True)
class TsvSourceFile:
    path: Path
    rel: str  # name in messages, relative to the import source
    base: Path  # folder its images must stay within (the bundle it came in)


@dataclass
class ImportSource:
    """A readable view of an import path (``root`` is a temporary copy for zips)."""

    source: str
    name: str
    root: Path
    kind: str  # "ecotaxa_bundle" | "class_folders"
    tsv_files: list[TsvSourceFile] = field(default_factory=list)
    class_folders: list[Path] = field(default_factory=list)
    limits: ImportLimits = field(default_factory=ImportLimits)

    def rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()


def _hidden(rel_parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel_parts)


def _find_tsv(base: Path, prefix: str) -> list[TsvSourceFile]:
    found = []
    for p in base.rglob("*"):
        rel = p.relative_to(base)
        if (p.is_file() and not _hidden(rel.parts) and p.name.lower().startswith("ecotaxa")
                and p.suffix.lower() in _TSV_SUFFIXES):
            found.append(TsvSourceFile(p, prefix + rel.as_posix(), base))
    return sorted(found, key=lambda f: f.rel)


def _is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip") and not _hidden(tuple(name.split("/")))


def _inner_zips(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file()
                  and _is_zip_name(p.relative_to(base).as_posix()))


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _find_class_folders(root: Path, max_wrapping: int = 2) -> list[Path]:
    here = root
    for _ in range(max_wrapping + 1):
        subdirs = sorted(p for p in here.iterdir()
                         if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
        classes = [d for d in subdirs if any(_is_image(f) for f in d.iterdir())]
        if classes:
            return classes
        if len(subdirs) != 1:
            return []
        here = subdirs[0]
    return []


# -- zips ------------------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:")
_NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows)
_PATH_MAX = 1024


@dataclass
class _Budget:
    """What the zips of one import may still extract (all of them together)."""

    limits: ImportLimits
    bytes_left: int = 0
    entries_left: int = 0

    def __post_init__(self) -> None:
        self.bytes_left = self.limits.max_unzipped_bytes
        self.entries_left = self.limits.max_zip_entries


def _declared_entries(path: Path) -> int | None:
    """The entry count a zip's end record declares, read before Python loads its directory."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            tail_size = min(size, 22 + 65535)
            f.seek(size - tail_size)
            tail = f.read(tail_size)
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or len(tail) - at < 22:
                return None
            (count,) = struct.unpack_from("<H", tail, at + 10)
            if count != 0xFFFF:
                return count
            locator = at - 20  # zip64: the real count is in the zip64 end record
            if locator < 0 or tail[locator:locator + 4] != b"PK\x06\x07":
                return None
            (offset,) = struct.unpack_from("<Q", tail, locator + 8)
            f.seek(offset)
            record = f.read(56)
            if record[:4] != b"PK\x06\x06" or len(record) < 40:
                return None
            return struct.unpack_from("<Q", record, 32)[0]
    except OSError:
        return None


def _clean_name(info: zipfile.ZipInfo) -> str:
    """The entry's path relative to the extraction folder ('' for nothing to write)."""
    return "/".join(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.filename.replace("\\", "/").endswith("/")  # Windows tools may write "a\\"


def _entry_problem(info: zipfile.ZipInfo, name: str) -> tuple[str, str] | None:
    """(code, reason) when an entry may not be extracted, whatever its content."""
    raw = info.filename.replace("\\", "/")
    if raw.startswith("/") or _DRIVE.match(raw) or ".." in raw.split("/"):
        return "unsafe_zip_entry", "would be written outside the extraction folder " \
                                   "(absolute path or '..')"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "unsafe_zip_entry", "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "unsafe_zip_entry", "is not a regular file or folder (device, pipe ...)"
    if any(len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX for p in name.split("/")) \
            or len(name.encode("utf-8", "surrogateescape")) > _PATH_MAX:
        return "unsafe_zip_entry", "has a name too long for the file system"
    if any(ord(c) < 32 for c in name):
        return "unsafe_zip_entry", "has control characters in its name"
    if info.flag_bits & 0x1:
        return "encrypted_zip", "is encrypted (password-protected zips cannot be imported)"
    if info.compress_type not in _READABLE_METHODS:
        return "bad_zip", f"uses compression method {info.compress_type}, which cannot be read " \
                          "(use deflate, bzip2, lzma or none)"
    return None


def _check_entries(infos: list[zipfile.ZipInfo], report: ImportReport, rel: str,
                   limits: ImportLimits, budget: _Budget, allow_zips: bool) -> bool:
    """Report every entry that may not be extracted, and zip-bomb sizes; True when none."""
    n_before = report.n_issues

    def refuse(name: str | None, code: str, message: str) -> None:
        report.add(rel, None, None, name, code, message + "; the zip is refused")

    files: dict[str, str] = {}  # normalised, case-folded name -> entry name
    folders: set[str] = set()
    bombs = False
    for info in infos:
        name = _clean_name(info)
        problem = _entry_problem(info, name)
        if problem is not None:
            refuse(info.filename, problem[0], f"zip entry {info.filename!r} {problem[1]}")
            continue
        if not name:
            continue
        key = unicodedata.normalize("NFC", name).casefold()
        parts = key.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if _is_dir(info):
            folders.add(key)
            continue
        if key in files:
            refuse(info.filename, "zip_name_collision",
                   f"zip entry {info.filename!r} appears twice" if files[key] == info.filename
                   else f"zip entries {files[key]!r} and {info.filename!r} would be the same file "
                   "(their names differ only by case or Unicode normalisation)")
            continue
        files[key] = info.filename
        if not allow_zips and _is_zip_name(name):
            refuse(info.filename, "nested_zip",
                   f"zip entry {info.filename!r} is a zip inside a zip inside the import source: "
                   "only one level of zips is opened")
        if info.file_size > _RATIO_MIN_BYTES and \
                info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            bombs = True
            ratio = info.file_size / max(info.compress_size, 1)
            refuse(info.filename, "zip_bomb",
                   f"zip entry {info.filename!r} expands {ratio:,.0f} times "
                   f"({info.compress_size:,} to {info.file_size:,} bytes), more than the "
                   f"{limits.max_compression_ratio:g} times allowed")
    for key in sorted(set(files) & folders):
        refuse(files[key], "zip_name_collision",
               f"zip entry {files[key]!r} is both a file and a folder")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if total > budget.bytes_left:
        refuse(None, "zip_too_large",
               f"the zip expands to {total:,} bytes, more than the {budget.bytes_left:,} bytes "
               f"an import may extract (limit {limits.max_unzipped_bytes:,} for all its zips)")
    elif not bombs and total > _RATIO_MIN_BYTES \
            and total > limits.max_compression_ratio * max(packed, 1):
        refuse(None, "zip_bomb",
               f"the zip expands {total / max(packed, 1):,.0f} times ({packed:,} to {total:,} "
               f"bytes), more than the {limits.max_compression_ratio:g} times allowed")
    return report.n_issues == n_before


def _free_space(folder: Path) -> int:
    here = folder
    while not here.exists():
        here = here.parent
    return shutil.disk_usage(here).free


_READ_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError,
                NotImplementedError, RuntimeError)


def _extract_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: _Budget) -> None:
    """Write one checked entry; raises :class:`_Refused`, or OSError when it cannot be written."""
    target = dest / _clean_name(info)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise _Refused("unsafe_zip_entry", "would be written outside the extraction folder")
    if _is_dir(info):
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        src = z.open(info)
    except _READ_ERRORS as e:
        raise _Refused("bad_zip", f"cannot be read ({e})") from None
    with src, open(target, "xb") as out:
        while True:
            try:
                chunk = src.read(_CHUNK)
            except _READ_ERRORS as e:  # bad CRC, truncated or garbled data
                raise _Refused("bad_zip", f"is corrupt or truncated ({e})") from None
            if not chunk:
                break
            written += len(chunk)
            if written > info.file_size:
                raise _Refused("zip_bomb", f"expands to more than its declared {info.file_size:,} "
                                           "bytes")
            if written > budget.bytes_left:
                raise _Refused("zip_too_large", "goes past the bytes an import may extract")
            out.write(chunk)
    budget.bytes_left -= written
    budget.entries_left -= 1


class _Refused(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def safe_extract(zip_path: Path, dest: Path, report: ImportReport, rel: str, *,
                 limits: ImportLimits | None = None, budget: _Budget | None = None,
                 allow_zips: bool = True) -> bool:
    """Extract ``zip_path`` into ``dest``; False (and issues naming ``rel``) when refused.

    Every entry is checked before anything is written (see the module's
    documentation); ``budget`` is shared by the zips of one import;
    ``allow_zips=False`` refuses zips that hold zips. On a refusal during the
    extraction, what was written stays in ``dest`` for the caller to remove
    (:func:`open_source` removes its whole temporary folder).
    """
    limits = limits or ImportLimits()
    budget = budget or _Budget(limits)
    declared = _declared_entries(zip_path)
    if declared is not None and declared > budget.entries_left:
        report.add(rel, None, None, None, "zip_too_many_entries",
                   f"the zip declares {declared:,} entries, more than the "
                   f"{budget.entries_left:,} an import may extract "
                   f"(limit {limits.max_zip_entries:,}); the zip is refused")
        return False
    try:
        with zipfile.ZipFile(zip_path) as z:
            infos = z.infolist()
            if len(infos) > budget.entries_left:
                report.add(rel, None, None, None, "zip_too_many_entries",
                           f"the zip holds {len(infos):,} entries, more than the "
                           f"{budget.entries_left:,} an import may extract; the zip is refused")
                return False
            if not _check_entries(infos, report, rel, limits, budget, allow_zips):
                return False
            needed = sum(i.file_size for i in infos)
            free = _free_space(dest)
            if needed > free:
                report.add(rel, None, None, None, "no_space",
                           f"the zip expands to {needed:,} bytes but only {free:,} bytes are "
                           "free in the work folder")
                return False
            dest.mkdir(parents=True, exist_ok=True)
            for info in infos:
                if not _clean_name(info):
                    continue
                try:
                    _extract_entry(z, info, dest, budget)
                except _Refused as e:
                    report.add(rel, None, None, info.filename, e.code,
                               f"zip entry {info.filename!r} {e.reason}; the zip is refused")
                    return False
                except OSError as e:
                    report.add(rel, None, None, info.filename, "bad_zip",
                               f"zip entry {info.filename!r} cannot be written "
                               f"({e.strerror or e}); the zip is refused")
                    return False
    except zipfile.BadZipFile as e:
        report.add(rel, None, None, None, "bad_zip", f"cannot read the zip file ({e})")
        return False
    except OSError as e:
        report.add(rel, None, None, None, "bad_zip",
                   f"cannot read the zip file ({e.strerror or e})")
        return False
    return True


def _looks_like_zip(path: Path) -> bool:
    if path.suffix.lower() == ".zip":
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


@contextmanager
def open_source(path: str | Path, work_dir: Path, *,
                limits: ImportLimits | None = None) -> Iterator[ImportSource]:
    """Detect what ``path`` holds; raises :class:`TsvFormatError` when nothing importable.

    Zips are extracted under ``work_dir`` (within ``limits``), in a temporary
    folder removed when the context ends, however it ends.
    """
    path = Path(path)
    limits = limits or ImportLimits()
    budget = _Budget(limits)
    report = ImportReport(str(path))
    tmp: Path | None = None

    def scratch() -> Path:
        nonlocal tmp
        if tmp is None:
            work_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="import_", dir=work_dir))
        return tmp

    try:
        if not path.exists():
            report.add(str(path), None, None, None, "not_found", f"{path} does not exist")
            raise TsvFormatError(report)
        name = path.stem if path.is_file() else path.name
        if path.is_file():
            if not zipfile.is_zipfile(path):
                if _looks_like_zip(path):
                    report.add(path.name, None, None, None, "bad_zip",
                               "cannot read the zip file: it is truncated or corrupt (no zip "
                               "directory at its end)")
                else:
                    report.add(path.name, None, None, None, "not_a_bundle",
                               f"{path} is neither a folder nor a zip file")
                raise TsvFormatError(report)
            root = scratch() / "source"
            if not safe_extract(path, root, report, path.name, limits=limits, budget=budget):
                raise TsvFormatError(report)
        else:
            root = path
        source = ImportSource(source=str(path), name=name, root=root, kind="ecotaxa_bundle",
                              limits=limits)
        source.tsv_files = _find_tsv(root, "")
        if not source.tsv_files:
            for inner in _inner_zips(root):
                inner_rel = inner.relative_to(root).as_posix()
                dest = scratch() / "inner" / inner_rel
                if not safe_extract(inner, dest, report, inner_rel, limits=limits,
                                    budget=budget, allow_zips=False):
                    continue
                source.tsv_files += _find_tsv(dest, inner_rel + "/")
            report.raise_if_any()
        if not source.tsv_files:
            source.kind = "class_folders"
            source.class_folders = _find_class_folders(root)
            if not source.class_folders:
                report.add(path.name, None, None, None, "no_relevant_file",
                           f"no ecotaxa*.tsv file and no class folders in {path}")
                raise TsvFormatError(report)
        yield source
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
