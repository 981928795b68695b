"""Imports are all or nothing even when killed, and imports of different projects overlap.

A child process imports a bundle of a few hundred real NDSB images and is
killed with SIGKILL in the middle: while it copies images (staging), or after
it has moved files into the vault and written feature rows, before the commit.
Nothing may remain of it once recovery has run, and importing again must work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from conftest import NDSB_TEST_CLASSES, ROOT, extract_ndsb_subset
from ecotaxa_core import import_writer
from ecotaxa_core.db.models import Image
from ecotaxa_core.import_journal import JOURNAL_DIR, recover_interrupted_imports
from ecotaxa_core.importer import import_path
from ecotaxa_core.vault import THUMB_SIZE
from test_import import (IMPORT_TEST, leftovers, new_project, objects_by_orig_id, row_counts,
                         vault_files)

PER_CLASS = 38  # 8 classes: 304 objects


def _write_bundle(folder: Path, images: Path, columns: list[str], start: int = 0,
                  count: int | None = None) -> Path:
    """An EcoTaxa bundle of the NDSB images under ``images`` (validated in their class)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(images.rglob("*.jpg"))[start:None if count is None else start + count]
    rng = np.random.default_rng(0)
    header = ["object_id", "img_file_name", "object_annotation_status",
              "object_annotation_category"] + [f"object_{c}" for c in columns]
    lines = ["\t".join(header), "\t".join(["[t]"] * 4 + ["[f]"] * len(columns))]
    for f in files:
        inside = folder / "images" / f.parent.name / f.name
        inside.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, inside)  # the images of a bundle are inside it
        values = [f"{rng.uniform(10, 500):.3f}" for _ in columns]
        lines.append("\t".join([f"ndsb_{f.stem}", inside.relative_to(folder).as_posix(),
                                "validated", f.parent.name] + values))
    (folder / "ecotaxa_ndsb.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def ndsb_images(tmp_path_factory) -> Path:
    return extract_ndsb_subset(tmp_path_factory.mktemp("crash") / "images",
                               classes=NDSB_TEST_CLASSES, per_class=PER_CLASS)


_CHILD = """
import sys, time
from pathlib import Path
from ecotaxa_core.importer import import_path
from ecotaxa_core.vault import THUMB_SIZE
from ecotaxa_core.instance import Instance
from ecotaxa_core.settings import Settings

home, url, project_id, source, marker, when = sys.argv[1:7]
inst = Instance.open(Settings(home=home, database_url=url))

def hold():
    Path(marker).write_text("holding")
    time.sleep(300)

if when == "features":
    # Stop once the feature rows are written and every image is staged (on PostgreSQL
    # the object and feature rows go in while the last images are staged), before the
    # image rows: the vault files are in place, the transaction is not committed.
    from ecotaxa_core import import_writer
    def hold_before_image_rows(*args, **kwargs):
        hold()
    import_writer._insert_images = hold_before_image_rows

def progress(done, total):
    # Some images are checked and staged, not all.
    if when == "staging" and total // 2 < done < total:
        hold()

import_path(inst, int(project_id), source, user_id=1, create_missing_taxa=True,
            progress=progress)
"""


def _start_child(inst, project_id: int, source: Path, marker: Path, when: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(inst.settings.home), inst.settings.database_url,
         str(project_id), str(source), str(marker), when], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the import ended before the kill point: {proc.stdout.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the import never reached the kill point")
        time.sleep(0.05)
    return proc


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


def _journals(inst) -> list[str]:
    folder = inst.settings.work_dir / JOURNAL_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _consistent(inst, project_id: int) -> None:
    """Every vault file belongs to an image row and every feature row to an object."""
    with inst.sessions() as s:
        paths = {p for row in s.execute(select(Image.file_path, Image.thumb_path)) for p in row
                 if p is not None}
    assert vault_files(inst) == paths
    ids = {o.id for o in objects_by_orig_id(inst, project_id).values()}
    if inst.features.exists(project_id, "tsv"):
        assert set(inst.features.object_ids(project_id, "tsv").tolist()) <= ids


def test_killed_while_copying_images_then_recovered_by_the_next_import(instance, ndsb_images,
                                                                       tmp_path):
    inst = instance
    bundle = _write_bundle(tmp_path / "bundle", ndsb_images, ["area"])
    pid = new_project(inst)
    before, files = row_counts(inst), vault_files(inst)
    proc = _start_child(inst, pid, bundle, tmp_path / "marker", "staging")
    try:
        # While it runs, recovery leaves it alone: its project's lock is held.
        (journal,) = _journals(inst)
        report = recover_interrupted_imports(inst)
        assert report.busy == [journal.split("_", 2)[2][:-len(".json")]]
        assert report.undone == [] and _journals(inst) == [journal]
    finally:
        _kill(proc)
    # Images went to the run's own vault folders; the journal names them.
    run_id = journal.split("_", 2)[2][:-len(".json")]
    staged = {p for p in vault_files(inst) - files}
    assert staged, "the kill came before any image was copied"
    assert all(p.startswith((f"images/run_{run_id}/", f"thumbs/run_{run_id}/")) for p in staged)
    assert row_counts(inst) == before

    result = import_path(inst, pid, bundle, user_id=1, create_missing_taxa=True)
    assert (result.n_objects, result.n_images) == (8 * PER_CLASS, 8 * PER_CLASS)
    assert _journals(inst) == [] and leftovers(inst) == []
    assert not (inst.vault.root / "images" / f"run_{run_id}").exists()
    assert inst.features.n_rows(pid, "tsv") == 8 * PER_CLASS
    _consistent(inst, pid)


def test_killed_after_vault_and_feature_writes_leaves_nothing_once_recovered(
        instance, ndsb_images, tmp_path):
    inst = instance
    pid = new_project(inst)
    # The project holds a few objects with one numeric column; the killed import brings a
    # second one, so it rewrites the feature set (the old one is moved aside first).
    first = _write_bundle(tmp_path / "first", ndsb_images, ["area"], count=5)
    import_path(inst, pid, first, user_id=1, create_missing_taxa=True)
    features_before = inst.features.read(pid, "tsv")
    before, files = row_counts(inst), vault_files(inst)
    bundle = _write_bundle(tmp_path / "bundle", ndsb_images, ["area", "perim"], start=5)
    proc = _start_child(inst, pid, bundle, tmp_path / "marker", "features")
    _kill(proc)
    # The dead import left vault files, a rewritten feature set and the old one aside ...
    orphans = vault_files(inst) - files
    added = sorted(ndsb_images.rglob("*.jpg"))[5:]
    big = sum(1 for f in added if max(PILImage.open(f).size) > THUMB_SIZE)  # with a thumbnail
    assert len(orphans) == len(added) + big and 0 < big < len(added)
    assert inst.features.feature_names(pid, "tsv") == ["area", "perim"]
    assert len(list(inst.features.store_path(pid, "tsv").parent.glob(".tsv.zarr.before-*"))) == 1
    # ... but no row: its transaction never committed.
    assert row_counts(inst) == before

    report = recover_interrupted_imports(inst)  # what `ecotaxa import-recover` runs
    assert len(report.undone) == 1 and report.vault_files_removed == len(orphans)
    assert vault_files(inst) == files and _journals(inst) == [] and leftovers(inst) == []
    after = inst.features.read(pid, "tsv")
    assert after.feature_names == ["area"]
    np.testing.assert_array_equal(after.object_ids, features_before.object_ids)
    np.testing.assert_array_equal(after.values, features_before.values)
    assert [p.name for p in inst.features.store_path(pid, "tsv").parent.iterdir()] == ["tsv.zarr"]

    result = import_path(inst, pid, bundle, user_id=1, create_missing_taxa=True)
    assert result.n_objects == 8 * PER_CLASS - 5
    assert inst.features.feature_names(pid, "tsv") == ["area", "perim"]
    assert inst.features.n_rows(pid, "tsv") == 8 * PER_CLASS
    _consistent(inst, pid)


def test_a_failure_after_the_vault_files_are_moved_undoes_everything(instance, monkeypatch):
    inst = instance
    pid = new_project(inst)
    before, files = row_counts(inst), vault_files(inst)
    insert_images = import_writer._insert_images

    def write_then_fail(*args, **kwargs):  # after the feature rows and the image rows
        insert_images(*args, **kwargs)
        assert inst.features.exists(pid, "tsv")
        stored = vault_files(inst)
        # 11 images (8 files) are in place, and a thumbnail for those over THUMB_SIZE pixels.
        assert len([p for p in stored if p.startswith("images/")]) == 11
        assert 0 < len([p for p in stored if p.startswith("thumbs/")]) < 11
        raise RuntimeError("injected failure before the commit")

    monkeypatch.setattr(import_writer, "_insert_images", write_then_fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        import_path(inst, pid, IMPORT_TEST, user_id=1, create_missing_taxa=True,
                    create_missing_users=True)
    assert row_counts(inst) == before and vault_files(inst) == files
    assert not inst.features.exists(pid, "tsv")
    assert _journals(inst) == [] and leftovers(inst) == []


def _in_threads(*calls):
    """Run the calls at once, one thread each; their results (or exceptions) in order."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as e:  # reported by the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_two_projects_import_at_the_same_time(instance, ndsb_images, tmp_path):
    inst = instance
    a, b = new_project(inst, "A"), new_project(inst, "B")
    bundle = _write_bundle(tmp_path / "bundle", ndsb_images, ["area"])
    events: list[tuple[str, int]] = []

    def run(pid, name):
        return import_path(inst, pid, bundle, user_id=1, create_missing_taxa=True,
                           progress=lambda done, total: events.append((name, done)))

    ra, rb = _in_threads(lambda: run(a, "a"), lambda: run(b, "b"))
    assert not isinstance(ra, BaseException), ra
    assert not isinstance(rb, BaseException), rb
    assert ra.n_objects == rb.n_objects == 8 * PER_CLASS
    # They overlapped: each one progressed before the other one ended.
    names = [n for n, _ in events]
    assert names.index("b") < len(names) - 1 - names[::-1].index("a")
    assert names.index("a") < len(names) - 1 - names[::-1].index("b")
    for pid in (a, b):
        assert inst.features.n_rows(pid, "tsv") == 8 * PER_CLASS
        _consistent(inst, pid)
    assert leftovers(inst) == []


def test_imports_of_one_project_take_turns(instance):
    inst = instance
    pid = new_project(inst)

    def run():
        return import_path(inst, pid, IMPORT_TEST, user_id=1, create_missing_taxa=True,
                           create_missing_users=True)

    results = _in_threads(run, run)
    assert not any(isinstance(r, BaseException) for r in results), results
    # One imported everything; the other, once the lock was free, found every file loaded.
    assert sorted(r.n_objects for r in results) == [0, 11]
    assert sorted(len(r.files_skipped) for r in results) == [0, 2]
    assert row_counts(inst, pid)["objects"] == 11
