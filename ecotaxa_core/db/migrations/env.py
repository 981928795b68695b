"""Alembic environment: runs on the connection handed over by `upgrade_schema`."""

from alembic import context
from sqlalchemy import create_engine

from ecotaxa_core.db.engine import schema_item_applies
from ecotaxa_core.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        # `alembic -x url=... upgrade head` from a shell.
        url = context.get_x_argument(as_dictionary=True)["url"]
        with create_engine(url).begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata,
                              render_as_batch=True,
                              include_object=schema_item_applies(conn.dialect.name))
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True,
                      include_object=schema_item_applies(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
