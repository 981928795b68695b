"""Darwin Core Archives: structure checked against meta.xml and EML, values, refusals."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
import zipfile

import pytest
from sqlalchemy import select

from conftest import IMPORT_CASES
from ecotaxa_core.annotation import validate_objects
from ecotaxa_core.db.models import Object, Project, Sample, Taxon
from ecotaxa_core.dwca import DwcaRefused, export_dwca, save_dwca_metadata
from ecotaxa_core.importer import import_path
from ecotaxa_core.projects import create_project
from test_summaries import esd_volume, tiny_project

TEXT = "{http://rs.tdwg.org/dwc/text/}"
EML = "{eml://ecoinformatics.org/eml-2.1.1}"
DWC = "http://rs.tdwg.org/dwc/terms/"
OBIS = "http://rs.iobis.org/obis/terms/"
METADATA = dict(contact_email="data@example.org", contact_name="Ada Lovelace",
                license="CC-BY-4.0", organization="Plankton Lab")


def read_archive(path) -> dict:
    """Check the archive the way a DwC-A reader does; returns its tables as dicts."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        meta = ET.fromstring(z.read("meta.xml"))
        assert meta.tag == f"{TEXT}archive"
        assert meta.get("metadata") in names
        tables = {}
        parts = [meta.find(f"{TEXT}core")] + meta.findall(f"{TEXT}extension")
        assert parts[0] is not None and len(parts) == 3
        for part in parts:
            assert part.get("fieldsTerminatedBy") == "\\t"
            assert part.get("linesTerminatedBy") == "\\n"
            assert part.get("ignoreHeaderLines") == "1" and part.get("encoding") == "UTF-8"
            (location,) = [el.text for el in part.find(f"{TEXT}files")]
            assert location in names, location
            text = z.read(location).decode("utf-8")
            assert text.endswith("\n") and '"' not in text
            lines = [line.split("\t") for line in text.rstrip("\n").split("\n")]
            header, rows = lines[0], lines[1:]
            assert all(len(r) == len(header) for r in rows), location
            fields = part.findall(f"{TEXT}field")
            indexes = [int(f.get("index")) for f in fields]
            assert sorted(indexes) == list(range(len(header))), location
            for f in fields:
                term = f.get("term")
                assert term.startswith((DWC, OBIS)), term
                assert term.rsplit("/", 1)[1] == header[int(f.get("index"))]
            id_el = part.find(f"{TEXT}id" if part.tag == f"{TEXT}core" else f"{TEXT}coreid")
            assert header[int(id_el.get("index"))] == "eventID", location
            tables[part.get("rowType")] = [dict(zip(header, r)) for r in rows]
        eml = ET.fromstring(z.read(meta.get("metadata")))
    events = tables[DWC + "Event"]
    occurrences = tables[DWC + "Occurrence"]
    emof = tables[OBIS + "ExtendedMeasurementOrFact"]
    event_ids = [e["eventID"] for e in events]
    assert len(set(event_ids)) == len(event_ids)
    assert {o["eventID"] for o in occurrences} <= set(event_ids)
    occurrence_ids = [o["occurrenceID"] for o in occurrences]
    assert len(set(occurrence_ids)) == len(occurrence_ids)
    assert {m["occurrenceID"] for m in emof} <= set(occurrence_ids)
    assert len({m["measurementID"] for m in emof}) == len(emof)
    # EML: GBIF profile root, and the elements GBIF/OBIS require.
    assert eml.tag == f"{EML}eml" and eml.get("packageId") and eml.get("system")
    ds = eml.find("dataset")
    for required in ("title", "creator", "metadataProvider", "pubDate", "language",
                     "abstract/para", "intellectualRights/para/ulink", "contact",
                     "contact/electronicMailAddress"):
        el = ds.find(required)
        assert el is not None and (el.text or el.get("url") or len(el)), required
    return dict(events=events, occurrences=occurrences, emof=emof, eml=eml)


def test_tiny_project_archive_values_and_structure(instance, admin, tmp_path):
    pid = tiny_project(instance, admin.id)
    with instance.sessions.begin() as s:
        for sample in s.scalars(select(Sample).where(Sample.project_id == pid)):
            sample.lat, sample.lon = 43.68, 7.31
        for obj in s.scalars(select(Object).where(Object.project_id == pid)):
            n = int(obj.orig_id[1:])  # o1 ... o8, see tiny_project
            obj.date = "2024-05-01" if n % 2 else "2024-05-03"
            obj.depth_min, obj.depth_max = 0.0, 10.0 * n
        s.scalar(select(Taxon).where(Taxon.name == "Copepoda")).aphia_id = 1080
        s.scalar(select(Taxon).where(Taxon.name == "Copepoda")).rank = "Subclass"
    result = export_dwca(instance, pid, tmp_path, title="Tiny plankton", **METADATA)
    assert result.path.parent == tmp_path and result.path.name.startswith(f"dwca_{pid}_")
    archive = read_archive(result.path)
    # Samples with validated objects are events (S3 has none).
    events = {e["eventID"]: e for e in archive["events"]}
    assert set(events) == {"S1", "S2", "S4"}
    s1 = events["S1"]
    assert s1["eventDate"] == "2024-05-01/2024-05-03"
    assert (s1["decimalLatitude"], s1["decimalLongitude"]) == ("43.68", "7.31")
    assert (s1["sampleSizeValue"], s1["sampleSizeUnit"]) == ("2", "cubic metre")
    assert events["S4"]["sampleSizeValue"] == ""  # no tot_vol
    assert (s1["minimumDepthInMeters"], s1["maximumDepthInMeters"]) == ("0", "50")
    occ = {o["occurrenceID"]: o for o in archive["occurrences"]}
    cope = occ[f"S1_{_taxon_id(instance, 'Copepoda')}"]
    assert cope["scientificName"] == "Copepoda" and cope["taxonRank"] == "Subclass"
    assert cope["scientificNameID"] == "urn:lsid:marinespecies.org:taxname:1080"
    assert (cope["basisOfRecord"], cope["occurrenceStatus"], cope["individualCount"]) == (
        "MachineObservation", "present", "3")
    assert cope["identificationVerificationStatus"] == "ValidatedByHuman"
    assert cope["identifiedBy"] == "Administrator"
    det = occ[f"S2_{_taxon_id(instance, 'detritus')}"]
    assert det["scientificNameID"] == "" and det["individualCount"] == "1"
    assert not any(o["identificationVerificationStatus"] == "PredictedByMachine"
                   for o in occ.values())
    facts = {(m["occurrenceID"], m["measurementType"]): m for m in archive["emof"]}
    count = facts[(cope["occurrenceID"], "Count (in assayed sample) of biological entity "
                                         "specified elsewhere")]
    assert count["measurementValue"] == "3" and count["measurementTypeID"].endswith("/OCOUNT01/")
    conc = next(m for (o, t), m in facts.items() if o == cope["occurrenceID"]
                and m["measurementTypeID"].endswith("/SDBIOL01/"))
    assert float(conc["measurementValue"]) == pytest.approx(5.0)
    assert conc["measurementUnitID"] == "http://vocab.nerc.ac.uk/collection/P06/current/UPMM/"
    biov = next(m for (o, t), m in facts.items() if o == cope["occurrenceID"]
                and m["measurementTypeID"].endswith("/CVOLUKNB/"))
    assert float(biov["measurementValue"]) == pytest.approx(
        2 * esd_volume(100, 0.01) + 2 * esd_volume(400, 0.01) + esd_volume(100, 0.02))
    assert biov["measurementUnit"] == "Cubic millimetres per cubic metre"
    # S4's concentration is unknown (no volume): only its count is published, with a warning.
    s4 = f"S4_{_taxon_id(instance, 'Copepoda')}"
    assert [m["measurementTypeID"].rsplit("/", 2)[1] for (o, _), m in facts.items()
            if o == s4] == ["OCOUNT01"]
    assert any("sample 'S4'" in w for w in result.warnings)
    assert any("no WoRMS AphiaID" in w and "detritus" in w for w in result.warnings)
    # EML content.
    ds = archive["eml"].find("dataset")
    assert ds.find("title").text == "Tiny plankton"
    assert ds.find("contact/electronicMailAddress").text == "data@example.org"
    assert ds.find("creator/individualName/surName").text == "Lovelace"
    assert ds.find("intellectualRights/para/ulink").get("url") == \
        "http://creativecommons.org/licenses/by/4.0/legalcode"
    box = ds.find("coverage/geographicCoverage/boundingCoordinates")
    assert float(box.find("northBoundingCoordinate").text) == pytest.approx(43.68)
    assert ds.find("coverage/temporalCoverage/rangeOfDates/beginDate/calendarDate").text == \
        "2024-05-01"
    assert result.to_dict()["n_events"] == 3 and result.n_occurrences == len(occ)


def test_predicted_occurrences_on_request(sqlite_instance, tmp_path):
    inst = sqlite_instance
    pid = tiny_project(inst, 1)
    _place_and_date(inst, pid)
    result = export_dwca(inst, pid, tmp_path, with_predicted=True, **METADATA)
    occ = {o["occurrenceID"]: o for o in read_archive(result.path)["occurrences"]}
    predicted = occ[f"S1_{_taxon_id(inst, 'Chaetognatha')}_predicted"]
    assert predicted["identificationVerificationStatus"] == "PredictedByMachine"
    assert predicted["identifiedBy"] == "" and predicted["individualCount"] == "1"


def test_missing_required_fields_are_all_listed_and_nothing_is_written(sqlite_instance,
                                                                         tmp_path):
    inst = sqlite_instance
    pid = tiny_project(inst, 1)
    with inst.sessions.begin() as s:  # S1 gets a position from its objects, S2 has none
        for obj in s.scalars(select(Object).where(Object.project_id == pid)):
            obj.lat, obj.lon = (44.0, 8.0) if obj.orig_id in ("o1", "o2") else (None, None)
            obj.date = None if obj.orig_id == "o8" else "2024-05-01"
    with pytest.raises(DwcaRefused) as err:
        export_dwca(inst, pid, tmp_path / "out", license="All rights reserved",
                    contact_email="not-an-address")
    assert err.value.missing == [
        "contact e-mail: 'not-an-address' is not an e-mail address",
        "license: 'All rights reserved' is not accepted by GBIF/OBIS (one of CC0-1.0, "
        "CC-BY-4.0, CC-BY-NC-4.0)",
        "sample 'S2': no position (no sample_lat/sample_lon and no object_lat/object_lon)",
        "sample 'S4': no date (none of its objects has an object_date)",
        "sample 'S4': no position (no sample_lat/sample_lon and no object_lat/object_lon)"]
    assert "project" in str(err.value) and "5 problems" in str(err.value)
    with pytest.raises(DwcaRefused, match="contact e-mail: missing") as err:
        export_dwca(inst, pid, tmp_path / "out")
    assert any(m.startswith("license: missing") for m in err.value.missing)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_metadata_stored_in_the_project(sqlite_instance, tmp_path):
    inst = sqlite_instance
    pid = tiny_project(inst, 1)
    _place_and_date(inst, pid)
    with inst.sessions.begin() as s:
        stored = save_dwca_metadata(s, pid, contact_email="lab@example.org", license="cc0",
                                    abstract="A tiny test data set.", citation="Lab (2024).")
    assert stored["license"] == "cc0"
    with inst.sessions() as s:
        assert s.get(Project, pid).settings["dwca"]["contact_email"] == "lab@example.org"
    result = export_dwca(inst, pid, tmp_path)
    assert result.license == "CC0-1.0"
    ds = read_archive(result.path)["eml"]
    assert ds.find("dataset/abstract/para").text == "A tiny test data set."
    assert ds.find("additionalMetadata/metadata/gbif/citation").text == "Lab (2024)."
    assert ds.find("dataset/title").text == "summary test"  # the project's title
    # An argument wins over the stored value; an empty one removes it.
    result = export_dwca(inst, pid, tmp_path, license="CC-BY-NC-4.0")
    assert result.license == "CC-BY-NC-4.0"
    with inst.sessions.begin() as s:
        assert "license" not in save_dwca_metadata(s, pid, license="")
        with pytest.raises(Exception, match="unknown Darwin Core metadata field"):
            save_dwca_metadata(s, pid, colour="blue")


def test_import_test_bundle_archive(sqlite_instance, tmp_path):
    """Real EcoTaxa data: positions and dates from the objects, categories from the bundle."""
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "import_test").id
    import_path(inst, pid, IMPORT_CASES / "import_test", user_id=1, create_missing_taxa=True,
                create_missing_users=True)
    with inst.sessions.begin() as s:
        ids = s.scalars(select(Object.id).where(Object.project_id == pid)).all()
        validate_objects(s, pid, list(ids), 1)
    result = export_dwca(inst, pid, tmp_path, **METADATA)
    archive = read_archive(result.path)
    events = {e["eventID"]: e for e in archive["events"]}
    assert set(events) == {"m106_mn01_n1_sml", "m106_mn01_n2_sml"}
    assert events["m106_mn01_n1_sml"]["eventDate"] == "2014-04-20"
    assert not math.isnan(float(events["m106_mn01_n1_sml"]["decimalLatitude"]))
    assert sum(int(o["individualCount"]) for o in archive["occurrences"]) == 11
    assert {o["identifiedBy"] for o in archive["occurrences"]} == {"Administrator"}


def _taxon_id(inst, name: str) -> int:
    with inst.sessions() as s:
        return s.scalar(select(Taxon.id).where(Taxon.name == name))


def _place_and_date(inst, pid: int) -> None:
    with inst.sessions.begin() as s:
        for sample in s.scalars(select(Sample).where(Sample.project_id == pid)):
            sample.lat, sample.lon = 43.68, 7.31
        for obj in s.scalars(select(Object).where(Object.project_id == pid)):
            obj.date = "2024-05-01"
