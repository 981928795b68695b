"""The training and prediction flows, end to end: real Prefect API, real Dask LocalCluster."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from ecotaxa_core.db.models import Job, Object
from ecotaxa_core.learn import get_model


@pytest.fixture
def flow_env(sqlite_instance, prefect_server, monkeypatch):
    inst = sqlite_instance
    monkeypatch.setenv("ECOTAXA_HOME", str(inst.settings.home))
    monkeypatch.setenv("ECOTAXA_DATABASE_URL", inst.settings.database_url)
    monkeypatch.setenv("ECOTAXA_DASK_N_WORKERS", "1")
    monkeypatch.setenv("ECOTAXA_DASK_THREADS_PER_WORKER", "2")
    monkeypatch.setenv("ECOTAXA_CHUNK_SIZE", "7")
    monkeypatch.setenv("ECOTAXA_PREDICT_CHUNK_SIZE", "7")
    monkeypatch.delenv("ECOTAXA_DASK_SCHEDULER_ADDRESS", raising=False)
    return inst


def test_train_then_predict_flows(flow_env):
    from flows.predict import predict_flow
    from flows.train import train_flow
    from learn_data import make_project, write_feature_set

    inst = flow_env
    sp = make_project(inst, n_validated=(25, 25, 25), n_unclassified=20, n_dubious=2,
                      n_predicted=3)
    write_feature_set(inst, sp, "morpho", 5)
    write_feature_set(inst, sp, "deep_effnetlite0", 24, seed=9)

    trained = train_flow(project_id=sp.project_id, candidates=["classic_rf", "deep_logreg"])
    json.dumps(trained)
    assert [m["kind"] for m in trained["models"]] == ["classic_rf", "deep_logreg"]
    assert [m["feature_sets"] for m in trained["models"]] == [["morpho"], ["deep_effnetlite0"]]
    assert trained["skipped"] == [] and {m["role"] for m in trained["models"]} == {"asked"}
    for m in trained["models"]:
        assert m["metrics"]["accuracy"] > 0.9 and m["metrics"]["n_test"] == 15
    best = max(trained["models"], key=lambda m: (m["metrics"]["accuracy"], m["model_id"]))
    assert trained["best"] == best["model_id"]

    predicted = predict_flow(project_id=sp.project_id)
    json.dumps(predicted)
    assert predicted["model_id"] == trained["best"]
    assert (predicted["n_predictable"], predicted["n_predicted"], predicted["n_chunks"]) == (23, 23, 4)
    assert predicted["objects_per_second"] > 0
    with inst.sessions() as s:
        objs = {o.id: o for o in s.scalars(select(Object).where(Object.project_id == sp.project_id))}
        for i in sp.ids_with("unclassified") + sp.ids_with("predicted"):
            assert (objs[i].status, objs[i].taxon_id, objs[i].model_id) == (
                "predicted", sp.truth[i], trained["best"])
            assert len(objs[i].top_predictions) == 3
        for i in sp.ids_with("dubious"):
            assert objs[i].status == "dubious" and objs[i].model_id is None
        jobs = s.scalars(select(Job).where(Job.project_id == sp.project_id).order_by(Job.id)).all()
        assert [(j.kind, j.state) for j in jobs] == [("train", "done"), ("predict", "done")]
        assert get_model(s, trained["best"]).project_id == sp.project_id

    # The run published its progress (a Prefect artifact), as the project page reads it.
    from dashboards.flow_runs import StartedRun, run_states

    [run] = run_states([StartedRun(jobs[1].flow_run_id, "predict run", "predict", "Running")])
    assert run.state == "Completed" and run.progress == 100.0
    assert run.progress_text.startswith("23 of 23 objects (100 %), ")


def test_train_flow_skips_kinds_without_features_and_predict_flow_takes_a_model(flow_env):
    from flows.predict import predict_flow
    from flows.train import train_flow
    from learn_data import make_project, write_feature_set

    inst = flow_env
    sp = make_project(inst, n_validated=(15, 15, 0), n_unclassified=5)
    write_feature_set(inst, sp, "tsv", 3)
    trained = train_flow(project_id=sp.project_id, candidates=["classic_rf", "deep_logreg"])
    assert [m["kind"] for m in trained["models"]] == ["classic_rf"]
    assert trained["skipped"] == [f"deep_logreg: needs feature set deep_effnetlite0, "
                                  f"project {sp.project_id} has tsv"]
    model_id = trained["models"][0]["model_id"]
    assert trained["best"] == model_id
    predicted = predict_flow(project_id=sp.project_id, model_id=model_id)
    assert (predicted["model_id"], predicted["n_predicted"], predicted["n_chunks"]) == (model_id, 5, 1)


def test_automatic_training_takes_the_best_candidate_and_the_baseline(flow_env):
    from flows.train import train_flow
    from learn_data import make_project, write_feature_set

    from ecotaxa_core.learn.candidates import (RANKED_CANDIDATES, Candidate,
                                               estimated_training_seconds)

    inst = flow_env
    sp = make_project(inst, n_validated=(25, 25, 25))
    write_feature_set(inst, sp, "morpho", 5)
    write_feature_set(inst, sp, "deep_effnetlite0", 24, seed=9)
    trained = train_flow(project_id=sp.project_id)
    best_ranked = next(c for c in RANKED_CANDIDATES if c.sets_among(["morpho", "deep_effnetlite0"]))
    assert [(m["candidate"], m["role"]) for m in trained["models"]] == [
        (str(best_ranked), "best that fits"), ("classic_rf", "baseline")]
    # A budget that the joined features exceed: the deep features alone, and the baseline.
    alone = Candidate.parse("deep_logreg:deep_effnetlite0")
    budget = estimated_training_seconds(alone, 75, {"deep_effnetlite0": 24, "morpho": 5})
    smaller = train_flow(project_id=sp.project_id, time_budget_s=budget)
    assert [m["candidate"] for m in smaller["models"]] == [str(alone), "classic_rf"]
    assert len(smaller["plan"]["notes"]) == 2 and "more than the" in smaller["plan"]["notes"][0]


def test_training_settings_are_remembered_and_given_ones_win(flow_env):
    from flows.train import train_flow
    from learn_data import make_project, write_feature_set

    inst = flow_env
    sp = make_project(inst, n_validated=(30, 20, 12))
    write_feature_set(inst, sp, "morpho", 5)
    cop, chaeto = sp.taxon_ids["Copepoda"], sp.taxon_ids["Chaetognatha"]
    first = train_flow(project_id=sp.project_id, candidates=["classic_rf"], max_per_category=15,
                       appear_as={chaeto: cop}, seed=4)
    assert first["settings_origin"] == {"candidates": "given", "max_per_category": "given",
                                        "appear_as": "given", "seed": "given"}
    (model,) = first["models"]
    second = train_flow(project_id=sp.project_id, test_size=0.3)
    assert second["settings"]["candidates"] == ["classic_rf"]
    assert second["settings"]["max_per_category"] == 15 and second["settings"]["seed"] == 4
    assert second["settings"]["appear_as"] == {str(chaeto): cop}
    assert second["settings_origin"] == {"candidates": "remembered", "max_per_category": "remembered",
                                         "appear_as": "remembered", "seed": "remembered",
                                         "test_size": "given"}
    with inst.sessions() as s:
        definition = get_model(s, second["models"][0]["model_id"]).settings["learning_set"]
    # Chaetognatha learned as Copepoda, capped at 15 per learned category.
    assert {c["taxon_id"]: c["n_used"] for c in definition["per_category"]} == {
        cop: 15, sp.taxon_ids["detritus"]: 12}
    assert second["models"][0]["metrics"]["n_test"] == 9  # 30 % of 15 + 12, stratified


def test_nightly_repredict_trains_and_predicts_the_projects_validated_since(flow_env):
    from ecotaxa_core.annotation import validate_objects
    from ecotaxa_core.users import get_user_by_email
    from flows.repredict import repredict_flow
    from flows.train import train_flow
    from conftest import ADMIN_EMAIL
    from learn_data import make_project, write_feature_set

    inst = flow_env
    sp = make_project(inst, n_validated=(25, 25, 25), n_unclassified=10)
    other = make_project(inst, title="untouched", n_validated=(20, 20, 20), n_unclassified=4)
    for p in (sp, other):
        write_feature_set(inst, p, "morpho", 5)
        train_flow(project_id=p.project_id, candidates=["classic_rf"])
    assert repredict_flow()["projects"] == {}  # nothing validated since: nothing to do

    with inst.sessions.begin() as s:
        admin = get_user_by_email(s, ADMIN_EMAIL).id
        s.execute(Object.__table__.update().where(Object.id.in_(sp.ids_with("unclassified")[:4]))
                  .values(taxon_id=sp.truth[sp.ids_with("unclassified")[0]]))
        validate_objects(s, sp.project_id, sp.ids_with("unclassified")[:4], admin)
    done = repredict_flow()["projects"]
    assert list(done) == [sp.project_id] and done[sp.project_id]["n_predicted"] == 6
    with inst.sessions() as s:
        newest = s.scalars(select(Job).where(Job.project_id == sp.project_id)
                           .order_by(Job.id.desc())).first()
        rest = s.scalars(select(Object).where(Object.id.in_(sp.ids_with("unclassified")[4:])))
        assert {(o.status, o.model_id) for o in rest} == {
            ("predicted", done[sp.project_id]["model_id"])}
    assert (newest.kind, newest.state) == ("predict", "done")
    assert repredict_flow()["projects"] == {}  # the new model is newer than every validation


def test_a_rerun_of_unchanged_training_or_prediction_does_nothing(flow_env):
    """Train and predict again with nothing new: the same model, no write, no history;
    a new validation makes a new model, which predicts everything it did not yet."""
    from sqlalchemy import func

    from ecotaxa_core.annotation import move_objects
    from ecotaxa_core.db.models import AnnotationHistory, TrainedModel
    from flows.predict import predict_flow
    from flows.train import train_flow
    from learn_data import make_project, write_feature_set

    inst = flow_env
    sp = make_project(inst, n_validated=(25, 25, 25), n_unclassified=20, n_predicted=3)
    write_feature_set(inst, sp, "morpho", 5)

    def counts():
        with inst.sessions() as s:
            return (s.scalar(select(func.count()).select_from(TrainedModel)),
                    s.scalar(select(func.count()).select_from(AnnotationHistory)))

    first = train_flow(project_id=sp.project_id, candidates=["classic_rf"])
    [m1] = first["models"]
    assert m1["reused"] is False
    again = train_flow(project_id=sp.project_id, candidates=["classic_rf"])
    assert [(m["model_id"], m["reused"]) for m in again["models"]] == [(m1["model_id"], True)]
    assert again["best"] == m1["model_id"] and counts()[0] == 1
    # Another seed is another model.
    other_seed = train_flow(project_id=sp.project_id, candidates=["classic_rf"], seed=1)
    assert other_seed["models"][0]["model_id"] != m1["model_id"] and counts()[0] == 2

    predicted = predict_flow(project_id=sp.project_id, model_id=m1["model_id"])
    assert (predicted["n_predicted"], predicted["n_already_predicted"]) == (23, 0)
    before = counts()
    rerun = predict_flow(project_id=sp.project_id, model_id=m1["model_id"])
    assert (rerun["n_predictable"], rerun["n_predicted"], rerun["n_chunks"],
            rerun["n_already_predicted"]) == (0, 0, 0, 23)
    assert counts() == before  # nothing written, not even history

    # A new validation: a new learning set, a new model, which predicts all 22 left.
    moved = sp.ids_with("unclassified")[0]
    with inst.sessions.begin() as s:
        move_objects(s, sp.project_id, [moved], sp.truth[moved], user_id=1)
    retrained = train_flow(project_id=sp.project_id, candidates=["classic_rf"], seed=0)
    [m3] = retrained["models"]
    assert m3["reused"] is False and m3["model_id"] not in (m1["model_id"],
                                                              other_seed["models"][0]["model_id"])
    newer = predict_flow(project_id=sp.project_id, model_id=m3["model_id"])
    assert (newer["n_predicted"], newer["n_already_predicted"]) == (22, 0)
    forced = predict_flow(project_id=sp.project_id, model_id=m3["model_id"], again=True)
    assert (forced["n_predicted"], forced["n_already_predicted"]) == (22, 0)
    with inst.sessions() as s:
        assert {o.model_id for o in s.scalars(select(Object).where(
            Object.project_id == sp.project_id, Object.status == "predicted"))} == {m3["model_id"]}
