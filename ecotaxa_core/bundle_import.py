"""Turning the TSV files of an EcoTaxa bundle into an :class:`ImportPlan`.

Every line of every file is checked and each problem goes to the report with
its file, line and column; nothing is written here. Rows with the same
``object_id`` in one file and different images (``img_rank``) are several
images of one object. Samples, acquisitions and processes are shared by the
objects (and files) that name them; an acquisition belongs to one sample. An
acquisition without a sample, or a process without an acquisition, gets a
parent of the same id, since the database always links them.
"""

from __future__ import annotations

import math
import os
import re
import stat
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from ecotaxa_core.db.models import ObjectStatus
from ecotaxa_core.import_plan import (FreeValues, ImagePlan, ImportPlan, NumberLayout,
                                     ObjectPlan, ParentPlan)
from ecotaxa_core.import_sources import ImportSource, TsvSourceFile
from ecotaxa_core.import_spool import ObjectSpool
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.tsv.reader import TsvColumn, TsvRow, TsvTable, read_tsv
from ecotaxa_core.tsv.values import (parse_date, parse_float, parse_int, parse_latitude,
                                     parse_longitude, parse_status, parse_time)

__all__ = ["plan_bundle", "report_missing_image"]

T = TypeVar("T")

_CODES = {"object_lat": "bad_lat", "object_lon": "bad_lon", "sample_lat": "bad_lat",
          "sample_lon": "bad_lon", "object_date": "bad_date", "object_time": "bad_time",
          "object_annotation_date": "bad_date", "object_annotation_time": "bad_time",
          "object_annotation_status": "bad_status", "img_rank": "bad_rank",
          "object_annotation_category_id": "bad_category_id"}


def plan_bundle(source: ImportSource, report: ImportReport,
                tsv_files: Sequence[TsvSourceFile] | None = None, *,
                on_image: Callable[[ImagePlan], None] | None = None,
                spill_dir: Path | None = None) -> ImportPlan:
    """Read and check the TSVs of ``source`` (images are checked by the caller).

    ``tsv_files`` restricts the reading to some of them (a re-import skips the
    files already loaded). ``on_image`` is called with each image of a new
    object as soon as its line is read (to check and stage it meanwhile). The
    objects spool to ``spill_dir`` (see :mod:`~ecotaxa_core.import_spool`).
    """
    files = list(source.tsv_files if tsv_files is None else tsv_files)
    plan = ImportPlan(source=source.source, kind="ecotaxa_bundle",
                      tsv_files=[f.rel for f in files], objects=ObjectSpool(spill_dir))
    seen = _SeenObjects()
    for number, tsv in enumerate(files):
        table = read_tsv(tsv.path, tsv.rel, report,
                         max_line_chars=source.limits.max_tsv_line_chars,
                         max_field_chars=source.limits.max_tsv_field_chars)
        if table is None:
            continue
        _merge_free_columns(plan, table, report)
        _TableReader(plan, tsv, number, table, report, seen, on_image).read()
        plan.tsv_rows[tsv.rel] = table.n_rows
    plan.objects.attach_late_images(lambda obj, image: _new_image(report, obj, image))
    return plan


class _SeenObjects:
    """Where each object of the bundle was read, a few bytes an object (a dict entry and
    two array items), so that memory stays flat while its rows go to disk."""

    def __init__(self) -> None:
        self.position: dict[str, int] = {}  # orig_id -> position in the plan's spool
        self.file = array("I")  # number of the file, per position
        self.line = array("Q")  # its line there, per position

    def add(self, orig_id: str, file_number: int, line: int) -> None:
        self.position[orig_id] = len(self.file)
        self.file.append(file_number)
        self.line.append(line)


def _new_image(report: ImportReport, obj: ObjectPlan, image: ImagePlan) -> bool:
    """Whether ``image`` (of another row of ``obj``) is one more image of it, or a
    duplicate row (reported)."""
    for other in obj.images:
        if other.original_name == image.original_name:
            report.add(image.rel, image.line, "img_file_name", image.original_name,
                       "duplicate_object",
                       f"(object {obj.orig_id!r}, image {image.original_name!r}) is "
                       f"already in this file at line {other.line}")
            return False
        if other.rank == image.rank:
            report.add(image.rel, image.line, "img_rank", str(image.rank), "duplicate_object",
                       f"object {obj.orig_id!r} already has an image of rank "
                       f"{image.rank} at line {other.line}")
            return False
    return True


def report_missing_image(report: ImportReport, image: ImagePlan) -> None:
    report.add(image.rel, image.line, "img_file_name", image.original_name, "missing_image",
               f"missing image {image.original_name!r}")


def _merge_free_columns(plan: ImportPlan, table: TsvTable, report: ImportReport) -> None:
    for col in table.columns:
        if not col.free:
            continue
        known = plan.free_columns[col.prefix].get(col.field)
        if known is None:
            plan.free_columns[col.prefix][col.field] = col.type
            plan.column_files[col.name] = table.rel
        elif known != col.type:
            report.add(table.rel, 2, col.name, f"[{col.type}]", "column_type_conflict",
                       f"column {col.name!r} is [{col.type}] here but [{known}] in "
                       f"{plan.column_files[col.name]}")


# A row's numeric cells joined by NUL (never in a file: binary files are refused) when each
# is empty or a plain number: one regular expression checks them all at once.
_PLAIN = r" *(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)? *"
_PLAIN_NUMBERS = re.compile(rf"{_PLAIN}(?:\x00{_PLAIN})*")


class _FreeColumns:
    """The free columns of one prefix in one file, ready for fast reading."""

    def __init__(self, columns: list[TsvColumn]):
        self.numeric = [c for c in columns if c.type == "f"]
        self.text = [(c.index, c.field) for c in columns if c.type != "f"]
        self.layout = NumberLayout(tuple(c.field for c in self.numeric))
        self._indices = [c.index for c in self.numeric]
        self._width = max(self._indices, default=-1) + 1

    def numbers(self, cells: list[str]) -> array | None:
        """The numeric cells' values (NaN: empty), or None when some cell needs
        :func:`~ecotaxa_core.tsv.values.parse_float` (to refuse it, or to read ``NaN``)."""
        if not self._indices:
            return array("d")
        if len(cells) >= self._width:
            texts = [cells[i] for i in self._indices]
        else:
            texts = [cells[i] if i < len(cells) else "" for i in self._indices]
        joined = "\x00".join(texts)
        if _PLAIN_NUMBERS.fullmatch(joined) is None:
            return None
        try:  # every cell is a number (the usual case)
            values = array("d", map(float, texts))
        except ValueError:  # some are empty
            values = array("d", [float(t) if t and not t.isspace() else math.nan for t in texts])
        if "e" in joined or "E" in joined:  # 1e999 is infinite: no value, as in parse_float
            for i, value in enumerate(values):
                if math.isinf(value):
                    values[i] = math.nan
        return values


class _ImageLocator:
    """Where an image a TSV names lies, if inside the bundle: ``(path, is a file)``.

    Symbolic links are followed (a link out of the bundle is refused), with one
    ``lstat`` per image: folders are resolved once each.
    """

    def __init__(self, base: Path, tsv_folder: Path):
        self.base = os.path.realpath(base)
        self.folder = str(tsv_folder)
        self._real: dict[str, str] = {}  # folder -> its real path

    def _inside(self, path: str) -> bool:
        return path == self.base or path.startswith(self.base.rstrip(os.sep) + os.sep)

    def __call__(self, name: str) -> tuple[str, bool] | None:
        joined = os.path.normpath(os.path.join(self.folder, name.replace("\\", "/")))
        folder, file_name = os.path.split(joined)
        real = self._real.get(folder)
        if real is None:
            real = self._real[folder] = os.path.realpath(folder)
        path = os.path.join(real, file_name)
        if not self._inside(real) or not file_name:
            return None
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return path, False
        if stat.S_ISLNK(mode):
            path = os.path.realpath(path)
            if not self._inside(path):
                return None
            return path, os.path.isfile(path)
        return path, stat.S_ISREG(mode)


class _TableReader:
    """Checks the rows of one table and adds them to the plan."""

    def __init__(self, plan: ImportPlan, tsv: TsvSourceFile, number: int, table: TsvTable,
                 report: ImportReport, seen: _SeenObjects,
                 on_image: Callable[[ImagePlan], None] | None = None):
        self.plan, self.tsv, self.number, self.table = plan, tsv, number, table
        self.report, self.seen = report, seen
        self.on_image = on_image or (lambda image: None)
        self.files = plan.tsv_files
        self.locate = _ImageLocator(tsv.base, tsv.path.parent)
        self.free = {prefix: _FreeColumns(table.free_columns(prefix))
                     for prefix in ("object", "sample", "acq", "process")}
        self.present = frozenset(c.name for c in table.columns)
        self._absent: dict[str, object] = {}
        # The cells of the parent columns of the last row, when reading them raised no
        # problem: a row naming the same parents with the same cells changes nothing.
        self._parent_columns = [c.index for c in table.columns
                                if c.prefix in ("sample", "acq", "process")]
        self._last_parents: list[str] | None = None
        # Fields of each parent kind this file has columns for ("lat", a free field ...).
        self.parent_fields = {
            prefix: {c.field for c in table.columns if c.prefix == prefix and c.field != "id"}
            for prefix in ("sample", "acq", "process")}

    def read(self) -> None:
        for row in self.table.rows():
            self._row(row)

    # -- cells ----------------------------------------------------------------
    def _parse(self, row: TsvRow, name: str, parser: Callable[[str], T],
               code: str | None = None) -> T | None:
        if name not in self.present:  # the value of an empty cell, once per file
            if name not in self._absent:
                self._absent[name] = parser("")
            return self._absent[name]
        text = self.table.value(row, name)
        try:
            return parser(text)
        except ValueError as e:
            self.report.add(self.table.rel, row.line, name, text,
                            code or _CODES.get(name, "bad_float"), str(e))
            return None

    def _free_values(self, row: TsvRow, prefix: str) -> FreeValues:
        free = self.free[prefix]
        numbers = free.numbers(row.cells)
        if numbers is None:  # some cell is not a plain number: each one checked, and reported
            numbers = array("d", [math.nan] * len(free.numeric))
            for i, col in enumerate(free.numeric):
                value = self._parse(row, col.name, parse_float, "bad_float")
                if value is not None:
                    numbers[i] = value
        cells, n = row.cells, len(row.cells)
        texts = {fld: text for index, fld in free.text
                 if index < n and (text := cells[index].strip())}
        return FreeValues(free.layout, numbers, texts)

    # -- rows -----------------------------------------------------------------
    def _row(self, row: TsvRow) -> None:
        rel, line, v = self.table.rel, row.line, lambda n: self.table.value(row, n)
        orig_id = v("object_id")
        obj = self._object_fields(row, orig_id)
        image = self._image(row)
        if not orig_id:
            self.report.add(rel, line, "object_id", "", "missing_object_id", "missing object_id")
            if image is not None and image.missing:
                report_missing_image(self.report, image)
            return
        seen = self.seen
        position = seen.position.get(orig_id)
        if position is not None:
            if seen.file[position] != self.number:
                self.report.add(rel, line, "object_id", orig_id, "duplicate_object",
                                f"object {orig_id!r} is already in "
                                f"{self.files[seen.file[position]]} line {seen.line[position]}")
            elif image is not None:  # one more image of an object of this file
                previous = self.plan.objects.in_memory(position)
                if previous is None:  # rows far apart: added once the files are read
                    self.plan.objects.add_late_image(position, orig_id, image)
                    self.on_image(image)
                elif _new_image(self.report, previous, image):
                    previous.images.append(image)
                    self.on_image(image)
            return
        seen.add(orig_id, self.number, line)
        if image is not None:
            obj.images.append(image)
            self.on_image(image)
        self._parents(row, obj)
        self.plan.objects.append(obj)

    def _object_fields(self, row: TsvRow, orig_id: str) -> ObjectPlan:
        rel, line, v = self.table.rel, row.line, lambda n: self.table.value(row, n)
        obj = ObjectPlan(orig_id=orig_id, rel=rel, line=line, present=self.present)
        obj.lat = self._parse(row, "object_lat", parse_latitude)
        obj.lon = self._parse(row, "object_lon", parse_longitude)
        obj.date = self._parse(row, "object_date", parse_date)
        obj.time = self._parse(row, "object_time", parse_time)
        obj.depth_min = self._parse(row, "object_depth_min", parse_float)
        obj.depth_max = self._parse(row, "object_depth_max", parse_float)
        status = self._parse(row, "object_annotation_status", parse_status)
        label = v("object_annotation_category") or None
        category_id = self._parse(row, "object_annotation_category_id", parse_int)
        ann_date = self._parse(row, "object_annotation_date", parse_date)
        ann_time = self._parse(row, "object_annotation_time", parse_time)
        given = label if label is not None else category_id
        if status == ObjectStatus.UNCLASSIFIED.value and given is not None:
            self.report.add(rel, line, "object_annotation_status", "", "category_without_status",
                            f"a category ({given}) is given without an annotation status")
        elif status not in (None, ObjectStatus.UNCLASSIFIED.value) and given is None:
            self.report.add(rel, line, "object_annotation_category", "", "status_without_category",
                            f"annotation status {status!r} is given without a category")
        if status not in (None, ObjectStatus.UNCLASSIFIED.value):
            obj.status, obj.label, obj.category_id = status, label, category_id
            obj.annotator_name = v("object_annotation_person_name") or None
            obj.annotator_email = v("object_annotation_person_email") or None
            if ann_date is not None:
                obj.annotation_date = datetime.fromisoformat(
                    f"{ann_date}T{ann_time or '00:00:00'}").replace(tzinfo=timezone.utc)
        obj.extra = self._free_values(row, "object")
        return obj

    def _image(self, row: TsvRow) -> ImagePlan | None:
        rel, line = self.table.rel, row.line
        name = self.table.value(row, "img_file_name")
        rank = self._parse(row, "img_rank", parse_int)
        if rank is not None and rank < 0:
            self.report.add(rel, line, "img_rank", str(rank), "bad_rank",
                            f"invalid image rank {rank} (must be 0 or more)")
        if not self.table.has("img_file_name"):
            return None  # reported once for the file
        if not name:
            self.report.add(rel, line, "img_file_name", "", "missing_image", "no image file name")
            return None
        found = self.locate(name)
        if found is None:
            self.report.add(rel, line, "img_file_name", name, "unsafe_image_path",
                            f"image {name!r} is outside the bundle")
            return None
        # A missing file is a problem only if the image is to be stored: a re-import
        # skips the rows of images already in the project, and their files may be gone.
        path, is_file = found
        return ImagePlan(src=path, rank=rank or 0, original_name=name, rel=rel, line=line,
                         missing=not is_file)

    def _parents(self, row: TsvRow, obj: ObjectPlan) -> None:
        v = lambda n: self.table.value(row, n)  # noqa: E731
        sample_id, acq_id, process_id = v("sample_id"), v("acq_id"), v("process_id")
        acq_id = acq_id or process_id
        sample_id = sample_id or acq_id
        cells, n = row.cells, len(row.cells)
        parent_cells = [cells[i] if i < n else "" for i in self._parent_columns]
        if parent_cells == self._last_parents:  # rows of one sample follow each other
            obj.sample, obj.acquisition = sample_id or None, acq_id or None
            obj.process = process_id or None
            return
        issues = self.report.n_issues
        self._read_parents(row, obj, sample_id, acq_id, process_id)
        self._last_parents = parent_cells if self.report.n_issues == issues else None

    def _read_parents(self, row: TsvRow, obj: ObjectPlan, sample_id: str, acq_id: str,
                      process_id: str) -> None:
        v = lambda n: self.table.value(row, n)  # noqa: E731
        if sample_id:
            s = self._parent(self.plan.samples, sample_id, None, obj)
            s.present |= self.parent_fields["sample"]
            s.lat = s.lat if s.lat is not None else self._parse(row, "sample_lat", parse_latitude)
            s.lon = s.lon if s.lon is not None else self._parse(row, "sample_lon", parse_longitude)
            self._merge(s, dict(self._free_values(row, "sample")))
        if acq_id:
            a = self._parent(self.plan.acquisitions, acq_id, sample_id, obj, "acquisition",
                             "sample")
            a.present |= self.parent_fields["acq"]
            a.instrument = a.instrument or v("acq_instrument") or None
            self._merge(a, dict(self._free_values(row, "acq")))
        if process_id:
            p = self._parent(self.plan.processes, process_id, acq_id, obj)
            p.present |= self.parent_fields["process"]
            self._merge(p, dict(self._free_values(row, "process")))
        obj.sample, obj.acquisition = sample_id or None, acq_id or None
        obj.process = process_id or None

    def _parent(self, known: dict[str, ParentPlan], orig_id: str, parent: str | None,
                obj: ObjectPlan, kind: str | None = None, parent_kind: str = "") -> ParentPlan:
        """The parent named ``orig_id``; an acquisition must keep one sample."""
        p = known.get(orig_id)
        if p is None:
            p = known[orig_id] = ParentPlan(orig_id=orig_id, rel=obj.rel, line=obj.line,
                                            parent=parent)
        elif kind is not None and p.parent != parent:
            self.report.add(obj.rel, obj.line, f"{parent_kind}_id", parent, "hierarchy_conflict",
                            f"{kind} {orig_id!r} already belongs to {parent_kind} {p.parent!r} "
                            f"({p.where}); it cannot also belong to {parent_kind} {parent!r}")
        return p

    @staticmethod
    def _merge(parent: ParentPlan, values: dict) -> None:
        for k, val in values.items():
            parent.extra.setdefault(k, val)
