"""Abundance, concentration and biovolume summaries, against values computed by hand."""

from __future__ import annotations

import csv
import math

import pytest

from ecotaxa_core.db.models import Acquisition, Object, Process, Project, Sample
from ecotaxa_core.formulas import Formula, FormulaError, default_formulas
from ecotaxa_core.projects import create_project
from ecotaxa_core.summaries import (compute_summary, export_summary, project_formulas,
                                    set_project_formulas)
from ecotaxa_core.taxonomy import get_or_create_taxon


def esd_volume(area_px: float, pixel_mm: float) -> float:
    """Volume (mm³) of the sphere of the same area, by hand."""
    radius = math.sqrt(area_px / math.pi) * pixel_mm
    return 4.0 / 3.0 * math.pi * radius ** 3


def tiny_project(inst, admin_id: int) -> int:
    """Four samples, five acquisitions, a few objects (see the expected values below).

    ZooScan defaults: subsample_coef = 1/acq.sub_part (given as text, like the
    UVP's [t] columns), total_water_volume = sample tot_vol (litres) / 1000,
    individual_volume from obj.area and process pixel_size (mm).
    """
    with inst.sessions.begin() as s:
        p = create_project(s, "summary test", instrument="Zooscan")
        p.free_columns = {"object": {"area": "f"}, "sample": {"tot_vol": "f"},
                          "acq": {"sub_part": "t"}, "process": {"pixel_size": "f"}}
        cope = get_or_create_taxon(s, "Copepoda").id
        chaeto = get_or_create_taxon(s, "Chaetognatha").id
        detritus = get_or_create_taxon(s, "detritus").id
        units = {}
        for sample, tot_vol, acqs in (
                ("S1", 2000.0, [("A1", "4", 0.01), ("A2", "2", 0.02)]),
                ("S2", 500.0, [("A3", "1", 0.01)]),
                ("S3", 1000.0, [("A5", "1", 0.01)]),
                ("S4", None, [("A4", "1", 0.01)])):
            srow = Sample(project_id=p.id, orig_id=sample,
                          extra={"tot_vol": tot_vol} if tot_vol else {})
            s.add(srow)
            s.flush()
            for acq, sub_part, pixel in acqs:
                arow = Acquisition(project_id=p.id, sample_id=srow.id, orig_id=acq,
                                   extra={"sub_part": sub_part})
                s.add(arow)
                s.flush()
                prow = Process(project_id=p.id, acquisition_id=arow.id, orig_id=f"P{acq}",
                               extra={"pixel_size": pixel})
                s.add(prow)
                s.flush()
                units[acq] = (srow.id, arow.id, prow.id)
        n = 0
        for acq, status, taxon, area in (
                ("A1", "validated", cope, 100.0), ("A1", "validated", cope, 400.0),
                ("A1", "predicted", chaeto, 100.0), ("A1", "dubious", cope, 100.0),
                ("A2", "validated", cope, 100.0),
                ("A3", "validated", detritus, 314.0),
                ("A5", "unclassified", None, 50.0),
                ("A4", "validated", cope, 100.0)):
            n += 1
            sid, aid, pid = units[acq]
            s.add(Object(project_id=p.id, orig_id=f"o{n}", sample_id=sid, acquisition_id=aid,
                         process_id=pid, status=status, taxon_id=taxon,
                         annotator_id=admin_id if status != "unclassified" else None,
                         extra={"area": area}))
        return p.id


def by_key(summary):
    return {(r.sample_id, r.acquisition_id, r.category): r for r in summary.rows}


def test_per_sample_with_ecotaxa_formulas_and_zeros(instance, admin):
    pid = tiny_project(instance, admin.id)
    with instance.sessions() as s:
        summary = compute_summary(s, pid)
    rows = by_key(summary)
    # Every sample x every category counted (validated only: Copepoda and detritus).
    assert [(r.sample_id, r.category) for r in summary.rows] == [
        (sample, cat) for sample in ("S1", "S2", "S3", "S4") for cat in ("Copepoda", "detritus")]
    cope = rows[("S1", None, "Copepoda")]
    assert cope.count == 3 and cope.lineage == "Copepoda"
    # 1/subsample_coef/total_water_volume: A1 1/(1/4)/2 m³ = 2 per object, A2 1/(1/2)/2 = 1.
    assert cope.concentration == pytest.approx(2 + 2 + 1)
    assert cope.biovolume == pytest.approx(2 * esd_volume(100, 0.01) + 2 * esd_volume(400, 0.01)
                                           + 1 * esd_volume(100, 0.02))
    det = rows[("S2", None, "detritus")]
    assert (det.count, det.concentration) == (1, pytest.approx(2.0))  # 1/1/0.5 m³
    assert det.biovolume == pytest.approx(2 * esd_volume(314, 0.01))
    for key in (("S1", None, "detritus"), ("S2", None, "Copepoda"), ("S3", None, "Copepoda"),
                ("S3", None, "detritus")):
        assert (rows[key].count, rows[key].concentration, rows[key].biovolume) == (0, 0.0, 0.0)
    # S4 has no tot_vol: its numbers are NaN, with a warning, not a failure.
    s4 = rows[("S4", None, "Copepoda")]
    assert s4.count == 1 and math.isnan(s4.concentration) and math.isnan(s4.biovolume)
    assert len(summary.warnings) == 1
    assert "sample 'S4', acquisition 'A4'" in summary.warnings[0]
    assert "total_water_volume = sam.tot_vol/1000: no value for sam.tot_vol (1 object)" \
        in summary.warnings[0]
    assert summary.formulas == default_formulas("zooscan")


def test_predicted_objects_on_request_and_per_acquisition(sqlite_instance):
    inst = sqlite_instance
    pid = tiny_project(inst, 1)
    with inst.sessions() as s:
        summary = compute_summary(s, pid, by="acquisition", with_predicted=True)
    rows = by_key(summary)
    assert {r.category for r in summary.rows} == {"Chaetognatha", "Copepoda", "detritus"}
    assert len(summary.rows) == 5 * 3  # five acquisitions x three categories
    a1 = rows[("S1", "A1", "Copepoda")]
    assert (a1.count, a1.concentration) == (2, pytest.approx(4.0))
    chaeto = rows[("S1", "A1", "Chaetognatha")]
    assert (chaeto.count, chaeto.concentration) == (1, pytest.approx(2.0))
    assert chaeto.biovolume == pytest.approx(2 * esd_volume(100, 0.01))
    a2 = rows[("S1", "A2", "Copepoda")]
    assert (a2.count, a2.concentration) == (1, pytest.approx(1.0))
    assert rows[("S3", "A5", "Copepoda")].count == 0


def test_project_formulas_are_stored_checked_and_used(sqlite_instance, tmp_path):
    inst = sqlite_instance
    pid = tiny_project(inst, 1)
    with inst.sessions.begin() as s:
        used = set_project_formulas(s, pid, {"total_water_volume": "sam.tot_vol"})
    assert used["total_water_volume"] == "sam.tot_vol"
    assert used["subsample_coef"] == "1/ssm.sub_part"  # the default stays
    with inst.sessions() as s:
        assert s.get(Project, pid).settings["formulas"] == {"total_water_volume": "sam.tot_vol"}
        summary = compute_summary(s, pid)
    # Volumes now read as m³: a thousand times lower concentrations.
    assert by_key(summary)[("S1", None, "Copepoda")].concentration == pytest.approx(0.005)
    # A refused formula stores nothing; an empty one restores the default.
    with inst.sessions.begin() as s:
        with pytest.raises(FormulaError, match="function calls other than"):
            set_project_formulas(s, pid, {"subsample_coef": "__import__('os').getpid()"})
        with pytest.raises(FormulaError, match="unknown formula name 'volume'"):
            set_project_formulas(s, pid, {"volume": "1"})
    with inst.sessions.begin() as s:
        assert project_formulas(s, pid)["subsample_coef"] == "1/ssm.sub_part"
        assert set_project_formulas(s, pid, {"total_water_volume": ""}) == \
            default_formulas("zooscan")
    # Formulas given for one summary only, and the TSV written.
    result = export_summary(inst, pid, tmp_path, by="sample",
                            formulas={"subsample_coef": "1", "total_water_volume": "2"})
    assert result.path == tmp_path / f"summary_{pid}_by_sample.tsv"
    assert (result.n_rows, result.n_units, result.n_categories) == (8, 4, 2)
    with open(result.path, newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    assert table[0] == ["sample_id", "taxon_id", "category", "lineage", "count", "concentration",
                        "biovolume"]
    s1 = next(r for r in table[1:] if r[0] == "S1" and r[2] == "Copepoda")
    assert (s1[4], float(s1[5])) == ("3", pytest.approx(1.5))  # 3 objects x 1/1/2
    s4 = next(r for r in table[1:] if r[0] == "S4" and r[2] == "Copepoda")
    assert s4[5] == "0.5" and s4[6] != "NaN"  # no missing value with these formulas
    assert result.warnings == [] and result.to_dict()["path"] == str(result.path)


def test_an_ambiguous_subsample_column_is_refused(sqlite_instance):
    inst = sqlite_instance
    pid = tiny_project(inst, 1)
    with inst.sessions.begin() as s:
        p = s.get(Project, pid)
        p.free_columns = {**p.free_columns, "process": {"pixel_size": "f", "sub_part": "f"}}
    with inst.sessions() as s, pytest.raises(FormulaError, match="ssm.sub_part is ambiguous"):
        compute_summary(s, pid)
    with inst.sessions() as s:  # naming the table lifts the ambiguity
        summary = compute_summary(s, pid, formulas={"subsample_coef": "1/acq.sub_part"})
    assert by_key(summary)[("S1", None, "Copepoda")].concentration == pytest.approx(5.0)


# -- the formula evaluator -----------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("__import__('os').system('id')", "function calls other than"),
    ("open('/etc/passwd')", "function calls other than"),
    ("obj.area.real", "is not a reference"),
    ("math.sqrt(obj.area, 2)", "takes exactly one argument"),
    ("(lambda: 1)()", "function calls other than"),
    ("[x for x in obj]", "ListComp expressions are not allowed"),
    ("obj['area']", "Subscript expressions are not allowed"),
    ("'text'", "only numbers are allowed"),
    ("area * 2", "unknown name 'area'"),
    ("1 if obj.a else 2", "IfExp expressions are not allowed"),
    ("obj.a % 2", "operator Mod is not allowed"),
    ("not obj.a", "operator Not is not allowed"),
    ("obj.a +", "not a valid expression"),
    ("", "the formula is empty"),
    ("1+" * 300 + "1", "longer than 500 characters"),
    ("True", "only numbers are allowed"),
])
def test_formulas_outside_the_whitelist_are_refused(text, message):
    with pytest.raises(FormulaError, match=message):
        Formula(text)


def test_formula_values_never_raise():
    values = {("obj", "a"): 2.0, ("sam", "neg"): -8.0, ("ssm", "zero"): 0.0}
    assert Formula("obj.a ** 10 / 1024").evaluate(values) == 1.0
    assert Formula("-obj.a + abs(sam.neg) + math.log10(100) * math.e ** 0").evaluate(values) \
        == 8.0
    for nan in ("1/ssm.zero", "math.sqrt(sam.neg)", "sam.neg ** 0.5", "10.0 ** 10 ** 10",
                "obj.missing * 2", "math.log(ssm.zero)"):
        assert math.isnan(Formula(nan).evaluate(values)), nan
    assert Formula("ssm.zero + obj.a").references == (("ssm", "zero"), ("obj", "a"))
