"""Answering an import's unmatched names: taxa and users map files, creating users."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import ADMIN_EMAIL, NDSB_TEST_CLASSES, extract_ndsb_subset
from ecotaxa_core.db.models import User
from ecotaxa_core.errors import UnknownAnnotators, UnknownCategories, UnmatchedNames
from ecotaxa_core.import_maps import MapFileError, load_taxa_map, load_users_map, read_map_file
from ecotaxa_core.importer import import_path
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.users import authenticate, create_user
from test_import import (IMPORT_TEST, N1, assert_nothing_written, leftovers, new_project,
                         objects_by_orig_id, row_counts, vault_files)


@pytest.fixture
def tree(instance):
    """A small taxonomy: Biota > living > {Copepoda > Oncaeidae, other}, and detritus.

    Oncaeidae and detritus have EcoTaxa's ids, which import_test gives with their names.
    """
    with instance.sessions.begin() as s:
        biota = get_or_create_taxon(s, "Biota")
        living = get_or_create_taxon(s, "living", biota)
        copepoda = get_or_create_taxon(s, "Copepoda", living)
        taxa = {"Biota": biota, "living": living, "Copepoda": copepoda,
                "Oncaeidae": get_or_create_taxon(s, "Oncaeidae", copepoda, taxon_id=78418),
                "other": get_or_create_taxon(s, "other", living),
                "detritus": get_or_create_taxon(s, "detritus", taxon_id=84963)}
        return {name: t.id for name, t in taxa.items()}


def test_map_files_answer_every_unmatched_name(instance, admin, tree, tmp_path):
    pid = new_project(instance)
    taxa_map = tmp_path / "taxa.tsv"
    taxa_map.write_text(
        "name\ttarget\n"
        "# the names import_test gives, mapped to this instance's taxa\n"
        "t001\tCopepoda\n"
        f"Cyclopoida\t{tree['Copepoda']}\n"
        "OTHER<Biota\tother<living\n"  # names match ignoring case
        "Other (Biota)\tother\n"
        "other\tother\n"
        "ozzeur\tdetritus\n"
        f"egg<other\t{tree['living']}\n"
        "\n", encoding="utf-8")
    users_map = tmp_path / "users.csv"  # commas when the file has no tab
    users_map.write_text('"Admin4test",admin@example.org\n'
                         f"elizandro.rodrigues05@gmail.com,{ADMIN_EMAIL.upper()}\n")
    before = row_counts(instance)
    result = import_path(instance, pid, IMPORT_TEST, user_id=admin.id, taxa_map=taxa_map,
                         users_map=users_map)
    # Oncaeidae and detritus match taxa by name; everything else comes from the maps.
    assert result.n_objects == 11 and result.taxa_created == [] and result.users_created == []
    counts = row_counts(instance)
    assert (counts["taxa"], counts["users"]) == (before["taxa"], before["users"])
    objs = objects_by_orig_id(instance, pid)
    expected = {"m106_mn01_n1_sml_409": "Copepoda", "m106_mn01_n1_sml_821": "Oncaeidae",
                "m106_mn01_n1_sml_822": "Copepoda", "m106_mn01_n1_sml_850": "other",
                "m106_mn01_n1_sml_852": "other", "m106_mn01_n1_sml_853": "other",
                "m106_mn01_n1_sml_854": "detritus", "m106_mn01_n2_sml_1": "detritus",
                "m106_mn01_n2_sml_1111": "living"}
    assert {k: objs[k].taxon_id for k in expected} == {k: tree[v] for k, v in expected.items()}
    assert {o.annotator_id for o in objs.values()} == {admin.id}


def test_partial_answers_leave_the_rest_listed_then_creation_finishes(instance, admin, tree,
                                                                      tmp_path):
    pid = new_project(instance)
    taxa_map = tmp_path / "taxa.txt"
    taxa_map.write_text("ozzeur\tdetritus\nt001\tCopepoda\n")
    before, files = row_counts(instance), vault_files(instance)
    with pytest.raises(UnmatchedNames) as err:
        import_path(instance, pid, IMPORT_TEST, user_id=admin.id, taxa_map=taxa_map)
    # ("other" is a taxon here; "other<Biota" is not: this tree's "other" is under "living".)
    assert set(err.value.categories) == {"Cyclopoida", "other<Biota", "Other (Biota)",
                                         "egg<other"}
    assert err.value.categories["Cyclopoida"] == [f"{N1} line 5"]
    assert set(err.value.annotators) == {"Admin4test", "Elizandro Rodriguez"}
    assert_nothing_written(instance, before, files, pid)
    # Categories answered by creation, annotators still missing: annotators only.
    with pytest.raises(UnknownAnnotators) as err:
        import_path(instance, pid, IMPORT_TEST, user_id=admin.id, taxa_map=taxa_map,
                    create_missing_taxa=True)
    assert not isinstance(err.value, UnknownCategories)
    assert_nothing_written(instance, before, files, pid)

    result = import_path(instance, pid, IMPORT_TEST, user_id=admin.id, taxa_map=taxa_map,
                         create_missing_taxa=True, create_missing_users=True)
    assert "ozzeur" not in result.taxa_created and "Cyclopoida" in result.taxa_created
    assert sorted(result.users_created) == ["elizandro.rodrigues05@gmail.com", "me@home.fr"]
    objs = objects_by_orig_id(instance, pid)
    assert objs["m106_mn01_n1_sml_854"].taxon_id == tree["detritus"]
    with instance.sessions() as s:
        created = s.scalar(select(User).where(User.email == "me@home.fr"))
        assert (created.name, created.password_hash) == ("Admin4test", None)
        assert authenticate(s, "me@home.fr", "") is None  # password-less: cannot sign in
        assert objs["m106_mn01_n1_sml_409"].annotator_id == created.id
    assert leftovers(instance) == []


def test_annotators_match_by_email_then_by_name_ignoring_case(sqlite_instance):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        by_email = create_user(s, "ME@home.fr", "Someone else").id  # Admin4test's e-mail
        by_name = create_user(s, "eliz@example.org", "ELIZANDRO rodriguez").id
        get_or_create_taxon(s, "detritus")
    pid = new_project(inst)
    taxa = {"Oncaeidae", "Cyclopoida", "t001", "ozzeur", "egg<other", "other<Biota",
            "Other (Biota)", "other", "detritus"}
    taxa_map = inst.settings.home / "taxa.tsv"
    taxa_map.write_text("".join(f"{name}\tdetritus\n" for name in taxa))
    import_path(inst, pid, IMPORT_TEST, user_id=1, taxa_map=taxa_map)
    objs = objects_by_orig_id(inst, pid)
    assert objs["m106_mn01_n1_sml_409"].annotator_id == by_email
    # Elizandro's e-mail is no user's: the name decides.
    assert objs["m106_mn01_n2_sml_1"].annotator_id == by_name
    # A name that two users share matches neither.
    with inst.sessions.begin() as s:
        create_user(s, "eliz2@example.org", "Elizandro Rodriguez")
    with pytest.raises(UnknownAnnotators) as err:
        import_path(inst, new_project(inst), IMPORT_TEST, user_id=1, taxa_map=taxa_map)
    assert set(err.value.annotators) == {"Elizandro Rodriguez"}


def test_bad_map_files_are_refused_with_every_bad_line(instance, admin, tree, tmp_path):
    taxa_map = tmp_path / "bad_taxa.tsv"
    taxa_map.write_text("t001\tCopepoda\textra\n"  # line 1: 3 columns
                        "ozzeur\n"  # line 2: 1 column
                        "egg\t999999\n"  # line 3: no such id
                        "x\tNowhere\n"  # line 4: no such name
                        "y\tother<nowhere\n"  # line 5: no "other" under "nowhere"
                        "T001\tliving\n"  # line 6: t001 given twice ... (line 1 was refused)
                        "z\tdetritus\n"
                        "Z\tBiota\n")  # line 8: z given twice, another target
    users_map = tmp_path / "bad_users.tsv"
    users_map.write_text("Admin4test\tnobody@example.org\n\tadmin@example.org\n")
    pid = new_project(instance)
    before, files = row_counts(instance), vault_files(instance)
    with pytest.raises(MapFileError) as err:
        import_path(instance, pid, IMPORT_TEST, user_id=admin.id, taxa_map=taxa_map)
    found = {(i.path, i.line, i.column, i.code) for i in err.value.issues}
    assert found == {
        ("bad_taxa.tsv", 1, None, "map_bad_line"), ("bad_taxa.tsv", 2, None, "map_bad_line"),
        ("bad_taxa.tsv", 3, "target", "map_unknown_target"),
        ("bad_taxa.tsv", 4, "target", "map_unknown_target"),
        ("bad_taxa.tsv", 5, "target", "map_unknown_target"),
        ("bad_taxa.tsv", 8, "name", "map_duplicate_name")}
    message = str(err.value)
    assert "bad_taxa.tsv line 3, column target: 'egg' is mapped to '999999', which is not the " \
           "id of a taxon of this instance" in message
    assert "bad_taxa.tsv line 5, column target: 'y' is mapped to 'other<nowhere', which " \
           "matches no taxon of this instance" in message
    assert "bad_taxa.tsv line 8, column name: 'Z' is already mapped to 'detritus' on line 7" \
        in message
    with pytest.raises(MapFileError) as err:
        import_path(instance, pid, IMPORT_TEST, user_id=admin.id, users_map=users_map)
    assert [(i.line, i.code) for i in err.value.issues] == [(1, "map_unknown_target"),
                                                          (2, "map_bad_line")]
    assert "which is not the e-mail of a user of this instance" in str(err.value)
    assert_nothing_written(instance, before, files, pid)


def test_map_file_encodings_and_binary_garbage(sqlite_instance, tmp_path):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        detritus = get_or_create_taxon(s, "détritus").id
    bom = tmp_path / "bom.tsv"
    bom.write_bytes("\ufeffname\ttarget\nœuf\tdétritus\n".encode("utf-8"))
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("oeuf pondu\tdétritus\n".encode("latin-1"))
    with inst.sessions() as s:
        assert load_taxa_map(s, bom) == {"œuf": detritus}
        assert load_taxa_map(s, latin) == {"oeuf pondu": detritus}
        assert load_users_map(s, _write(tmp_path / "u.csv", f"X,{ADMIN_EMAIL}\n")) == {"x": 1}
    garbage = tmp_path / "garbage.tsv"
    garbage.write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    with pytest.raises(MapFileError, match="garbage.tsv: the map file is not text"):
        read_map_file(garbage)
    with pytest.raises(MapFileError, match="cannot read the map file"):
        read_map_file(tmp_path / "missing.tsv")


def _write(path, text):
    path.write_text(text)
    return path


def test_class_folder_names_can_be_mapped_too(sqlite_instance, tmp_path):
    inst = sqlite_instance
    with inst.sessions.begin() as s:
        detritus = get_or_create_taxon(s, "detritus").id
    classes = extract_ndsb_subset(tmp_path / "cls", classes=NDSB_TEST_CLASSES[2:4], per_class=2)
    pid = new_project(inst)
    with pytest.raises(UnknownCategories) as err:
        import_path(inst, pid, classes, user_id=1)
    assert set(err.value.where) == set(NDSB_TEST_CLASSES[2:4])
    taxa_map = _write(tmp_path / "map.tsv", "detritus_other\tdetritus\n")
    result = import_path(inst, pid, classes, user_id=1, taxa_map=taxa_map,
                         create_missing_taxa=True)
    assert result.taxa_created == [NDSB_TEST_CLASSES[2]]
    objs = objects_by_orig_id(inst, pid).values()
    assert sum(o.taxon_id == detritus for o in objs) == 2


def test_import_flow_takes_the_answers_and_the_mode(sqlite_instance, prefect_server, monkeypatch,
                                                    tmp_path):
    from flows.import_bundle import import_flow, import_recover_flow

    inst = sqlite_instance
    monkeypatch.setenv("ECOTAXA_HOME", str(inst.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", inst.settings.database_url)
    pid = new_project(inst)
    users_map = _write(tmp_path / "users.tsv",
                       f"Admin4test\t{ADMIN_EMAIL}\nElizandro Rodriguez\t{ADMIN_EMAIL}\n")
    result = import_flow(project_id=pid, path=str(IMPORT_TEST), create_missing_taxa=True,
                         users_map=str(users_map))
    assert result["n_objects"] == 11 and result["users_created"] == []
    assert result["mode"] == "add" and result["run_id"]
    update = import_flow(project_id=pid, path=str(IMPORT_TEST), mode="update_all",
                         users_map=str(users_map))
    assert (update["n_objects_updated"], update["n_classifications_changed"]) == (0, 0)
    assert import_recover_flow() == {"undone": [], "finished": [], "busy": [],
                                     "vault_files_removed": 0}
    assert {o.annotator_id for o in objects_by_orig_id(inst, pid).values()} == {1}
