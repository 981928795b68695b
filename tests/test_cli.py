"""The `ecotaxa` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

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
            ["features"], ["train"], ["predict"], ["export"], ["serve"], ["demo"]]


def run_cli(args, home: Path, check=True, **env):
    full_env = {**os.environ, "ECOTAXA_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}
    full_env.pop("ECOTAXA_DATABASE_URL", None)
    full_env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([ECOTAXA, *args], capture_output=True, text=True, env=full_env,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"ecotaxa {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ecotaxa")
def test_every_command_has_help(command, tmp_path):
    proc = run_cli([*command, "--help"], tmp_path)
    assert "Usage:" in proc.stdout
    if command and command[-1] in {"create", "list", "import", "features", "train", "predict",
                                   "export", "demo", "init"}:
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


def test_import_through_cli_then_bad_bundle_is_refused_with_location(tmp_path):
    home = tmp_path / "home"
    run_cli(["init"], home)
    run_cli(["project", "create", "P"], home)
    refused = run_cli(["import", "1", str(IMPORT_CASES / "import_test"), "--json"], home,
                      check=False)
    assert refused.returncode == 1
    assert "ozzeur" in refused.stderr and json.loads(refused.stdout)["error"] == "UnknownCategories"
    done = json.loads(run_cli(["import", "1", str(IMPORT_CASES / "import_test"),
                               "--create-missing-taxa", "--json"], home).stdout)
    assert done["n_objects"] == 11 and done["n_samples"] == 2
    bad = tmp_path / "tsv_issues"
    shutil.copytree(IMPORT_CASES / "import_issues" / "tsv_issues", bad)
    proc = run_cli(["import", "1", str(bad)], home, check=False)
    assert proc.returncode == 1
    assert "ecotaxa_m106_mn01_n3_sml.tsv" in proc.stderr and "line 3" in proc.stderr
    counts = json.loads(run_cli(["project", "list", "--json"], home).stdout)
    assert counts["projects"][0]["counts"]["total"] == 11
