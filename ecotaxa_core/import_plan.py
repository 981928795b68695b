"""What an import will write, once every input has been checked.

Both import kinds (EcoTaxa bundles and class folders) turn their source into an
:class:`ImportPlan`: plain values, nothing written yet. The writer
(:mod:`ecotaxa_core.import_writer`) then stores it in one go.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ecotaxa_core.db.models import ObjectStatus

if TYPE_CHECKING:
    from ecotaxa_core.import_spool import ObjectSpool

__all__ = ["ParentPlan", "ImagePlan", "ObjectPlan", "ImportPlan", "FREE_COLUMN_PREFIXES",
           "NumberLayout", "FreeValues"]

FREE_COLUMN_PREFIXES = ("object", "sample", "acq", "process")


class NumberLayout:
    """The numeric free columns of one file, in order, shared by its objects."""

    __slots__ = ("names", "index")

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}

    def positions(self, columns: Sequence[str]) -> tuple[list[int], list[int]]:
        """(indices here, indices in ``columns``) of the names both hold."""
        where = {name: j for j, name in enumerate(columns)}
        pairs = [(i, where[name]) for i, name in enumerate(self.names) if name in where]
        return [i for i, _ in pairs], [j for _, j in pairs]


class FreeValues(Mapping):
    """The free-column values of one object, read-only: numbers packed in an array
    (NaN: no value) after their file's :class:`NumberLayout`, texts in a dict.

    An import holds one per object: 60 numbers take ~600 bytes here, ~3.5 KB as
    a dict of floats.

    >>> v = FreeValues(NumberLayout(("area", "mean")), array("d", [3.0, math.nan]), {"kind": "x"})
    >>> dict(v), v.get("mean"), "mean" in v
    ({'area': 3.0, 'kind': 'x'}, None, False)
    """

    __slots__ = ("layout", "numbers", "texts")

    def __init__(self, layout: NumberLayout, numbers: array, texts: dict[str, str] | None):
        self.layout, self.numbers, self.texts = layout, numbers, texts or None

    def __getitem__(self, name: str) -> Any:
        if self.texts is not None and name in self.texts:
            return self.texts[name]
        value = self.numbers[self.layout.index[name]]  # KeyError for an unknown name
        if math.isnan(value):
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (what the database stores), built in one go."""
        values = {name: v for name, v in zip(self.layout.names, self.numbers)
                  if v == v}  # NaN != NaN: no value
        if self.texts is not None:
            values.update(self.texts)
        return values


@dataclass(slots=True)
class ParentPlan:
    """A sample, acquisition or process, shared by the objects that name it."""

    orig_id: str
    rel: str  # first file naming it, and the line there, for messages
    line: int | None
    parent: str | None = None  # sample of an acquisition, acquisition of a process
    lat: float | None = None
    lon: float | None = None
    instrument: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Fields the files naming it have columns for ("lat", "instrument", free fields ...):
    # an update changes those and only those.
    present: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return self.rel if self.line is None else f"{self.rel} line {self.line}"


@dataclass(slots=True)
class ImagePlan:
    src: str  # the file's absolute path (a str: a Path costs microseconds to rebuild)
    rank: int
    original_name: str
    rel: str  # file that names it (TSV, or the image itself for class folders)
    line: int | None
    missing: bool = False  # the file named is not there (a problem if it is to be stored)


@dataclass(slots=True)
class ObjectPlan:
    orig_id: str
    rel: str
    line: int | None
    sample: str | None = None
    acquisition: str | None = None
    process: str | None = None
    lat: float | None = None
    lon: float | None = None
    date: str | None = None
    time: str | None = None
    depth_min: float | None = None
    depth_max: float | None = None
    status: str = ObjectStatus.UNCLASSIFIED.value
    label: str | None = None  # category as the source names it
    category_id: int | None = None  # taxon id the source gives
    annotator_name: str | None = None
    annotator_email: str | None = None
    annotator_id: int | None = None  # a known user (class folders: the importing user)
    annotation_date: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # free columns; [f] as floats
    images: list[ImagePlan] = field(default_factory=list)
    # Column names of the file it comes from (shared by its rows): an update
    # changes the fields those columns give, and only those.
    present: frozenset[str] = frozenset()

    @property
    def where(self) -> str:
        return self.rel if self.line is None else f"{self.rel} line {self.line}"


def _spool() -> "ObjectSpool":
    from ecotaxa_core.import_spool import ObjectSpool  # it stores the plans defined here

    return ObjectSpool()


@dataclass
class ImportPlan:
    """What to import. ``objects`` is an :class:`~ecotaxa_core.import_spool.ObjectSpool`
    (on disk but the last few thousand): iterate it, do not index it; :meth:`close`
    frees it."""

    source: str
    kind: str  # "ecotaxa_bundle" | "class_folders"
    tsv_files: list[str] = field(default_factory=list)
    samples: dict[str, ParentPlan] = field(default_factory=dict)
    acquisitions: dict[str, ParentPlan] = field(default_factory=dict)
    processes: dict[str, ParentPlan] = field(default_factory=dict)
    objects: ObjectSpool = field(default_factory=lambda: _spool())
    # Free columns per prefix, {"object": {"area": "f"}, ...}, in order of appearance.
    free_columns: dict[str, dict[str, str]] = field(
        default_factory=lambda: {p: {} for p in FREE_COLUMN_PREFIXES})
    column_files: dict[str, str] = field(default_factory=dict)  # column -> first file with it
    tsv_rows: dict[str, int] = field(default_factory=dict)  # data lines per TSV file read

    def close(self) -> None:
        self.objects.close()

    @property
    def feature_names(self) -> list[str]:
        """Numeric object free columns: the "tsv" feature set."""
        return [name for name, kind in self.free_columns["object"].items() if kind == "f"]
