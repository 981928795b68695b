"""A project as a Darwin Core Archive (DwC-A) for GBIF and OBIS.

The archive (``dwca_<project>_<UTC time>.zip``) has an Event core and two
extensions, as EcoTaxa's export and the OBIS manual describe:

- ``event.txt``: one event per sample holding counted objects: eventID (the
  sample id), eventDate (its objects' date, or first/last date), position (the
  sample's, else the mean of its objects'), depth range, and the sampled volume
  (sampleSizeValue in m³, from the ``total_water_volume`` formula) when known;
- ``occurrence.txt``: one occurrence per sample x category x kind of
  identification, with its count: basisOfRecord ``MachineObservation`` (the
  OBIS recommendation for imaging instruments), identificationVerificationStatus
  ``ValidatedByHuman`` (validated objects, identifiedBy their annotators) or
  ``PredictedByMachine`` (predicted objects, only on request), scientificNameID
  ``urn:lsid:marinespecies.org:taxname:<AphiaID>`` when the category has one;
- ``extendedmeasurementorfact.txt``: per occurrence, the count, the
  concentration (#/m³) and the biovolume (mm³/m³) of
  :mod:`~ecotaxa_core.summaries`, typed with NERC vocabulary URIs;
- ``meta.xml`` and ``eml.xml`` (:mod:`~ecotaxa_core.dwca_metadata`).

Dataset metadata come from the arguments, else from
``Project.settings["dwca"]`` (see :func:`save_dwca_metadata`). A missing
contact e-mail, licence or title, or a sample without date or position, stops
the export with :class:`DwcaRefused` listing every problem.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import uuid
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, ObjectStatus, Project, Sample, Taxon, User, utcnow
from ecotaxa_core.dwca_metadata import (DWC, LICENSES, OBIS, DatasetMetadata, TableSpec, eml_xml,
                                        license_key, meta_xml)
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.export import free_path
from ecotaxa_core.formulas import Formula, as_number
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import get_project
from ecotaxa_core.summaries import aggregate_objects

__all__ = ["DwcaRefused", "DwcaResult", "METADATA_FIELDS", "save_dwca_metadata",
           "dataset_metadata", "export_dwca"]

METADATA_FIELDS = ("title", "contact_name", "contact_email", "organization", "license",
                   "abstract", "citation")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# NERC vocabulary terms of the measurements (as EcoTaxa's formats/DarwinCore/MoF.py).
_COUNT = ("Count (in assayed sample) of biological entity specified elsewhere",
          "http://vocab.nerc.ac.uk/collection/P01/current/OCOUNT01/", "", "")
_CONCENTRATION = ("Abundance of biological entity specified elsewhere per unit volume of the "
                  "water body", "http://vocab.nerc.ac.uk/collection/P01/current/SDBIOL01/",
                  "Number per cubic metre", "http://vocab.nerc.ac.uk/collection/P06/current/UPMM/")
_BIOVOLUME = ("Biovolume of biological entity specified elsewhere per unit volume of the water "
              "body", "http://vocab.nerc.ac.uk/collection/P01/current/CVOLUKNB/",
              "Cubic millimetres per cubic metre",
              "http://vocab.nerc.ac.uk/collection/P06/current/CMCM/")

_EVENT_TERMS = ("eventID", "eventDate", "decimalLatitude", "decimalLongitude", "geodeticDatum",
                "minimumDepthInMeters", "maximumDepthInMeters", "sampleSizeValue",
                "sampleSizeUnit", "samplingProtocol", "datasetName")
_OCCURRENCE_TERMS = ("occurrenceID", "eventID", "basisOfRecord", "occurrenceStatus",
                     "scientificName", "scientificNameID", "taxonRank", "verbatimIdentification",
                     "individualCount", "identificationVerificationStatus", "identifiedBy")
_EMOF_TERMS = ("eventID", "occurrenceID", "measurementID", "measurementType",
               "measurementTypeID", "measurementValue", "measurementUnit", "measurementUnitID")
_OBIS_TERMS = {"measurementTypeID", "measurementValueID", "measurementUnitID"}


class DwcaRefused(EcoTaxaError):
    """Required information is missing; ``missing`` lists each problem."""

    def __init__(self, project_id: int, missing: list[str]):
        self.project_id, self.missing = project_id, missing
        super().__init__(f"project {project_id}: cannot write a Darwin Core Archive, "
                         f"{len(missing)} problem{'s' if len(missing) > 1 else ''}:\n"
                         + "\n".join(f"  - {m}" for m in missing))


@dataclass(frozen=True)
class DwcaResult:
    project_id: int
    path: Path
    n_events: int
    n_occurrences: int
    n_measurements: int
    with_predicted: bool
    license: str
    warnings: list[str]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def save_dwca_metadata(session: Session, project_id: int, **fields: str | None) -> dict[str, str]:
    """Store dataset metadata in the project's settings (an empty value removes it).

    Accepted fields: title, contact_name, contact_email, organization, license,
    abstract, citation. Returns the stored metadata.
    """
    unknown = sorted(set(fields) - set(METADATA_FIELDS))
    if unknown:
        raise EcoTaxaError(f"unknown Darwin Core metadata field(s) {', '.join(unknown)} "
                           f"(expected {', '.join(METADATA_FIELDS)})")
    project = get_project(session, project_id)
    settings = dict(project.settings or {})
    stored = dict(settings.get("dwca") or {})
    for name, value in fields.items():
        if value is None or not str(value).strip():
            stored.pop(name, None)
        else:
            stored[name] = str(value).strip()
    settings["dwca"] = stored
    project.settings = settings
    session.flush()
    return stored


def dataset_metadata(project: Project, overrides: Mapping[str, str | None]) -> dict[str, str]:
    """The project's stored metadata with ``overrides`` (the non-empty ones) on top."""
    merged = {k: v for k, v in ((project.settings or {}).get("dwca") or {}).items()
              if k in METADATA_FIELDS and v}
    merged.update({k: str(v).strip() for k, v in overrides.items() if v and str(v).strip()})
    return merged


def export_dwca(inst: Instance, project_id: int, out_dir: str | Path, *,
                title: str | None = None, contact_name: str | None = None,
                contact_email: str | None = None, organization: str | None = None,
                license: str | None = None, abstract: str | None = None,
                citation: str | None = None, with_predicted: bool = False,
                formulas: Mapping[str, str] | None = None) -> DwcaResult:
    """Write the project's Darwin Core Archive into ``out_dir``.

    Parameters
    ----------
    inst : the instance holding the project.
    project_id : the project.
    out_dir : folder receiving ``dwca_<project>_<UTC time>.zip``.
    title, contact_name, contact_email, organization, license, abstract, citation :
        dataset metadata, each replacing the project's stored one
        (``Project.settings["dwca"]``). The title defaults to the project's;
        licence: CC0-1.0, CC-BY-4.0 or CC-BY-NC-4.0.
    with_predicted : add occurrences of predicted objects (PredictedByMachine).
    formulas : summary formulas replacing the project's (concentration, biovolume).

    Raises
    ------
    DwcaRefused : listing every missing or invalid required field and every
        sample without date or position; nothing is written.
    ProjectNotFound, FormulaError
    """
    now = utcnow()
    with inst.sessions() as s:
        project = get_project(s, project_id)
        meta, problems = _metadata(project, dict(
            title=title, contact_name=contact_name, contact_email=contact_email,
            organization=organization, license=license, abstract=abstract, citation=citation),
            now)
        agg = aggregate_objects(s, project_id, lambda f: (f.sample_id, f.taxon_id, f.status),
                                with_predicted=with_predicted, formulas=formulas)
        warnings = list(agg.warnings)
        sample_ids = sorted({k[0] for k in agg.totals if k[0] is not None})
        without_sample = sum(t.count for k, t in agg.totals.items() if k[0] is None)
        if without_sample:
            warnings.append(f"{without_sample} counted object(s) without a sample are left out "
                            "(an occurrence needs a sampling event)")
        if not sample_ids:
            problems.append("no sample holds a validated object" + (
                " or a predicted one" if with_predicted else "")
                + ": there is no occurrence to publish")
        events, event_problems = _events(s, project_id, sample_ids,
                                         Formula(agg.formulas["total_water_volume"]))
        problems += event_problems
        if problems:
            raise DwcaRefused(project_id, problems)
        taxa = _taxa(s, {k[1] for k in agg.totals})
        people = {u.id: u.name for u in s.scalars(select(User))}
        instrument = project.instrument
    occurrences, measurements = _occurrences(agg.totals, events, taxa, people)
    no_aphia = sorted({taxa[k[1]].name for k in agg.totals
                       if k[0] in events and taxa[k[1]].aphia_id is None})
    if no_aphia:
        warnings.append(f"{len(no_aphia)} categor{'y has' if len(no_aphia) == 1 else 'ies have'} "
                        f"no WoRMS AphiaID, so no scientificNameID: {', '.join(no_aphia)}")
    event_rows = [[e["id"], e["date"], _num(e["lat"]), _num(e["lon"]), "EPSG:4326",
                   _num(e["depth_min"]), _num(e["depth_max"]), _num(e["volume"]),
                   "cubic metre" if e["volume"] is not None else "",
                   f"plankton imaging ({instrument})" if instrument else "plankton imaging",
                   meta.title] for e in events.values()]
    bounds = _bounds(events.values())
    dates = (min(e["first"] for e in events.values()), max(e["last"] for e in events.values()))
    coverage = sorted({(taxa[k[1]].rank or "", taxa[k[1]].name) for k in agg.totals
                       if k[0] in events})
    files = {
        "event.txt": _table(_EVENT_TERMS, event_rows),
        "occurrence.txt": _table(_OCCURRENCE_TERMS, occurrences),
        "extendedmeasurementorfact.txt": _table(_EMOF_TERMS, measurements),
        "meta.xml": meta_xml(
            TableSpec("event.txt", DWC + "Event", _uris(_EVENT_TERMS), 0),
            [TableSpec("occurrence.txt", DWC + "Occurrence", _uris(_OCCURRENCE_TERMS), 1),
             TableSpec("extendedmeasurementorfact.txt", OBIS + "ExtendedMeasurementOrFact",
                       _uris(_EMOF_TERMS), 0)]),
        "eml.xml": eml_xml(meta, bounds=bounds, dates=dates, taxa=coverage),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = free_path(out_dir, f"dwca_{project_id}_{now.strftime('%Y%m%d_%H%M%S')}", ".zip")
    _write_zip(path, files)
    return DwcaResult(project_id=project_id, path=path, n_events=len(event_rows),
                      n_occurrences=len(occurrences), n_measurements=len(measurements),
                      with_predicted=with_predicted, license=meta.license, warnings=warnings)


# -- parts ---------------------------------------------------------------------------------
def _metadata(project: Project, overrides: dict[str, Any], now) -> tuple[DatasetMetadata,
                                                                          list[str]]:
    given = dataset_metadata(project, overrides)
    problems = []
    title = given.get("title") or (project.title or "").strip()
    if not title:
        problems.append("title: missing (give --title or store dwca.title)")
    email = given.get("contact_email", "")
    if not email:
        problems.append("contact e-mail: missing (give --contact-email or store "
                        "dwca.contact_email)")
    elif not _EMAIL.match(email):
        problems.append(f"contact e-mail: {email!r} is not an e-mail address")
    lic = license_key(given.get("license"))
    if not given.get("license"):
        problems.append(f"license: missing (give --license, one of {', '.join(LICENSES)})")
    elif lic is None:
        problems.append(f"license: {given['license']!r} is not accepted by GBIF/OBIS "
                        f"(one of {', '.join(LICENSES)})")
    abstract = given.get("abstract") or (
        f"Plankton and particles imaged and classified in the project '{title}' "
        "(ecotaxa-flow, an EcoTaxa-compatible system): counts, concentrations and "
        "biovolumes per sample and category.")
    package = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ecotaxa-flow:project:{project.id}:{title}"))
    meta = DatasetMetadata(title=title, contact_email=email, license=lic or "CC-BY-4.0",
                           abstract=abstract, contact_name=given.get("contact_name"),
                           organization=given.get("organization"),
                           citation=given.get("citation"), package_id=package,
                           pub_date=now.date().isoformat(),
                           date_stamp=now.replace(microsecond=0).isoformat())
    return meta, problems


def _events(s: Session, project_id: int, sample_ids: list[int],
            volume: Formula) -> tuple[dict[int, dict], list[str]]:
    """Event fields per sample id, and the samples lacking a date or a position."""
    stats = {row[0]: row[1:] for row in s.execute(
        select(Object.sample_id, func.min(Object.date), func.max(Object.date),
               func.avg(Object.lat), func.avg(Object.lon), func.min(Object.depth_min),
               func.max(Object.depth_max))
        .where(Object.project_id == project_id, Object.sample_id.is_not(None))
        .group_by(Object.sample_id))}
    samples = {r.id: r for r in s.scalars(select(Sample).where(Sample.project_id == project_id))}
    events, problems = {}, []
    for sid in sorted(sample_ids, key=lambda i: samples[i].orig_id):
        sample = samples[sid]
        first, last, lat, lon, dmin, dmax = stats.get(sid, (None,) * 6)
        if sample.lat is not None and sample.lon is not None:
            lat, lon = sample.lat, sample.lon
        if first is None:
            problems.append(f"sample {sample.orig_id!r}: no date (none of its objects has an "
                            "object_date)")
        if lat is None or lon is None:
            problems.append(f"sample {sample.orig_id!r}: no position (no sample_lat/sample_lon "
                            "and no object_lat/object_lon)")
        values = {("sam", k): v for k, v in (("lat", sample.lat), ("lon", sample.lon))
                  if v is not None}
        values.update({("sam", k): v for k in (sample.extra or {})
                       if (v := as_number(sample.extra[k])) is not None})
        tot = volume.evaluate(values) if all(p == "sam" for p, _ in volume.references) \
            else math.nan
        events[sid] = dict(id=sample.orig_id, first=first, last=last,
                           date=first if first == last else f"{first}/{last}",
                           lat=float(lat) if lat is not None else None,
                           lon=float(lon) if lon is not None else None,
                           depth_min=dmin, depth_max=dmax,
                           volume=tot if math.isfinite(tot) and tot > 0 else None)
    return events, problems


def _taxa(s: Session, ids: set[int]) -> dict[int, Taxon]:
    taxa = {t.id: t for t in s.scalars(select(Taxon).where(Taxon.id.in_(ids)))} if ids else {}
    for t in taxa.values():
        s.expunge(t)
    return taxa


def _occurrences(totals: dict, events: dict[int, dict], taxa: dict[int, Taxon],
                 people: dict[int, str]) -> tuple[list[list[str]], list[list[str]]]:
    by_occurrence: dict[tuple[int, int, bool], Any] = defaultdict(lambda: [0, 0.0, 0.0, set()])
    for (sid, tid, status), t in totals.items():
        if sid not in events:
            continue
        acc = by_occurrence[(sid, tid, status == ObjectStatus.VALIDATED.value)]
        acc[0] += t.count
        acc[1] += t.concentration
        acc[2] += t.biovolume
        acc[3] |= t.annotators
    occurrences, measurements = [], []
    for (sid, tid, validated), (count, conc, biov, who) in sorted(
            by_occurrence.items(), key=lambda kv: (events[kv[0][0]]["id"], kv[0][1],
                                                   not kv[0][2])):
        event = events[sid]["id"]
        taxon = taxa[tid]
        occurrence = f"{event}_{tid}" + ("" if validated else "_predicted")
        occurrences.append([
            occurrence, event, "MachineObservation", "present", taxon.name,
            f"urn:lsid:marinespecies.org:taxname:{taxon.aphia_id}" if taxon.aphia_id else "",
            taxon.rank or "", taxon.display_name, str(count),
            "ValidatedByHuman" if validated else "PredictedByMachine",
            " | ".join(sorted(people.get(u, "") for u in who)) if validated else ""])
        for suffix, (mtype, type_id, unit, unit_id), value in (
                ("count", _COUNT, str(count)),
                ("concentration", _CONCENTRATION, _num(conc)),
                ("biovolume", _BIOVOLUME, _num(biov))):
            if value:
                measurements.append([event, occurrence, f"{occurrence}_{suffix}", mtype, type_id,
                                     value, unit, unit_id])
    return occurrences, measurements


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return format(float(value), ".10g")


def _bounds(events) -> tuple[float, float, float, float] | None:
    lats = [e["lat"] for e in events]
    lons = [e["lon"] for e in events]
    return (min(lons), max(lons), max(lats), min(lats)) if lats else None


def _uris(terms: tuple[str, ...]) -> tuple[str, ...]:
    return tuple((OBIS if t in _OBIS_TERMS else DWC) + t for t in terms)


_BREAKS = re.compile(r"[\t\r\n]+")


def _table(terms: tuple[str, ...], rows: list[list[str]]) -> bytes:
    """A DwC-A text file: tab separated, no quotes (so no tab or line break in a value)."""
    lines = ["\t".join(terms)]
    lines += ["\t".join(_BREAKS.sub(" ", v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    tmp = Path(tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")[1])
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
