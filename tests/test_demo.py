"""The main job end to end: `ecotaxa demo` on the bundled sample, as a user runs it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from test_cli import run_cli


@pytest.mark.slow
def test_demo_runs_the_whole_loop_and_reports_quality(tmp_path):
    home = tmp_path / "home"
    proc = run_cli(["demo", "--json"], home, ECOTAXA_DEEP_INPUT_SIZE="128")
    r = json.loads(proc.stdout)
    assert r["n_objects"] == 1200
    kinds = {m["kind"]: m for m in r["models"]}
    # The automatic choice: the best candidate and EcoTaxa's baseline beside it.
    assert set(kinds) == {"classic_rf", "deep_logreg_rf"}
    # 12 balanced classes: chance is 0.08; real features do far better.
    assert kinds["classic_rf"]["accuracy"] > 0.4
    assert kinds["deep_logreg_rf"]["accuracy"] > 0.7
    assert r["n_unvalidated"] == 360 and r["prediction_accuracy"] > 0.6
    bundle = Path(r["export_bundle"])
    with zipfile.ZipFile(bundle) as z:
        assert sum(n.endswith(".jpg") for n in z.namelist()) == 1200
    assert Path(r["export_counts"]).exists()
    eng = create_engine(f"sqlite:///{home / 'ecotaxa.db'}")
    with eng.connect() as c:
        statuses = dict(c.execute(text("select status, count(*) from objects group by status")).all())
        # Validated objects stay validated; every other object got a prediction.
        assert statuses == {"validated": 840, "predicted": 360}
        n_top = c.execute(text("select count(*) from objects where status='predicted' "
                               "and top_predictions is not null")).scalar()
        assert n_top == 360
        jobs = dict(c.execute(text("select kind, state from jobs")).all())
        assert jobs.get("import") == "done" and jobs.get("export") == "done"
    eng.dispose()
    # The human summary says where things are and how to open the dashboard.
    human = run_cli(["project", "list"], home).stdout
    assert "1200 objects" in human
