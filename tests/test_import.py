"""Importing EcoTaxa bundles and class folders: results, refusals, atomicity."""

from __future__ import annotations

import math
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from conftest import IMPORT_CASES, NDSB_TEST_CLASSES, extract_ndsb_subset
from ecotaxa_core.db.models import (Acquisition, Image, Object, Process, Project, Sample, Taxon,
                                    User)
from ecotaxa_core.errors import UnknownAnnotators, UnknownCategories, UnmatchedNames
from ecotaxa_core.import_journal import JOURNAL_DIR, LOCK_DIR
from ecotaxa_core.importer import import_path
from ecotaxa_core.projects import create_project
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.tsv import TsvFormatError

IMPORT_TEST = IMPORT_CASES / "import_test"
N1 = "m106_mn01_n1_sml/ecotaxa_m106_mn01_n1_sml.tsv"
N2 = "m106_mn01_n2_sml/ecotaxa_m106_mn01_n2_sml.tsv"


# -- helpers (also used by test_export.py) ---------------------------------------
def new_project(inst, title="Import test") -> int:
    with inst.sessions.begin() as s:
        return create_project(s, title).id


def row_counts(inst, project_id: int | None = None) -> dict[str, int]:
    """Rows per table (of one project when given), taxa and users."""
    counts = {}
    with inst.sessions() as s:
        for name, model in (("objects", Object), ("samples", Sample),
                            ("acquisitions", Acquisition), ("processes", Process)):
            q = select(func.count()).select_from(model)
            if project_id is not None:
                q = q.where(model.project_id == project_id)
            counts[name] = s.scalar(q)
        q = select(func.count()).select_from(Image).join(Object, Object.id == Image.object_id)
        if project_id is not None:
            q = q.where(Object.project_id == project_id)
        counts["images"] = s.scalar(q)
        counts["taxa"] = s.scalar(select(func.count()).select_from(Taxon))
        counts["users"] = s.scalar(select(func.count()).select_from(User))
    return counts


def vault_files(inst) -> set[str]:
    root = inst.vault.root
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def objects_by_orig_id(inst, project_id: int) -> dict[str, Object]:
    with inst.sessions() as s:
        objs = s.scalars(select(Object).where(Object.project_id == project_id)).all()
        for o in objs:
            _ = o.images, o.taxon  # load while the session is open
        return {o.orig_id: o for o in objs}


def taxon_path(inst, taxon_id: int) -> list[str]:
    """Names from the taxon up to the root."""
    names = []
    with inst.sessions() as s:
        t = s.get(Taxon, taxon_id)
        while t is not None:
            names.append(t.name)
            t = s.get(Taxon, t.parent_id) if t.parent_id else None
    return names


def leftovers(inst) -> list[str]:
    """What imports left in the work dir, but for the lock files and the (empty) journal dir."""
    work = inst.settings.work_dir
    found = [p.name for p in work.iterdir() if p.name not in (LOCK_DIR, JOURNAL_DIR)]
    if (work / JOURNAL_DIR).exists():
        found += [f"{JOURNAL_DIR}/{p.name}" for p in (work / JOURNAL_DIR).iterdir()]
    return found


def assert_nothing_written(inst, before_counts, before_files, project_id):
    assert row_counts(inst) == before_counts
    assert vault_files(inst) == before_files
    assert not inst.features.exists(project_id, "tsv")
    assert leftovers(inst) == [], "temporary files left behind"


def import_test_into(inst, project_id, admin_id, source=IMPORT_TEST):
    return import_path(inst, project_id, source, user_id=admin_id, create_missing_taxa=True,
                       create_missing_users=True)


# -- import_test ----------------------------------------------------------------------
FOLDER_LABELS = {"t001", "Oncaeidae", "Cyclopoida", "other<Biota", "Other (Biota)", "other",
                 "ozzeur", "detritus", "egg<other"}
ZIP_LABELS = {"t001", "Oncaeidae", "Cyclopoida", "other<living", "detritus", "egg<other"}


@pytest.mark.parametrize("source, labels, people", [
    (IMPORT_TEST, FOLDER_LABELS, {"Admin4test", "Elizandro Rodriguez"}),
    (IMPORT_CASES / "import_test.zip", ZIP_LABELS, {"Elizandro Rodriguez"})], ids=["folder", "zip"])
def test_unknown_categories_and_annotators_are_all_listed_and_nothing_is_written(
        instance, admin, source, labels, people):
    pid = new_project(instance)
    before, files = row_counts(instance), vault_files(instance)
    with pytest.raises(UnmatchedNames) as err:
        import_path(instance, pid, source, user_id=admin.id)
    assert isinstance(err.value, UnknownCategories)
    assert set(err.value.categories) == labels and err.value.where == err.value.categories
    assert err.value.where["t001"] == [f"{N1} line 3"]
    assert err.value.where["detritus"] == [f"{N2} line 3", f"{N2} line 4"]
    assert "'egg<other': " + f"{N2} line 5" in str(err.value)
    # Annotators too, in the same error, by name (what a users map file answers).
    assert set(err.value.annotators) == people
    assert f"{N2} line 3" in err.value.annotators["Elizandro Rodriguez"]
    assert f"{len(people)} unknown annotator" in str(err.value) and "--users-map" in str(err.value)
    assert_nothing_written(instance, before, files, pid)
    # Creating the categories is not enough: the annotators stop it still.
    with pytest.raises(UnknownAnnotators) as err:
        import_path(instance, pid, source, user_id=admin.id, create_missing_taxa=True)
    assert not isinstance(err.value, UnknownCategories)
    assert_nothing_written(instance, before, files, pid)


def test_import_test_folder_with_created_taxa(instance, admin):
    pid = new_project(instance)
    result = import_test_into(instance, pid, admin.id)
    assert (result.kind, result.n_objects, result.n_images, result.n_samples,
            result.n_acquisitions, result.n_processes) == ("ecotaxa_bundle", 11, 11, 2, 4, 2)
    assert result.tsv_files == [N1, N2]
    assert set(result.taxa_created) == {"t001", "Oncaeidae", "Cyclopoida", "Biota", "other",
                                        "ozzeur", "detritus", "egg"}
    assert sorted(result.users_created) == ["elizandro.rodrigues05@gmail.com", "me@home.fr"]
    assert result.mode == "add" and result.files_skipped == [] and result.n_objects_skipped == 0
    assert row_counts(instance, pid)["objects"] == 11 and row_counts(instance, pid)["samples"] == 2

    objs = objects_by_orig_id(instance, pid)
    assert len(objs) == 11 and {o.status for o in objs.values()} == {"predicted"}
    o409, o1111 = objs["m106_mn01_n1_sml_409"], objs["m106_mn01_n2_sml_1111"]
    # Categories, with the hierarchy their labels give, and EcoTaxa's ids kept.
    assert taxon_path(instance, o1111.taxon_id) == ["egg", "other", "Biota"]
    assert o1111.taxon_id == 85078
    assert objs["m106_mn01_n1_sml_850"].taxon_id == objs["m106_mn01_n1_sml_852"].taxon_id \
        == objs["m106_mn01_n1_sml_853"].taxon_id == 85011
    assert objs["m106_mn01_n1_sml_821"].taxon_id == objs["m106_mn01_n1_sml_851"].taxon_id == 78418
    assert objs["m106_mn01_n2_sml_1"].taxon.name == "detritus"
    assert o409.taxon.name == "t001" and objs["m106_mn01_n1_sml_854"].taxon.name == "ozzeur"
    # Predefined fields.
    assert (o409.lat, o409.lon, o409.date, o409.time, o409.depth_min, o409.depth_max) == (
        -44.72543333333333, 145.5351, "2014-04-20", "04:20:00", 600.0, 1000.0)
    when = o409.annotation_date.replace(tzinfo=o409.annotation_date.tzinfo or timezone.utc)
    assert when == datetime(2015, 11, 11, 15, 31, tzinfo=timezone.utc)
    # Annotators, created without a password.
    with instance.sessions() as s:
        people = {o: s.get(User, objs[o].annotator_id) for o in ("m106_mn01_n1_sml_409",
                                                                  "m106_mn01_n2_sml_1")}
        assert (people["m106_mn01_n1_sml_409"].name, people["m106_mn01_n1_sml_409"].email) == (
            "Admin4test", "me@home.fr")
        assert people["m106_mn01_n2_sml_1"].email == "elizandro.rodrigues05@gmail.com"
        assert people["m106_mn01_n2_sml_1"].password_hash is None
        # Samples, acquisitions, processes and their free columns.
        sample = s.scalar(select(Sample).where(Sample.project_id == pid,
                                               Sample.orig_id == "m106_mn01_n1_sml"))
        assert sample.extra["ship"] == "meteor" and sample.extra["volconc"] == "13.125"
        acq = s.get(Acquisition, objs["m106_mn01_n1_sml_850"].acquisition_id)
        assert (acq.orig_id, acq.instrument, acq.sample_id) == (
            "generic_m106_mn01_n1_sml2", "epson", sample.id)
        assert acq.extra == {"cell_type": "200-500", "magnification": "1"}
        process = s.get(Process, o409.process_id)
        assert process.orig_id == "zooprocess_m106_mn01_n1_sml"
        assert process.extra["software"] == "zooprocess_pid_to_ecotaxa_7.23_2017/03/10"
        free = s.get(Project, pid).free_columns
    assert free["object"]["new_field"] == "f" and free["object"]["link"] == "t"
    assert free["object"]["area"] == "f" and free["sample"]["ship"] == "t"
    assert free["process"]["start_date"] == "t" and free["acq"]["cell_type"] == "t"
    assert o409.extra["new_field"] == 1.0 and o409.extra["area"] == 516.0
    assert o409.extra["mean"] == 241.039993286133 and "link" not in o409.extra
    assert "new_field" not in o1111.extra
    # Images and thumbnails in the vault.
    for o in objs.values():
        (image,) = o.images
        src = IMPORT_TEST / o.orig_id.rsplit("_", 1)[0] / image.original_name
        stored = instance.vault.path(image.file_path)
        assert stored.read_bytes() == src.read_bytes()
        with PILImage.open(stored) as im:
            assert im.size == (image.width, image.height)
        if max(image.width, image.height) <= 128:  # a small JPEG is its own thumbnail
            assert image.thumb_path is None
        else:
            with PILImage.open(instance.vault.path(image.thumb_path)) as th:
                assert max(th.size) <= 128
    assert objs["m106_mn01_n1_sml_854"].images[0].original_name == "m106_mn01_n1_sml_850.jpg"
    # Numeric object columns in the "tsv" feature set.
    fm = instance.features.read(pid, "tsv", [o409.id, o1111.id])
    assert fm.feature_names[:3] == ["new_field", "by", "width"]
    row = dict(zip(fm.feature_names, fm.values[0]))
    assert row["area"] == 516.0 and row["new_field"] == 1.0
    assert math.isnan(dict(zip(fm.feature_names, fm.values[1]))["new_field"])
    assert instance.features.n_rows(pid, "tsv") == 11
    assert instance.features.attrs(pid, "tsv") == {"kind": "tsv"}
    # Taxa created later get ids past the EcoTaxa ones kept (PostgreSQL's sequence moved too).
    with instance.sessions.begin() as s:
        assert get_or_create_taxon(s, "newcomer").id > 85078


def test_import_test_zip_with_created_taxa(instance, admin):
    pid = new_project(instance)
    progress = []
    result = import_path(instance, pid, IMPORT_CASES / "import_test.zip", user_id=admin.id,
                         create_missing_taxa=True, create_missing_users=True,
                         progress=lambda d, t: progress.append((d, t)))
    assert (result.n_objects, result.n_images, result.n_samples) == (8, 8, 2)
    assert progress[-1] == (8, 8) and all(d <= t for d, t in progress)  # 8 files, each read once
    objs = objects_by_orig_id(instance, pid)
    assert taxon_path(instance, objs["m106_mn01_n2_sml_1111"].taxon_id) == ["egg", "other", "living"]
    assert objs["m106_mn01_n1_sml_409"].taxon_id == 85012  # t001's EcoTaxa id
    assert {o.images[0].rank for o in objs.values()} == {0}
    assert leftovers(instance) == []


# -- refusals ----------------------------------------------------------------------------
ISSUE_CASES = {
    "tsv_issues": {
        (1, "nounderscorecol", "bad_header"), (1, "unknown_target", "unknown_prefix"),
        (2, "object_wrongtype", "bad_type"), (3, "object_buggy_float", "bad_float"),
        (3, "object_lat", "bad_lat"), (3, "object_lon", "bad_lon"), (3, "object_date", "bad_date"),
        (3, "object_time", "bad_time"), (3, "object_annotation_status", "bad_status"),
        (5, "object_annotation_date", "bad_date"), (5, "object_annotation_time", "bad_time"),
        (6, "img_file_name", "missing_image"), (7, "img_file_name", "bad_image"),
        (8, "object_id", "missing_object_id"), (8, "img_file_name", "missing_image")},
    "duplicate_in_tsv": {(4, "img_file_name", "duplicate_object")},
    "breaking_hierarchy": {(3, "sample_id", "hierarchy_conflict")},
    "classif_without_state": {(3, "object_annotation_status", "category_without_status")},
    "predicted_but_what": {(3, "object_annotation_category", "status_without_category")},
    "no_classif_id": {(3, "object_annotation_category_id", "unknown_category_id")},
    "extra_data_without_header": {(3, None, "extra_values")},
    "empty_tsv": {(2, "acq_cell_type", "bad_type"), (2, "acq_magnification", "bad_type"),
                  (3, None, "no_data")},
    "empty_tsv2": {(1, None, "empty_file")},
    "no_relevant_file": {(None, None, "no_relevant_file")},
    "corrupted_img": {(3, "img_file_name", "bad_image"), (4, "img_file_name", "bad_image"),
                      (5, "img_file_name", "missing_image"), (6, "img_file_name", "bad_image")},
}


def test_every_bad_bundle_is_refused_with_its_location_and_leaves_nothing(instance, admin):
    # As in EcoTaxa's tests, the cases meet an instance that knows import_test's categories
    # (and, for breaking_hierarchy, the project holding its acquisitions).
    base = new_project(instance, "import_test")
    import_test_into(instance, base, admin.id)
    cases = sorted(p.name for p in (IMPORT_CASES / "import_issues").iterdir())
    assert set(cases) == set(ISSUE_CASES) | {"tsv_too_many_cols"}
    for case, expected in ISSUE_CASES.items():
        pid = base if case == "breaking_hierarchy" else new_project(instance, case)
        before, files = row_counts(instance), vault_files(instance)
        with pytest.raises(TsvFormatError) as err:
            import_path(instance, pid, IMPORT_CASES / "import_issues" / case, user_id=admin.id)
        issues = err.value.report.issues
        assert {(i.line, i.column, i.code) for i in issues} == expected, case
        message = str(err.value)
        for issue in issues:
            where = issue.path + (f" line {issue.line}" if issue.line else "")
            where += f", column {issue.column}" if issue.column and issue.line else ""
            assert where in message, (case, where)
        assert row_counts(instance) == before, case
        assert vault_files(instance) == files, case
        assert instance.features.n_rows(base, "tsv") == 11
        if pid != base:
            assert not instance.features.exists(pid, "tsv")
    assert leftovers(instance) == []


def test_bad_bundle_messages_name_file_line_and_column(sqlite_instance):
    inst = sqlite_instance
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, new_project(inst), IMPORT_CASES / "import_issues" / "tsv_issues",
                    user_id=None)
    message = str(err.value)
    assert message.startswith("15 problems in ")
    assert ("ecotaxa_m106_mn01_n3_sml.tsv line 3, column object_lat: invalid latitude '100' "
            "(must be within -90/+90°)") in message
    assert ("ecotaxa_m106_mn01_n3_sml.tsv line 7, column img_file_name: cannot read image "
            "'m106_mn01_n3_sml_corrupted_image.jpg'") in message
    with pytest.raises(TsvFormatError, match=r"m106_mn01_n3_sml/ecotaxa_m106_mn01_n3_sml_pls.tsv "
                                             r"line 4, column img_file_name: \(object "
                                             r"'m106_mn01_n3_sml_1120', image "
                                             r"'m106_mn01_n3_sml_1111.jpg'\) is already in this "
                                             r"file at line 3"):
        import_path(inst, new_project(inst), IMPORT_CASES / "import_issues" / "duplicate_in_tsv",
                    user_id=None)


def test_too_many_columns_for_ecotaxa_are_fine_here(sqlite_instance, tmp_path):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        get_or_create_taxon(s, "detritus", taxon_id=84963)
    pid = new_project(inst)
    users_map = tmp_path / "users.tsv"
    users_map.write_text("name\ttarget\nElizandro Rodriguez\tadmin@example.org\n")
    result = import_path(inst, pid, IMPORT_CASES / "import_issues" / "tsv_too_many_cols",
                         user_id=None, users_map=users_map)
    assert result.n_objects == 1 and result.users_created == []
    with inst.sessions() as s:
        free = s.get(Project, pid).free_columns
        sample = s.scalar(select(Sample).where(Sample.project_id == pid))
        obj = s.scalar(select(Object).where(Object.project_id == pid))
    assert obj.annotator_id == 1  # the administrator, as the map says
    # EcoTaxa stops at 30 (acquisition), 10 (process) ... free columns; we keep them all.
    assert sum(name.startswith("cus") for name in free["sample"]) == 57
    assert sum(name.startswith("cus") for name in free["acq"]) == 31
    assert sum(name.startswith("cus") for name in free["process"]) == 12
    assert sample.extra["cus61"] == "1"


def _tiny_bundle(folder: Path, rows: list[list[str]], header: list[str], types: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("m106_mn01_n2_sml_1.jpg", "m106_mn01_n2_sml_1081.jpg"):
        shutil.copy(IMPORT_TEST / "m106_mn01_n2_sml" / name, folder / name)
    lines = ["\t".join(header), "\t".join(types)] + ["\t".join(r) for r in rows]
    (folder / "ecotaxa_tiny.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_rows_of_one_object_are_its_images_and_ids_alone_name_local_taxa(sqlite_instance, tmp_path):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        copepod = get_or_create_taxon(s, "Copepoda").id
    header = ["object_id", "object_annotation_status", "object_annotation_category_id",
              "img_file_name", "img_rank", "object_area"]
    types = ["[t]", "[t]", "[f]", "[t]", "[f]", "[f]"]
    ok = _tiny_bundle(tmp_path / "ok", [
        ["a", "V", str(copepod), "m106_mn01_n2_sml_1.jpg", "0", "12"],
        ["a", "V", str(copepod), "m106_mn01_n2_sml_1081.jpg", "1", "12"],
        ["b", "", "", "m106_mn01_n2_sml_1.jpg", "", "NaN"]], header, types)
    pid = new_project(inst)
    result = import_path(inst, pid, ok, user_id=None)
    assert (result.n_objects, result.n_images, result.n_samples) == (2, 3, 0)
    objs = objects_by_orig_id(inst, pid)
    assert [im.rank for im in objs["a"].images] == [0, 1]
    assert (objs["a"].status, objs["a"].taxon_id) == ("validated", copepod)
    assert (objs["b"].status, objs["b"].taxon_id, objs["b"].extra) == ("unclassified", None, {})

    bad = _tiny_bundle(tmp_path / "bad", [
        ["c", "V", "987654", "m106_mn01_n2_sml_1.jpg", "0", "1"],
        ["c", "V", "987654", "m106_mn01_n2_sml_1081.jpg", "0", "1"]], header, types)
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, new_project(inst), bad, user_id=None)
    assert {(i.line, i.column, i.code) for i in err.value.issues} == {
        (3, "object_annotation_category_id", "unknown_category_id"),
        (4, "img_rank", "duplicate_object")}


def test_rows_of_one_object_far_apart_are_its_images_though_it_went_to_disk(sqlite_instance,
                                                                          tmp_path):
    """More rows than the spool keeps in memory between two rows of one object."""
    from ecotaxa_core.import_spool import CHUNK

    inst = sqlite_instance
    header, types = ["object_id", "img_file_name", "img_rank", "object_area"], [
        "[t]", "[t]", "[f]", "[f]"]
    one, other = "m106_mn01_n2_sml_1.jpg", "m106_mn01_n2_sml_1081.jpg"
    rows = [["a", one, "0", "1"]] + [[f"o{i}", one, "0", str(i)] for i in range(CHUNK + 50)]
    ok = _tiny_bundle(tmp_path / "ok", rows + [["a", other, "1", "1"]], header, types)
    pid = new_project(inst)
    result = import_path(inst, pid, ok, user_id=None)
    assert (result.n_objects, result.n_images) == (CHUNK + 51, CHUNK + 52)
    objs = objects_by_orig_id(inst, pid)
    assert [(im.rank, im.original_name) for im in objs["a"].images] == [(0, one), (1, other)]
    assert objs[f"o{CHUNK}"].extra == {"area": float(CHUNK)}

    last = len(rows) + 3  # the line of the row added after ``rows``
    bad = _tiny_bundle(tmp_path / "bad", rows + [["a", other, "0", "1"], ["a", one, "2", "1"]],
                       header, types)
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, new_project(inst), bad, user_id=None)
    assert [(i.line, i.column, i.code) for i in err.value.issues] == [
        (last, "img_rank", "duplicate_object"), (last + 1, "img_file_name", "duplicate_object")]
    assert "already has an image of rank 0 at line 3" in err.value.issues[0].message
    assert leftovers(inst) == []


def test_uvp6_bundles_inside_zips(sqlite_instance):
    inst = sqlite_instance
    for source in (IMPORT_CASES / "UVP6_example.zip", IMPORT_CASES / "import_uvp6_zip_in_dir"):
        pid = new_project(inst)
        result = import_path(inst, pid, source, user_id=None)
        assert (result.n_objects, result.n_images, result.n_samples) == (15, 15, 1)
        objs = objects_by_orig_id(inst, pid)
        o = objs["20200205-111823_3"]
        assert (o.lat, o.lon, o.date, o.time) == (43.0, 17.0, "2020-02-05", "11:18:23")
        assert (o.images[0].rank, o.images[0].original_name) == (1, "sub1/20200205-111823_3.png")
        with inst.sessions() as s:
            assert s.get(Acquisition, o.acquisition_id).instrument == "uvp6"
    assert leftovers(inst) == []


def test_zip_entries_outside_the_extraction_folder_are_refused(sqlite_instance, tmp_path):
    inst = sqlite_instance
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("bundle/ecotaxa_a.tsv", "object_id\timg_file_name\n[t]\t[t]\n")
        z.writestr("../escaped.txt", "x")
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, new_project(inst), bad, user_id=None)
    assert [(i.code, i.value) for i in err.value.issues] == [("unsafe_zip_entry", "../escaped.txt")]
    assert not (inst.settings.work_dir.parent / "escaped.txt").exists()
    assert leftovers(inst) == []


# -- atomicity -------------------------------------------------------------------------------
def test_a_failure_while_writing_leaves_nothing_behind(instance, admin):
    pid = new_project(instance)
    before, files = row_counts(instance), vault_files(instance)

    def fail_once_stored(done, total):
        if done == total:  # every image is copied and thumbnailed (staged) by now
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        import_path(instance, pid, IMPORT_TEST, user_id=admin.id, create_missing_taxa=True,
                    create_missing_users=True, progress=fail_once_stored)
    assert_nothing_written(instance, before, files, pid)


def test_what_is_stored_is_the_file_that_was_checked(instance, admin, tmp_path):
    """Each image file is read once: checked, thumbnailed and staged from the same bytes,
    so a file changed or removed after its check cannot reach the vault unchecked."""
    source = shutil.copytree(IMPORT_TEST, tmp_path / "import_test")
    victim = source / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1111.jpg"
    original = victim.read_bytes()
    pid = new_project(instance)

    def spoil_after_checks(done, total):
        if done == total:  # every distinct image file is checked and staged
            victim.write_bytes(b"not an image any more")

    result = import_path(instance, pid, source, user_id=admin.id, create_missing_taxa=True,
                         create_missing_users=True, progress=spoil_after_checks)
    assert result.n_images == 11
    with instance.sessions() as s:
        path = s.scalars(select(Image.file_path).where(
            Image.original_name.endswith("m106_mn01_n2_sml_1111.jpg"))).one()
    assert instance.vault.path(path).read_bytes() == original


# -- class folders ----------------------------------------------------------------------------
def test_class_folders_import_as_validated_objects(instance, admin, ndsb_subset):
    pid = new_project(instance)
    before, files = row_counts(instance), vault_files(instance)
    with pytest.raises(UnknownCategories) as err:
        import_path(instance, pid, ndsb_subset, user_id=admin.id)
    assert set(err.value.where) == set(NDSB_TEST_CLASSES)
    assert err.value.where["detritus_other"] == ["folder detritus_other"]
    assert_nothing_written(instance, before, files, pid)

    result = import_path(instance, pid, ndsb_subset, user_id=admin.id, create_missing_taxa=True)
    assert (result.kind, result.n_objects, result.n_images, result.n_samples) == (
        "class_folders", 240, 240, 1)
    assert sorted(result.taxa_created) == sorted(NDSB_TEST_CLASSES)
    objs = objects_by_orig_id(instance, pid)
    assert {o.status for o in objs.values()} == {"validated"}
    assert {o.annotator_id for o in objs.values()} == {admin.id}
    assert all(o.annotation_date is not None for o in objs.values())
    names = {o.taxon.name for o in objs.values()}
    assert names == set(NDSB_TEST_CLASSES)
    one = next(o for o in objs.values() if o.taxon.name == "protist_noctiluca")
    src = ndsb_subset / "protist_noctiluca" / f"{one.orig_id}.jpg"
    assert instance.vault.path(one.images[0].file_path).read_bytes() == src.read_bytes()
    image = one.images[0]
    if max(image.width, image.height) > 128:
        assert instance.vault.path(image.thumb_path).exists()
    else:
        assert image.thumb_path is None  # a small JPEG is its own thumbnail
    with instance.sessions() as s:
        (sample,) = s.scalars(select(Sample).where(Sample.project_id == pid)).all()
    assert sample.orig_id == "classes" and {o.sample_id for o in objs.values()} == {sample.id}
    assert not instance.features.exists(pid, "tsv")


def test_class_folders_in_an_ndsb_like_zip(sqlite_instance, tmp_path):
    inst = sqlite_instance
    classes = extract_ndsb_subset(tmp_path / "x", classes=NDSB_TEST_CLASSES[:3], per_class=4)
    archive = tmp_path / "mini_ndsb.zip"
    with zipfile.ZipFile(archive, "w") as z:
        labels = ["path,label"]
        for f in sorted(classes.rglob("*.jpg")):
            z.write(f, f"images/{f.parent.name}/{f.name}")
            labels.append(f"images/{f.parent.name}/{f.name},{f.parent.name}")
        z.writestr("labels.csv", "\n".join(labels) + "\n")
    pid = new_project(inst)
    first = import_path(inst, pid, archive, user_id=1, create_missing_taxa=True)
    assert (first.n_objects, first.n_samples) == (12, 1)
    # Again: the taxa exist now, ids are made unique, the sample is the same.
    second = import_path(inst, pid, archive, user_id=1)
    assert second.n_objects == 12 and second.taxa_created == []
    objs = objects_by_orig_id(inst, pid)
    assert len(objs) == 24
    stems = {f.stem for f in classes.rglob("*.jpg")}
    assert set(objs) == stems | {f"{s}_2" for s in stems}
    assert row_counts(inst, pid)["samples"] == 1
    with inst.sessions() as s:
        assert s.scalar(select(Sample.orig_id).where(Sample.project_id == pid)) == "mini_ndsb"
    assert {o.images[0].original_name.split("/")[0] for o in objs.values()} == {"images"}
    assert leftovers(inst) == []


def test_nothing_importable_is_refused_clearly(sqlite_instance, tmp_path):
    (tmp_path / "flat").mkdir()
    shutil.copy(IMPORT_TEST / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1.jpg", tmp_path / "flat")
    with pytest.raises(TsvFormatError, match=r"no ecotaxa\*\.tsv file and no class folders in "):
        import_path(sqlite_instance, new_project(sqlite_instance), tmp_path / "flat", user_id=None)


def test_a_free_column_keeps_its_type(sqlite_instance, tmp_path):
    inst = sqlite_instance
    header = ["object_id", "img_file_name", "object_note"]
    pid = new_project(inst)
    import_path(inst, pid, _tiny_bundle(tmp_path / "t", [["a", "m106_mn01_n2_sml_1.jpg", "12"]],
                                        header, ["[t]", "[t]", "[t]"]), user_id=None)
    as_number = _tiny_bundle(tmp_path / "f", [["b", "m106_mn01_n2_sml_1.jpg", "12"]],
                             header, ["[t]", "[t]", "[f]"])
    with pytest.raises(TsvFormatError, match=r"ecotaxa_tiny.tsv line 2, column object_note: "
                                             r"column object_note is \[f\] here but \[t\] in "
                                             r"project"):
        import_path(inst, pid, as_number, user_id=None)
    # Two files of one import must agree too.
    (as_number / "sub").mkdir()
    lines = ["object_id\timg_file_name\tobject_note", "[t]\t[t]\t[t]", "c\t../m106_mn01_n2_sml_1.jpg\tx"]
    (as_number / "sub" / "ecotaxa_more.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, new_project(inst), as_number, user_id=None)
    assert [(i.path, i.line, i.code) for i in err.value.issues] == [
        ("sub/ecotaxa_more.tsv", 2, "column_type_conflict")]


# -- the image stager ---------------------------------------------------------------------
def _stager_images(folder: Path) -> list:
    from ecotaxa_core.import_plan import ImagePlan

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(30):
        path = folder / f"v{i}.png"
        PILImage.new("L", (20 + i, 10 + 5 * i), i).save(path)
        images.append(ImagePlan(str(path), 0, path.name, "ecotaxa_s.tsv", 3 + i))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    images.append(ImagePlan(str(folder / "bad.png"), 0, "bad.png", "ecotaxa_s.tsv", 40))
    images.append(ImagePlan(images[0].src, 1, "v0.png", "ecotaxa_s.tsv", 41))  # named twice
    return images


def _stage_in_a_daemon(folder, out):
    from ecotaxa_core.import_images import ImageStager, StagingDirs
    from ecotaxa_core.tsv.issues import ImportReport

    images = _stager_images(folder / "src")
    dirs = StagingDirs(folder / "vault/images/run_x", folder / "vault/thumbs/run_x")
    with ImageStager(dirs, processes=1, threads_up_to=0) as stager:
        stager.finish(lambda: images, ImportReport())
    out.put(sorted(p.name for p in (folder / "vault").rglob("*") if p.is_file()))


@pytest.mark.parametrize("processes", [0, 1])
def test_image_stager_checks_and_stages_each_file_once(tmp_path, processes):
    from ecotaxa_core.import_images import ImageStager, StagingDirs
    from ecotaxa_core.tsv.issues import ImportReport

    images = _stager_images(tmp_path / "src")
    report, progress = ImportReport(), []
    dirs = StagingDirs(tmp_path / "vault/images/run_x", tmp_path / "vault/thumbs/run_x")
    with ImageStager(dirs, processes=processes, threads_up_to=5,
                     progress=lambda d, t: progress.append((d, t))) as stager:
        for im in images[:10]:  # handed while "reading", the rest at the end
            stager.submit(im)
        stager.finish(lambda: images, report)
    assert [(i.line, i.column, i.code) for i in report.issues] == [
        (40, "img_file_name", "bad_image")]
    assert progress[-1] == (31, 31)
    n_thumbs = 0
    for im in images[:30]:
        i = int(Path(im.src).stem[1:])
        got = stager.staged(im)
        assert (got.width, got.height, got.image_format) == (20 + i, 10 + 5 * i, "PNG")
        assert Path(got.original).read_bytes() == Path(im.src).read_bytes()
        assert (got.thumb is not None) == (got.height > 128)
        n_thumbs += got.thumb is not None
    assert stager.staged(images[-1]) == stager.staged(images[0])  # one staged copy
    assert stager.number(images[-1]) == stager.number(images[0])
    with pytest.raises(RuntimeError, match="not staged"):
        stager.staged(images[30])  # the truncated file
    staged = [p for p in (tmp_path / "vault").rglob("*") if p.is_file()]
    assert len(staged) == 30 + n_thumbs
    assert {p.parent.parent.name for p in staged} == {"0000"}  # 10,000 files a bucket at most
    assert {p.parent.name for p in staged} == {f"{i:x}" for i in range(16)}  # spread


def test_image_stager_falls_back_to_threads_where_processes_cannot_start(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_stage_in_a_daemon, args=(tmp_path, out), daemon=True)
    proc.start()
    staged = out.get(timeout=120)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert len([n for n in staged if n.endswith(".png")]) == 30


def test_image_stager_survives_a_dead_worker_process(tmp_path):
    from ecotaxa_core.import_images import ImageStager, StagingDirs
    from ecotaxa_core.tsv.issues import ImportReport

    images = _stager_images(tmp_path / "src")[:30]
    dirs = StagingDirs(tmp_path / "vault/images/run_x", tmp_path / "vault/thumbs/run_x")
    report = ImportReport()
    with ImageStager(dirs, processes=1, threads_up_to=0) as stager:
        stager.submit(images[0])
        stager._send()  # the first batch starts the worker process
        for process in list(stager._processes._processes.values()):
            process.kill()  # killed (the out-of-memory killer ...)
        stager.finish(lambda: images, report)
    assert report.n_issues == 0
    for im in images:
        assert Path(stager.staged(im).original).read_bytes() == Path(im.src).read_bytes()


def test_only_an_import_that_creates_names_says_so_to_the_writer(instance, admin, monkeypatch):
    """The create flags allow creating; the writer takes turns with other imports (and
    PostgreSQL stages every image first) only when names are in fact missing."""
    from ecotaxa_core import importer

    seen: list[bool] = []
    write_delta = importer.write_delta

    def spy(inst, req):
        seen.append(req.creates_names)
        return write_delta(inst, req)

    monkeypatch.setattr(importer, "write_delta", spy)
    first, second = new_project(instance, "first"), new_project(instance, "second")
    for pid in (first, second):
        import_path(instance, pid, IMPORT_TEST, user_id=admin.id, create_missing_taxa=True,
                    create_missing_users=True)
    assert seen == [True, False]  # the second project's import finds every name
    assert row_counts(instance, second)["objects"] == row_counts(instance, first)["objects"] == 11


def test_a_zooscan_bundle_gives_the_project_its_pixel_size(instance, admin, tmp_path):
    from ecotaxa_core.features.morphology import MorphologyExtractor

    pid = new_project(instance)
    result = import_path(instance, pid, IMPORT_TEST, user_id=admin.id, create_missing_taxa=True,
                         create_missing_users=True)
    assert result.pixel_size_um_set == 10.6 and result.notes == []  # process_pixel, in µm
    with instance.sessions() as s:
        assert s.get(Project, pid).pixel_size_um == 10.6

    # A project whose morphological features exist keeps computing them without one.
    other = new_project(instance, "with features")
    with instance.sessions.begin() as s:
        obj = Object(project_id=other, orig_id="earlier", status="unclassified", extra={})
        s.add(obj)
        s.flush()
        earlier = obj.id
    extractor = MorphologyExtractor()
    instance.features.append(other, "morpho", np.array([earlier]),
                             np.zeros((1, len(extractor.feature_names)), np.float32),
                             extractor.feature_names, extractor.producer())
    result = import_path(instance, other, IMPORT_TEST, user_id=admin.id)
    assert result.pixel_size_um_set is None
    assert result.notes == ["process_pixel gives a pixel size of 10.6 µm, not set: the "
                            "project's morphological features were computed without one "
                            "(set it and recompute them)"]
    with instance.sessions() as s:
        assert s.get(Project, other).pixel_size_um is None
