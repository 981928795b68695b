"""The model registry for people: confusion plot, bulk-validation counts, list / show / compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select, update

from ecotaxa_core.annotation import validate_objects
from ecotaxa_core.db.models import Object, TrainedModel
from ecotaxa_core.errors import ModelNotFound, ProjectNotFound
from ecotaxa_core.learn import predict_project, save_model, train_model
from ecotaxa_core.learn.confusion_plot import PNG_SIGNATURE
from ecotaxa_core.learn.registry import (CONFUSION_PNG, compare_models, list_model_summaries,
                                         model_report)
from ecotaxa_core.learn.thresholds import (bulk_validation_candidates, bulk_validation_select,
                                           model_thresholds)
from learn_data import cluster_features, make_project, write_feature_set


def _overlapping_morpho(inst, sp, separation: float = 1.0) -> None:
    """Clusters close enough that the scores spread and some fall below the thresholds."""
    ids, X = cluster_features(sp.truth, 4, separation=separation)
    inst.features.append(sp.project_id, "morpho", ids, X, [f"f{j}" for j in range(4)])


# -- the confusion matrix plot ----------------------------------------------------------------

def test_training_writes_a_confusion_matrix_png_with_the_model(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(30, 30, 3))
    write_feature_set(inst, sp, "morpho", 5)
    row = train_model(inst, sp.project_id, "classic_rf", n_jobs=1)
    folder = inst.models_dir / str(row.id)
    assert sorted(p.name for p in folder.iterdir()) == [CONFUSION_PNG, "model.joblib",
                                                       "model.json"]
    png = folder / CONFUSION_PNG
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) >= 400
    # detritus (3 objects) stays in training only: its row is in the plotted matrix.
    assert row.metrics["confusion_matrix"]["labels"] == ["Copepoda", "Chaetognatha", "detritus"]


def test_no_plot_without_held_out_evaluation(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(30, 3, 0))
    write_feature_set(inst, sp, "morpho", 5)
    row = train_model(inst, sp.project_id, "classic_rf", n_jobs=1)
    assert row.metrics["evaluation"] == "none"
    assert not (inst.models_dir / str(row.id) / CONFUSION_PNG).exists()


def test_a_plot_that_fails_leaves_no_model_behind(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(5, 5, 0))
    pipe = LogisticRegression().fit(np.arange(20.0).reshape(10, 2), [1] * 5 + [2] * 5)
    broken = {"labels": ["x", "y"], "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    with pytest.raises(ValueError, match="square matrix matching its 2 labels"):
        save_model(inst, sp.project_id, name="broken plot", kind="deep_logreg", pipeline=pipe,
                   feature_sets=["morpho"], feature_names=["morpho:a", "morpho:b"],
                   class_names={1: "x", 2: "y"}, learning_set_definition={}, parameters={},
                   metrics={"confusion_matrix": broken})
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TrainedModel)) == 0
    assert not any(inst.models_dir.iterdir())


# -- bulk validation --------------------------------------------------------------------------

def _expected_above(session, project_id, model_id, limits):
    """Ids of predicted objects by the model at or above their category's threshold, in Python."""
    rows = session.execute(select(Object.id, Object.status, Object.taxon_id, Object.score,
                                  Object.model_id).where(Object.project_id == project_id)).all()
    return sorted(r.id for r in rows
                  if r.status == "predicted" and r.model_id == model_id
                  and r.taxon_id in limits and r.score >= limits[r.taxon_id])


def test_bulk_validation_candidates_count_current_predictions_only(instance, admin):
    sp = make_project(instance, n_validated=(40, 40, 40), n_unclassified=30, n_dubious=3)
    _overlapping_morpho(instance, sp)
    row = train_model(instance, sp.project_id, "deep_logreg", feature_sets=["morpho"])
    thresholds = model_thresholds(row.metrics)
    limits = {t: v for t, (v, _) in thresholds.items()}
    assert len(limits) == 3  # every category reaches 95 % on the held-out part

    summary = predict_project(instance, sp.project_id, row.id)
    with instance.sessions() as s:
        expected = _expected_above(s, sp.project_id, row.id, limits)
        # The scores spread: some predictions are above their threshold, some below.
        assert 0 < len(expected) < 30
        assert summary["n_above_threshold"] == len(expected)
        found = bulk_validation_candidates(s, sp.project_id, row.id)
        assert found.n_predicted == 30 and found.n_above == len(expected)
        assert found.target_precision == 0.95 and found.reason is None
        per_taxon = {c.taxon_id: c for c in found.categories}
        taxon_of = dict(s.execute(select(Object.id, Object.taxon_id)
                                  .where(Object.project_id == sp.project_id)).all())
        for taxon, category in per_taxon.items():
            assert category.threshold == limits[taxon]
            assert category.n_above == sum(taxon_of[i] == taxon for i in expected)
            assert category.n_predicted == s.scalar(
                select(func.count()).where(Object.project_id == sp.project_id,
                                           Object.status == "predicted", Object.taxon_id == taxon))
        assert [c.n_above for c in found.categories] == sorted(
            (c.n_above for c in found.categories), reverse=True)
        assert sorted(s.scalars(bulk_validation_select(s, sp.project_id, row.id))) == expected
        json.dumps(found.to_dict())

    # Human decisions are never candidates, even where a score and the model id remain
    # (as an imported or older row may keep them).
    validated, dubious, kept = expected[0], expected[1], expected[2:]
    with instance.sessions.begin() as s:
        validate_objects(s, sp.project_id, [validated], admin.id)
        s.execute(update(Object).where(Object.id == dubious).values(status="dubious"))
    with instance.sessions() as s:
        assert s.get(Object, dubious).model_id == row.id and s.get(Object, dubious).score
        found = bulk_validation_candidates(s, sp.project_id, row.id)
        assert found.n_above == len(kept) and found.n_predicted == 28
        assert sorted(s.scalars(bulk_validation_select(s, sp.project_id, row.id))) == kept
        # Expected errors: the held-out error rate of each category, weighted by its count.
        assert found.expected_error_rate == pytest.approx(
            sum(c.n_above * (1 - c.held_out_precision) for c in found.categories) / len(kept))
        # Another project's objects, or another model's, are not counted.
        other = make_project(instance, title="other", n_validated=(0, 0, 0))
        assert bulk_validation_candidates(s, other.project_id, row.id).n_above == 0
        assert "no object currently predicted by model" in bulk_validation_candidates(
            s, other.project_id, row.id).reason
        with pytest.raises(ModelNotFound, match="no trained model with id 999"):
            bulk_validation_candidates(s, sp.project_id, 999)


def test_a_model_without_thresholds_covers_nothing_and_says_why(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(30, 3, 0), n_unclassified=6)
    write_feature_set(inst, sp, "morpho", 5)
    row = train_model(inst, sp.project_id, "classic_rf", n_jobs=1)
    summary = predict_project(inst, sp.project_id, row.id)
    assert summary["n_predicted"] == 6 and summary["n_above_threshold"] is None
    with inst.sessions() as s:
        found = bulk_validation_candidates(s, sp.project_id, row.id)
        assert found.n_above == 0 and found.n_predicted == 6
        assert found.reason == (f"model {row.id} has no score threshold: it was not evaluated "
                                "on a held-out part")
        assert s.scalars(bulk_validation_select(s, sp.project_id, row.id)).all() == []


# -- listing, comparison, report --------------------------------------------------------------

def _two_models(inst, user_id=None):
    sp = make_project(inst, n_validated=(30, 30, 30), n_unclassified=4)
    write_feature_set(inst, sp, "morpho", 5)
    rng = np.random.default_rng(0)
    ids = np.array(sorted(sp.truth))
    inst.features.append(sp.project_id, "tsv", ids, rng.normal(size=(len(ids), 3)),
                         ["a", "b", "c"])
    good = train_model(inst, sp.project_id, "classic_rf", feature_sets=["morpho"], n_jobs=1,
                       user_id=user_id)
    noise = train_model(inst, sp.project_id, "deep_logreg", feature_sets=["tsv"])
    return sp, good, noise


def test_summaries_list_and_compare(instance, admin):
    sp, good, noise = _two_models(instance, admin.id)
    with instance.sessions() as s:
        listed = list_model_summaries(s, sp.project_id)
        assert [m["id"] for m in listed] == [noise.id, good.id]  # newest first
        g = listed[1]
        assert (g["kind"], g["feature_sets"], g["created_by"]) == ("classic_rf", ["morpho"],
                                                                  admin.email)
        assert (g["n_objects"], g["n_categories"], g["n_test"]) == (90, 3, 18)
        assert g["accuracy"] == good.metrics["accuracy"] and g["accuracy"] > 0.9
        assert g["log_loss"] == good.metrics["log_loss"]
        assert g["plankton_precision"] == good.metrics["plankton_weighted_precision"]
        assert g["plankton_recall"] == good.metrics["plankton_weighted_recall"]
        assert g["fit_seconds"] == good.metrics["final_fit_seconds"]
        assert g["coverage"] == good.metrics["thresholds"]["fraction_bulk_validatable"]
        assert g["target_precision"] == 0.95
        assert listed[0]["created_by"] is None
        json.dumps(listed)

        compared = compare_models(s, [good.id, noise.id])
        assert [m["id"] for m in compared["models"]] == [good.id, noise.id]
        assert compared["best"]["accuracy"] == good.id
        assert compared["best"]["log_loss"] == good.id  # lower is better
        assert compared["projects"] == [sp.project_id]
        with pytest.raises(ModelNotFound, match="no trained model with id 998, 999"):
            compare_models(s, [good.id, 998, 999])
        with pytest.raises(ProjectNotFound):
            list_model_summaries(s, 4321)


def test_model_report_sorts_categories_by_support_and_points_at_the_plot(sqlite_instance):
    inst = sqlite_instance
    sp = make_project(inst, n_validated=(20, 50, 30))
    write_feature_set(inst, sp, "morpho", 5)
    row = train_model(inst, sp.project_id, "classic_rf", n_jobs=1)
    with inst.sessions() as s:
        report = model_report(s, inst.models_dir, row.id)
        with pytest.raises(ModelNotFound, match="no trained model with id 777"):
            model_report(s, inst.models_dir, 777)
    assert [c["category"] for c in report["per_class"]] == ["Chaetognatha", "detritus",
                                                           "Copepoda"]
    assert [c["support"] for c in report["per_class"]] == [10, 6, 4]
    by_name = {c["category"]: c for c in report["per_class"]}
    for name, t in row.metrics["thresholds"]["per_class"].items():
        assert by_name[name]["threshold"] == t["threshold"]
        assert by_name[name]["threshold_reason"] == t["reason"]
    # Copepoda has 4 held-out objects: fewer than the 5 a threshold needs.
    assert by_name["Copepoda"]["threshold"] is None
    assert "at least 5 needed" in by_name["Copepoda"]["threshold_reason"]
    assert report["confusion_matrix_png"] == str(inst.models_dir / str(row.id) / CONFUSION_PNG)
    assert report["thresholds"]["target_precision"] == 0.95
    assert report["metrics"]["accuracy"] == row.metrics["accuracy"]
    assert "per_class" not in report["metrics"]
    json.dumps(report)


# -- the command line -------------------------------------------------------------------------

def test_models_list_show_compare_from_the_cli(tmp_path):
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.settings import Settings
    from test_cli import run_cli

    home = tmp_path / "home"
    inst = init_instance(Settings(home=home), ADMIN_EMAIL, ADMIN_PASSWORD)
    try:
        sp, good, noise = _two_models(inst)
    finally:
        inst.close()

    listed = json.loads(run_cli(["models", "list", str(sp.project_id), "--json"], home).stdout)
    assert [m["id"] for m in listed["models"]] == [noise.id, good.id]
    assert listed["models"][1]["accuracy"] == good.metrics["accuracy"]
    table = run_cli(["models", "list", str(sp.project_id)], home).stdout.splitlines()
    assert table[0].split()[:3] == ["id", "kind", "cats"] and len(table) == 3
    assert table[2].split()[:3] == [str(good.id), "classic_rf", "3"]

    shown = json.loads(run_cli(["models", "show", str(good.id), "--json"], home).stdout)
    assert shown["summary"]["id"] == good.id
    assert shown["confusion_matrix_png"].endswith(f"{good.id}/{CONFUSION_PNG}")
    human = run_cli(["models", "show", str(good.id)], home).stdout
    assert f"model {good.id} of project {sp.project_id}" in human
    assert "score thresholds for precision 0.95" in human
    assert f"confusion matrix plot: {shown['confusion_matrix_png']}" in human

    compared = json.loads(run_cli(["models", "compare", str(good.id), str(noise.id), "--json"],
                                  home).stdout)
    assert [m["id"] for m in compared["models"]] == [good.id, noise.id]
    assert compared["best"]["accuracy"] == good.id
    assert f"best: accuracy {good.id}" in run_cli(
        ["models", "compare", str(good.id), str(noise.id)], home).stdout

    missing = run_cli(["models", "show", "999", "--json"], home, check=False)
    assert missing.returncode == 1
    assert json.loads(missing.stdout) == {"error": "ModelNotFound",
                                          "message": "no trained model with id 999"}
    bad = run_cli(["models", "compare", str(good.id), "998"], home, check=False)
    assert bad.returncode == 1 and "no trained model with id 998" in bad.stderr
    nothing = run_cli(["models", "list", "42"], home, check=False)
    assert nothing.returncode == 1 and "42" in nothing.stderr


def test_the_predict_flow_reports_the_objects_above_threshold(sqlite_instance, prefect_server,
                                                              monkeypatch):
    from flows.predict import predict_flow

    inst = sqlite_instance
    for name, value in {"ECOTAXA_HOME": str(inst.settings.home),
                        "ECOTAXA_DATABASE_URL": inst.settings.database_url,
                        "ECOTAXA_DASK_N_WORKERS": "1", "ECOTAXA_DASK_THREADS_PER_WORKER": "1",
                        "ECOTAXA_PREDICT_CHUNK_SIZE": "8"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ECOTAXA_DASK_SCHEDULER_ADDRESS", raising=False)
    sp = make_project(inst, n_validated=(40, 40, 40), n_unclassified=20)
    _overlapping_morpho(inst, sp)
    row = train_model(inst, sp.project_id, "deep_logreg", feature_sets=["morpho"])
    summary = predict_flow(project_id=sp.project_id, model_id=row.id)
    limits = {t: v for t, (v, _) in model_thresholds(row.metrics).items()}
    with inst.sessions() as s:
        expected = _expected_above(s, sp.project_id, row.id, limits)
    assert summary["n_predicted"] == 20 and 0 < len(expected) < 20
    assert summary["n_above_threshold"] == len(expected)
