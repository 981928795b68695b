"""Which objects of a project an operation works on: EcoTaxa's object filters.

An :class:`ObjectFilter` holds the criteria EcoTaxa's project filters offer
(categories with or without their descendants, statuses, samples,
acquisitions, instrument, object date, depth, a latitude/longitude box, last
annotator, annotation date, prediction score, conditions on free object
columns, orig_id prefix or list). Every criterion given must hold (AND); an
empty filter keeps every object of the project.

Checks that need no database (unknown status, min above max, bad dates ...)
run when the filter is built; those that need the project (unknown taxon,
sample, instrument, annotator or free column) run in
:meth:`ObjectFilter.where_clauses`. Both raise :class:`InvalidFilter`, whose
``field`` names the criterion at fault. Flows and the command line pass a
filter as plain JSON (:meth:`ObjectFilter.from_mapping`); :meth:`ObjectFilter.describe`
gives that JSON back, for job records.

>>> f = ObjectFilter.from_mapping({"statuses": "validated", "depth_max": 50,
...                                "conditions": ["object_area>=10", "sex=F"]})
>>> f.describe()
{'statuses': ['validated'], 'depth_max': 50.0, 'conditions': ['area >= 10.0', 'sex = F']}
>>> ObjectFilter.from_mapping(f.describe()) == f
True
>>> ObjectFilter(depth_min=10, depth_max=5)
Traceback (most recent call last):
...
ecotaxa_core.object_filter.InvalidFilter: filter depth_min: 10.0 is above depth_max 5.0
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Acquisition, Object, ObjectStatus, Project, Sample, Taxon, User
from ecotaxa_core.errors import EcoTaxaError, ProjectNotFound

__all__ = ["ObjectFilter", "FreeCondition", "InvalidFilter", "STATUSES", "object_free_columns",
           "free_column_value"]

STATUSES = tuple(s.value for s in ObjectStatus)
_OPS = ("=", "!=", "<", "<=", ">", ">=")
_CONDITION = re.compile(r"^\s*([^<>=!]*?)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidFilter(EcoTaxaError, ValueError):
    """A filter criterion that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"filter {field}: {message}")
        self.field = field


# -- coercion of one criterion -----------------------------------------------------
def _listed(field: str, value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return list(value)
    raise InvalidFilter(field, f"expected a value or a list, not {value!r}")


def _ints(field: str, value: Any) -> tuple[int, ...]:
    out = []
    for v in _listed(field, value):
        if isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).strip().isdigit():
            raise InvalidFilter(field, f"{v!r} is not an id (a whole number)")
        out.append(int(v))
    return tuple(dict.fromkeys(out))


def _texts(field: str, value: Any) -> tuple[str, ...]:
    out = []
    for v in _listed(field, value):
        if not isinstance(v, (str, int)) or isinstance(v, bool) or not str(v).strip():
            raise InvalidFilter(field, f"{v!r} is not a non-empty text")
        out.append(str(v).strip())
    return tuple(dict.fromkeys(out))


def _number(field: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidFilter(field, f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidFilter(field, f"{value!r} is not a finite number")
    return number


def _day(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    text = str(value).strip()
    try:
        if not _DATE.match(text):
            raise ValueError
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidFilter(field, f"{value!r} is not a date (YYYY-MM-DD)") from None


def _moment(field: str, value: Any) -> str | None:
    """A date (``YYYY-MM-DD``) or a UTC date and time (``YYYY-MM-DDTHH:MM:SS``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return value.isoformat()
    else:
        text = str(value).strip()
        if _DATE.match(text):
            return _day(field, text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidFilter(field, f"{value!r} is not a date (YYYY-MM-DD) or a date and "
                                       "time (YYYY-MM-DD HH:MM[:SS], UTC)") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _bound(moment: str, end: bool) -> datetime:
    """The UTC datetime a bound stands for; a day ends at the next midnight."""
    when = datetime.fromisoformat(moment)
    if end and _DATE.match(moment):
        when += timedelta(days=1)
    return when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class FreeCondition:
    """A condition on a free object column: ``column op value``.

    Numeric (``[f]``) columns take every operator of ``= != < <= > >=`` and are
    compared as numbers on every database; text (``[t]``) columns take ``=``
    and ``!=``. Objects without a value never match.

    >>> FreeCondition.parse("object_area > 100")
    FreeCondition(column='area', op='>', value=100.0)
    """

    column: str
    op: str
    value: float | str  # a number for < <= > >=, a text for = and !=

    def __post_init__(self) -> None:
        column = str(self.column).strip()
        if column.lower().startswith("object_"):
            column = column[len("object_"):]
        if not column:
            raise InvalidFilter("conditions", f"no column named in {self}")
        op = "=" if self.op == "==" else self.op
        if op not in _OPS:
            raise InvalidFilter("conditions", f"unknown operator {self.op!r}; use one of "
                                              f"{' '.join(_OPS)}")
        value = self.value
        if op not in ("=", "!="):
            value = _number("conditions", value)
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidFilter("conditions", f"{value!r} is not a number or a text")
        else:  # kept as text: a numeric column reads it as a number
            value = str(value)
        object.__setattr__(self, "column", column)
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: str) -> "FreeCondition":
        """``'area>=10'``, ``'object_area <= 2.5'``, ``'sex=F'`` ..."""
        m = _CONDITION.match(str(text))
        if not m or not m.group(1) or m.group(3) == "":
            raise InvalidFilter("conditions", f"{text!r} is not 'column OP value' with OP one "
                                              f"of {' '.join(_OPS)}")
        value: float | str = m.group(3)
        if m.group(2) not in ("=", "==", "!="):
            value = _number("conditions", value)
        return cls(m.group(1), m.group(2), value)

    @classmethod
    def coerce(cls, item: Any) -> list["FreeCondition"]:
        """One condition from a text, a ``{"column", "min"/"max"/"equals"/"op"+"value"}``
        mapping (min and max inclusive, both allowed) or a condition."""
        if isinstance(item, FreeCondition):
            return [item]
        if isinstance(item, str):
            return [cls.parse(item)]
        if not isinstance(item, Mapping) or "column" not in item:
            raise InvalidFilter("conditions", f"{item!r} is neither 'column OP value' nor a "
                                              "mapping with a column")
        unknown = sorted(set(item) - {"column", "min", "max", "equals", "op", "value"})
        if unknown:
            raise InvalidFilter("conditions", f"unknown key(s) {unknown} in {dict(item)}")
        out = []
        if item.get("op") is not None:
            out.append(cls(item["column"], item["op"], item.get("value")))
        if item.get("equals") is not None:
            out.append(cls(item["column"], "=", item["equals"]))
        if item.get("min") is not None:
            out.append(cls(item["column"], ">=", item["min"]))
        if item.get("max") is not None:
            out.append(cls(item["column"], "<=", item["max"]))
        if not out:
            raise InvalidFilter("conditions", f"{dict(item)} sets no min, max, equals or op")
        lo, hi = _number("conditions", item.get("min")), _number("conditions", item.get("max"))
        if lo is not None and hi is not None and lo > hi:
            raise InvalidFilter("conditions", f"{item['column']} min {lo} is above max {hi}")
        return out

    def __str__(self) -> str:
        value = self.value if isinstance(self.value, str) else repr(self.value)
        return f"{self.column} {self.op} {value}"


@dataclass(frozen=True)
class ObjectFilter:
    """Criteria on the objects of a project; all given ones must hold.

    Ids are database ids (taxa, annotators); samples and acquisitions are named
    by their orig_id. Ranges are inclusive. ``date_from``/``date_to`` bound the
    object date; ``annotated_from``/``annotated_to`` the last change of
    classification (a date, or a UTC date and time; a date as upper bound
    includes that whole day). The depth range must hold the object's depth
    (min and max); a ``lon_min`` above ``lon_max`` is a box across the
    antimeridian. ``orig_ids`` that no object has simply match nothing.
    """

    taxon_ids: tuple[int, ...] = ()
    with_children: bool = False
    statuses: tuple[str, ...] = ()
    samples: tuple[str, ...] = ()
    acquisitions: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()
    date_from: str | None = None
    date_to: str | None = None
    depth_min: float | None = None
    depth_max: float | None = None
    lat_min: float | None = None
    lat_max: float | None = None
    lon_min: float | None = None
    lon_max: float | None = None
    annotators: tuple[int, ...] = ()
    annotated_from: str | None = None
    annotated_to: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    conditions: tuple[FreeCondition, ...] = ()
    orig_id_prefix: str | None = None
    orig_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("taxon_ids", "annotators"):
            put(name, _ints(name, getattr(self, name)))
        for name in ("samples", "acquisitions", "instruments", "orig_ids"):
            put(name, _texts(name, getattr(self, name)))
        statuses = tuple(s.lower() for s in _texts("statuses", self.statuses))
        bad = sorted(set(statuses) - set(STATUSES))
        if bad:
            raise InvalidFilter("statuses", f"unknown status {bad}; use {', '.join(STATUSES)}")
        put("statuses", statuses)
        if not isinstance(self.with_children, bool):
            raise InvalidFilter("with_children", f"{self.with_children!r} is not true or false")
        if self.with_children and not self.taxon_ids:
            raise InvalidFilter("with_children", "needs taxon_ids")
        for name in ("date_from", "date_to"):
            put(name, _day(name, getattr(self, name)))
        for name in ("annotated_from", "annotated_to"):
            put(name, _moment(name, getattr(self, name)))
        for name in ("depth_min", "depth_max", "lat_min", "lat_max", "lon_min", "lon_max",
                     "score_min", "score_max"):
            put(name, _number(name, getattr(self, name)))
        for name, limit in (("lat_min", 90), ("lat_max", 90), ("lon_min", 180), ("lon_max", 180)):
            v = getattr(self, name)
            if v is not None and not -limit <= v <= limit:
                raise InvalidFilter(name, f"{v} is outside [-{limit}, {limit}]")
        for lo, hi in (("date_from", "date_to"), ("depth_min", "depth_max"),
                       ("lat_min", "lat_max"), ("score_min", "score_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise InvalidFilter(lo, f"{a} is above {hi} {b}")
        a, b = self.annotated_from, self.annotated_to
        if a is not None and b is not None and _bound(a, False) >= _bound(b, True):
            raise InvalidFilter("annotated_from", f"{a} is not before annotated_to {b}")
        put("conditions", tuple(c for item in _listed("conditions", self.conditions)
                                for c in FreeCondition.coerce(item)))
        if self.orig_id_prefix is not None:
            put("orig_id_prefix", _texts("orig_id_prefix", self.orig_id_prefix)[0])

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "ObjectFilter":
        """A filter from plain JSON (``None`` or ``{}``: every object); unknown keys are refused."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise InvalidFilter("filter", f"expected a mapping of criteria, not {mapping!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise InvalidFilter(unknown[0], f"unknown criterion; use {', '.join(known)}")
        return cls(**{k: v for k, v in mapping.items() if v is not None})

    @property
    def is_empty(self) -> bool:
        """True when the filter keeps every object."""
        return self == ObjectFilter()

    def describe(self) -> dict[str, Any]:
        """The criteria set, as JSON that :meth:`from_mapping` reads back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.name == "conditions":
                value = [str(c) for c in value]
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # -- SQL ---------------------------------------------------------------------------
    def where_clauses(self, session: Session, project_id: int) -> list[ColumnElement[bool]]:
        """Where-clauses on :class:`Object` selecting the project's objects this filter keeps.

        Checks the names and ids the filter uses against the project and the
        database first (:class:`InvalidFilter` otherwise).
        """
        project = session.get(Project, int(project_id))
        if project is None:
            raise ProjectNotFound(project_id)
        pid = project.id
        where: list[ColumnElement[bool]] = [Object.project_id == pid]
        if self.taxon_ids:
            where.append(Object.taxon_id.in_(self._taxa(session)))
        if self.statuses:
            where.append(Object.status.in_(self.statuses))
        if self.samples:
            where.append(Object.sample_id.in_(_parents(session, Sample, pid, self.samples,
                                                       "samples")))
        if self.acquisitions:
            where.append(Object.acquisition_id.in_(
                _parents(session, Acquisition, pid, self.acquisitions, "acquisitions")))
        if self.instruments:
            where.append(Object.acquisition_id.in_(self._instrument_acquisitions(session, pid)))
        # An object's depth range is [min, max]; one of them alone stands for both.
        ranges = [(Object.date, Object.date, self.date_from, self.date_to),
                  (func.coalesce(Object.depth_min, Object.depth_max),
                   func.coalesce(Object.depth_max, Object.depth_min),
                   self.depth_min, self.depth_max),
                  (Object.lat, Object.lat, self.lat_min, self.lat_max),
                  (Object.score, Object.score, self.score_min, self.score_max)]
        lo, hi = self.lon_min, self.lon_max
        if lo is not None and hi is not None and lo > hi:  # a box across the antimeridian
            where.append(or_(Object.lon >= lo, Object.lon <= hi))
        else:
            ranges.append((Object.lon, Object.lon, lo, hi))
        for low_column, high_column, low, high in ranges:
            if low is not None:
                where.append(low_column >= low)
            if high is not None:
                where.append(high_column <= high)
        if self.annotators:
            known = set(session.scalars(select(User.id).where(User.id.in_(self.annotators))))
            missing = [a for a in self.annotators if a not in known]
            if missing:
                raise InvalidFilter("annotators", f"no user with id {missing}")
            where.append(Object.annotator_id.in_(self.annotators))
        if self.annotated_from is not None:
            where.append(Object.annotation_date >= _bound(self.annotated_from, False))
        if self.annotated_to is not None:
            upper = _bound(self.annotated_to, True)
            where.append(Object.annotation_date < upper if _DATE.match(self.annotated_to)
                         else Object.annotation_date <= upper)
        free = object_free_columns(project)
        for cond in self.conditions:
            where.append(_condition(session, cond, free))
        if self.orig_id_prefix is not None:
            where.append(Object.orig_id.startswith(self.orig_id_prefix, autoescape=True))
        if self.orig_ids:
            where.append(Object.orig_id.in_(self.orig_ids))
        return where

    def matching_ids(self, session: Session, project_id: int) -> list[int]:
        """The ids of the project's objects this filter keeps, ascending."""
        return list(session.scalars(select(Object.id).where(
            *self.where_clauses(session, project_id)).order_by(Object.id)))

    def _taxa(self, session: Session):
        known = set(session.scalars(select(Taxon.id).where(Taxon.id.in_(self.taxon_ids))))
        missing = [t for t in self.taxon_ids if t not in known]
        if missing:
            raise InvalidFilter("taxon_ids", f"no taxon with id {missing}")
        if not self.with_children:
            return list(self.taxon_ids)
        tree = select(Taxon.id).where(Taxon.id.in_(self.taxon_ids)).cte("tree", recursive=True)
        tree = tree.union_all(select(Taxon.id).where(Taxon.parent_id == tree.c.id))
        return select(tree.c.id)

    def _instrument_acquisitions(self, session: Session, project_id: int):
        wanted = {i.lower() for i in self.instruments}
        have = set(session.scalars(select(func.lower(Acquisition.instrument)).distinct().where(
            Acquisition.project_id == project_id, Acquisition.instrument.is_not(None))))
        missing = sorted(wanted - have)
        if missing:
            raise InvalidFilter("instruments", f"no acquisition of project {project_id} used "
                                               f"{missing}; it has {sorted(have) or 'none'}")
        return select(Acquisition.id).where(Acquisition.project_id == project_id,
                                            func.lower(Acquisition.instrument).in_(wanted))


def _parents(session: Session, model, project_id: int, orig_ids: tuple[str, ...],
             field: str) -> list[int]:
    found = dict(session.execute(select(model.orig_id, model.id).where(
        model.project_id == project_id, model.orig_id.in_(orig_ids))).all())
    missing = [o for o in orig_ids if o not in found]
    if missing:
        raise InvalidFilter(field, f"project {project_id} has no {field[:-1]} {missing[:10]}")
    return sorted(found.values())


def object_free_columns(project: Project) -> dict[str, tuple[str, str]]:
    """``{lower-case name: (name, kind)}`` of the project's free object columns
    (kind ``"f"``: number, ``"t"``: text)."""
    return {str(k).lower(): (k, t) for k, t in ((project.free_columns or {})
                                                 .get("object") or {}).items()}


def free_column_value(session: Session, key: str, kind: str) -> ColumnElement:
    """The value of free object column ``key`` as SQL: a number for numeric (``f``)
    columns (NULL where the object holds no number, so a stray text never reaches
    the cast), a text otherwise; the same on SQLite and PostgreSQL."""
    item = Object.extra[key]
    if kind != "f":
        return item.as_string()
    is_number = (func.json_typeof(item) == "number"
                 if session.get_bind().dialect.name == "postgresql"
                 else func.json_type(item).in_(("integer", "real")))
    return case((is_number, item.as_float()))


def _condition(session: Session, cond: FreeCondition,
               free: dict[str, tuple[str, str]]) -> ColumnElement[bool]:
    if cond.column.lower() not in free:
        raise InvalidFilter("conditions", f"the project has no free object column "
                                          f"{cond.column!r}; it has {sorted(free) or 'none'}")
    key, kind = free[cond.column.lower()]
    if kind == "f":
        value = _number("conditions", cond.value)
    else:
        if cond.op not in ("=", "!="):
            raise InvalidFilter("conditions", f"{key} is a text column: use = or !=, "
                                              f"not {cond.op}")
        value = str(cond.value)
    column = free_column_value(session, key, kind)
    return {"=": column == value, "!=": column != value, "<": column < value,
            "<=": column <= value, ">": column > value, ">=": column >= value}[cond.op]
