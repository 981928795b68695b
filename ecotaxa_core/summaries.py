"""Per-sample (or per-acquisition) per-category abundance, concentration and biovolume.

EcoTaxa's "scientific" summaries (``ProjectExport.create_sci_summary``): for
each object, with the project's formulas (:mod:`~ecotaxa_core.formulas`),

- concentration = 1 / subsample_coef / total_water_volume (individuals per m³),
- biovolume = individual_volume / subsample_coef / total_water_volume (mm³ per m³),

summed per sampling unit and category; the abundance is the number of objects.
Validated objects always count, predicted ones on request; dubious and
unclassified ones never do. Every sampling unit of the project gets a line for
every category counted anywhere in the project, with zeros where the category
is absent. A value a formula needs but an object lacks makes that object's
concentration or biovolume NaN (so the sums it enters are NaN, as in EcoTaxa),
and the summary lists each such case among its warnings instead of failing.

The formulas are EcoTaxa's defaults for the project's instrument, overridden by
``Project.settings["formulas"]`` (see :func:`set_project_formulas`), overridden
by the ``formulas`` argument.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping, NamedTuple

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Acquisition, Object, ObjectStatus, Process, Sample, Taxon
from ecotaxa_core.db.json_values import json_loader
from ecotaxa_core.formulas import (FORMULA_NAMES, Formula, FormulaError, as_number,
                                   check_formulas, default_formulas)
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project

__all__ = ["SummaryRow", "Summary", "SummaryResult", "ObjectFacts", "Totals", "Aggregation",
           "project_formulas", "set_project_formulas", "aggregate_objects", "compute_summary",
           "export_summary", "SUMMARY_UNITS"]

SUMMARY_UNITS = ("sample", "acquisition")
_YIELD_PER = 5000
# Predefined numbers a formula may name, per prefix (free columns of the same name win).
_PREDEFINED = {"obj": ("lat", "lon", "depth_min", "depth_max"), "sam": ("lat", "lon")}


# -- formulas of a project ---------------------------------------------------------------
def project_formulas(session: Session, project_id: int,
                     overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The formulas a summary of the project uses (defaults < project settings < overrides)."""
    project = get_project(session, project_id)
    formulas = default_formulas(project.instrument)
    formulas.update((project.settings or {}).get("formulas") or {})
    formulas.update({k: v for k, v in (overrides or {}).items() if v})
    return formulas


def set_project_formulas(session: Session, project_id: int,
                         formulas: Mapping[str, str | None]) -> dict[str, str]:
    """Store formulas in the project's settings; an empty one goes back to the default.

    Returns the formulas the project uses from now on. Raises FormulaError for
    an unknown name or a formula that is not allowed, storing nothing.
    """
    project = get_project(session, project_id)
    check_formulas({k: v for k, v in formulas.items() if v})
    settings = dict(project.settings or {})
    stored = dict(settings.get("formulas") or {})
    for name, text in formulas.items():
        if text:
            stored[name] = text.strip()
        else:
            stored.pop(name, None)
    settings["formulas"] = stored
    project.settings = settings  # a new dict, so the JSON column is saved
    session.flush()
    return project_formulas(session, project_id)


# -- aggregation -------------------------------------------------------------------------
class ObjectFacts(NamedTuple):
    """What an aggregation key may use of an object."""

    sample_id: int | None
    acquisition_id: int | None
    taxon_id: int | None
    status: str
    annotator_id: int | None


@dataclass
class Totals:
    count: int = 0
    concentration: float = 0.0
    biovolume: float = 0.0
    annotators: set[int] = field(default_factory=set)


@dataclass
class Aggregation:
    totals: dict[Hashable, Totals]
    warnings: list[str]
    formulas: dict[str, str]


class _ParentValues:
    """The referenced values of each sample, acquisition and process, as floats."""

    def __init__(self, session: Session, project_id: int, refs: set[tuple[str, str]],
                 free: dict[str, dict[str, str]]):
        self.samples = self._load(session, Sample, project_id,
                                  {c for p, c in refs if p == "sam"}, "sam", "sam")
        ssm = {c for p, c in refs if p == "ssm"}
        both = sorted(c for c in ssm if c in (free.get("acq") or {})
                      and c in (free.get("process") or {}))
        if both:
            raise FormulaError(f"ssm.{both[0]}", f"ssm.{both[0]} is ambiguous: {both[0]} is a "
                                                 "free column of both acquisitions and processes "
                                                 f"(write acq.{both[0]} or process.{both[0]})")
        self.acquisitions = self._load(session, Acquisition, project_id,
                                       {c for p, c in refs if p in ("acq", "ssm")}, "acq", "ssm")
        self.processes = self._load(session, Process, project_id,
                                    {c for p, c in refs if p in ("process", "ssm")}, "process",
                                    "ssm")
        self.names = {"sample": {}, "acquisition": {}}
        for model, kind in ((Sample, "sample"), (Acquisition, "acquisition")):
            for rid, orig_id in session.execute(select(model.id, model.orig_id).where(
                    model.project_id == project_id)):
                self.names[kind][rid] = orig_id
        self.acq_sample = dict(session.execute(select(Acquisition.id, Acquisition.sample_id)
                                               .where(Acquisition.project_id == project_id)).all())

    @staticmethod
    def _load(session, model, project_id, columns, prefix, alias) -> dict[int, dict]:
        out: dict[int, dict] = {}
        if not columns:
            return out
        predefined = _PREDEFINED.get(prefix, ())
        for row in session.scalars(select(model).where(model.project_id == project_id)):
            extra = row.extra or {}
            values = {}
            for c in columns:
                v = extra.get(c)
                if v is None and c in predefined:
                    v = getattr(row, c)
                number = as_number(v)
                if number is not None:
                    values[(prefix, c)] = number
                    if alias != prefix:
                        values[(alias, c)] = number
            out[row.id] = values
        session.expunge_all()
        return out


def aggregate_objects(session: Session, project_id: int, key: Callable[[ObjectFacts], Hashable],
                      *, with_predicted: bool = False,
                      formulas: Mapping[str, str] | None = None) -> Aggregation:
    """Count, concentration and biovolume of the project's objects, summed per ``key``.

    Parameters
    ----------
    session : a session on the instance's database.
    project_id : the project.
    key : maps an object's facts to the group it adds to.
    with_predicted : count predicted objects as well as validated ones.
    formulas : formulas replacing the project's (see :func:`project_formulas`).

    Raises
    ------
    FormulaError : a formula that is not allowed, or an ambiguous ``ssm.`` column.
    """
    project = get_project(session, project_id)
    used = project_formulas(session, project_id, formulas)
    parsed = check_formulas(used)
    sub, tot, ind = (parsed[n] for n in FORMULA_NAMES)
    refs = {r for f in parsed.values() for r in f.references}
    free = project.free_columns or {}
    parents = _ParentValues(session, project_id, refs, free)
    obj_cols = sorted({c for p, c in refs if p == "obj"})
    obj_predefined = [c for c in obj_cols if c in _PREDEFINED["obj"]]
    loads = json_loader()
    statuses = [ObjectStatus.VALIDATED.value] + ([ObjectStatus.PREDICTED.value]
                                                 if with_predicted else [])
    stmt = (select(Object.sample_id, Object.acquisition_id, Object.process_id, Object.taxon_id,
                   Object.status, Object.annotator_id, Object.lat, Object.lon, Object.depth_min,
                   Object.depth_max, cast(Object.extra, Text) if obj_cols else Object.id)
            .where(Object.project_id == project_id, Object.status.in_(statuses),
                   Object.taxon_id.is_not(None))
            .order_by(Object.id).execution_options(yield_per=_YIELD_PER))
    totals: dict[Hashable, Totals] = defaultdict(Totals)
    problems = _Problems(parents)
    shared_cache: dict[tuple, dict] = {}
    for sid, aid, pid, taxon_id, status, annotator_id, lat, lon, dmin, dmax, extra in \
            session.connection().execute(stmt):
        shared = shared_cache.get((sid, aid, pid))
        if shared is None:
            shared = {**parents.samples.get(sid, {}), **parents.processes.get(pid, {}),
                      **parents.acquisitions.get(aid, {})}
            shared_cache[(sid, aid, pid)] = shared
        if obj_cols:
            values = dict(shared)
            own = loads(extra) if extra else {}
            fixed = {"lat": lat, "lon": lon, "depth_min": dmin, "depth_max": dmax}
            for c in obj_cols:
                v = own.get(c)
                if v is None and c in obj_predefined:
                    v = fixed[c]
                number = as_number(v)
                if number is not None:
                    values[("obj", c)] = number
        else:
            values = shared
        coef, volume = sub.evaluate(values), tot.evaluate(values)
        factor = _divide(1.0, coef * volume)
        concentration = factor
        biovolume = ind.evaluate(values) * factor
        facts = ObjectFacts(sid, aid, taxon_id, status, annotator_id)
        t = totals[key(facts)]
        t.count += 1
        t.concentration += concentration
        t.biovolume += biovolume
        if annotator_id is not None and status == ObjectStatus.VALIDATED.value:
            t.annotators.add(annotator_id)
        if math.isnan(biovolume):
            problems.note(facts, values, (sub, tot, ind) if math.isnan(concentration) else (ind,))
    return Aggregation(totals=dict(totals), warnings=problems.messages(), formulas=used)


def _divide(a: float, b: float) -> float:
    if b == 0 or math.isnan(b):
        return math.nan
    return a / b


class _Problems:
    """Why objects got NaN, grouped per sampling unit, formula and missing reference."""

    def __init__(self, parents: _ParentValues):
        self.parents = parents
        self.counts: dict[tuple[str, str, str], int] = defaultdict(int)

    def note(self, facts: ObjectFacts, values: Mapping, formulas: Iterable[Formula]) -> None:
        unit = self._unit(facts)
        for f in formulas:
            missing = [f"{p}.{c}" for p, c in f.references if (p, c) not in values]
            value = f.evaluate(values)
            if missing:
                reason = f"no value for {', '.join(missing)}"
            elif math.isnan(value):
                reason = "undefined result (e.g. a division by zero)"
            elif value == 0 and f.name != "individual_volume":
                reason = "zero, and objects are divided by it"
            else:
                continue
            self.counts[(unit, f"{f.name} = {f.text}", reason)] += 1

    def _unit(self, facts: ObjectFacts) -> str:
        sample = self.parents.names["sample"].get(facts.sample_id)
        text = f"sample {sample!r}" if sample is not None else "objects without sample"
        if facts.acquisition_id is not None:
            text += f", acquisition {self.parents.names['acquisition'][facts.acquisition_id]!r}"
        return text

    def messages(self) -> list[str]:
        return [f"{unit}: {formula}: {reason} ({n} object{'s' if n > 1 else ''}); its "
                "concentration/biovolume sums are NaN"
                for (unit, formula, reason), n in sorted(self.counts.items())]


# -- the summary table -------------------------------------------------------------------
@dataclass(frozen=True)
class SummaryRow:
    sample_id: str  # orig_id ('' for objects without sample)
    acquisition_id: str | None  # orig_id, when summarising by acquisition
    taxon_id: int
    category: str  # display name
    lineage: str  # names from the root, "Biota>Arthropoda>Copepoda"
    count: int
    concentration: float  # individuals per m³
    biovolume: float  # mm³ per m³


@dataclass(frozen=True)
class Summary:
    project_id: int
    by: str
    with_predicted: bool
    formulas: dict[str, str]
    rows: list[SummaryRow]
    warnings: list[str]


@dataclass(frozen=True)
class SummaryResult:
    """A summary written as TSV, as flows and the command line report it."""

    project_id: int
    path: Path
    by: str
    with_predicted: bool
    n_rows: int
    n_units: int
    n_categories: int
    formulas: dict[str, str]
    warnings: list[str]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def compute_summary(session: Session, project_id: int, *, by: str = "sample",
                    with_predicted: bool = False,
                    formulas: Mapping[str, str] | None = None) -> Summary:
    """The summary rows: every sampling unit x every category counted in the project.

    Parameters
    ----------
    session : a session on the instance's database.
    project_id : the project.
    by : ``"sample"`` or ``"acquisition"``.
    with_predicted : count predicted objects as well as validated ones.
    formulas : formulas replacing the project's for this summary.
    """
    if by not in SUMMARY_UNITS:
        raise ValueError(f"by must be one of {', '.join(SUMMARY_UNITS)}, not {by!r}")
    if by == "sample":
        def key(f: ObjectFacts):
            return (f.sample_id, None), f.taxon_id
    else:
        def key(f: ObjectFacts):
            return (f.sample_id, f.acquisition_id), f.taxon_id
    agg = aggregate_objects(session, project_id, key, with_predicted=with_predicted,
                            formulas=formulas)
    samples = dict(session.execute(select(Sample.id, Sample.orig_id)
                                   .where(Sample.project_id == project_id)).all())
    units: set[tuple[int | None, int | None]] = {u for u, _ in agg.totals}
    if by == "sample":
        units |= {(sid, None) for sid in samples}
        acqs: dict[int, str] = {}
    else:
        acq_rows = session.execute(select(Acquisition.id, Acquisition.sample_id,
                                          Acquisition.orig_id)
                                   .where(Acquisition.project_id == project_id)).all()
        acqs = {aid: orig for aid, _, orig in acq_rows}
        units |= {(sid, aid) for aid, sid, _ in acq_rows}
    taxa = _taxa(session, {t for _, t in agg.totals})
    labels = {u: (samples.get(u[0], ""), acqs.get(u[1], "") if by == "acquisition" else None)
              for u in units}
    rows = []
    for unit in sorted(units, key=lambda u: labels[u]):
        for tid in sorted(taxa, key=lambda t: (taxa[t][0].lower(), t)):
            t = agg.totals.get((unit, tid), Totals())
            rows.append(SummaryRow(sample_id=labels[unit][0], acquisition_id=labels[unit][1],
                                   taxon_id=tid, category=taxa[tid][0], lineage=taxa[tid][1],
                                   count=t.count, concentration=t.concentration,
                                   biovolume=t.biovolume))
    return Summary(project_id=project_id, by=by, with_predicted=with_predicted,
                   formulas=agg.formulas, rows=rows, warnings=agg.warnings)


def _taxa(session: Session, ids: set[int]) -> dict[int, tuple[str, str]]:
    """(display name, lineage) of each taxon."""
    known: dict[int, Taxon] = {}
    wanted = set(ids)
    while wanted:
        found = {t.id: t for t in session.scalars(select(Taxon).where(Taxon.id.in_(wanted)))}
        known.update(found)
        wanted = {t.parent_id for t in found.values() if t.parent_id is not None} - set(known)
    out = {}
    for tid in ids:
        names, t = [], known.get(tid)
        while t is not None and len(names) < 100:
            names.append(t.name)
            t = known.get(t.parent_id) if t.parent_id is not None else None
        out[tid] = (known[tid].display_name, ">".join(reversed(names)))
    return out


def export_summary(inst: Instance, project_id: int, out_dir: str | Path, *, by: str = "sample",
                   with_predicted: bool = False,
                   formulas: Mapping[str, str] | None = None) -> SummaryResult:
    """Write ``summary_<project>_by_<by>.tsv`` into ``out_dir`` (see :func:`compute_summary`).

    Columns: sample_id, [acq_id,] taxon_id, category, lineage, count,
    concentration (#/m³), biovolume (mm³/m³); NaN where a formula had no value.
    """
    with inst.sessions() as s:
        summary = compute_summary(s, project_id, by=by, with_predicted=with_predicted,
                                  formulas=formulas)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"summary_{project_id}_by_{by}.tsv"
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["sample_id"] + (["acq_id"] if by == "acquisition" else [])
                   + ["taxon_id", "category", "lineage", "count", "concentration",
                      "biovolume"])
        for r in summary.rows:
            w.writerow([r.sample_id] + ([r.acquisition_id] if by == "acquisition" else [])
                       + [r.taxon_id, r.category, r.lineage, r.count, _text(r.concentration),
                          _text(r.biovolume)])
    os.replace(tmp, path)
    return SummaryResult(project_id=project_id, path=path, by=by, with_predicted=with_predicted,
                         n_rows=len(summary.rows),
                         n_units=len({(r.sample_id, r.acquisition_id) for r in summary.rows}),
                         n_categories=len({r.taxon_id for r in summary.rows}),
                         formulas=summary.formulas, warnings=summary.warnings)


def _text(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))
