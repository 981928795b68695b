"""The `ecotaxa` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IMPORT_CASES

ECOTAXA = str(Path(sys.executable).with_name("ecotaxa"))
COMMANDS = [[], ["init"], ["project"], ["project", "create"], ["project", "list"], ["import"],
            ["features"], ["train"], ["predict"], ["export"], ["serve"], ["demo"],
            ["summary"], ["dwca"], ["ingest"], ["import-recover"], ["taxonomy"],
            ["taxonomy", "export"], ["taxonomy", "import"], ["taxonomy", "rename"],
            ["taxonomy", "merge"], ["taxonomy", "deprecate"], ["taxonomy", "restore"],
            ["project", "reset-predicted"], ["project", "replace-category"],
            ["project", "edit-metadata"], ["project", "delete-objects"], ["project", "delete"],
            ["project", "subset"], ["project", "merge"], ["backbone"], ["backbone", "add"],
            ["backbone", "list"], ["jobs"], ["models"], ["models", "list"], ["models", "show"],
            ["models", "compare"], ["fine-tune"]]


def run_cli(args, home: Path, check=True, prefect_api_url: str | None = None, **env):
    """Runs ``ecotaxa ARGS...`` with ``home`` as its instance.

    With ``prefect_api_url`` its flows run against that Prefect server; without it, as
    for a user who configured none, a command that runs a flow starts its own temporary
    server.
    """
    full_env = {**os.environ, "ECOTAXA_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # A temporary Prefect server needs time on a loaded 2-core machine (the
                # default 20 s is not always enough).
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **env}
    full_env.pop("ECOTAXA_DATABASE_URL", None)
    full_env.pop("PREFECT_API_URL", None)
    if prefect_api_url is not None:
        full_env["PREFECT_API_URL"] = prefect_api_url
    proc = subprocess.run([ECOTAXA, *args], capture_output=True, text=True, env=full_env,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"ecotaxa {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli(prefect_api_url):
    """``run_cli`` whose flows use the session's Prefect server (a temporary server per
    command costs 10-20 s here; ``test_a_flow_command_starts_its_own_prefect_server``
    keeps that path covered)."""
    return functools.partial(run_cli, prefect_api_url=prefect_api_url)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ecotaxa")
def test_every_command_has_help(command, tmp_path):
    proc = run_cli([*command, "--help"], tmp_path)
    assert "Usage:" in proc.stdout
    if command and command[-1] in {"create", "list", "import", "features", "train", "predict",
                                   "export", "demo", "init", "summary", "dwca", "ingest",
                                   "import-recover", "rename", "merge", "deprecate", "restore",
                                   "reset-predicted", "replace-category", "edit-metadata",
                                   "delete-objects", "delete", "subset", "add", "jobs"}:
        assert "--json" in proc.stdout


def test_init_then_project_create_prints_id_and_json(tmp_path):
    home = tmp_path / "home"
    out = json.loads(run_cli(["init", "--admin-email", "boss@lab.org", "--json"], home).stdout)
    assert out["admin_email"] == "boss@lab.org" and out["admin_password"]
    assert (home / "ecotaxa.db").exists()
    first = run_cli(["project", "create", "Zoo 2024", "--instrument", "zooscan"], home).stdout
    assert first.strip() == "1"
    second = json.loads(run_cli(["project", "create", "UVP", "--json"], home).stdout)
    assert second["id"] == 2 and second["title"] == "UVP"
    listed = json.loads(run_cli(["project", "list", "--json"], home).stdout)
    assert [p["title"] for p in listed["projects"]] == ["Zoo 2024", "UVP"]


def test_commands_on_missing_instance_fail_clearly(tmp_path):
    proc = run_cli(["project", "create", "X", "--json"], tmp_path / "nothing", check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"] == "InstanceNotInitialised"
    assert "ecotaxa init" in proc.stderr


def test_a_flow_command_starts_its_own_prefect_server(tmp_path):
    # The one test on a user's default path: no PREFECT_API_URL, so `ecotaxa import` starts
    # a temporary Prefect server (its database in PREFECT_HOME) for its flow. The other
    # flow-running tests use the session's server (the `cli` fixture).
    home = tmp_path / "home"
    run_cli(["init"], home)
    run_cli(["project", "create", "P"], home)
    done = json.loads(run_cli(["import", "1", str(IMPORT_CASES / "import_test"),
                               "--create-missing-taxa", "--create-missing-users", "--json"],
                              home).stdout)
    assert done["n_objects"] == 11 and done["n_samples"] == 2
    assert (home / "prefect" / "prefect.db").exists()


def test_import_through_cli_then_bad_bundle_is_refused_with_location(tmp_path, cli):
    home = tmp_path / "home"
    cli(["init"], home)
    cli(["project", "create", "P"], home)
    refused = cli(["import", "1", str(IMPORT_CASES / "import_test"), "--json"], home,
                  check=False)
    assert refused.returncode == 1
    # Unknown categories and annotators are listed together, with where they appear.
    assert json.loads(refused.stdout)["error"] == "UnmatchedNames"
    assert "ozzeur" in refused.stderr and "Elizandro Rodriguez" in refused.stderr
    users_map = tmp_path / "users.tsv"
    users_map.write_text("name\ttarget\nAdmin4test\tadmin@localhost\n")
    done = json.loads(cli(["import", "1", str(IMPORT_CASES / "import_test"),
                           "--create-missing-taxa", "--users-map", str(users_map),
                           "--create-missing-users", "--json"], home).stdout)
    assert done["n_objects"] == 11 and done["n_samples"] == 2
    assert done["users_created"] == ["elizandro.rodrigues05@gmail.com"]
    bad = tmp_path / "tsv_issues"
    shutil.copytree(IMPORT_CASES / "import_issues" / "tsv_issues", bad)
    proc = cli(["import", "1", str(bad)], home, check=False)
    assert proc.returncode == 1
    assert "ecotaxa_m106_mn01_n3_sml.tsv" in proc.stderr and "line 3" in proc.stderr
    counts = json.loads(cli(["project", "list", "--json"], home).stdout)
    assert counts["projects"][0]["counts"]["total"] == 11
    # The imports ran their flows on the session's server: none started its own.
    assert not (home / "prefect" / "prefect.db").exists()


@pytest.mark.slow
def test_stage_commands_run_their_flows_and_print_json(tmp_path, cli):
    home = tmp_path / "home"
    cli(["init"], home)
    cli(["project", "create", "P", "--instrument", "zooscan"], home)
    cli(["import", "1", str(IMPORT_CASES / "import_test"), "--create-missing-taxa",
         "--create-missing-users"], home)
    feats = json.loads(cli(["features", "1", "--json"], home,
                           ECOTAXA_DEEP_INPUT_SIZE="128").stdout)
    assert feats["feature_sets"]["morpho"]["objects"] == 11
    assert feats["feature_sets"]["deep_effnetlite0"]["objects"] == 11
    again = cli(["features", "1"], home, ECOTAXA_DEEP_INPUT_SIZE="128").stdout
    assert "morpho: 0 objects" in again
    refused = cli(["train", "1"], home, check=False)
    assert refused.returncode == 1 and "no validated object in project 1" in refused.stderr
    refused = cli(["train", "1", "--appear-as", "Copepoda"], home, check=False)
    assert refused.returncode == 1 and "--appear-as needs CATEGORY=TARGET" in refused.stderr
    refused = cli(["train", "1", "--category", "No such thing"], home, check=False)
    assert refused.returncode == 1 and "'No such thing' matches no taxon" in refused.stderr
    _validate_objects(home, ["m106_mn01_n1_sml_409", "m106_mn01_n1_sml_821", "m106_mn01_n2_sml_1",
                             "m106_mn01_n2_sml_1081"])
    trained = json.loads(cli(["train", "1", "--kind", "classic_rf", "--json"], home).stdout)
    (model,) = trained["models"]
    assert model["kind"] == "classic_rf" and trained["best"] == model["model_id"]
    predicted = json.loads(cli(["predict", "1", "--json"], home).stdout)
    # The 7 objects left "predicted" are predicted again; the 4 validated ones are not.
    assert predicted["n_predicted"] == 7 and predicted["model_id"] == model["model_id"]
    exported = json.loads(cli(["export", "1", str(tmp_path / "out"), "--json"], home).stdout)
    assert Path(exported["bundle"]).exists() and exported["n_objects"] == 11
    summary = json.loads(cli(["summary", "1", str(tmp_path / "out"), "--with-predicted",
                              "--json"], home).stdout)
    assert summary["n_units"] == 2 and Path(summary["path"]).exists()
    refused = cli(["dwca", "1", str(tmp_path / "out"), "--json"], home, check=False)
    assert refused.returncode == 1 and "contact" in refused.stderr.lower()
    archive = json.loads(cli(["dwca", "1", str(tmp_path / "out"), "--contact-email",
                              "me@lab.org", "--license", "CC-BY-4.0", "--with-predicted",
                              "--json"], home).stdout)
    assert archive["n_events"] == 2 and Path(archive["path"]).exists()


def _validate_objects(home: Path, orig_ids: list[str]) -> None:
    """What a validator does in the dashboard, done through the core library."""
    from sqlalchemy import select

    from ecotaxa_core.annotation import validate_objects
    from ecotaxa_core.db.models import Object
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.settings import Settings
    from ecotaxa_core.users import first_admin

    inst = Instance.open(Settings(home=home, database_url=""))
    with inst.sessions.begin() as s:
        ids = s.scalars(select(Object.id).where(Object.orig_id.in_(orig_ids))).all()
        validate_objects(s, 1, ids, first_admin(s).id)
    inst.close()


@pytest.mark.slow
def test_taxonomy_travels_between_instances_and_is_edited_from_the_cli(tmp_path, cli):
    a, b = tmp_path / "a", tmp_path / "b"
    cli(["init"], a)
    cli(["project", "create", "P"], a)
    cli(["import", "1", str(IMPORT_CASES / "import_test"), "--create-missing-taxa",
         "--create-missing-users"], a)
    tree = tmp_path / "taxa.tsv"
    exported = json.loads(cli(["taxonomy", "export", str(tree), "--json"], a).stdout)
    # t001, Oncaeidae, Cyclopoida, Biota, other, egg, ozzeur, detritus
    assert exported["n_taxa"] == 8 and len(tree.read_text().splitlines()) == 9
    cli(["init"], b)
    imported = json.loads(cli(["taxonomy", "import", str(tree), "--json"], b).stdout)
    assert imported["created"] == exported["n_taxa"]
    again = tmp_path / "again.tsv"
    cli(["taxonomy", "export", str(again)], b)
    assert again.read_bytes() == tree.read_bytes()
    ozzeur = next(line.split("\t")[0] for line in tree.read_text().splitlines()
                  if "\tozzeur\t" in line)
    renamed = json.loads(cli(["taxonomy", "rename", ozzeur, "Ozzeur sp.", "--json"], b).stdout)
    assert renamed["display_name"] == "Ozzeur sp."
    refused = cli(["taxonomy", "deprecate", "999999"], b, check=False)
    assert refused.returncode == 1 and "999999" in refused.stderr


@pytest.mark.slow
def test_project_subset_then_delete_from_the_cli(tmp_path, cli):
    home = tmp_path / "home"
    cli(["init"], home)
    cli(["project", "create", "P"], home)
    cli(["import", "1", str(IMPORT_CASES / "import_test"), "--create-missing-taxa",
         "--create-missing-users"], home)
    sub = json.loads(cli(["project", "subset", "1", "--title", "half", "--fraction", "0.5",
                          "--json"], home).stdout)
    assert sub["new_project_id"] == 2
    projects = {p["id"]: p for p in json.loads(cli(["project", "list", "--json"],
                                                   home).stdout)["projects"]}
    assert 0 < projects[2]["counts"]["total"] < projects[1]["counts"]["total"] == 11
    refused = cli(["project", "delete", "2"], home, check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    cli(["project", "delete", "2", "--yes"], home)
    left = json.loads(cli(["project", "list", "--json"], home).stdout)["projects"]
    assert [p["id"] for p in left] == [1]


def test_backbone_add_list_and_jobs_from_the_cli(tmp_path, cli):
    from test_features_backbones import MODEL, save_weights

    home = tmp_path / "home"
    cli(["init"], home)
    weights = save_weights(tmp_path / "tiny.pth")
    added = json.loads(cli(["backbone", "add", "tiny", "--model", MODEL, "--weights",
                            str(weights), "--mean", "0.5,0.5,0.5", "--json"], home).stdout)
    assert added["feature_set"] == "deep_tiny" and added["mean"] == [0.5, 0.5, 0.5]
    assert (home / "backbones.toml").exists()
    refused = cli(["backbone", "add", "tiny", "--model", MODEL, "--weights", str(weights)],
                  home, check=False)
    assert refused.returncode == 1 and "registered already" in refused.stderr
    bad = cli(["backbone", "add", "other", "--model", MODEL, "--weights", str(weights),
               "--std", "1,2"], home, check=False)
    assert bad.returncode == 1 and "--std must be three numbers" in bad.stderr
    listed = cli(["backbone", "list"], home).stdout
    assert listed.startswith(f"deep_tiny: timm {MODEL}, {added['n_features']} features")

    assert cli(["jobs"], home).stdout.strip() == "no jobs"
    cli(["project", "create", "P"], home)
    cli(["import", "1", str(IMPORT_CASES / "import_test"), "--create-missing-taxa",
         "--create-missing-users"], home)
    jobs = json.loads(cli(["jobs", "--project", "1", "--json"], home).stdout)["jobs"]
    assert [(j["kind"], j["state"], j["project_id"]) for j in jobs] == [("import", "done", 1)]
    assert jobs[0]["result"]["pixel_size_um_set"] == 10.6
