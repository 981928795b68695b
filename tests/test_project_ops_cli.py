"""Project operations by filter through the ``ecotaxa project`` commands (in process)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ecotaxa_cli.main import app
from ecotaxa_core.db.models import Job, Object
from test_project_ops import _files, make_project


@pytest.fixture
def cli(sqlite_instance, prefect_server, monkeypatch):
    """Runs ``ecotaxa ARGS... --json`` on the test instance; returns (exit code, JSON out)."""
    monkeypatch.setenv("ECOTAXA_HOME", str(sqlite_instance.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", sqlite_instance.settings.database_url)
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [*map(str, args), "--json"])
        return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])

    return run


def _objects(inst, project_id):
    with inst.sessions() as s:
        return {o.orig_id: (o.status, o.taxon_id) for o in s.scalars(
            select(Object).where(Object.project_id == project_id))}


def test_filtered_operations_from_the_cli(cli, sqlite_instance, ndsb_subset):
    inst = sqlite_instance
    pid, ids, taxa = make_project(inst, ndsb_subset, n=12)
    # Objects i: sample s1 when i is even, predicted when i % 3 == 2, taxon taxa[i % 3], area i.
    code, sub = cli("project", "subset", pid, "--title", "s1 big", "--sample", "s1",
                    "--where", "object_area>=4", "--status", "validated")
    assert code == 0, sub
    assert sorted(_objects(inst, sub["new_project_id"])) == ["o10", "o4", "o6"]
    assert sub["filter"] == {"statuses": ["validated"], "samples": ["s1"],
                             "conditions": ["area >= 4.0"]}
    code, half = cli("project", "subset", pid, "--title", "half", "--fraction", "0.5",
                     "--taxon", taxa[0], "--taxon", taxa[1])
    assert code == 0 and half["n_objects"] == 4  # ceil(4 / 2) of each of two categories

    code, out = cli("project", "reset-predicted", pid, "--taxon", taxa[0], "--depth-max", 5)
    assert (code, out["n_changed"]) == (0, 0)  # no object has a depth: none is kept
    code, out = cli("project", "reset-predicted", pid, "--taxon", taxa[0], "--where", "area<7")
    assert (code, out["n_changed"]) == (0, 3)  # o0, o3, o6
    assert [_objects(inst, pid)[f"o{i}"][0] for i in (0, 3, 6, 9)] == \
        ["predicted", "predicted", "predicted", "validated"]

    code, out = cli("project", "replace-category", pid, taxa[1], taxa[2], "--sample", "s2",
                    "--status", "validated")
    assert (code, out["n_changed"]) == (0, 2)  # o1 and o7 (o4, o10 are in s1)
    assert [_objects(inst, pid)[f"o{i}"][1] for i in (1, 4, 7, 10)] == \
        [taxa[2], taxa[1], taxa[2], taxa[1]]

    gone = _files(inst, [ids[11]])
    code, out = cli("project", "delete-objects", pid, "--status", "predicted",
                    "--orig-id-prefix", "o1")
    assert (code, out["n_deleted"]) == (0, 1)  # o11 (o1 and o10 are validated)
    assert "o11" not in _objects(inst, pid) and not any(p.exists() for p in gone)
    with inst.sessions() as s:
        job = s.scalars(select(Job).where(Job.kind == "project_delete_objects")).one()
        assert job.result["filter"] == {"statuses": ["predicted"], "orig_id_prefix": "o1"}


def test_cli_refuses_bad_or_missing_filters(cli, sqlite_instance, ndsb_subset):
    inst = sqlite_instance
    pid, _, taxa = make_project(inst, ndsb_subset, n=6)
    before = _objects(inst, pid)
    code, out = cli("project", "delete-objects", pid)
    assert code == 1 and "give the object ids or a filter" in out["message"]
    code, out = cli("project", "delete-objects", pid, "--status", "checked")
    assert (code, out["error"]) == (1, "InvalidFilter")
    assert out["message"] == ("filter statuses: unknown status ['checked']; use unclassified, "
                              "predicted, dubious, validated")
    code, out = cli("project", "subset", pid, "--title", "x", "--where", "esd>2")
    assert (code, out["error"]) == (1, "InvalidFilter") and "'esd'" in out["message"]
    code, out = cli("project", "reset-predicted", pid, "--depth-min", 9, "--depth-max", 1)
    assert code == 1 and "depth_min: 9.0 is above depth_max 1.0" in out["message"]
    code, out = cli("project", "replace-category", pid, taxa[0], taxa[1], "--sample", "s9")
    assert code == 1 and "no sample ['s9']" in out["message"]
    assert _objects(inst, pid) == before
    with inst.sessions() as s:
        failed = s.scalars(select(Job.kind).where(Job.state == "failed").order_by(Job.id)).all()
    assert failed == ["project_delete_objects", "project_delete_objects", "project_subset",
                      "project_reset", "project_replace_category"]


def test_cli_merge_lists_the_clashes(cli, sqlite_instance, ndsb_subset):
    from ecotaxa_core.db.models import Sample

    inst = sqlite_instance
    t_id, _, taxa = make_project(inst, ndsb_subset, title="t", n=2)
    s_id, _, _ = make_project(inst, ndsb_subset, title="s", prefix="src", n=2, taxa=taxa)
    with inst.sessions.begin() as s:
        for sample in s.scalars(select(Sample).where(Sample.project_id == s_id)):
            sample.lon = -20.0
    code, out = cli("project", "merge", t_id, s_id)
    assert (code, out["error"]) == (1, "MergeRefused")
    assert "sample 's1': lon 20.0 vs -20.0; sample 's2': lon 20.0 vs -20.0" in out["message"]
