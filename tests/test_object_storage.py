"""The vault and the feature store behind fsspec URLs (object storage such as s3://).

``memory://`` is a file system that is nowhere on disk: code that still took a
vault or feature store location for a local path would fail on it, or write
beside it on disk (both checked). ``s3://`` goes to a local S3 API (moto's
server) through s3fs: keys without folders, copies for renames, HTTP. ``file://`` is local disk reached through
fsspec, which the worker processes of a Dask cluster share: the whole loop runs
on it through Prefect.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
from sqlalchemy import func, select

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, IMPORT_CASES
from ecotaxa_core.db.models import Image, Object, ObjectStatus
from ecotaxa_core.export_bundle import write_bundle
from ecotaxa_core.features.pipeline import compute_chunk, pending_objects
from ecotaxa_core.importer import import_path
from ecotaxa_core.instance import init_instance
from ecotaxa_core.project_ops import delete_objects, delete_project
from ecotaxa_core.projects import create_project
from ecotaxa_core.settings import Settings

IMPORT_TEST = IMPORT_CASES / "import_test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A local S3 API (moto's server: buckets, keys, multipart uploads over HTTP), and
    fsspec configured to reach it as s3fs would reach a MinIO or AWS endpoint."""
    port = _free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-p", str(port)],
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no S3 API on {endpoint}: {log.read_text()}"
            time.sleep(0.2)
    before = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "test", "secret": "test"}
    try:
        yield endpoint
    finally:
        if before is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = before
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(params=["memory", "s3"])
def bucket(request) -> str:
    """A fresh, empty place for the vault and the store: in memory, or an S3 bucket."""
    name = f"eco-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        fsspec.filesystem("s3").mkdir(name)
    url = f"{request.param}://{name}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def remote_instance(tmp_path, bucket):
    """An instance whose vault and feature store live behind ``bucket``'s URL."""
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        vault_url=f"{bucket}/vault", feature_store_url=f"{bucket}/features")
    inst = init_instance(settings, ADMIN_EMAIL, ADMIN_PASSWORD)
    yield inst
    inst.close()


def _files(url: str) -> dict[str, bytes]:
    """Every file under ``url``, by path relative to it."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    fs.invalidate_cache()
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def _local_leftovers(inst) -> list[str]:
    """What lies in the data folder beside the database: never vault or feature files."""
    home = Path(inst.settings.home)
    names = [p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()]
    return [n for n in names if n.startswith(("vault", "features", "work/vault_staging"))]


def test_import_features_export_and_deletes_with_vault_and_store_behind_urls(remote_instance,
                                                                             tmp_path):
    inst = remote_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "object storage").id
    result = import_path(inst, pid, IMPORT_TEST, user_id=1, create_missing_taxa=True,
                         create_missing_users=True)
    n = result.n_objects
    assert n > 0

    vault = _files(inst.settings.vault_location)
    with inst.sessions() as s:
        rows = s.execute(select(Image.file_path, Image.thumb_path, Image.object_id)).all()
    named = {p for r in rows for p in r[:2] if p}
    assert named and named == set(vault), "the vault holds exactly the files the rows name"
    originals = {r.file_path for r in rows}
    source_bytes = {p.read_bytes() for p in IMPORT_TEST.rglob("*.jpg")}
    assert all(vault[rel] in source_bytes for rel in originals if rel.endswith(".jpg"))
    assert _local_leftovers(inst) == []

    # The TSV's numeric columns went to the feature store behind its URL.
    assert inst.features.feature_sets(pid) == ["tsv"]
    tsv = inst.features.read(pid, "tsv")
    assert tsv.n_samples == n and np.isfinite(tsv.values).any()
    assert any(k.startswith(f"project_{pid}/tsv.zarr/") for k in
               _files(inst.settings.feature_store_location))

    # Feature extraction reads the images by their URLs.
    ids, where = pending_objects(inst, pid, "morpho")
    scheme = inst.settings.vault_url.split("://")[0] + "://"
    assert len(ids) == n and all(w.startswith(scheme) for w in where)
    rows_m = compute_chunk("morpho", {}, where)
    copies = tmp_path / "copies"
    copies.mkdir()
    local = []
    for i, url in enumerate(where):  # the same bytes, from local files
        local.append(copies / f"{i}{Path(url).suffix}")
        local[-1].write_bytes(fsspec.open(url, "rb").open().read())
    assert rows_m.shape[0] == n and np.isfinite(rows_m[:, 0]).all()
    np.testing.assert_array_equal(rows_m, compute_chunk("morpho", {}, [str(p) for p in local]))
    names = [f"f{i}" for i in range(rows_m.shape[1])]
    assert inst.features.append(pid, "morpho", ids, rows_m, names) == n
    assert inst.features.feature_sets(pid) == ["morpho", "tsv"]

    # A bundle export copies the images out of the vault.
    out = Path(inst.settings.exports_dir) / "bundle.zip"
    stats = write_bundle(inst, pid, out, with_images=True)
    assert stats.n_objects == n
    with zipfile.ZipFile(out) as z:
        images = {z.read(i) for i in z.namelist() if i.endswith((".jpg", ".png"))}
    assert images == {vault[rel] for rel in originals}

    # An import that fails once its images are staged leaves nothing behind, here or there.
    def fail_when_staged(done, total):
        if done == total:
            raise RuntimeError("injected failure")

    with inst.sessions.begin() as s:
        other = create_project(s, "failed import").id
    with pytest.raises(RuntimeError, match="injected failure"):
        import_path(inst, other, IMPORT_TEST, user_id=1, progress=fail_when_staged)
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)
                        .where(Object.project_id == other)) == 0
    assert inst.features.feature_sets(other) == []
    assert _files(inst.settings.vault_location) == vault
    assert _local_leftovers(inst) == []

    # Deleting objects takes their files and feature rows.
    gone = sorted({r.object_id for r in rows})[:3]
    gone_files = {p for r in rows if r.object_id in gone for p in r[:2] if p}
    assert delete_objects(inst, pid, 1, object_ids=gone) == 3
    left = _files(inst.settings.vault_location)
    assert set(left) == set(vault) - gone_files
    for feature_set in ("tsv", "morpho"):
        kept = inst.features.object_ids(pid, feature_set)
        assert len(kept) == n - 3 and not np.isin(gone, kept).any()
    assert inst.features.feature_sets(pid) == ["morpho", "tsv"]  # no set left aside

    delete_project(inst, pid, 1)
    assert _files(inst.settings.vault_location) == {}
    assert inst.features.feature_sets(pid) == []
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object)) == 0


def test_the_dashboard_serves_a_vault_behind_a_url(remote_instance):
    from test_dashboard_browser import _dashboard

    inst = remote_instance
    with inst.sessions.begin() as s:
        pid = create_project(s, "object storage").id
    import_path(inst, pid, IMPORT_TEST, user_id=1, create_missing_taxa=True,
                create_missing_users=True)
    vault = _files(inst.settings.vault_location)
    with _dashboard(inst.settings) as url:
        rel = sorted(vault)[0]
        with urllib.request.urlopen(f"{url}vault/{rel}") as r:
            assert r.read() == vault[rel]
            assert r.headers["Content-Type"] == "image/jpeg"
        for missing in ("images/nothing.jpg", "images/../../../etc/passwd", "images//x.jpg"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{url}vault/{missing}")
            assert err.value.code == 404


@pytest.mark.slow
def test_the_loop_runs_with_vault_and_store_on_file_urls_through_dask_workers(
        sqlite_instance, prefect_server, monkeypatch, tmp_path, ndsb_subset):
    """Prefect flows, a LocalCluster of worker processes, the vault and the feature store
    reached through fsspec ``file://`` URLs (what an s3:// bucket would be)."""
    from flows.loop import loop_flow
    from flows.predict import predict_flow

    inst = sqlite_instance
    remote = tmp_path / "bucket"
    for key, value in {"HOME": str(inst.settings.home), "DATABASE_URL": inst.settings.database_url,
                       "VAULT_URL": f"file://{remote}/vault",
                       "FEATURE_STORE_URL": f"file://{remote}/features",
                       "DASK_N_WORKERS": "2", "DASK_THREADS_PER_WORKER": "1",
                       "CHUNK_SIZE": "64", "DEEP_VIEWS": "1"}.items():
        monkeypatch.setenv(f"ECOTAXA_{key}", value)
    monkeypatch.delenv("ECOTAXA_DASK_SCHEDULER_ADDRESS", raising=False)
    with inst.sessions.begin() as s:
        pid = create_project(s, "NDSB on object storage").id

    out = loop_flow(project_id=pid, path=str(ndsb_subset), out_dir=str(tmp_path / "out"),
                    create_missing_taxa=True)
    n = out["import"]["n_objects"]
    assert n == 240
    extracted = {name: r["objects"] for name, r in out["features"]["feature_sets"].items()
                 if "objects" in r}
    assert extracted and set(extracted.values()) == {n}
    assert out["train"]["best"] is not None

    # Objects without a category get predictions from features read off the store's URL.
    with inst.sessions.begin() as s:
        chosen = s.scalars(select(Object).where(Object.project_id == pid)
                           .order_by(Object.id).limit(40)).all()
        for obj in chosen:
            obj.status, obj.taxon_id = ObjectStatus.UNCLASSIFIED.value, None
    predicted = predict_flow(project_id=pid)
    assert predicted["n_predicted"] == 40
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Object).where(
            Object.status == ObjectStatus.PREDICTED.value, Object.taxon_id.is_not(None))) == 40
    assert _local_leftovers(inst) == []  # the instance's own folders stay empty
    stored = sorted(p.name for p in (remote / "features" / f"project_{pid}").iterdir())
    assert "morpho.zarr" in stored and any(s.startswith("deep_") for s in stored)
    with inst.sessions() as s:
        n_files = s.scalar(select(func.count()).select_from(Image))
    assert n_files == n
    assert sum(1 for p in (remote / "vault" / "images").rglob("*.jpg")) == n
    with zipfile.ZipFile(out["export"]["bundle"]) as z:
        assert sum(1 for i in z.namelist() if i.endswith(".jpg")) == n
