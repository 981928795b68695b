"""An instance: the three stores (database, vault, feature store) and the model registry.

Build one from :class:`~ecotaxa_core.settings.Settings` and pass it to core
functions; nothing in the library keeps a global connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, make_url, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ecotaxa_core.db.engine import (
    make_engine,
    make_session_factory,
    schema_revisions,
    upgrade_schema,
)
from ecotaxa_core.db.models import User
from ecotaxa_core.errors import InstanceNotInitialised
from ecotaxa_core.settings import Settings
from ecotaxa_core.store.feature_store import FeatureStore
from ecotaxa_core.users import create_user
from ecotaxa_core.vault import Vault

__all__ = ["Instance", "init_instance"]


@dataclass
class Instance:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    vault: Vault
    features: FeatureStore

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    @classmethod
    def open(cls, settings: Settings, *, check: bool = True) -> "Instance":
        """Connect to an initialised instance (see :func:`init_instance`)."""
        url = make_url(settings.database_url)
        if check and url.get_backend_name() == "sqlite" and url.database \
                and not Path(url.database).exists():
            raise InstanceNotInitialised(
                f"no EcoTaxa instance at {settings.database_url} (home {settings.home}); "
                "run `ecotaxa init` first")
        engine = make_engine(settings.database_url)
        if check:
            try:
                ready = inspect(engine).has_table("projects")
            except OperationalError as exc:
                engine.dispose()
                raise InstanceNotInitialised(
                    f"cannot reach the database {url.render_as_string(hide_password=True)}: "
                    f"{exc.orig}") from exc
            if not ready:
                engine.dispose()
                raise InstanceNotInitialised(
                    f"no EcoTaxa instance at {settings.database_url} (home {settings.home}); "
                    "run `ecotaxa init` first")
            current, head = schema_revisions(engine)
            if current != head:
                engine.dispose()
                raise InstanceNotInitialised(
                    f"the database {url.render_as_string(hide_password=True)} has schema "
                    f"revision {current}, this version of EcoTaxa needs {head}: run "
                    "`ecotaxa init` to upgrade it (data is kept)")
        return cls(settings=settings, engine=engine, sessions=make_session_factory(engine),
                   vault=Vault(settings.vault_location),
                   features=FeatureStore(settings.feature_store_location))

    def close(self) -> None:
        self.engine.dispose()


def init_instance(settings: Settings, admin_email: str, admin_password: str,
                  admin_name: str = "Administrator") -> Instance:
    """Create (or upgrade) the instance's folders and schema, and its administrator.

    Running it again on an existing instance upgrades the schema and leaves
    existing users alone.
    """
    settings.ensure_dirs()
    inst = Instance.open(settings, check=False)
    upgrade_schema(inst.engine)
    with inst.sessions.begin() as session:
        if session.scalar(select(User).where(User.email == admin_email.strip().lower())) is None:
            create_user(session, admin_email, admin_name, admin_password, is_admin=True)
    return inst
