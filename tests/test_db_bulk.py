"""Bulk inserts under reserved ids, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select, text

from ecotaxa_core.db.bulk import insert_rows
from ecotaxa_core.db.ids import reserve_ids
from ecotaxa_core.db.models import Object
from ecotaxa_core.projects import create_project


def _begin(s) -> None:
    if s.get_bind().dialect.name == "sqlite":  # the write lock, as the import takes it
        s.connection().exec_driver_sql("BEGIN IMMEDIATE")


def _rows(project_id: int, ids: list[int]) -> list[dict]:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    return [dict(id=i, project_id=project_id, orig_id=f"o{i}", status="validated",
                 lat=None if k % 2 else 43.5, annotation_date=when if k % 2 else None,
                 extra={"area": 1.5 * k, "kind": "tab\there \"quoted\"\nline", "n": None})
            for k, i in enumerate(ids)]


def test_rows_go_in_under_reserved_ids_with_their_json(instance, admin):
    with instance.sessions.begin() as s:
        pid = create_project(s, "bulk", owner=s.merge(admin)).id
    with instance.sessions.begin() as s:
        _begin(s)
        first = list(reserve_ids(s, Object, 3))
        insert_rows(s, Object.__table__, _rows(pid, first))
        second = list(reserve_ids(s, Object, 2))
        insert_rows(s, Object.__table__, _rows(pid, second))
    assert first == sorted(first) and min(second) > max(first) and len(set(first + second)) == 5
    with instance.sessions() as s:
        got = {o.id: o for o in s.scalars(select(Object).where(Object.project_id == pid))}
    assert sorted(got) == sorted(first + second)
    one, two = got[first[0]], got[first[1]]
    assert one.extra == {"area": 0.0, "kind": "tab\there \"quoted\"\nline", "n": None}
    assert (one.lat, one.annotation_date) == (43.5, None)
    assert two.lat is None and two.annotation_date.replace(tzinfo=timezone.utc) == datetime(
        2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    # The next ordinary insert does not collide with the reserved ids.
    with instance.sessions.begin() as s:
        later = Object(project_id=pid, orig_id="later", status="unclassified", extra={})
        s.add(later)
        s.flush()
        assert later.id not in got


def test_a_rolled_back_bulk_insert_leaves_no_row(instance, admin):
    with instance.sessions.begin() as s:
        pid = create_project(s, "bulk", owner=s.merge(admin)).id
    with pytest.raises(RuntimeError):
        with instance.sessions.begin() as s:
            _begin(s)
            insert_rows(s, Object.__table__, _rows(pid, reserve_ids(s, Object, 50)))
            raise RuntimeError("fail before the commit")
    with instance.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)) == 0


def test_sqlite_reservation_needs_a_transaction(sqlite_instance):
    with sqlite_instance.sessions() as s:
        s.execute(text("SELECT 1"))
        s.commit()
        with pytest.raises(RuntimeError, match="write lock"):
            reserve_ids(s, Object, 1)
