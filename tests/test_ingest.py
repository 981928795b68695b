"""Instrument ingest: complete new bundles of a drop folder are imported exactly once."""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import IMPORT_CASES
from ecotaxa_core.db.models import ImportRun, Job, Object, User, utcnow
from ecotaxa_core.errors import ProjectNotFound
from ecotaxa_core.importer import import_path
from ecotaxa_core.ingest import DropFolder, ingest_drop_folder, look_at_drop_folder
from ecotaxa_core.projects import create_project
from ecotaxa_core.users import create_user

IMPORT_TEST = IMPORT_CASES / "import_test"  # 11 objects in two TSV files
IMPORT_TEST_ZIP = IMPORT_CASES / "import_test.zip"  # 8 of those objects
TSV_ISSUES = IMPORT_CASES / "import_issues" / "tsv_issues"
N_OBJECTS = 11
N_ZIP_OBJECTS = 8


class FakeClock:
    """A clock that only moves when the pass "sleeps"; ``during_sleep`` runs meanwhile."""

    def __init__(self, during_sleep=None):
        self.now = 1_000_000.0
        self.slept: list[float] = []
        self.during_sleep = during_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.during_sleep is not None:
            self.during_sleep()
        self.now += seconds


ANNOTATORS = {"me@home.fr": "Admin4test", "elizandro.rodrigues05@gmail.com": "Elizandro Rodriguez"}


def new_project(inst) -> int:
    """A project, and the annotators of ``import_test`` as users (the import needs them)."""
    with inst.sessions.begin() as s:
        for email, name in ANNOTATORS.items():
            if s.scalar(select(User).where(User.email == email)) is None:
                create_user(s, email, name)
        return create_project(s, "Ingest test").id


def n_objects(inst, project_id: int) -> int:
    with inst.sessions() as s:
        return s.scalar(select(func.count()).select_from(Object)
                        .where(Object.project_id == project_id))


def copy_bundle(src: Path, dest: Path) -> Path:
    """Copy a shared (read-only) case, writable, like an instrument would drop it."""
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=shutil.copyfile)
        for d in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
            d.chmod(0o755)
    else:
        shutil.copyfile(src, dest)
    return dest


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def ingest(inst, drop: Path, project_id: int, **kw):
    kw.setdefault("settle_seconds", 0.0)
    return ingest_drop_folder(inst, drop, project_id, user_id=None, create_missing_taxa=True,
                              **kw)


def test_complete_bundles_are_imported_once_and_moved_to_done(instance, tmp_path):
    pid = new_project(instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast1")

    summary = ingest(instance, drop, pid).to_dict()

    assert summary["imported"] == ["cast1"] and summary["n_objects"] == N_OBJECTS
    assert n_objects(instance, pid) == N_OBJECTS
    layout = DropFolder.at(drop)
    (done,) = listing(layout.done)
    assert done.endswith("_cast1") and summary["bundles"][0]["path"] == str(layout.done / done)
    assert (layout.done / done / "m106_mn01_n1_sml" / "ecotaxa_m106_mn01_n1_sml.tsv").exists()
    assert listing(drop) == [".ingest", "done", "quarantine"]
    assert listing(layout.processing) == []
    (line,) = layout.journal.read_text().splitlines()
    assert json.loads(line) | {"name": "cast1", "status": "imported", "n_objects": N_OBJECTS} \
        == json.loads(line)

    again = ingest(instance, drop, pid).to_dict()
    assert again["bundles"] == [] and n_objects(instance, pid) == N_OBJECTS


def test_a_zip_bundle_is_imported(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    drop.mkdir()
    copy_bundle(IMPORT_TEST_ZIP, drop / "cast2.zip")
    summary = ingest(sqlite_instance, drop, pid).to_dict()
    assert summary["imported"] == ["cast2.zip"]
    assert n_objects(sqlite_instance, pid) == N_ZIP_OBJECTS
    assert listing(drop / "done")[0].endswith("_cast2.zip")


def test_refused_bundle_goes_to_quarantine_with_its_report(instance, tmp_path):
    pid = new_project(instance)
    drop = tmp_path / "drop"
    copy_bundle(TSV_ISSUES, drop / "bad_cast")
    copy_bundle(IMPORT_TEST, drop / "good_cast")

    summary = ingest(instance, drop, pid).to_dict()

    assert summary["quarantined"] == ["bad_cast"] and summary["imported"] == ["good_cast"]
    assert n_objects(instance, pid) == N_OBJECTS  # only the good one
    quarantine = drop / "quarantine"
    bundle, report = listing(quarantine)
    assert bundle.endswith("_bad_cast") and report == bundle + ".error.txt"
    assert (quarantine / bundle / "ecotaxa_m106_mn01_n3_sml.tsv").exists()
    text = (quarantine / report).read_text()
    assert "Error: TsvFormatError" in text and "Project: " + str(pid) in text
    assert "ecotaxa_m106_mn01_n3_sml.tsv line 3, column object_lat: invalid latitude '100'" in text
    assert "line 8, column img_file_name: missing image 'nada.png'" in text
    bad = next(b for b in summary["bundles"] if b["name"] == "bad_cast")
    assert bad["status"] == "quarantined" and "object_lat" in bad["reason"]


def test_half_copied_zip_is_not_imported_until_complete(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    drop.mkdir()
    data = IMPORT_TEST_ZIP.read_bytes()
    part = drop / "cast3.zip"
    part.write_bytes(data[: len(data) // 2])
    clock = FakeClock()

    first = ingest(sqlite_instance, drop, pid, settle_seconds=10, clock=clock, sleep=clock.sleep)
    # new, so the pass waited the settle time and looked again: unchanged, but no central directory
    assert clock.slept == [10]
    (outcome,) = first.bundles
    assert outcome.status == "not_ready" and "central directory" in outcome.reason
    clock.now += 600
    assert ingest(sqlite_instance, drop, pid, settle_seconds=10, clock=clock,
                  sleep=clock.sleep).names("not_ready") == ["cast3.zip"]
    assert listing(drop) == [".ingest", "cast3.zip", "done", "quarantine"]
    assert n_objects(sqlite_instance, pid) == 0

    part.write_bytes(data)  # the copy ends
    done = ingest(sqlite_instance, drop, pid, settle_seconds=10, clock=clock, sleep=clock.sleep)
    assert done.names("imported") == ["cast3.zip"]
    assert n_objects(sqlite_instance, pid) == N_ZIP_OBJECTS


def test_zip_that_never_completes_goes_to_quarantine(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    drop.mkdir()
    data = IMPORT_TEST_ZIP.read_bytes()
    (drop / "dead.zip").write_bytes(data[:1000])
    clock = FakeClock()
    ingest(sqlite_instance, drop, pid, settle_seconds=10, clock=clock, sleep=clock.sleep)
    clock.now += 3 * 3600
    summary = ingest(sqlite_instance, drop, pid, settle_seconds=10, clock=clock,
                     sleep=clock.sleep)
    assert summary.names("quarantined") == ["dead.zip"]
    report = next((drop / "quarantine").glob("*.error.txt")).read_text()
    assert "UnreadableBundle" in report and "central directory" in report


def test_bundle_still_being_copied_is_not_imported(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    bundle = drop / "cast4"
    copy_bundle(IMPORT_TEST / "m106_mn01_n1_sml", bundle / "m106_mn01_n1_sml")
    remaining = sorted((IMPORT_TEST / "m106_mn01_n2_sml").iterdir())
    (bundle / "m106_mn01_n2_sml").mkdir()

    def copy_one_more_file():  # the instrument keeps writing while the pass waits
        if remaining:
            src = remaining.pop(0)
            shutil.copyfile(src, bundle / "m106_mn01_n2_sml" / src.name)

    clock = FakeClock(during_sleep=copy_one_more_file)
    while remaining:
        summary = ingest(sqlite_instance, drop, pid, settle_seconds=5, clock=clock,
                         sleep=clock.sleep)
        assert summary.names("not_ready") == ["cast4"], summary.to_dict()
        assert n_objects(sqlite_instance, pid) == 0
        clock.now += 1  # the next pass comes soon: the copy has not stalled
    summary = ingest(sqlite_instance, drop, pid, settle_seconds=5, clock=clock, sleep=clock.sleep)
    assert summary.names("imported") == ["cast4"]
    assert n_objects(sqlite_instance, pid) == N_OBJECTS  # both files, complete


def test_bundle_changed_while_another_was_imported_waits(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "a_cast")
    copy_bundle(IMPORT_TEST_ZIP, drop / "b_cast.zip")

    def import_while_b_grows(path: Path) -> dict:
        with (drop / "b_cast.zip").open("ab") as f:
            f.write(b"more")
        return import_path(sqlite_instance, pid, path, user_id=None,
                           create_missing_taxa=True).to_dict()

    summary = ingest(sqlite_instance, drop, pid, run_import=import_while_b_grows)
    assert summary.names("imported") == ["a_cast"]
    (b,) = [o for o in summary.bundles if o.name == "b_cast.zip"]
    assert (b.status, b.reason) == ("not_ready", "changed while other bundles were imported")
    assert (drop / "b_cast.zip").exists()


def test_ready_marker(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast5")
    clock = FakeClock()

    waiting = ingest(sqlite_instance, drop, pid, settle_seconds=600, require_ready_marker=True,
                     clock=clock, sleep=clock.sleep)
    assert waiting.bundles[0].reason == "waiting for its marker cast5.ready"
    assert clock.slept == []  # nothing would change by waiting

    (drop / "cast5.ready").touch()
    summary = ingest(sqlite_instance, drop, pid, settle_seconds=600, require_ready_marker=True,
                     clock=clock, sleep=clock.sleep)
    assert summary.names("imported") == ["cast5"] and clock.slept == []
    assert listing(drop) == [".ingest", "done", "quarantine"]  # the marker is gone too


def test_partial_names_empty_folders_and_other_files_are_left_alone(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / ".cast6")  # hidden while being copied
    copy_bundle(IMPORT_TEST_ZIP, drop / "cast7.zip.part")
    (drop / "empty").mkdir()
    (drop / "notes.txt").write_text("not a bundle")
    summary = ingest(sqlite_instance, drop, pid)
    assert [(b.name, b.status, b.reason) for b in summary.bundles] == [
        ("empty", "not_ready", "empty folder")]
    assert listing(drop) == [".cast6", ".ingest", "cast7.zip.part", "done", "empty", "notes.txt",
                             "quarantine"]
    os.rename(drop / ".cast6", drop / "cast6")  # the copy tool's final rename
    assert ingest(sqlite_instance, drop, pid).names("imported") == ["cast6"]


def test_unknown_project_takes_nothing(sqlite_instance, tmp_path):
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast8")
    with pytest.raises(ProjectNotFound):
        ingest(sqlite_instance, drop, 999)
    assert listing(drop) == ["cast8"]


# -- exactly once ----------------------------------------------------------------------------
def test_two_concurrent_passes_import_a_bundle_once(instance, tmp_path):
    pid = new_project(instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast9")
    start = threading.Barrier(2)
    summaries, errors = [], []

    def one_pass():
        try:
            start.wait(timeout=30)
            summaries.append(ingest(instance, drop, pid).to_dict())
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(s["imported"] for s in summaries) == [[], ["cast9"]]
    assert n_objects(instance, pid) == N_OBJECTS
    assert len(listing(drop / "done")) == 1 and listing(drop / "quarantine") == []


def test_a_pass_while_another_imports_does_nothing(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast10")
    copy_bundle(TSV_ISSUES, drop / "cast11")
    inner = []

    def import_and_race(path: Path) -> dict:
        inner.append(ingest(sqlite_instance, drop, pid))  # a second pass, mid-import
        return import_path(sqlite_instance, pid, path, user_id=None,
                           create_missing_taxa=True).to_dict()

    outer = ingest(sqlite_instance, drop, pid, run_import=import_and_race)
    assert outer.names("imported") == ["cast10"]
    assert outer.names("quarantined") == ["cast11"]
    assert [s.busy for s in inner] == [True, True] and all(s.bundles == [] for s in inner)
    assert n_objects(sqlite_instance, pid) == N_OBJECTS


def test_a_pass_killed_before_the_import_committed_is_redone(sqlite_instance, tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast12")

    def killed(path: Path) -> dict:
        raise KeyboardInterrupt  # stands for the process being killed mid-import

    with pytest.raises(KeyboardInterrupt):
        ingest(sqlite_instance, drop, pid, run_import=killed)
    layout = DropFolder.at(drop)
    claimed = [n for n in listing(layout.processing) if not n.endswith(".json")]
    assert len(claimed) == 1 and claimed[0].endswith("_cast12")
    assert listing(drop) == [".ingest", "done", "quarantine"]

    summary = ingest(sqlite_instance, drop, pid)
    (outcome,) = summary.bundles
    assert (outcome.name, outcome.status, outcome.recovered) == ("cast12", "imported", True)
    assert listing(layout.done) == claimed and listing(layout.processing) == []
    assert n_objects(sqlite_instance, pid) == N_OBJECTS


def _leave_committed_in_processing(inst, drop: Path, pid: int, name: str) -> Path:
    """What a pass killed after its import committed leaves behind."""
    layout = DropFolder.at(drop)
    layout.ensure()
    bundle = copy_bundle(IMPORT_TEST, layout.processing / f"20260101T000000Z_{name}")
    import_path(inst, pid, bundle, user_id=None, create_missing_taxa=True)
    return bundle


def test_a_pass_killed_after_recording_the_result_is_not_imported_again(sqlite_instance,
                                                                       tmp_path):
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    bundle = _leave_committed_in_processing(sqlite_instance, drop, pid, "cast13")
    record = {"name": "cast13", "project_id": pid, "result": {"n_objects": N_OBJECTS}}
    Path(f"{bundle}.json").write_text(json.dumps(record))

    (outcome,) = ingest(sqlite_instance, drop, pid).bundles
    assert (outcome.name, outcome.status, outcome.recovered) == ("cast13", "already_imported",
                                                                 True)
    assert listing(drop / "done") == [bundle.name] and listing(drop / "quarantine") == []
    assert n_objects(sqlite_instance, pid) == N_OBJECTS


def test_a_committed_import_run_of_the_claimed_path_is_not_imported_again(instance, tmp_path):
    pid = new_project(instance)
    drop = tmp_path / "drop"
    bundle = _leave_committed_in_processing(instance, drop, pid, "cast14")
    with instance.sessions.begin() as s:
        if not s.scalar(select(func.count()).select_from(ImportRun)
                        .where(ImportRun.source == str(bundle))):
            # the importer does not record its runs (yet): record the committed run it made
            s.add(ImportRun(id=str(uuid.uuid4()), project_id=pid, source=str(bundle),
                            committed_at=utcnow(), summary={"n_objects": N_OBJECTS}))

    (outcome,) = ingest(instance, drop, pid).bundles
    assert (outcome.status, outcome.recovered) == ("already_imported", True)
    assert outcome.result["n_objects"] == N_OBJECTS and "import_run_id" in outcome.result
    assert listing(drop / "done") == [bundle.name]
    assert n_objects(instance, pid) == N_OBJECTS


def test_looking_does_not_move_anything(sqlite_instance, tmp_path):
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast15")
    copy_bundle(IMPORT_TEST_ZIP, drop / "cast16.zip")
    looks = look_at_drop_folder(drop, settle_seconds=0)
    assert [(lk.name, lk.kind, lk.ready, lk.n_files) for lk in looks] == [
        ("cast15", "folder", True, 10), ("cast16.zip", "zip", True, 1)]
    assert listing(drop) == ["cast15", "cast16.zip"]


# -- the flow -----------------------------------------------------------------------------
def test_ingest_flow_imports_quarantines_and_records_jobs(prefect_server, sqlite_instance,
                                                          tmp_path, monkeypatch):
    from flows.ingest import ingest_flow

    monkeypatch.setenv("ECOTAXA_HOME", str(sqlite_instance.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", sqlite_instance.settings.database_url)
    pid = new_project(sqlite_instance)
    drop = tmp_path / "drop"
    copy_bundle(IMPORT_TEST, drop / "cast17")
    copy_bundle(TSV_ISSUES, drop / "bad18")

    summary = ingest_flow(str(drop), pid, create_missing_taxa=True, settle_seconds=0.2)

    assert json.loads(json.dumps(summary)) == summary
    assert summary["imported"] == ["cast17"] and summary["quarantined"] == ["bad18"]
    assert n_objects(sqlite_instance, pid) == N_OBJECTS
    with sqlite_instance.sessions() as s:
        jobs = {j.params["path"].rsplit("_", 1)[-1]: j
                for j in s.scalars(select(Job).where(Job.project_id == pid))}
    assert jobs["cast17"].state == "done" and jobs["cast17"].result["n_objects"] == N_OBJECTS
    assert jobs["cast17"].flow_run_id is not None
    assert jobs["bad18"].state == "failed" and "object_lat" in jobs["bad18"].error
