"""Reserving row ids before inserting rows, so that bulk inserts need no read-back.

An import knows the vault path of each image (it derives from the image id)
before it inserts the image rows, and inserts objects and images in large
batches without asking the database which ids it gave:

- PostgreSQL: ``nextval`` of the column's sequence, ``n`` times in one query;
  the values are never given again, even if the transaction rolls back.
- SQLite: the ids after the largest one in the table. SQLite gives a new row
  ``max(rowid) + 1`` (the tables have no AUTOINCREMENT), and the caller holds
  the database's write lock (``BEGIN IMMEDIATE``) until it commits, so no other
  writer can take them in between.
"""

from __future__ import annotations

from array import array
from typing import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ecotaxa_core.errors import EcoTaxaError

__all__ = ["reserve_ids"]


def reserve_ids(session: Session, model, n: int) -> Sequence[int]:
    """``n`` unused ids of ``model``'s integer primary key ``id``, increasing (a
    ``range`` or a packed array: 8 bytes an id at most)."""
    if n <= 0:
        return range(0)
    table = model.__table__
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        rows = session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                 "FROM generate_series(1, :n)"), {"table": table.name, "n": n})
        return array("q", sorted(r[0] for r in rows))
    if dialect == "sqlite":
        if not session.in_transaction():
            raise RuntimeError("reserve_ids on SQLite needs the write lock of a transaction")
        last = session.scalar(select(func.max(table.c.id))) or 0
        return range(last + 1, last + 1 + n)
    raise EcoTaxaError(f"unsupported database {dialect!r}: ecotaxa runs on SQLite and "
                       "PostgreSQL")
