"""What an import path holds: an EcoTaxa bundle or class folders, in a folder or a zip.

A path holding ``ecotaxa*.tsv`` (or ``.txt``) files anywhere is an EcoTaxa
bundle; zips inside it that hold such files (UVP6 ``*Images.zip``) are opened
too. Otherwise it is a class-folder layout: sub-folders named after categories
holding images, possibly under one or two wrapping folders. Zips are extracted
in a temporary folder under the instance's work dir, removed afterwards, and
refused when an entry would land outside it (``..``, absolute paths).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ecotaxa_core.tsv.issues import ImportReport, TsvFormatError

__all__ = ["IMAGE_SUFFIXES", "TsvSourceFile", "ImportSource", "open_source", "safe_extract"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif")
_TSV_SUFFIXES = (".tsv", ".txt")


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


def _inner_zips(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() == ".zip"
                  and not _hidden(p.relative_to(base).parts))


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


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_extract(zip_path: Path, dest: Path, report: ImportReport, rel: str) -> bool:
    """Extract ``zip_path`` into ``dest``; False (and issues) when it is unreadable or unsafe."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            unsafe = []
            for info in z.infolist():
                name = info.filename.replace("\\", "/")
                if name.startswith("/") or _DRIVE.match(name) or ".." in name.split("/"):
                    unsafe.append(info.filename)
            for name in unsafe:
                report.add(rel, None, None, name, "unsafe_zip_entry",
                           f"zip entry {name!r} would be written outside the extraction "
                           "folder (absolute path or '..'); the zip is refused")
            if unsafe:
                return False
            z.extractall(dest)
    except (zipfile.BadZipFile, OSError) as e:
        report.add(rel, None, None, None, "bad_zip", f"cannot read the zip file ({e})")
        return False
    return True


@contextmanager
def open_source(path: str | Path, work_dir: Path) -> Iterator[ImportSource]:
    """Detect what ``path`` holds; raises :class:`TsvFormatError` when nothing importable."""
    path = Path(path)
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
                report.add(path.name, None, None, None, "not_a_bundle",
                           f"{path} is neither a folder nor a zip file")
                raise TsvFormatError(report)
            root = scratch() / "source"
            if not safe_extract(path, root, report, path.name):
                raise TsvFormatError(report)
        else:
            root = path
        source = ImportSource(source=str(path), name=name, root=root, kind="ecotaxa_bundle")
        source.tsv_files = _find_tsv(root, "")
        if not source.tsv_files:
            for inner in _inner_zips(root):
                inner_rel = inner.relative_to(root).as_posix()
                dest = scratch() / "inner" / inner_rel
                if not safe_extract(inner, dest, report, inner_rel):
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
