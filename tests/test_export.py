"""Exporting projects as EcoTaxa bundles that import back unchanged, and count tables."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import time
import zipfile
from datetime import timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from conftest import IMPORT_CASES, NDSB_TEST_CLASSES, NDSB_ZIP, _make_instance, extract_ndsb_subset
from ecotaxa_core.annotation import set_dubious, validate_objects
from ecotaxa_core.db.models import Acquisition, Image, Object, Process, Project, Sample, Taxon, User
from ecotaxa_core.export import export_columns, export_project
from ecotaxa_core.importer import import_path
from ecotaxa_core.projects import create_project
from ecotaxa_core.taxonomy import get_or_create_taxon

IMPORT_TEST = IMPORT_CASES / "import_test"
UVP6_ZIP = IMPORT_CASES / "UVP6_example.zip"


# -- helpers ----------------------------------------------------------------------------
def new_project(inst, title="Export test") -> int:
    with inst.sessions.begin() as s:
        return create_project(s, title).id


def objects_by_orig_id(inst, project_id: int) -> dict[str, Object]:
    with inst.sessions() as s:
        objs = s.scalars(select(Object).where(Object.project_id == project_id)).all()
        for o in objs:
            _ = o.images, o.taxon
        return {o.orig_id: o for o in objs}


def _second(when):
    """Annotation times as the EcoTaxa format keeps them: UTC, to the second."""
    if when is None:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).replace(microsecond=0)


def snapshot(inst, project_id: int, *, taxa_by_name: bool = False) -> dict:
    """Everything a round trip must keep, keyed by object id (orig_id)."""
    with inst.sessions() as s:
        project = s.get(Project, project_id)
        parents = {}
        for model in (Sample, Acquisition, Process):
            for r in s.scalars(select(model).where(model.project_id == project_id)):
                parents[(model.__name__, r.id)] = r
        users = {u.id: (u.name, u.email) for u in s.scalars(select(User))}
        taxa = {t.id: t for t in s.scalars(select(Taxon))}

        def taxon(tid):
            if tid is None or not taxa_by_name:
                return tid
            names, t = [], taxa[tid]
            while t is not None:
                names.append(t.name)
                t = taxa.get(t.parent_id)
            return ">".join(reversed(names))

        def parent(kind, pid):
            r = parents.get((kind, pid))
            if r is None:
                return None
            up = {"Acquisition": ("Sample", "sample_id"), "Process": ("Acquisition",
                                                                       "acquisition_id")}
            link = parent(up[kind][0], getattr(r, up[kind][1])) if kind in up else None
            return (r.orig_id, getattr(r, "lat", None), getattr(r, "lon", None),
                    getattr(r, "instrument", None), r.extra, link)

        objects = {}
        ids = {}
        for o in s.scalars(select(Object).where(Object.project_id == project_id)):
            images = [(im.rank, im.original_name, im.width, im.height,
                       hashlib.sha256(inst.vault.path(im.file_path).read_bytes()).hexdigest(),
                       im.thumb_path is None or inst.vault.path(im.thumb_path).exists())
                      for im in sorted(o.images, key=lambda i: i.rank)]
            objects[o.orig_id] = dict(
                lat=o.lat, lon=o.lon, date=o.date, time=o.time, depth=(o.depth_min, o.depth_max),
                status=o.status, taxon=taxon(o.taxon_id), who=users.get(o.annotator_id),
                when=_second(o.annotation_date), extra=o.extra,
                sample=parent("Sample", o.sample_id),
                acquisition=parent("Acquisition", o.acquisition_id),
                process=parent("Process", o.process_id), images=images)
            ids[o.orig_id] = o.id
        counts = {m.__name__: sum(1 for k in parents if k[0] == m.__name__)
                  for m in (Sample, Acquisition, Process)}
        free = {k: v for k, v in (project.free_columns or {}).items() if v}
    features = None
    if inst.features.exists(project_id, "tsv"):
        order = sorted(ids)
        fm = inst.features.read(project_id, "tsv", [ids[k] for k in order])
        features = (fm.feature_names, np.nan_to_num(fm.values, nan=-1e30).tolist())
    return dict(objects=objects, parents=counts, free_columns=free, features=features)


def assert_same_project(a: dict, b: dict) -> None:
    assert set(a["objects"]) == set(b["objects"])
    for orig_id, oa in a["objects"].items():
        assert oa == b["objects"][orig_id], orig_id
    assert a["parents"] == b["parents"]
    assert a["free_columns"] == b["free_columns"]
    assert a["features"] == b["features"]


def _tsv_rows(bundle, name):
    with zipfile.ZipFile(bundle) as z:
        text = z.read(name).decode("utf-8")
    return list(csv.reader(io.StringIO(text), delimiter="\t"))


# -- round trips ----------------------------------------------------------------------
@pytest.mark.parametrize("split_by_sample", [False, True], ids=["one_tsv", "by_sample"])
def test_import_test_round_trips_exactly(instance, admin, tmp_path, split_by_sample):
    a = new_project(instance, "A")
    import_path(instance, a, IMPORT_TEST, user_id=admin.id, create_missing_taxa=True,
                create_missing_users=True)
    with instance.sessions() as s:
        n_taxa = len(s.scalars(select(Taxon.id)).all())
    result = export_project(instance, a, tmp_path / "out", split_by_sample=split_by_sample)
    assert (result.n_objects, result.n_images) == (11, 11)
    assert re.fullmatch(rf"ecotaxa_export_{a}_\d{{8}}_\d{{6}}\.zip", result.bundle.name)
    assert result.counts == tmp_path / "out" / f"counts_{a}.tsv"
    assert result.to_dict()["bundle"] == str(result.bundle)
    with zipfile.ZipFile(result.bundle) as z:
        names = set(z.namelist())
    if split_by_sample:
        # EcoTaxa's backup layout: a folder per sample, the images next to their TSV
        # under their original names (three objects share one image file, as imported).
        assert result.tsv_files == ["m106_mn01_n1_sml/ecotaxa_m106_mn01_n1_sml.tsv",
                                    "m106_mn01_n2_sml/ecotaxa_m106_mn01_n2_sml.tsv"]
        expected = {f"{p.parent.name}/{p.name}" for p in IMPORT_TEST.rglob("*.jpg")}
        tsv = result.tsv_files[0]
    else:
        assert result.tsv_files == [f"ecotaxa_{a}.tsv"]
        expected = {p.name for p in IMPORT_TEST.rglob("*.jpg")}
        tsv = f"ecotaxa_{a}.tsv"
    assert names == expected | set(result.tsv_files)
    rows = _tsv_rows(result.bundle, tsv)
    header, types = rows[0], rows[1]
    assert header[:3] == ["object_id", "object_lat", "object_lon"] and types[:3] == ["[t]", "[f]",
                                                                                     "[f]"]
    assert types[header.index("object_new_field")] == "[f]"
    assert types[header.index("sample_ship")] == "[t]"
    with instance.sessions() as s:
        columns = export_columns(s.get(Project, a).free_columns)
    assert header == [c for c, _ in columns] and types == [f"[{k}]" for _, k in columns]
    assert all(len(r) == len(header) for r in rows)

    b = new_project(instance, "B")
    back = import_path(instance, b, result.bundle, user_id=admin.id)  # no taxon to create
    assert back.taxa_created == []
    with instance.sessions() as s:
        assert len(s.scalars(select(Taxon.id)).all()) == n_taxa
    assert (back.n_objects, back.n_images, back.n_samples, back.n_acquisitions,
            back.n_processes) == (11, 11, 2, 4, 2)
    assert_same_project(snapshot(instance, a), snapshot(instance, b))


@pytest.mark.parametrize("split_by_sample", [False, True], ids=["one_tsv", "by_sample"])
def test_uvp6_bundle_round_trips_exactly(sqlite_instance, tmp_path, split_by_sample):
    inst = sqlite_instance
    a = new_project(inst, "UVP6")
    import_path(inst, a, UVP6_ZIP, user_id=1, create_missing_taxa=True)
    # Annotate a few so statuses, categories and who/when travel too.
    objs = sorted(objects_by_orig_id(inst, a).values(), key=lambda o: o.orig_id)
    with inst.sessions.begin() as s:
        copepod = get_or_create_taxon(s, "Copepoda")
        for o in objs[:4]:
            row = s.get(Object, o.id)
            row.status, row.taxon_id, row.annotator_id = "predicted", copepod.id, 1
        validate_objects(s, a, [objs[0].id, objs[1].id], 1)
        set_dubious(s, a, [objs[2].id], 1)
    result = export_project(inst, a, tmp_path / "out", split_by_sample=split_by_sample)
    assert (result.n_objects, result.n_images) == (15, 15)
    with zipfile.ZipFile(result.bundle) as z:
        names = z.namelist()
    prefix = "b_da_19/" if split_by_sample else ""
    assert f"{prefix}sub1/20200205-111823_3.png" in names  # original sub-folders kept
    b = new_project(inst, "UVP6 again")
    import_path(inst, b, result.bundle, user_id=1)
    sa, sb = snapshot(inst, a), snapshot(inst, b)
    assert_same_project(sa, sb)
    assert {o["status"] for o in sb["objects"].values()} == {"validated", "dubious", "predicted",
                                                              "unclassified"}
    assert sb["objects"]["20200205-111823_3"]["acquisition"][3] == "uvp6"


def test_class_folder_project_moves_to_another_instance_with_its_taxa(sqlite_instance, tmp_path):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        get_or_create_taxon(s, "unrelated")  # so taxon ids differ between the two instances
    classes = extract_ndsb_subset(tmp_path / "cls", classes=NDSB_TEST_CLASSES[:2], per_class=3)
    pid = new_project(inst)
    import_path(inst, pid, classes, user_id=1, create_missing_taxa=True)
    # A second image of one object, a second image named like the first one of another
    # object (different bytes), and text that needs quoting in a TSV.
    objs = sorted(objects_by_orig_id(inst, pid).values(), key=lambda o: o.orig_id)
    first, other = objs[0], objs[1]
    with inst.sessions.begin() as s:
        for obj, rank, src_obj, name in ((first, 1, other, "second.jpg"),
                                         (other, 2, other, first.images[0].original_name)):
            src = inst.vault.path(src_obj.images[0].file_path)
            image = Image(object_id=obj.id, rank=rank, file_path="", original_name=name,
                          width=src_obj.images[0].width, height=src_obj.images[0].height)
            s.add(image)
            s.flush()
            image.file_path, image.thumb_path = inst.vault.store(src, image.id, rank)
        s.get(Object, first.id).extra = {"note": 'tab\there, "quoted"\nand a new line'}
        s.get(Project, pid).free_columns = {"object": {"note": "t"}}
    result = export_project(inst, pid, tmp_path / "out")
    assert (result.n_objects, result.n_images) == (6, 8)
    with zipfile.ZipFile(result.bundle) as z:
        names = z.namelist()
    clash = first.images[0].original_name
    assert clash in names and f"2/{clash}" in names  # the same name, other bytes: rank prefix

    other_inst = _make_instance(tmp_path / "other_home", f"sqlite:///{tmp_path / 'other.db'}")
    try:
        target = new_project(other_inst)
        back = import_path(other_inst, target, result.bundle, user_id=1, create_missing_taxa=True)
        assert sorted(back.taxa_created) == sorted(NDSB_TEST_CLASSES[:2])
        sa = snapshot(inst, pid, taxa_by_name=True)
        sb = snapshot(other_inst, target, taxa_by_name=True)
        # The renamed image is the only difference.
        renamed = sb["objects"][other.orig_id]["images"][1]
        assert renamed[1] == f"2/{clash}"
        sb["objects"][other.orig_id]["images"][1] = (renamed[0], clash) + renamed[2:]
        assert_same_project(sa, sb)
        assert sb["objects"][first.orig_id]["extra"]["note"] == 'tab\there, "quoted"\nand a new line'
    finally:
        other_inst.close()


def test_without_images_the_bundle_names_them_and_follows_annotations(instance, admin, tmp_path):
    pid = new_project(instance)
    import_path(instance, pid, IMPORT_TEST, user_id=admin.id, create_missing_taxa=True,
                create_missing_users=True)
    objs = objects_by_orig_id(instance, pid)
    with instance.sessions.begin() as s:
        validate_objects(s, pid, [objs["m106_mn01_n2_sml_1"].id], admin.id)
        set_dubious(s, pid, [objs["m106_mn01_n1_sml_852"].id], admin.id)
    result = export_project(instance, pid, tmp_path, with_images=False, split_by_sample=True)
    with zipfile.ZipFile(result.bundle) as z:
        assert z.namelist() == result.tsv_files
    rows = _tsv_rows(result.bundle, "m106_mn01_n2_sml/ecotaxa_m106_mn01_n2_sml.tsv")
    header = rows[0]
    by_id = {r[0]: dict(zip(header, r)) for r in rows[2:]}
    assert len(by_id) == 3
    validated = by_id["m106_mn01_n2_sml_1"]
    assert validated["object_annotation_status"] == "validated"
    assert validated["object_annotation_person_email"] == "admin@example.org"
    assert validated["object_annotation_hierarchy"] == "detritus"
    assert validated["img_file_name"] == "m106_mn01_n2_sml_1.jpg" and validated["img_rank"] == "0"
    assert by_id["m106_mn01_n2_sml_1111"]["object_annotation_hierarchy"] == "Biota>other>egg"
    assert by_id["m106_mn01_n2_sml_1111"]["object_annotation_category_id"] == "85078"
    n1 = {r[0]: dict(zip(header, r)) for r in _tsv_rows(
        result.bundle, "m106_mn01_n1_sml/ecotaxa_m106_mn01_n1_sml.tsv")[2:]}
    assert n1["m106_mn01_n1_sml_409"]["object_date"] == "20140420"
    assert n1["m106_mn01_n1_sml_409"]["object_time"] == "042000"
    assert n1["m106_mn01_n1_sml_409"]["object_annotation_date"] == "20151111"
    assert n1["m106_mn01_n1_sml_409"]["object_annotation_time"] == "153100"
    assert n1["m106_mn01_n1_sml_852"]["object_annotation_status"] == "dubious"
    assert n1["m106_mn01_n1_sml_852"]["img_file_name"] == "m106_mn01_n1_sml_850.jpg"

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


def test_objects_without_sample_go_to_their_own_folder(sqlite_instance, tmp_path):
    inst = sqlite_instance
    folder = tmp_path / "bundle"
    folder.mkdir()
    jpg = IMPORT_TEST / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1.jpg"
    shutil.copy(jpg, folder / "a.jpg")
    (folder / "ecotaxa_x.tsv").write_text(
        "object_id\timg_file_name\tobject_size\tsample_id\n[t]\t[t]\t[f]\t[t]\n"
        "o1\ta.jpg\t1.5\t\no2\ta.jpg\t2\ts/1\n", encoding="utf-8")
    a = new_project(inst)
    import_path(inst, a, folder, user_id=None)
    result = export_project(inst, a, tmp_path / "out", split_by_sample=True)
    assert result.tsv_files == ["s_1/ecotaxa_s_1.tsv", "no_sample/ecotaxa_no_sample.tsv"]
    b = new_project(inst)
    import_path(inst, b, result.bundle, user_id=None)
    assert_same_project(snapshot(inst, a), snapshot(inst, b))


def test_odd_stored_values_are_written_as_the_format_expects(sqlite_instance, tmp_path):
    """NaN or null free values are empty cells, quotes and tabs are quoted, floats exact."""
    inst = sqlite_instance
    pid = new_project(inst)
    jpg = IMPORT_TEST / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1.jpg"
    with inst.sessions.begin() as s:
        s.get(Project, pid).free_columns = {"object": {"a": "f", "b": "t"},
                                            "sample": {"note": "t"}}
        sample = Sample(project_id=pid, orig_id="s", lat=-0.1, extra={"note": 'a\t"b"'})
        s.add(sample)
        s.flush()
        for orig_id, extra in (("o1", {"a": float("nan"), "b": None}),
                               ("o2", {"a": 0.1 + 0.2, "b": 'say "hi"'}),
                               ("o3", {"a": 1e-300, "b": "café"})):
            obj = Object(project_id=pid, orig_id=orig_id, sample_id=sample.id, extra=extra,
                         lat=12.000000000000002)
            s.add(obj)
            s.flush()
            image = Image(object_id=obj.id, rank=0, file_path="", original_name="same.jpg",
                          width=1, height=1)
            s.add(image)
            s.flush()
            image.file_path, image.thumb_path = inst.vault.store(jpg, image.id, 0)
    result = export_project(inst, pid, tmp_path / "out", with_images=False)
    rows = _tsv_rows(result.bundle, f"ecotaxa_{pid}.tsv")
    by_id = {r[0]: dict(zip(rows[0], r)) for r in rows[2:]}
    assert (by_id["o1"]["object_a"], by_id["o1"]["object_b"]) == ("", "")
    assert by_id["o2"]["object_a"] == "0.30000000000000004"
    assert by_id["o2"]["object_b"] == 'say "hi"' and by_id["o3"]["object_b"] == "café"
    assert by_id["o3"]["object_a"] == "1e-300" and by_id["o1"]["object_lat"] == "12.000000000000002"
    assert by_id["o1"]["sample_note"] == 'a\t"b"' and by_id["o1"]["sample_lat"] == "-0.1"
    # Three objects sharing one original name and its bytes share one entry again.
    assert {r["img_file_name"] for r in by_id.values()} == {"same.jpg"}


def test_an_unknown_project_is_refused(sqlite_instance, tmp_path):
    from ecotaxa_core.errors import ProjectNotFound

    with pytest.raises(ProjectNotFound):
        export_project(sqlite_instance, 999, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


def _ndsb_class_folders(dest: Path, n_images: int) -> Path:
    """The first ``n_images`` NDSB images (in name order) as class folders."""
    with zipfile.ZipFile(NDSB_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[:n_images]
        for n in names:
            target = dest / n.split("/")[1] / n.rsplit("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(n))
    return dest


@pytest.mark.slow
def test_ten_thousand_ndsb_objects_round_trip(sqlite_instance, tmp_path):
    inst = sqlite_instance
    classes = _ndsb_class_folders(tmp_path / "ndsb10k", 10_000)
    a = new_project(inst, "NDSB 10k")
    first = import_path(inst, a, classes, user_id=1, create_missing_taxa=True)
    assert first.n_objects == 10_000
    started = time.perf_counter()
    result = export_project(inst, a, tmp_path / "out", split_by_sample=True)
    export_seconds = time.perf_counter() - started
    assert (result.n_objects, result.n_images) == (10_000, 10_000)
    b = new_project(inst, "NDSB 10k again")
    back = import_path(inst, b, result.bundle, user_id=1)
    assert back.n_objects == 10_000 and back.taxa_created == []
    assert_same_project(snapshot(inst, a), snapshot(inst, b))
    assert export_seconds < 20


def test_exporting_an_unchanged_project_again_writes_nothing(sqlite_instance, tmp_path):
    from ecotaxa_core.export_manifest import manifest_path

    inst = sqlite_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "export twice").id
    import_path(inst, pid, IMPORT_CASES / "import_test", user_id=1, create_missing_taxa=True,
                create_missing_users=True)
    out = tmp_path / "out"
    first = export_project(inst, pid, out)
    assert not first.reused
    files = sorted(p.name for p in out.iterdir())
    stamp = first.bundle.stat().st_mtime_ns

    again = export_project(inst, pid, out)
    assert again.reused and again.bundle == first.bundle and again.n_images == first.n_images
    assert sorted(p.name for p in out.iterdir()) == files  # no new file, no scratch left
    assert first.bundle.stat().st_mtime_ns == stamp

    # Other options, a changed project, a bundle changed or gone: exported anew.
    other = export_project(inst, pid, out, split_by_sample=True)
    assert not other.reused and other.bundle != first.bundle
    assert export_project(inst, pid, out, split_by_sample=True).reused
    with inst.sessions.begin() as s:
        oid = s.scalars(select(Object.id).where(Object.project_id == pid,
                                                Object.status != "validated")).first()
        set_dubious(s, pid, [oid], 1)
    changed = export_project(inst, pid, out, split_by_sample=True)
    assert not changed.reused and changed.bundle != other.bundle
    changed.bundle.unlink()
    assert not export_project(inst, pid, out, split_by_sample=True).reused
    assert not export_project(inst, pid, out, split_by_sample=True, reuse=False).reused
    assert manifest_path(out, pid).is_file()
