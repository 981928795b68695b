"""Exporting projects as EcoTaxa bundles that import back, and count tables."""

from __future__ import annotations

import csv
import io
import re
import shutil
import zipfile
from datetime import timezone

import numpy as np
from sqlalchemy import select

from conftest import NDSB_TEST_CLASSES, _make_instance, extract_ndsb_subset
from ecotaxa_core.annotation import set_dubious, validate_objects
from ecotaxa_core.db.models import Acquisition, Image, Object, Process, Project, Sample
from ecotaxa_core.export import export_project
from ecotaxa_core.importer import import_path
from ecotaxa_core.taxonomy import get_or_create_taxon
from test_import import (import_test_into, new_project, objects_by_orig_id,
                         row_counts)


def _parents(inst, obj):
    with inst.sessions() as s:
        sample = s.get(Sample, obj.sample_id)
        acq = s.get(Acquisition, obj.acquisition_id)
        process = s.get(Process, obj.process_id)
        return ((sample.orig_id, sample.lat, sample.lon, sample.extra),
                (acq.orig_id, acq.instrument, acq.extra), (process.orig_id, process.extra))


def _utc(when):
    return when if when is None or when.tzinfo else when.replace(tzinfo=timezone.utc)


def _tsv_rows(bundle, name):
    with zipfile.ZipFile(bundle) as z:
        text = z.read(name).decode("utf-8")
    return list(csv.reader(io.StringIO(text), delimiter="\t"))


def test_export_imports_back_into_another_project(instance, admin, tmp_path):
    a = new_project(instance, "A")
    import_test_into(instance, a, admin.id)
    result = export_project(instance, a, tmp_path / "out")
    assert (result.n_objects, result.n_images) == (11, 11)
    assert re.fullmatch(rf"ecotaxa_export_{a}_\d{{8}}_\d{{6}}\.zip", result.bundle.name)
    assert result.counts == tmp_path / "out" / f"counts_{a}.tsv"
    assert result.to_dict()["bundle"] == str(result.bundle)
    with zipfile.ZipFile(result.bundle) as z:
        names = z.namelist()
    assert f"ecotaxa_{a}.tsv" in names and sum(n.startswith("images/") for n in names) == 11
    rows = _tsv_rows(result.bundle, f"ecotaxa_{a}.tsv")
    header, types = rows[0], rows[1]
    assert header[:3] == ["object_id", "object_lat", "object_lon"] and types[:3] == ["[t]", "[f]", "[f]"]
    assert types[header.index("object_new_field")] == "[f]"
    assert types[header.index("sample_ship")] == "[t]"

    b = new_project(instance, "B")
    before_taxa = row_counts(instance)["taxa"]
    back = import_path(instance, b, result.bundle, user_id=admin.id)  # no taxon to create
    assert back.taxa_created == [] and row_counts(instance)["taxa"] == before_taxa
    assert (back.n_objects, back.n_images, back.n_samples, back.n_acquisitions,
            back.n_processes) == (11, 11, 2, 4, 2)

    objs_a, objs_b = objects_by_orig_id(instance, a), objects_by_orig_id(instance, b)
    assert set(objs_a) == set(objs_b)
    fields = ("lat", "lon", "date", "time", "depth_min", "depth_max", "status", "taxon_id",
              "annotator_id", "extra")
    for orig_id, oa in objs_a.items():
        ob = objs_b[orig_id]
        assert [getattr(oa, f) for f in fields] == [getattr(ob, f) for f in fields], orig_id
        assert _utc(oa.annotation_date) == _utc(ob.annotation_date)
        assert _parents(instance, oa) == _parents(instance, ob)
        assert [im.rank for im in oa.images] == [im.rank for im in ob.images]
        for ia, ib in zip(oa.images, ob.images):
            assert instance.vault.path(ia.file_path).read_bytes() == \
                instance.vault.path(ib.file_path).read_bytes()
            assert (ia.width, ia.height) == (ib.width, ib.height)
    with instance.sessions() as s:
        assert s.get(Project, a).free_columns == s.get(Project, b).free_columns
    fa = instance.features.read(a, "tsv", [o.id for o in objs_a.values()])
    fb = instance.features.read(b, "tsv", [objs_b[k].id for k in objs_a])
    assert fa.feature_names == fb.feature_names
    np.testing.assert_array_equal(fa.values, fb.values)


def test_count_table_per_sample_category_and_status(instance, admin, tmp_path):
    pid = new_project(instance)
    import_test_into(instance, pid, admin.id)
    objs = objects_by_orig_id(instance, pid)
    with instance.sessions.begin() as s:
        validate_objects(s, pid, [objs["m106_mn01_n2_sml_1"].id], admin.id)
        set_dubious(s, pid, [objs["m106_mn01_n1_sml_852"].id], admin.id)
    result = export_project(instance, pid, tmp_path, with_images=False)
    rows = list(csv.reader(io.StringIO(result.counts.read_text()), delimiter="\t"))
    assert rows == [
        ["sample_id", "category", "n_validated", "n_predicted", "n_dubious", "n_unclassified",
         "n_total"],
        ["m106_mn01_n1_sml", "Cyclopoida", "0", "1", "0", "0", "1"],
        ["m106_mn01_n1_sml", "Oncaeidae", "0", "2", "0", "0", "2"],
        ["m106_mn01_n1_sml", "other", "0", "2", "1", "0", "3"],
        ["m106_mn01_n1_sml", "ozzeur", "0", "1", "0", "0", "1"],
        ["m106_mn01_n1_sml", "t001", "0", "1", "0", "0", "1"],
        ["m106_mn01_n2_sml", "detritus", "1", "1", "0", "0", "2"],
        ["m106_mn01_n2_sml", "egg", "0", "1", "0", "0", "1"],
    ]
    # Without images the zip holds the TSV only; the annotation columns follow the changes.
    with zipfile.ZipFile(result.bundle) as z:
        assert z.namelist() == [f"ecotaxa_{pid}.tsv"]
    table = _tsv_rows(result.bundle, f"ecotaxa_{pid}.tsv")
    header = table[0]
    by_id = {r[0]: dict(zip(header, r)) for r in table[2:]}
    validated = by_id["m106_mn01_n2_sml_1"]
    assert validated["object_annotation_status"] == "validated"
    assert validated["object_annotation_person_email"] == "admin@example.org"
    assert validated["object_annotation_hierarchy"] == "detritus"
    assert by_id["m106_mn01_n2_sml_1111"]["object_annotation_hierarchy"] == "Biota>other>egg"
    assert by_id["m106_mn01_n2_sml_1111"]["object_annotation_category_id"] == "85078"
    assert by_id["m106_mn01_n1_sml_409"]["object_date"] == "20140420"
    assert by_id["m106_mn01_n1_sml_409"]["object_time"] == "042000"
    assert len(table) == 2 + 11


def test_class_folder_projects_move_to_another_instance_with_their_taxa(sqlite_instance, tmp_path):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        get_or_create_taxon(s, "unrelated")  # so taxon ids differ between the two instances
    classes = extract_ndsb_subset(tmp_path / "cls", classes=NDSB_TEST_CLASSES[:2], per_class=3)
    pid = new_project(inst)
    import_path(inst, pid, classes, user_id=1, create_missing_taxa=True)
    # A second image of one object, and text that needs quoting in a TSV.
    first = sorted(objects_by_orig_id(inst, pid).values(), key=lambda o: o.orig_id)[0]
    extra_src = tmp_path / "second.jpg"
    shutil.copy(inst.vault.path(first.images[0].file_path), extra_src)
    with inst.sessions.begin() as s:
        obj = s.get(Object, first.id)
        image = Image(object_id=obj.id, rank=1, file_path="", original_name="second.jpg",
                      width=first.images[0].width, height=first.images[0].height)
        s.add(image)
        s.flush()
        image.file_path, image.thumb_path = inst.vault.store(extra_src, image.id, 1)
        obj.extra = {"note": 'tab\there, "quoted"\nand a new line'}
        s.get(Project, pid).free_columns = {"object": {"note": "t"}}
    result = export_project(inst, pid, tmp_path / "out")
    assert (result.n_objects, result.n_images) == (6, 7)

    other = _make_instance(tmp_path / "other_home", f"sqlite:///{tmp_path / 'other.db'}")
    try:
        target = new_project(other)
        back = import_path(other, target, result.bundle, user_id=1, create_missing_taxa=True)
        assert sorted(back.taxa_created) == sorted(NDSB_TEST_CLASSES[:2])
        src, dst = objects_by_orig_id(inst, pid), objects_by_orig_id(other, target)
        assert set(src) == set(dst)
        for orig_id, o in src.items():
            d = dst[orig_id]
            assert (d.status, d.taxon_id, d.extra) == (o.status, o.taxon_id, o.extra)
            assert d.taxon.name == o.taxon.name
            assert [other.vault.path(i.file_path).read_bytes() for i in d.images] == \
                [inst.vault.path(i.file_path).read_bytes() for i in o.images]
        assert dst[first.orig_id].extra["note"] == 'tab\there, "quoted"\nand a new line'
        with other.sessions() as s:
            assert s.scalar(select(Sample.orig_id).where(Sample.project_id == target)) == "cls"
    finally:
        other.close()
