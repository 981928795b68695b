"""The taxonomy as a portable file: export, import with the same ids, refusals, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import _make_instance
from ecotaxa_core.db.models import Taxon, User
from ecotaxa_core.errors import PermissionDenied
from ecotaxa_core.taxonomy import get_or_create_taxon
from ecotaxa_core.taxonomy_file import (TaxonomyFileError, export_taxonomy, import_taxonomy,
                                        read_taxonomy_file)
from ecotaxa_core.users import create_user, first_admin

HEADER = "id\tparent_id\tname\trank\taphia_id\tdeprecated\tmerged_into_id\tdisplay_name\n"


def _tree(session) -> dict[int, tuple]:
    return {t.id: (t.parent_id, t.name, t.display_name, t.rank, t.aphia_id, t.deprecated,
                   t.merged_into_id)
            for t in session.scalars(select(Taxon))}


def _build_tree_a(session) -> dict[str, int]:
    """Ids from EcoTaxa (kept) and from the sequence, an ambiguous name, ranks, AphiaIDs,
    a deprecated and a merged taxon."""
    biota = get_or_create_taxon(session, "Biota", taxon_id=1)
    cop = get_or_create_taxon(session, "Copepoda", biota, taxon_id=85000)
    other = get_or_create_taxon(session, "other", biota, taxon_id=84963)
    oith = get_or_create_taxon(session, "Oithona", cop)
    egg_cop = get_or_create_taxon(session, "egg", cop, taxon_id=92000)
    egg_other = get_or_create_taxon(session, "egg", other, taxon_id=12)
    old = get_or_create_taxon(session, "Oncaea_old", cop)
    merged = get_or_create_taxon(session, "Oithona sp.", cop)
    det = get_or_create_taxon(session, "détritus")
    biota.rank, cop.rank, oith.rank = "domain", "subclass", "genus"
    cop.aphia_id, oith.aphia_id = 1080, 106485
    old.deprecated = True
    merged.deprecated, merged.merged_into_id = True, oith.id
    session.flush()
    return {"biota": biota.id, "cop": cop.id, "other": other.id, "oith": oith.id, "egg_cop": egg_cop.id,
            "egg_other": egg_other.id, "old": old.id, "merged": merged.id, "det": det.id}


def _admin_id(session) -> int:
    return first_admin(session).id


def test_round_trip_gives_the_same_tree_and_the_same_bytes(instance, tmp_path):
    with instance.sessions.begin() as s:
        ids = _build_tree_a(s)
    with instance.sessions() as s:
        tree_a = _tree(s)
        assert export_taxonomy(s, tmp_path / "a.tsv") == len(ids)
    assert {tree_a[ids["egg_cop"]][2], tree_a[ids["egg_other"]][2]} == {"egg", "egg<other"}
    lines = (tmp_path / "a.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] + "\n" == HEADER
    order = [int(line.split("\t")[0]) for line in lines[1:]]
    assert order.index(ids["biota"]) < order.index(ids["cop"]) < order.index(ids["oith"])
    assert f"{ids['oith']}\t{ids['cop']}\tOithona\tgenus\t106485\t0\t\tOithona" in lines

    other = _make_instance(tmp_path / "b_home", f"sqlite:///{tmp_path / 'b.db'}")
    try:
        with other.sessions.begin() as s:
            result = import_taxonomy(s, tmp_path / "a.tsv", _admin_id(s))
        assert (result.created, result.updated, result.unchanged) == (len(ids), 0, 0)
        with other.sessions() as s:
            assert _tree(s) == tree_a
            export_taxonomy(s, tmp_path / "b.tsv")
        assert (tmp_path / "b.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()
        with other.sessions.begin() as s:  # importing it again changes nothing
            again = import_taxonomy(s, tmp_path / "b.tsv", _admin_id(s))
        assert (again.created, again.updated, again.unchanged, again.relabelled) == (0, 0, len(ids), 0)
    finally:
        other.close()


def test_import_keeps_ids_and_new_taxa_get_the_next_free_id(instance, tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("name\tid\tparent_id\n"  # any column order; optional columns may be left out
                 "Biota\t1\t\nCopepoda\t85000\t1\nCalanoida\t85001\t85000\n", encoding="utf-8")
    with instance.sessions.begin() as s:
        result = import_taxonomy(s, f, _admin_id(s))
    assert result.created == 3
    with instance.sessions.begin() as s:
        assert s.get(Taxon, 85001).parent.name == "Copepoda"
        assert s.get(Taxon, 85001).display_name == "Calanoida"
        new = get_or_create_taxon(s, "Oithona", s.get(Taxon, 85000))
        assert new.id > 85001


def test_reimport_renames_and_moves_by_id(instance, tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n2\t1\tCopepoda\t\t\t0\t\t\n3\t1\tCalanoida\t\t\t0\t\t\n"
                 "4\t1\tegg\t\t\t0\t\t\n", encoding="utf-8")
    with instance.sessions.begin() as s:
        import_taxonomy(s, f, _admin_id(s))
    # Calanoida moves under Copepoda; egg (4) becomes larva and a new taxon (5) takes its name.
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n2\t1\tCopepoda\tsubclass\t1080\t0\t\t\n"
                 "3\t2\tCalanoida\torder\t\t0\t\t\n4\t1\tlarva\t\t\t0\t\t\n5\t1\tegg\t\t\t0\t\t\n",
                 encoding="utf-8")
    with instance.sessions.begin() as s:
        dry = import_taxonomy(s, f, _admin_id(s), dry_run=True)
    with instance.sessions() as s:
        assert s.get(Taxon, 5) is None and s.get(Taxon, 4).name == "egg"
    with instance.sessions.begin() as s:
        result = import_taxonomy(s, f, _admin_id(s))
    assert (result.created, result.updated, result.unchanged) == (1, 3, 1)
    assert (dry.created, dry.updated, dry.unchanged, dry.dry_run) == (1, 3, 1, True)
    with instance.sessions() as s:
        tree = _tree(s)
    assert tree[3][:4] == (2, "Calanoida", "Calanoida", "order")
    assert tree[4][:3] == (1, "larva", "larva") and tree[5][:3] == (1, "egg", "egg")
    assert tree[2][4] == 1080


def test_every_problem_of_a_file_is_listed_with_its_line_and_nothing_is_written(instance, tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text(HEADER +
                 "1\t\tBiota\t\t\t0\t\t\n"          # 2 ok
                 "1\t\tAgain\t\t\t0\t\t\n"          # 3 duplicate id
                 "x\t1\tBad id\t\t\t0\t\t\n"        # 4 bad id
                 "5\t1\ta<b\t\t\t0\t\t\n"           # 5 bad name
                 "6\t1\tSix\t\tabc\tmaybe\t\t\n"  # 6 bad aphia_id and flag
                 "7\t1\tKid\t\t\t0\t\t\n"           # 7 ok
                 "8\t1\tkid\t\t\t0\t\t\n"           # 8 same name under the same parent
                 "9\t99\torphan\t\t\t0\t\t\n"       # 9 unknown parent: checked once the file is sound
                 "10\t1\tshort\n",                   # 10 too few cells
                 encoding="utf-8")
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyFileError) as exc:
            import_taxonomy(s, f, _admin_id(s))
    found = {(i.line, i.column) for i in exc.value.issues}
    assert found == {(3, "id"), (4, "id"), (5, "name"), (6, "aphia_id"), (6, "deprecated"),
                     (8, "name"), (10, None)}
    assert "bad.tsv line 3, column id: id 1 is already on line 2" in str(exc.value)
    with instance.sessions() as s:
        assert s.scalars(select(Taxon)).all() == []

    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n8\t99\torphan\t\t\t0\t\t\n"
                 "10\t11\tloop a\t\t\t0\t\t\n11\t10\tloop b\t\t\t0\t\t\n", encoding="utf-8")
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyFileError, match="line 3, column parent_id: parent 99"):
            import_taxonomy(s, f, _admin_id(s))
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n10\t11\tloop a\t\t\t0\t\t\n11\t10\tloop b\t\t\t0\t\t\n",
                 encoding="utf-8")
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyFileError) as exc:
            import_taxonomy(s, f, _admin_id(s))
    assert {(i.line, i.code) for i in exc.value.issues} == {(3, "cycle"), (4, "cycle")}
    with instance.sessions() as s:
        assert s.scalars(select(Taxon)).all() == []


def test_header_problems_are_refused(tmp_path):
    f = tmp_path / "h.tsv"
    f.write_text("id\tparent\tname\n1\t\tBiota\n", encoding="utf-8")
    with pytest.raises(TaxonomyFileError) as exc:
        read_taxonomy_file(f)
    assert {(i.line, i.column, i.code) for i in exc.value.issues} == {
        (1, "parent", "unknown_column"), (1, "parent_id", "missing_column")}
    f.write_bytes(b"id\tparent_id\tname\n1\t\tD\xe9tritus\n")
    with pytest.raises(TaxonomyFileError, match="line 2: the file is not UTF-8"):
        read_taxonomy_file(f)


def test_a_taxon_that_exists_here_under_another_id_is_refused(instance, tmp_path):
    with instance.sessions.begin() as s:
        biota = get_or_create_taxon(s, "Biota", taxon_id=1)
        cop_here = get_or_create_taxon(s, "Copepoda", biota, taxon_id=40).id
    f = tmp_path / "t.tsv"
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n85000\t1\tcopepoda\t\t\t0\t\t\n"
                 "85001\t85000\tCalanoida\t\t\t0\t\t\n", encoding="utf-8")
    with instance.sessions.begin() as s:
        with pytest.raises(TaxonomyFileError) as exc:
            import_taxonomy(s, f, _admin_id(s))
    assert [(i.line, i.code) for i in exc.value.issues] == [(3, "two_ids")]
    assert f"already exists here with id {cop_here}" in str(exc.value)
    assert "cannot have two ids" in str(exc.value)
    with instance.sessions() as s:
        assert sorted(t.id for t in s.scalars(select(Taxon))) == [1, cop_here]


def test_taxa_only_here_are_relabelled_when_the_file_makes_their_name_ambiguous(instance, tmp_path):
    with instance.sessions.begin() as s:
        mine = get_or_create_taxon(s, "mine", taxon_id=500)
        local_egg = get_or_create_taxon(s, "egg", mine, taxon_id=501).id
        assert s.get(Taxon, local_egg).display_name == "egg"
    f = tmp_path / "t.tsv"
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n2\t1\tegg\t\t\t0\t\tegg\n3\t1\tlarva\t\t\t0\t\t\n",
                 encoding="utf-8")
    with instance.sessions.begin() as s:
        result = import_taxonomy(s, f, _admin_id(s))
    assert (result.created, result.relabelled) == (3, 1)
    with instance.sessions() as s:
        assert s.get(Taxon, 2).display_name == "egg"  # the file decides for its own taxa
        assert s.get(Taxon, local_egg).display_name == "egg<mine"
        assert s.get(Taxon, 3).display_name == "larva"  # computed: no display name in the file


def test_only_administrators_import(instance, tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n", encoding="utf-8")
    with instance.sessions.begin() as s:
        user = create_user(s, "someone@example.org", "Someone", "pw")
    with instance.sessions.begin() as s:
        with pytest.raises(PermissionDenied, match="only administrators"):
            import_taxonomy(s, f, user.id)
        assert s.scalars(select(Taxon)).all() == []
        assert s.get(User, user.id) is not None


def test_export_and_import_flows(sqlite_instance, prefect_server, monkeypatch, tmp_path):
    from flows.taxonomy import export_taxonomy_flow, import_taxonomy_flow

    inst = sqlite_instance
    monkeypatch.setenv("ECOTAXA_HOME", str(inst.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", inst.settings.database_url)
    f = tmp_path / "t.tsv"
    f.write_text(HEADER + "1\t\tBiota\t\t\t0\t\t\n2\t1\tCopepoda\tsubclass\t1080\t0\t\t\n",
                 encoding="utf-8")
    result = import_taxonomy_flow(str(f))
    assert result == {"path": str(f), "created": 2, "updated": 0, "unchanged": 0, "relabelled": 0,
                      "dry_run": False}
    out = tmp_path / "out" / "taxa.tsv"
    assert export_taxonomy_flow(str(out)) == {"path": str(out), "n_taxa": 2}
    assert out.read_text(encoding="utf-8") == (
        HEADER + "1\t\tBiota\t\t\t0\t\tBiota\n2\t1\tCopepoda\tsubclass\t1080\t0\t\tCopepoda\n")
