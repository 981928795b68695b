"""The two XML files of a Darwin Core Archive: ``meta.xml`` (the star schema) and ``eml.xml``.

``meta.xml`` follows the Darwin Core text guide (https://dwc.tdwg.org/text/): a
core file (here events) and extension files (occurrences, extended measurements
or facts), each with its location, its columns as term URIs, and the column
holding the core id. ``eml.xml`` is the dataset's metadata in GBIF's EML 2.1.1
profile (http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd), with the
elements OBIS and GBIF require: title, creator, metadata provider, contact with
an e-mail address, publication date, language, abstract, licence
(``intellectualRights``), coverage, and the citation in ``additionalMetadata``.

>>> LICENSES[license_key("CC BY 4.0")][1]
'http://creativecommons.org/licenses/by/4.0/legalcode'
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

__all__ = ["DWC", "OBIS", "DCTERMS", "LICENSES", "license_key", "DatasetMetadata", "TableSpec",
           "meta_xml", "eml_xml"]

DWC = "http://rs.tdwg.org/dwc/terms/"
OBIS = "http://rs.iobis.org/obis/terms/"
DCTERMS = "http://purl.org/dc/terms/"
_TEXT_NS = "http://rs.tdwg.org/dwc/text/"
_EML_NS = "eml://ecoinformatics.org/eml-2.1.1"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# The licences GBIF and OBIS accept: key -> (name, legal code URL).
LICENSES: dict[str, tuple[str, str]] = {
    "CC0-1.0": ("Public Domain (CC0 1.0)",
                "http://creativecommons.org/publicdomain/zero/1.0/legalcode"),
    "CC-BY-4.0": ("Creative Commons Attribution (CC-BY) 4.0",
                  "http://creativecommons.org/licenses/by/4.0/legalcode"),
    "CC-BY-NC-4.0": ("Creative Commons Attribution Non Commercial (CC-BY-NC) 4.0",
                     "http://creativecommons.org/licenses/by-nc/4.0/legalcode"),
}
_LICENSE_ALIASES = {"cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0", "cc-by": "CC-BY-4.0",
                    "cc-by-4.0": "CC-BY-4.0", "cc-by-nc": "CC-BY-NC-4.0",
                    "cc-by-nc-4.0": "CC-BY-NC-4.0"}


def license_key(text: str | None) -> str | None:
    """The licence key for a user's spelling (``CC BY 4.0``, ``cc0``), None if not accepted."""
    if not text:
        return None
    return _LICENSE_ALIASES.get(re.sub(r"[\s_]+", "-", text.strip().lower()))


@dataclass(frozen=True)
class DatasetMetadata:
    """What the EML says about the dataset (see :func:`ecotaxa_core.dwca.dataset_metadata`)."""

    title: str
    contact_email: str
    license: str  # a key of LICENSES
    abstract: str
    contact_name: str | None = None
    organization: str | None = None
    citation: str | None = None
    package_id: str = ""
    pub_date: str = ""  # YYYY-MM-DD
    date_stamp: str = ""  # ISO time of the export


@dataclass(frozen=True)
class TableSpec:
    """One data file of the archive: its name, row type, terms (column order) and id column."""

    location: str
    row_type: str
    terms: tuple[str, ...]  # full term URIs
    id_index: int = 0


def meta_xml(core: TableSpec, extensions: list[TableSpec]) -> bytes:
    """The archive descriptor for a core file and its extensions."""
    ET.register_namespace("", _TEXT_NS)
    root = ET.Element(f"{{{_TEXT_NS}}}archive", {"metadata": "eml.xml"})
    for tag, spec in [("core", core)] + [("extension", e) for e in extensions]:
        el = ET.SubElement(root, f"{{{_TEXT_NS}}}{tag}", {
            "encoding": "UTF-8", "fieldsTerminatedBy": "\\t", "linesTerminatedBy": "\\n",
            "fieldsEnclosedBy": "", "ignoreHeaderLines": "1", "rowType": spec.row_type})
        files = ET.SubElement(el, f"{{{_TEXT_NS}}}files")
        ET.SubElement(files, f"{{{_TEXT_NS}}}location").text = spec.location
        ET.SubElement(el, f"{{{_TEXT_NS}}}{'id' if tag == 'core' else 'coreid'}",
                      {"index": str(spec.id_index)})
        for i, term in enumerate(spec.terms):
            ET.SubElement(el, f"{{{_TEXT_NS}}}field", {"index": str(i), "term": term})
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _person(parent: ET.Element, tag: str, meta: DatasetMetadata) -> None:
    el = ET.SubElement(parent, tag)
    if meta.contact_name:
        given, _, sur = meta.contact_name.strip().rpartition(" ")
        name = ET.SubElement(el, "individualName")
        if given:
            ET.SubElement(name, "givenName").text = given
        ET.SubElement(name, "surName").text = sur
    if meta.organization:
        ET.SubElement(el, "organizationName").text = meta.organization
    if not meta.contact_name and not meta.organization:
        ET.SubElement(el, "positionName").text = "Data manager"
    ET.SubElement(el, "electronicMailAddress").text = meta.contact_email


def eml_xml(meta: DatasetMetadata, *, bounds: tuple[float, float, float, float] | None,
            dates: tuple[str, str] | None, taxa: list[tuple[str, str]]) -> bytes:
    """The EML document.

    Parameters
    ----------
    meta : the dataset's metadata.
    bounds : (west, east, north, south) in decimal degrees, or None.
    dates : (first, last) event dates (YYYY-MM-DD), or None.
    taxa : (rank, scientific name) of the taxonomic coverage.
    """
    ET.register_namespace("eml", _EML_NS)
    ET.register_namespace("xsi", _XSI_NS)
    root = ET.Element(f"{{{_EML_NS}}}eml", {
        f"{{{_XSI_NS}}}schemaLocation":
            f"{_EML_NS} http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd",
        "packageId": meta.package_id, "system": "http://gbif.org", "scope": "system",
        "{http://www.w3.org/XML/1998/namespace}lang": "eng"})
    ds = ET.SubElement(root, "dataset")
    ET.SubElement(ds, "alternateIdentifier").text = meta.package_id
    ET.SubElement(ds, "title", {"{http://www.w3.org/XML/1998/namespace}lang": "eng"}).text = \
        meta.title
    _person(ds, "creator", meta)
    _person(ds, "metadataProvider", meta)
    ET.SubElement(ds, "pubDate").text = meta.pub_date
    ET.SubElement(ds, "language").text = "eng"
    ET.SubElement(ET.SubElement(ds, "abstract"), "para").text = meta.abstract
    keywords = ET.SubElement(ds, "keywordSet")
    for word in ("Plankton", "Imaging", "Occurrence"):
        ET.SubElement(keywords, "keyword").text = word
    ET.SubElement(keywords, "keywordThesaurus").text = \
        "GBIF Dataset Type Vocabulary: http://rs.gbif.org/vocabulary/gbif/dataset_type.xml"
    name, url = LICENSES[meta.license]
    para = ET.SubElement(ET.SubElement(ds, "intellectualRights"), "para")
    para.text = "This work is licensed under a "
    link = ET.SubElement(para, "ulink", {"url": url})
    ET.SubElement(link, "citetitle").text = name
    link.tail = "."
    coverage = ET.SubElement(ds, "coverage")
    if bounds is not None:
        geo = ET.SubElement(coverage, "geographicCoverage")
        ET.SubElement(geo, "geographicDescription").text = "Bounding box of the sampling events"
        box = ET.SubElement(geo, "boundingCoordinates")
        for tag, value in zip(("westBoundingCoordinate", "eastBoundingCoordinate",
                               "northBoundingCoordinate", "southBoundingCoordinate"), bounds):
            ET.SubElement(box, tag).text = f"{value:.6f}"
    if dates is not None:
        span = ET.SubElement(ET.SubElement(coverage, "temporalCoverage"), "rangeOfDates")
        ET.SubElement(ET.SubElement(span, "beginDate"), "calendarDate").text = dates[0]
        ET.SubElement(ET.SubElement(span, "endDate"), "calendarDate").text = dates[1]
    if taxa:
        tax = ET.SubElement(coverage, "taxonomicCoverage")
        for rank, value in taxa:
            cls = ET.SubElement(tax, "taxonomicClassification")
            if rank:
                ET.SubElement(cls, "taxonRankName").text = rank
            ET.SubElement(cls, "taxonRankValue").text = value
    maintenance = ET.SubElement(ds, "maintenance")
    ET.SubElement(ET.SubElement(maintenance, "description"), "para").text = \
        "Exported from ecotaxa-flow; updated when the project is exported again."
    ET.SubElement(maintenance, "maintenanceUpdateFrequency").text = "unkown"
    _person(ds, "contact", meta)
    gbif = ET.SubElement(ET.SubElement(ET.SubElement(root, "additionalMetadata"), "metadata"),
                         "gbif")
    ET.SubElement(gbif, "dateStamp").text = meta.date_stamp
    ET.SubElement(gbif, "hierarchyLevel").text = "dataset"
    if meta.citation:
        ET.SubElement(gbif, "citation").text = meta.citation
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
