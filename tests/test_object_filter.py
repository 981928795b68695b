"""Object filters: every criterion on SQLite and PostgreSQL, and the errors they give."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from ecotaxa_core.db.models import Acquisition, Object, Sample
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.object_filter import FreeCondition, InvalidFilter, ObjectFilter
from ecotaxa_core.projects import create_project
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.users import create_user


def _utc(text):
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# orig_id, taxon, status, acquisition, date, depth min/max, lat, lon, annotator, annotated, score,
# free columns
OBJECTS = [
    ("o_0", "cope", "validated", "a1", "2024-01-10", 0, 10, 43.0, 7.0, "admin",
     "2024-02-01 10:00", None, {"area": 50.0, "sex": "F"}),
    ("o_1", "calanoid", "predicted", "a1", "2024-01-20", 10, 20, 44.0, 8.0, None, None, 0.9,
     {"area": 150.0, "sex": "M"}),
    ("o_2", "acartia", "predicted", "a2", "2024-03-05", 50, 100, -10.0, 179.5, None, None, 0.3,
     {"area": 1000.0}),
    ("o_3", "detritus", "dubious", "a2", "2023-12-31", None, None, -10.5, -179.5, "ann",
     "2024-02-02 09:00", None, {"area": None, "sex": "F"}),
    ("o_4", None, "unclassified", "a2", None, 200, None, None, None, None, None, None, {}),
    # A stray text in a numeric column must neither match nor break the numeric comparisons.
    ("o_5", "cope", "validated", "a1", "2024-01-10", 5, 5, 43.5, 7.5, "ann",
     "2024-02-01 23:30", 0.95, {"area": "12x"}),
    ("ox1", "detritus", "predicted", "a2", "2024-03-05", 60, 70, 0.0, 0.0, None, None, 0.5,
     {"area": 7.0, "sex": "M"}),
]


@pytest.fixture
def project(instance, admin):
    """A project of 7 objects over 2 samples, 2 instruments and a 3-level category tree."""
    with instance.sessions.begin() as s:
        ann = create_user(s, "ann@lab.org", "Ann")
        cope = get_or_create_taxon(s, "Copepoda")
        calanoid = get_or_create_taxon(s, "Calanoida", cope)
        taxa = {"cope": cope, "calanoid": calanoid,
                "acartia": get_or_create_taxon(s, "Acartia", calanoid),
                "detritus": get_or_create_taxon(s, "detritus")}
        p = create_project(s, "filters")
        p.free_columns = {"object": {"area": "f", "sex": "t"}, "sample": {"ship": "t"}}
        acqs = {}
        for sample, acq, instrument in (("s1", "a1", "UVP5"), ("s2", "a2", "zooscan")):
            sm = Sample(project_id=p.id, orig_id=sample, extra={})
            s.add(sm)
            s.flush()
            acqs[acq] = Acquisition(project_id=p.id, sample_id=sm.id, orig_id=acq,
                                    instrument=instrument, extra={})
            s.add(acqs[acq])
        s.flush()
        users = {"admin": admin.id, "ann": ann.id}
        for (orig, taxon, status, acq, day, dmin, dmax, lat, lon, who, when, score,
             extra) in OBJECTS:
            s.add(Object(project_id=p.id, orig_id=orig, taxon_id=taxa[taxon].id if taxon else None,
                         status=status, sample_id=acqs[acq].sample_id, acquisition_id=acqs[acq].id,
                         date=day, depth_min=dmin, depth_max=dmax, lat=lat, lon=lon,
                         annotator_id=users.get(who), annotation_date=when and _utc(when),
                         score=score, extra=extra))
        other = create_project(s, "other")
        s.add(Object(project_id=other.id, orig_id="o_0", status="validated",
                     taxon_id=cope.id, extra={"area": 50.0}))
        return {"id": p.id, "other": other.id, "taxa": {k: t.id for k, t in taxa.items()},
                "users": users}


def _kept(instance, project_id, mapping):
    with instance.sessions() as s:
        where = ObjectFilter.from_mapping(mapping).where_clauses(s, project_id)
        return sorted(s.scalars(select(Object.orig_id).where(*where)))


def test_each_criterion_keeps_the_right_objects(instance, project):
    t, u = project["taxa"], project["users"]
    cases = [
        ({}, ["o_0", "o_1", "o_2", "o_3", "o_4", "o_5", "ox1"]),
        ({"taxon_ids": [t["cope"]]}, ["o_0", "o_5"]),
        ({"taxon_ids": [t["cope"]], "with_children": True}, ["o_0", "o_1", "o_2", "o_5"]),
        ({"taxon_ids": [t["calanoid"], t["detritus"]], "with_children": True},
         ["o_1", "o_2", "o_3", "ox1"]),
        ({"statuses": ["predicted", "dubious"]}, ["o_1", "o_2", "o_3", "ox1"]),
        ({"statuses": "unclassified"}, ["o_4"]),
        ({"samples": ["s1"]}, ["o_0", "o_1", "o_5"]),
        ({"acquisitions": "a2"}, ["o_2", "o_3", "o_4", "ox1"]),
        ({"instruments": ["uvp5"]}, ["o_0", "o_1", "o_5"]),
        ({"date_from": "2024-01-10", "date_to": "2024-01-20"}, ["o_0", "o_1", "o_5"]),
        ({"date_from": "2024-03-01"}, ["o_2", "ox1"]),
        ({"depth_min": 5}, ["o_1", "o_2", "o_4", "o_5", "ox1"]),
        ({"depth_max": 20}, ["o_0", "o_1", "o_5"]),
        ({"depth_min": 0, "depth_max": 10}, ["o_0", "o_5"]),
        ({"lat_min": 43, "lat_max": 44}, ["o_0", "o_1", "o_5"]),
        ({"lon_min": 179, "lon_max": -179}, ["o_2", "o_3"]),  # across the antimeridian
        ({"lat_min": -11, "lat_max": -10, "lon_min": 170}, ["o_2"]),
        ({"annotators": [u["ann"]]}, ["o_3", "o_5"]),
        ({"annotated_from": "2024-02-01", "annotated_to": "2024-02-01"}, ["o_0", "o_5"]),
        ({"annotated_from": "2024-02-01 12:00"}, ["o_3", "o_5"]),
        ({"annotated_to": "2024-02-01T12:00:00+02:00"}, ["o_0"]),
        ({"score_min": 0.5}, ["o_1", "o_5", "ox1"]),
        ({"score_max": 0.5}, ["o_2", "ox1"]),
        ({"conditions": ["area>100"]}, ["o_1", "o_2"]),
        ({"conditions": ["object_area>=50", "area <= 150"]}, ["o_0", "o_1"]),
        ({"conditions": [{"column": "area", "min": 100, "max": 1000}]}, ["o_1", "o_2"]),
        ({"conditions": "area<50"}, ["ox1"]),  # 7 < 50 as numbers, though "7" > "50" as text
        ({"conditions": ["area=1000"]}, ["o_2"]),
        ({"conditions": ["area!=50"]}, ["o_1", "o_2", "ox1"]),
        ({"conditions": ["sex=F"]}, ["o_0", "o_3"]),
        ({"conditions": [{"column": "SEX", "equals": "M"}]}, ["o_1", "ox1"]),
        ({"conditions": ["sex!=F"]}, ["o_1", "ox1"]),
        ({"orig_id_prefix": "o_"}, ["o_0", "o_1", "o_2", "o_3", "o_4", "o_5"]),  # _ is no joker
        ({"orig_ids": ["o_1", "nope"]}, ["o_1"]),
        ({"statuses": "validated", "samples": "s1", "conditions": ["area<100"]}, ["o_0"]),
    ]
    wrong = [(mapping, got, expected) for mapping, expected in cases
             if (got := _kept(instance, project["id"], mapping)) != expected]
    assert wrong == []


def test_matching_ids_stay_in_the_project(instance, project):
    with instance.sessions() as s:
        ids = ObjectFilter(orig_ids=["o_0"]).matching_ids(s, project["id"])
        assert [s.get(Object, i).project_id for i in ids] == [project["id"]]
        with pytest.raises(ProjectNotFound):
            ObjectFilter().matching_ids(s, 987654)


@pytest.mark.parametrize("mapping, field, message", [
    ({"taxon_ids": [987654]}, "taxon_ids", "no taxon with id [987654]"),
    ({"samples": ["s1", "s9"]}, "samples", "has no sample ['s9']"),
    ({"acquisitions": ["a9"]}, "acquisitions", "has no acquisition ['a9']"),
    ({"instruments": ["flowcam"]}, "instruments", "used ['flowcam']; it has ['uvp5', 'zooscan']"),
    ({"annotators": [987654]}, "annotators", "no user with id [987654]"),
    ({"conditions": ["esd>1"]}, "conditions",
     "no free object column 'esd'; it has ['area', 'sex']"),
    ({"conditions": ["ship=x"]}, "conditions", "no free object column 'ship'"),
    ({"conditions": ["sex>3"]}, "conditions", "sex is a text column: use = or !=, not >"),
    ({"conditions": ["area=big"]}, "conditions", "'big' is not a number"),
])
def test_names_unknown_to_the_project_are_refused(instance, project, mapping, field, message):
    flt = ObjectFilter.from_mapping(mapping)
    with instance.sessions() as s, pytest.raises(InvalidFilter) as err:
        flt.where_clauses(s, project["id"])
    assert err.value.field == field
    assert message in str(err.value)


@pytest.mark.parametrize("mapping, field, message", [
    ({"statuses": ["validated", "checked"]}, "statuses", "unknown status ['checked']"),
    ({"depth_min": 10, "depth_max": 5}, "depth_min", "10.0 is above depth_max 5.0"),
    ({"score_min": 0.9, "score_max": 0.1}, "score_min", "0.9 is above score_max 0.1"),
    ({"lat_min": 10, "lat_max": -10}, "lat_min", "is above lat_max"),
    ({"date_from": "2024-02-01", "date_to": "2024-01-01"}, "date_from", "is above date_to"),
    ({"annotated_from": "2024-02-02", "annotated_to": "2024-02-01"}, "annotated_from",
     "is not before annotated_to"),
    ({"lat_min": 91}, "lat_min", "outside [-90, 90]"),
    ({"lon_max": -181}, "lon_max", "outside [-180, 180]"),
    ({"date_from": "2024-13-01"}, "date_from", "is not a date (YYYY-MM-DD)"),
    ({"date_to": "01/02/2024"}, "date_to", "is not a date"),
    ({"annotated_from": "yesterday"}, "annotated_from", "is not a date"),
    ({"depth_min": "deep"}, "depth_min", "'deep' is not a number"),
    ({"score_max": float("nan")}, "score_max", "not a finite number"),
    ({"taxon_ids": ["12a"]}, "taxon_ids", "'12a' is not an id"),
    ({"taxon_ids": [True]}, "taxon_ids", "is not an id"),
    ({"with_children": True}, "with_children", "needs taxon_ids"),
    ({"with_children": "yes", "taxon_ids": 1}, "with_children", "is not true or false"),
    ({"samples": [""]}, "samples", "is not a non-empty text"),
    ({"conditions": ["area ~ 3"]}, "conditions", "is not 'column OP value'"),
    ({"conditions": ["area>"]}, "conditions", "is not 'column OP value'"),
    ({"conditions": ["area>big"]}, "conditions", "'big' is not a number"),
    ({"conditions": [{"column": "area", "min": 5, "max": 1}]}, "conditions",
     "area min 5.0 is above max 1.0"),
    ({"conditions": [{"column": "area"}]}, "conditions", "sets no min, max, equals or op"),
    ({"conditions": [{"column": "area", "low": 1}]}, "conditions", "unknown key(s) ['low']"),
    ({"conditions": [3]}, "conditions", "is neither"),
    ({"depth": 5}, "depth", "unknown criterion; use taxon_ids, with_children"),
])
def test_bad_criteria_are_refused_when_the_filter_is_built(mapping, field, message):
    with pytest.raises(InvalidFilter) as err:
        ObjectFilter.from_mapping(mapping)
    assert err.value.field == field
    assert message in str(err.value)
    assert str(err.value).startswith(f"filter {field}: ")


def test_from_mapping_and_describe_round_trip():
    assert ObjectFilter.from_mapping(None).is_empty
    assert ObjectFilter.from_mapping({"depth_min": None}).is_empty
    with pytest.raises(InvalidFilter, match="expected a mapping"):
        ObjectFilter.from_mapping(["statuses"])
    flt = ObjectFilter.from_mapping({
        "taxon_ids": [3, "4", 3], "with_children": True, "statuses": ["Validated"],
        "samples": "s1", "instruments": ["uvp5"], "date_from": "2024-01-01",
        "depth_max": 100, "lon_min": 170, "lon_max": -170, "annotators": 2,
        "annotated_to": "2024-02-01 12:00", "score_min": 0.5,
        "conditions": ["object_area>=10", {"column": "sex", "equals": "F"}],
        "orig_id_prefix": "o_"})
    assert not flt.is_empty
    assert flt.describe() == {
        "taxon_ids": [3, 4], "with_children": True, "statuses": ["validated"],
        "samples": ["s1"], "instruments": ["uvp5"], "date_from": "2024-01-01",
        "depth_max": 100.0, "lon_min": 170.0, "lon_max": -170.0, "annotators": [2],
        "annotated_to": "2024-02-01T12:00:00", "score_min": 0.5,
        "conditions": ["area >= 10.0", "sex = F"], "orig_id_prefix": "o_"}
    assert ObjectFilter.from_mapping(flt.describe()) == flt
    assert FreeCondition.parse("object_length <= 2.5") == FreeCondition("length", "<=", 2.5)
    assert FreeCondition.parse("n == 3") == FreeCondition("n", "=", "3")
