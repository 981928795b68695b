"""Importing again into a project: skipping, adding images, new columns, updating."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from sqlalchemy import func, select

from conftest import IMPORT_CASES, NDSB_TEST_CLASSES, extract_ndsb_subset
from ecotaxa_core.annotation import object_history
from ecotaxa_core.db.models import (Acquisition, AnnotationHistory, ImportedFile, ImportRun,
                                    Process, Project, Sample)
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.importer import import_path
from ecotaxa_core.tsv import TsvFormatError
from test_import import (IMPORT_TEST, N1, N2, import_test_into, leftovers, new_project,
                         objects_by_orig_id, row_counts, vault_files)

PLUS = IMPORT_CASES / "import_test_plus"
PLUS_MORE = IMPORT_CASES / "import_test_plus_more"
UPDATE = IMPORT_CASES / "import_update"
N3 = "m106_mn01_n3_sml/ecotaxa_m106_mn01_n3_sml.tsv"
IMAGE = IMPORT_TEST / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1.jpg"
OTHER_IMAGE = IMPORT_TEST / "m106_mn01_n2_sml" / "m106_mn01_n2_sml_1081.jpg"


def _bundle(folder, header, types, rows, images=(IMAGE, OTHER_IMAGE)):
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy(image, folder / image.name)
    lines = ["\t".join(header), "\t".join(types)] + ["\t".join(r) for r in rows]
    (folder / "ecotaxa_tiny.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _runs(inst, pid):
    with inst.sessions() as s:
        runs = s.scalar(select(func.count()).select_from(ImportRun)
                        .where(ImportRun.project_id == pid))
        files = s.execute(select(ImportedFile.path, ImportedFile.n_rows)
                          .where(ImportedFile.project_id == pid)
                          .order_by(ImportedFile.id)).all()
    return runs, [tuple(f) for f in files]


# -- mode "add" ---------------------------------------------------------------------------
def test_files_already_loaded_are_skipped_unread(instance, admin):
    pid = new_project(instance)
    first = import_test_into(instance, pid, admin.id)
    assert first.run_id is not None
    assert _runs(instance, pid) == (1, [(N1, 8), (N2, 3)])
    before, files = row_counts(instance), vault_files(instance)
    # Again, without any option: every file is known by its SHA-256, nothing is read.
    again = import_path(instance, pid, IMPORT_TEST, user_id=admin.id)
    assert (again.n_objects, again.n_images, again.run_id) == (0, 0, None)
    assert again.files_skipped == [N1, N2] and again.tsv_files == []
    assert row_counts(instance) == before and vault_files(instance) == files
    assert _runs(instance, pid)[0] == 1
    assert instance.features.n_rows(pid, "tsv") == 11
    # The same files into another project are not "loaded" there.
    other = new_project(instance, "other")
    assert import_test_into(instance, other, admin.id).n_objects == 11
    assert leftovers(instance) == []


def test_plus_bundles_skip_known_files_and_objects_and_add_the_new_ones(instance, admin):
    pid = new_project(instance)
    import_test_into(instance, pid, admin.id)
    before = objects_by_orig_id(instance, pid)
    plus = import_path(instance, pid, PLUS, user_id=admin.id, create_missing_taxa=True)
    # n2 is byte for byte the file loaded before; n1 changed (its 8 objects are known); n3 is new.
    assert plus.files_skipped == [N2] and plus.tsv_files == [N1, N3]
    assert (plus.n_objects, plus.n_objects_skipped, plus.n_images) == (3, 8, 4)
    assert plus.taxa_created == ["small"]
    objs = objects_by_orig_id(instance, pid)
    assert len(objs) == 14
    for orig_id, obj in before.items():  # known objects are left alone
        assert (objs[orig_id].lat, objs[orig_id].extra) == (obj.lat, obj.extra)
    two = objs["m106_mn01_n3_sml_1111"]
    assert [(im.rank, im.original_name) for im in two.images] == [
        (0, "m106_mn01_n3_sml_1111.jpg"), (2, "m106_mn01_n3_sml_1111_2.jpg")]
    assert objs["m106_mn01_n3_sml_1"].extra["extra"] == "Extra1"
    with instance.sessions() as s:
        free = s.get(Project, pid).free_columns
        sample = s.scalar(select(Sample).where(Sample.project_id == pid,
                                               Sample.orig_id == "m106_mn01_n3_sml"))
    # New columns of every kind are accepted and kept.
    assert free["object"]["extra"] == "t" and free["sample"]["tot_vol"] == "f"
    assert free["acq"]["sub_part"] == "f" and "tot_vol" not in sample.extra  # empty cells
    assert instance.features.n_rows(pid, "tsv") == 14
    assert _runs(instance, pid) == (2, [(N1, 8), (N2, 3), (N1, 8), (N3, 4)])

    more = import_path(instance, pid, PLUS_MORE, user_id=admin.id)
    assert (more.n_objects, more.n_images, more.n_objects_skipped) == (1, 1, 0)
    assert objects_by_orig_id(instance, pid)["m106_mn01_n3_sml_1112"].extra["extra"] == "Extra4"
    again = import_path(instance, pid, PLUS, user_id=admin.id)
    assert again.files_skipped == [N1, N2, N3] and again.n_objects == 0
    assert leftovers(instance) == []


def test_a_new_image_of_a_known_object_is_added_to_it(sqlite_instance, tmp_path):
    inst = sqlite_instance
    header = ["object_id", "img_file_name", "img_rank", "object_area"]
    types = ["[t]", "[t]", "[f]", "[f]"]
    pid = new_project(inst)
    import_path(inst, pid, _bundle(tmp_path / "a", header, types, [
        ["a", IMAGE.name, "0", "10"]]), user_id=None)
    second = import_path(inst, pid, _bundle(tmp_path / "b", header, types, [
        ["a", IMAGE.name, "0", "10"],  # the image it has: skipped
        ["a", OTHER_IMAGE.name, "1", "10"],  # a new one: added
        ["b", IMAGE.name, "0", "20"]]), user_id=None)
    assert (second.n_objects, second.n_objects_skipped, second.n_images) == (1, 1, 2)
    objs = objects_by_orig_id(inst, pid)
    assert [(im.rank, im.original_name) for im in objs["a"].images] == [
        (0, IMAGE.name), (1, OTHER_IMAGE.name)]
    stored = inst.vault.path(objs["a"].images[1].file_path)
    assert stored.read_bytes() == OTHER_IMAGE.read_bytes()
    added = objs["a"].images[1]
    assert added.thumb_path is None or inst.vault.path(added.thumb_path).exists()
    assert inst.features.n_rows(pid, "tsv") == 2  # one row per object, not per image

    # A new file at a rank the object already uses is refused, with its line.
    before, files = row_counts(inst), vault_files(inst)
    shutil.copy(IMAGE, tmp_path / "third.jpg")
    with pytest.raises(TsvFormatError) as err:
        import_path(inst, pid, _bundle(tmp_path / "c", header, types, [
            ["a", "third.jpg", "1", "10"]], images=(tmp_path / "third.jpg",)), user_id=None)
    (issue,) = err.value.issues
    assert (issue.line, issue.column, issue.code) == (3, "img_rank", "image_rank_taken")
    assert f"image {OTHER_IMAGE.name!r} of rank 1" in issue.message
    assert row_counts(inst) == before and vault_files(inst) == files


def test_new_numeric_columns_rewrite_the_tsv_feature_set_as_the_union(instance, tmp_path):
    inst = instance
    pid = new_project(inst)
    import_path(inst, pid, _bundle(tmp_path / "a", ["object_id", "img_file_name", "object_area"],
                                   ["[t]", "[t]", "[f]"],
                                   [["a", IMAGE.name, "10"], ["b", IMAGE.name, "11"]]),
                user_id=None)
    ids = {k: o.id for k, o in objects_by_orig_id(inst, pid).items()}
    second = import_path(inst, pid, _bundle(
        tmp_path / "b", ["object_id", "img_file_name", "object_perim", "object_area"],
        ["[t]", "[t]", "[f]", "[f]"], [["c", IMAGE.name, "5", "12"]]), user_id=None)
    assert second.n_objects == 1
    ids.update({k: o.id for k, o in objects_by_orig_id(inst, pid).items()})
    fm = inst.features.read(pid, "tsv", [ids["a"], ids["b"], ids["c"]])
    assert fm.feature_names == ["area", "perim"]
    assert fm.values[:, 0].tolist() == [10.0, 11.0, 12.0]
    assert math.isnan(fm.values[0, 1]) and math.isnan(fm.values[1, 1]) and fm.values[2, 1] == 5
    assert inst.features.attrs(pid, "tsv") == {"kind": "tsv"}
    # The old store kept during the rewrite is gone once committed.
    assert [p.name for p in inst.features.store_path(pid, "tsv").parent.iterdir()] == ["tsv.zarr"]
    # Fewer columns than the set holds: appended, NaN where the file has nothing.
    import_path(inst, pid, _bundle(tmp_path / "c", ["object_id", "img_file_name", "object_perim"],
                                   ["[t]", "[t]", "[f]"], [["d", IMAGE.name, "7"]]), user_id=None)
    d = objects_by_orig_id(inst, pid)["d"].id
    row = inst.features.read(pid, "tsv", [d]).values[0]
    assert math.isnan(row[0]) and row[1] == 7.0
    assert inst.features.n_rows(pid, "tsv") == 4


def test_a_real_bundle_without_some_numeric_columns_is_appended(sqlite_instance, tmp_path):
    inst = sqlite_instance
    pid = new_project(inst)
    import_test_into(inst, pid, None)
    names = inst.features.feature_names(pid, "tsv")
    before = inst.features.read(pid, "tsv")
    users = tmp_path / "users.csv"
    users.write_text("Elizandro Rodriguez,elizandro.rodrigues05@gmail.com\n")
    result = import_path(inst, pid, IMPORT_CASES / "import_issues" / "tsv_too_many_cols",
                         user_id=None, users_map=users)
    assert result.n_objects == 1
    after = inst.features.read(pid, "tsv")
    # It lacks import_test's object_new_field (refused before issue 3): NaN there.
    assert after.feature_names == names and after.n_samples == 12
    np.testing.assert_array_equal(after.values[:11], before.values)
    assert math.isnan(after.values[11, names.index("new_field")])
    assert after.values[11, names.index("area")] == 413.0


# -- update modes ---------------------------------------------------------------------------
def test_update_metadata_changes_what_the_file_gives_and_nothing_else(instance, admin):
    pid = new_project(instance)
    import_test_into(instance, pid, admin.id)
    same = import_path(instance, pid, IMPORT_TEST, user_id=admin.id, mode="update_metadata")
    assert (same.n_objects_updated, same.n_parents_updated, same.n_objects) == (0, 0, 0)
    assert same.files_skipped == []  # an update reads every file
    before = objects_by_orig_id(instance, pid)
    counts, files = row_counts(instance), vault_files(instance)
    area_exc = instance.features.feature_names(pid, "tsv").index("area_exc")

    upd = import_path(instance, pid, UPDATE, user_id=admin.id, mode="update_metadata")
    assert (upd.n_objects_updated, upd.n_parents_updated, upd.n_objects, upd.n_images) == (
        8, 3, 0, 0)
    assert sorted(upd.not_found) == ["extra_sample", "m106_mn01_n2_sml_1333", "not_existing_obj"]
    assert upd.n_objects_not_found == 3 and upd.n_classifications_changed == 0
    # Nothing created: no object, no image, no sample (new_sample_id names only a missing object).
    assert row_counts(instance) == counts and vault_files(instance) == files
    objs = objects_by_orig_id(instance, pid)
    o409, o850, o851 = objs["m106_mn01_n1_sml_409"], objs["m106_mn01_n1_sml_850"], \
        objs["m106_mn01_n1_sml_851"]
    assert (o409.lat, o409.lon) == (18.0, 25.4)
    assert (o851.lat, o851.lon) == (-44.7254333333333567776, 145.5351)
    assert objs["m106_mn01_n1_sml_821"].depth_max == 1510.0
    assert o850.extra["area_exc"] == 256.0 and objs["m106_mn01_n1_sml_852"].extra["range"] == 7.0
    # Classification untouched, though the file validates 850.
    assert (o850.status, o850.taxon_id) == (before["m106_mn01_n1_sml_850"].status,
                                            before["m106_mn01_n1_sml_850"].taxon_id)
    with instance.sessions() as s:
        acq = s.get(Acquisition, o850.acquisition_id)
        assert (acq.orig_id, acq.instrument) == ("generic_m106_mn01_n1_sml", "canon")
        assert o851.acquisition_id == acq.id  # moved to the acquisition its line names
        sample = s.get(Sample, o409.sample_id)
        assert sample.extra["samplinggear"] == "net2"
        assert s.get(Process, o409.process_id).extra["software"].endswith("2018/03/10")
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 0
    # The numeric columns follow, in the "tsv" feature set.
    row = instance.features.read(pid, "tsv", [o850.id]).values[0]
    assert row[area_exc] == 256.0
    assert instance.features.n_rows(pid, "tsv") == 11
    # Twice is once.
    again = import_path(instance, pid, UPDATE, user_id=admin.id, mode="update_metadata")
    assert (again.n_objects_updated, again.n_parents_updated) == (0, 0)
    assert leftovers(instance) == []


def test_update_all_changes_classification_with_history(instance, admin):
    pid = new_project(instance)
    import_test_into(instance, pid, admin.id)
    before = objects_by_orig_id(instance, pid)["m106_mn01_n1_sml_850"]
    upd = import_path(instance, pid, UPDATE, user_id=admin.id, mode="update_all")
    # 850 is validated by the file. (851 gives a name and an id of another taxon: the name
    # decides, as at import, so its category does not change.)
    assert (upd.n_objects_updated, upd.n_classifications_changed) == (8, 1)
    objs = objects_by_orig_id(instance, pid)
    after = objs["m106_mn01_n1_sml_850"]
    assert (after.status, after.taxon_id) == ("validated", before.taxon_id)
    assert objs["m106_mn01_n1_sml_851"].taxon.name == "Oncaeidae"
    with instance.sessions() as s:
        (old,) = object_history(s, after.id)
        assert (old.status, old.taxon_id, old.annotator_id, old.changed_by_id) == (
            "predicted", before.taxon_id, before.annotator_id, admin.id)
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 1
    again = import_path(instance, pid, UPDATE, user_id=admin.id, mode="update_all")
    assert (again.n_objects_updated, again.n_classifications_changed) == (0, 0)


def test_update_modes_need_a_bundle_and_modes_are_checked(sqlite_instance, tmp_path):
    inst = sqlite_instance
    classes = extract_ndsb_subset(tmp_path / "cls", classes=NDSB_TEST_CLASSES[:1], per_class=2)
    with pytest.raises(EcoTaxaError, match="mode 'update_all' needs an EcoTaxa bundle"):
        import_path(inst, new_project(inst), classes, user_id=1, mode="update_all")
    with pytest.raises(EcoTaxaError, match="unknown import mode 'replace'"):
        import_path(inst, new_project(inst), IMPORT_TEST, user_id=1, mode="replace")
    assert leftovers(inst) == []
