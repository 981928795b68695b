"""The schema, migrations and annotation rules on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from ecotaxa_core.annotation import (Prediction, apply_predictions, move_objects, object_history,
                                     set_dubious, validate_objects)
from ecotaxa_core.db.models import Base, Object
from ecotaxa_core.errors import EcoTaxaError, ObjectNotFound, UnknownCategories
from ecotaxa_core.projects import create_project, project_counts
from ecotaxa_core.taxonomy import CategoryResolver, get_or_create_taxon
from ecotaxa_core.users import authenticate


def test_migrations_create_every_model_table(instance):
    tables = set(inspect(instance.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_admin_signs_in_with_hashed_password(instance):
    with instance.sessions() as s:
        user = authenticate(s, "ADMIN@example.org", "s3cret-admin")
        assert user is not None and user.is_admin
        assert user.password_hash and "s3cret" not in user.password_hash
        assert authenticate(s, "admin@example.org", "wrong") is None


def _project_with_objects(instance, admin, n=4):
    with instance.sessions.begin() as s:
        p = create_project(s, "Test", instrument="zooscan", owner=admin)
        cop = get_or_create_taxon(s, "Copepoda")
        det = get_or_create_taxon(s, "detritus")
        objs = [Object(project_id=p.id, orig_id=f"o{i}", status="unclassified", extra={})
                for i in range(n)]
        s.add_all(objs)
        s.flush()
        return p.id, [o.id for o in objs], cop.id, det.id


def test_predictions_never_touch_validated_or_dubious(instance, admin):
    pid, ids, cop, det = _project_with_objects(instance, admin)
    with instance.sessions.begin() as s:
        move_objects(s, pid, [ids[0]], det, admin.id)
        move_objects(s, pid, [ids[1]], det, admin.id)
        set_dubious(s, pid, [ids[1]], admin.id)
    preds = [Prediction(i, cop, 0.9, [(cop, 0.9), (det, 0.1)]) for i in ids]
    with instance.sessions.begin() as s:
        assert apply_predictions(s, pid, preds, model_id=None) == 2
    with instance.sessions() as s:
        objs = {o.id: o for o in s.scalars(select(Object).where(Object.project_id == pid))}
        assert (objs[ids[0]].status, objs[ids[0]].taxon_id) == ("validated", det)
        assert (objs[ids[1]].status, objs[ids[1]].taxon_id) == ("dubious", det)
        for i in ids[2:]:
            assert (objs[i].status, objs[i].taxon_id, objs[i].score) == ("predicted", cop, 0.9)
            assert objs[i].top_predictions == [[cop, 0.9], [det, 0.1]]
        assert project_counts(s, pid) == {"unclassified": 0, "predicted": 2, "dubious": 1,
                                          "validated": 1, "total": 4}


def test_every_change_writes_the_previous_state_to_history(instance, admin):
    pid, ids, cop, det = _project_with_objects(instance, admin, n=1)
    with instance.sessions.begin() as s:
        apply_predictions(s, pid, [Prediction(ids[0], cop, 0.7, [(cop, 0.7)])], model_id=None)
    with instance.sessions.begin() as s:
        validate_objects(s, pid, ids, admin.id)
    with instance.sessions.begin() as s:
        move_objects(s, pid, ids, det, admin.id)
    with instance.sessions() as s:
        hist = object_history(s, ids[0])
        assert [(h.status, h.taxon_id, h.score) for h in hist] == [
            ("validated", cop, None), ("predicted", cop, 0.7), ("unclassified", None, None)]
        assert hist[0].changed_by_id == admin.id
        obj = s.get(Object, ids[0])
        assert (obj.status, obj.taxon_id, obj.annotator_id) == ("validated", det, admin.id)


def test_validate_refuses_objects_without_category_and_foreign_ids(instance, admin):
    pid, ids, cop, det = _project_with_objects(instance, admin, n=2)
    with pytest.raises(EcoTaxaError, match="no category"):
        with instance.sessions.begin() as s:
            validate_objects(s, pid, ids, admin.id)
    with pytest.raises(ObjectNotFound):
        with instance.sessions.begin() as s:
            move_objects(s, pid, [ids[0], 10**9], cop, admin.id)
    with instance.sessions() as s:
        assert project_counts(s, pid)["unclassified"] == 2
        assert object_history(s, ids[0]) == []


def test_category_resolver_lists_every_unknown_name_then_creates_under_parent(instance):
    r = CategoryResolver()
    for label, where in [("egg<other", "a.tsv line 3"), ("Other (Biota)", "a.tsv line 4"),
                         ("other", "a.tsv line 5"), ("ozzeur", "a.tsv line 6")]:
        r.add(label, where)
    with instance.sessions.begin() as s:
        with pytest.raises(UnknownCategories) as exc:
            r.resolve(s)
    assert set(exc.value.where) == {"egg<other", "Other (Biota)", "other", "ozzeur"}
    assert "a.tsv line 6" in str(exc.value)
    r.create_missing = True
    with instance.sessions.begin() as s:
        ids = r.resolve(s)
        assert ids["other"] == ids["Other (Biota)"]
        from ecotaxa_core.db.models import Taxon
        egg = s.get(Taxon, ids["egg<other"])
        assert egg.parent.name.lower() == "other" and egg.parent.parent.name == "Biota"


def test_migrated_schema_matches_the_models(instance):
    """Alembic's autogenerate finds nothing to add: models and migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ecotaxa_core.db.engine import schema_item_applies

    with instance.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": schema_item_applies(conn.dialect.name)})
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_upgrade_keeps_existing_rows(db_url):
    from sqlalchemy import text

    from ecotaxa_core.db.engine import make_engine, upgrade_schema

    engine = make_engine(db_url)
    upgrade_schema(engine, "0001")
    with engine.begin() as c:
        c.execute(text("insert into projects (title, free_columns, created_at) "
                       "values ('old', '{}', CURRENT_TIMESTAMP)"))
    upgrade_schema(engine)
    with engine.connect() as c:
        assert c.execute(text("select title from projects")).scalar() == "old"
    engine.dispose()


def test_an_instance_behind_the_code_says_to_upgrade_and_init_upgrades_it(tmp_path, db_url):
    from ecotaxa_core.db.engine import make_engine, schema_revisions, upgrade_schema
    from ecotaxa_core.errors import InstanceNotInitialised
    from ecotaxa_core.instance import Instance, init_instance
    from ecotaxa_core.settings import Settings

    settings = Settings(home=tmp_path / "home", database_url=db_url)
    engine = make_engine(db_url)
    upgrade_schema(engine, "0003")
    engine.dispose()
    with pytest.raises(InstanceNotInitialised, match="revision 0003.*run `ecotaxa init` to upgrade"):
        Instance.open(settings)
    init_instance(settings, "a@example.org", "pw").close()
    inst = Instance.open(settings)
    current, head = schema_revisions(inst.engine)
    assert current == head
    inst.close()


def test_postgresql_has_indexes_in_the_pages_score_order(instance):
    """PostgreSQL gets (score DESC NULLS LAST, id) indexes; SQLite, whose NULLs sort first,
    serves that order from its ascending index and has none."""
    from sqlalchemy import inspect

    with instance.engine.connect() as conn:
        names = {ix["name"] for ix in inspect(conn).get_indexes("objects")}
        if conn.dialect.name == "postgresql":
            from sqlalchemy import text
            ddl = conn.execute(text("select indexdef from pg_indexes where indexname = "
                                    "'ix_objects_project_taxon_score_desc'")).scalar_one()
            assert "score DESC NULLS LAST, id" in ddl
            assert "ix_objects_project_score_desc" in names
        else:
            assert not {"ix_objects_project_score_desc",
                        "ix_objects_project_taxon_score_desc"} & names
            assert "ix_objects_project_score" in names
