"""Shared fixtures: a fresh instance on SQLite and on PostgreSQL, real data paths."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

# Flows run in-process start a temporary Prefect server; on a loaded 2-core machine the
# default 20 s wait for it is not always enough.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("ECOTAXA_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
IMPORT_CASES = DATASETS / "ecotaxa_import_cases"
NDSB_ZIP = DATASETS / "ndsb_planktonset1_dev.zip"
PG_ADMIN_URL = os.environ.get("ECOTAXA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "s3cret-admin"


def _pg_available() -> bool:
    from sqlalchemy import create_engine, text

    try:
        eng = create_engine(PG_ADMIN_URL)
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    return _pg_available()


def _create_pg_database() -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = f"ecotaxa_test_{uuid.uuid4().hex[:12]}"
    eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return name, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, pg_available):
    """A new empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not pg_available:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name, url = _create_pg_database()
    yield url
    _drop_pg_database(name)


def _make_instance(home: Path, url: str):
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.settings import Settings

    settings = Settings(home=home, database_url=url)
    return init_instance(settings, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def instance(tmp_path, db_url):
    """An initialised instance (admin user) on each database backend."""
    inst = _make_instance(tmp_path / "home", db_url)
    yield inst
    inst.close()


@pytest.fixture
def sqlite_instance(tmp_path):
    """An initialised instance on SQLite only, for tests whose subject is not the database."""
    inst = _make_instance(tmp_path / "home", f"sqlite:///{tmp_path / 'test.db'}")
    yield inst
    inst.close()


@pytest.fixture
def pg_instance(tmp_path, pg_available):
    """An initialised instance on PostgreSQL only (tests of the scaled-out stack)."""
    if not pg_available:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name, url = _create_pg_database()
    inst = _make_instance(tmp_path / "home", url)
    yield inst
    inst.close()
    _drop_pg_database(name)


@pytest.fixture
def admin(instance):
    from ecotaxa_core.users import get_user_by_email

    with instance.sessions() as s:
        return get_user_by_email(s, ADMIN_EMAIL)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect API for the whole session (flows run for real)."""
    home = tmp_path_factory.mktemp("prefect_home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


PREFECT_API_STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api_healthy(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory) -> str:
    """The API URL of one real ``prefect server start`` shared by the whole session.

    For ``ecotaxa`` subprocesses: given as ``PREFECT_API_URL``, they run their flows
    against it instead of each starting a temporary server (10-20 s apiece here). The
    server has its own PREFECT_HOME (its SQLite database) and is stopped at the end.
    """
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path_factory.mktemp("prefect_api_home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # This process's own Prefect settings (the in-process test harness) must not leak in.
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        # No UI, scheduler or late-run service: no deployment runs here, and the 2-core
        # test machine is better spent on the flows.
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "server", "start",
             "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--no-scheduler",
             "--no-late-runs", "--analytics-off"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        deadline = time.monotonic() + PREFECT_API_STARTUP_TIMEOUT_S
        while not _api_healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with code {server.returncode}" if server.returncode is not None
                         else f"did not answer {url}/health within "
                              f"{PREFECT_API_STARTUP_TIMEOUT_S} s")
                pytest.fail(f"the test Prefect server ({' '.join(server.args)}) {state}; "
                            f"its log ({log_path}):\n{log_path.read_text(errors='replace')}",
                            pytrace=False)
            time.sleep(0.5)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


NDSB_TEST_CLASSES = ("acantharia_protist", "chaetognath_other", "copepod_cyclopoid_oithona_eggs",
                     "detritus_other", "hydromedusae_solmaris", "protist_noctiluca",
                     "trichodesmium_puff", "diatom_chain_string")


def extract_ndsb_subset(dest: Path, classes=NDSB_TEST_CLASSES, per_class: int = 30) -> Path:
    """A class-folder tree ``dest/<class>/<id>.jpg`` with the first images of each class."""
    import zipfile

    with zipfile.ZipFile(NDSB_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        for cls in classes:
            members = [n for n in names if n.split("/")[1] == cls][:per_class]
            (dest / cls).mkdir(parents=True, exist_ok=True)
            for n in members:
                (dest / cls / n.rsplit("/", 1)[1]).write_bytes(z.read(n))
    return dest


@pytest.fixture(scope="session")
def ndsb_subset(tmp_path_factory) -> Path:
    """8 NDSB classes x 30 real images, as class sub-folders (read-only: copy before changing)."""
    return extract_ndsb_subset(tmp_path_factory.mktemp("ndsb") / "classes")
