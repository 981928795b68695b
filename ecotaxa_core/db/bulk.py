"""Inserting many rows fast: ``COPY`` on PostgreSQL, one ``executemany`` on SQLite.

The rows are dicts with the same keys (column names of the table). JSON
columns take Python values, written as the engine writes them
(:func:`~ecotaxa_core.db.engine.json_dumps`). Run inside the caller's
transaction: a rollback removes them.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import JSON, Table
from sqlalchemy.orm import Session

from ecotaxa_core.db.engine import json_dumps

__all__ = ["insert_rows"]


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` in the session's transaction."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    json_columns = {name for name in names if isinstance(table.c[name].type, JSON)}
    dbapi = session.connection().connection.dbapi_connection
    columns = ", ".join(f'"{name}"' for name in names)
    with dbapi.cursor() as cursor:
        with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([json_dumps(row[name]) if name in json_columns
                                and row[name] is not None else row[name] for name in names])
