"""The features flow survives a killed Dask worker and a killed flow process.

Real processes are killed with SIGKILL: a Dask worker of a LocalCluster (its
nanny starts a new one and the scheduler computes the lost chunks again), the
flow process itself (the next run cuts back what it left half written and
computes the rest), and a bare writer in the middle of a Zarr append. Each
time, every object of the project ends with exactly one row, equal to what
the extractor computes for its image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from ecotaxa_core.db.models import Job, Object
from ecotaxa_core.features import get_extractor
from ecotaxa_core.features.pipeline import (JOURNAL_DIR, append_chunk, journaled_write,
                                            recover_interrupted_writes)
from ecotaxa_core.jobs import KILLED_MESSAGE
from test_features_flow import add_objects, make_project, ndsb_images
from worker_killer import WorkerKiller

ROOT = Path(__file__).resolve().parents[1]
MORPHO = get_extractor("morpho")


def project_object_ids(inst, project_id: int) -> list[int]:
    with inst.sessions() as s:
        return sorted(s.scalars(select(Object.id).where(Object.project_id == project_id)))


def assert_one_row_per_object(inst, project_id: int, ids: list[int], images: list[Path]):
    """The morpho set holds exactly the project's objects, once each, with their own rows."""
    stored = inst.features.object_ids(project_id, "morpho")
    assert len(np.unique(stored)) == len(stored), "an object has two rows"
    assert sorted(stored.tolist()) == project_object_ids(inst, project_id) == sorted(ids)
    rows = inst.features.read(project_id, "morpho", ids)
    np.testing.assert_allclose(rows.values, MORPHO.extract(images), rtol=1e-6)
    assert not any((inst.settings.work_dir / JOURNAL_DIR).rglob("*.json"))


def _wait_for(condition, timeout: float, what: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- a writer killed in the middle of an append ------------------------------------
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from ecotaxa_core.features import get_extractor
    from ecotaxa_core.features.pipeline import append_chunk
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.settings import Settings

    home, url, first, last, size = sys.argv[1:6]
    inst = Instance.open(Settings(home=home, database_url=url))
    extractor = get_extractor("morpho")
    n_features = len(extractor.feature_names)
    for start in range(int(first), int(last), int(size)):
        ids = np.arange(start, min(start + int(size), int(last)), dtype=np.int64)
        # Each row holds its own id, so a row written under another id shows.
        append_chunk(inst, 1, extractor, ids, np.repeat(ids[:, None], n_features, axis=1))
""")
CHUNK = 5000


def _run_writer(inst, first: int, last: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(inst.settings.home), inst.settings.database_url,
         str(first), str(last), str(CHUNK)], cwd=ROOT, stderr=subprocess.PIPE)


def _assert_rows_hold_their_ids(store, n_rows: int | None = None):
    ids = store.object_ids(1, "morpho")
    if n_rows is not None:
        assert len(ids) == n_rows
    assert len(np.unique(ids)) == len(ids)
    values = store.read(1, "morpho").values
    np.testing.assert_array_equal(values, np.repeat(ids[:, None].astype(np.float32),
                                                    values.shape[1], axis=1))
    return ids


# An append spends its first tens of ms reading the store, then writes: kill at several points.
@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.035, 0.05])
def test_a_writer_killed_during_an_append_leaves_whole_rows(sqlite_instance, delay_s):
    """SIGKILL lands while an append's journal exists (the store half written or not);
    recovery cuts the store back, and appending on completes every id once."""
    inst = sqlite_instance
    store = inst.features
    journal = inst.settings.work_dir / JOURNAL_DIR / "project_1" / "morpho.json"
    total = 40 * CHUNK
    writer = _run_writer(inst, 0, total)
    try:
        # Kill during an append that follows at least two complete ones.
        def appending_after_two():
            try:
                return json.loads(journal.read_text())["keep_rows"] >= 2 * CHUNK
            except (FileNotFoundError, ValueError):
                return writer.poll() is not None
        _wait_for(appending_after_two, 120, "the writer's third append", interval=0.0005)
        time.sleep(delay_s)
        writer.kill()
        _, stderr = writer.communicate()
        assert writer.returncode == -signal.SIGKILL, stderr.decode()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    kept = recover_interrupted_writes(inst, 1)
    assert not journal.exists()
    if kept:  # back to the rows of whole appends (one less if the arrays were torn apart)
        assert 2 * CHUNK - 1 <= kept["morpho"] < total
    ids = _assert_rows_hold_their_ids(store)
    assert 2 * CHUNK - 1 <= len(ids) < total

    # Appending everything again writes only what is missing.
    writer = _run_writer(inst, 0, total)
    _, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr.decode()
    assert sorted(_assert_rows_hold_their_ids(store, total).tolist()) == list(range(total))


TORN_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import zarr
    from ecotaxa_core.features.pipeline import journaled_write
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.settings import Settings

    inst = Instance.open(Settings(home=sys.argv[1], database_url=sys.argv[2]))
    with journaled_write(inst, 1, "morpho", keep_rows=10):
        # The first half of a to_zarr append: ``object`` grown and written, not ``values``.
        group = zarr.open_group(inst.features.store_path(1, "morpho"), mode="r+",
                                zarr_format=3)
        group["object"].resize((15,))
        group["object"][10:] = np.arange(10, 15)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_recovery_mends_an_append_killed_between_its_two_arrays(sqlite_instance):
    """xarray appends the ``object`` coordinate before ``values``: a process killed
    between the two leaves arrays of different lengths, which the store cannot open."""
    inst = sqlite_instance
    store = inst.features
    n_features = len(MORPHO.feature_names)
    ids = np.arange(10, dtype=np.int64)
    append_chunk(inst, 1, MORPHO, ids, np.repeat(ids[:, None], n_features, axis=1))
    torn = subprocess.run([sys.executable, "-c", TORN_WRITER, str(inst.settings.home),
                           inst.settings.database_url], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert torn.returncode == -signal.SIGKILL, torn.stderr
    with pytest.raises(ValueError, match="conflicting sizes"):
        store.n_rows(1, "morpho")

    # The store cuts each array back on its own: the 10 whole rows stay.
    assert recover_interrupted_writes(inst, 1) == {"morpho": 10}
    _assert_rows_hold_their_ids(store, 10)
    more = np.arange(20, dtype=np.int64)
    assert append_chunk(inst, 1, MORPHO, more, np.repeat(more[:, None], n_features, 1)) == 10
    assert sorted(_assert_rows_hold_their_ids(store, 20).tolist()) == list(range(20))


def test_a_failed_append_is_undone_at_once(sqlite_instance):
    inst = sqlite_instance
    ids = np.arange(4, dtype=np.int64)
    values = np.zeros((4, len(MORPHO.feature_names)), dtype=np.float32)
    append_chunk(inst, 1, MORPHO, ids, values)
    with pytest.raises(RuntimeError, match="disk full"):
        with journaled_write(inst, 1, "morpho", keep_rows=4):
            inst.features.append(1, "morpho", ids + 4, values, MORPHO.feature_names,
                                 MORPHO.producer())
            raise RuntimeError("disk full")
    assert inst.features.object_ids(1, "morpho").tolist() == [0, 1, 2, 3]
    assert recover_interrupted_writes(inst, 1) == {}


def test_an_unreadable_journal_is_reported_not_guessed(sqlite_instance):
    inst = sqlite_instance
    journal = inst.settings.work_dir / JOURNAL_DIR / "project_3" / "morpho.json"
    journal.parent.mkdir(parents=True)
    journal.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable feature-store journal .*morpho.json"):
        recover_interrupted_writes(inst, 3)
    assert journal.exists()


# -- the whole flow --------------------------------------------------------------
def _flow_env(inst, **extra: str) -> dict[str, str]:
    return {"ECOTAXA_HOME": str(inst.settings.home),
            "ECOTAXA_DATABASE_URL": inst.settings.database_url, **extra}


@pytest.mark.slow
def test_features_flow_survives_a_killed_dask_worker(sqlite_instance, ndsb_subset,
                                                     prefect_server, monkeypatch):
    """A worker process of the cluster named by ECOTAXA_DASK_SCHEDULER_ADDRESS is
    SIGKILLed while it holds chunks: they are computed again, the run completes."""
    from distributed import Client, LocalCluster

    from flows.features import features_flow

    inst = sqlite_instance
    images = ndsb_images(ndsb_subset, 30, n_classes=8)  # 240 objects, 40 chunks
    project_id, ids = make_project(inst, images)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for name, value in _flow_env(inst, ECOTAXA_CHUNK_SIZE="6",
                                     ECOTAXA_DASK_SCHEDULER_ADDRESS=cluster.scheduler_address
                                     ).items():
            monkeypatch.setenv(name, value)
        with WorkerKiller(client, "compute_chunk", poll_s=0.005) as killer:
            summary = features_flow(project_id=project_id, feature_sets=["morpho"])
        killed = killer.killed
        assert killed, "the victim worker never held a chunk"
        assert summary["feature_sets"]["morpho"]["objects"] == len(ids)
        assert summary["feature_sets"]["morpho"]["chunks"] == 40

        # The scheduler took the chunk back from the dead worker and computed it again.
        # (Whoever saw the death first, the broken connection or the nanny, released it.)
        def transitions(dask_scheduler, key=killed[0]):
            return [(t[1], t[2]) for t in dask_scheduler.transition_log if t[0] == key]
        log = client.run_on_scheduler(transitions)
        assert ("processing", "released") in log, log
        assert ("processing", "memory") in log[log.index(("processing", "released")):], log
        # The nanny started a new worker process in place of the killed one.
        _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 120, "a new worker",
                  interval=0.2)
        assert killer.pid not in client.run(os.getpid).values()

    assert_one_row_per_object(inst, project_id, ids, images)


def _run_flow(inst, project_id: int, prefect_api_url: str, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, **_flow_env(inst, ECOTAXA_CHUNK_SIZE="4", ECOTAXA_DASK_N_WORKERS="1",
                                     ECOTAXA_DASK_THREADS_PER_WORKER="2"),
           "PREFECT_API_URL": prefect_api_url, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("ECOTAXA_DASK_SCHEDULER_ADDRESS", None)
    # Its own session: the flow and its embedded cluster's workers form one process group.
    return subprocess.Popen([sys.executable, "-m", "flows.features", str(project_id),
                             "--feature-sets", "morpho"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_features_flow_killed_half_way_is_finished_by_the_next_run(
        sqlite_instance, ndsb_subset, prefect_api_url, tmp_path):
    """``python -m flows.features`` is SIGKILLed after some chunks were appended (maybe in
    the middle of one); the next run ends with every object's row, once."""
    inst = sqlite_instance
    images = ndsb_images(ndsb_subset, 28, n_classes=8)
    project_id, ids = make_project(inst, images)  # 224 objects, 56 chunks
    import xarray  # noqa: F401  (imported now, not by the first poll below: seconds here)

    run = _run_flow(inst, project_id, prefect_api_url, tmp_path)
    seen = []
    try:
        def some_chunks_appended():
            try:
                seen.append(inst.features.n_rows(project_id, "morpho"))
            except Exception:  # a read in the middle of an append
                return False
            return seen[-1] >= 12 or run.poll() is not None
        _wait_for(some_chunks_appended, 300, "the first chunks", interval=0.01)
        run.send_signal(signal.SIGKILL)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == -signal.SIGKILL, \
            f"the run ended ({run.returncode}) before it could be killed:\n{stderr}"
        assert seen[-1] < len(ids)
    finally:
        if _group_alive(run.pid):  # what the dead flow's cluster left running
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()

    again = _run_flow(inst, project_id, prefect_api_url, tmp_path)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    summary = json.loads(stdout[stdout.index("{"):])
    # At most one chunk and one row more than was seen before the kill are computed again.
    assert 0 < summary["feature_sets"]["morpho"]["objects"] <= len(ids) - seen[-1] + 4 + 1
    assert_one_row_per_object(inst, project_id, ids, images)
    with inst.sessions() as s:
        jobs = s.execute(select(Job.state, Job.error).where(Job.kind == "features")
                         .order_by(Job.id)).all()
    # The next run found the killed run's job without its process, and said so.
    assert [tuple(j) for j in jobs] == [("failed", KILLED_MESSAGE), ("done", None)]

    # Objects added later are the only ones the next run computes.
    added = ndsb_images(ndsb_subset, 2, skip=28, n_classes=1)
    added_ids = add_objects(inst, project_id, added)
    last = _run_flow(inst, project_id, prefect_api_url, tmp_path)
    stdout, stderr = last.communicate(timeout=600)
    assert last.returncode == 0, stderr
    assert json.loads(stdout[stdout.index("{"):])["feature_sets"]["morpho"]["objects"] == 2
    assert_one_row_per_object(inst, project_id, ids + added_ids, images + added)
