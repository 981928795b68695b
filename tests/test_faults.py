"""Faults met by a running instance: a database connection that dies during a validation, a
Dask worker killed during a prediction (a killed worker during feature extraction and the
Prefect server restarted between flows: test_features_resume.py, test_stack.py)."""

from __future__ import annotations

from sqlalchemy import create_engine, event, func, select, text

from conftest import ADMIN_EMAIL, PG_ADMIN_URL
from dashboards.validation import ValidationState
from ecotaxa_core.db.models import AnnotationHistory, Object
from ecotaxa_core.users import get_user_by_email
from validation_project import make_validation_project


def test_a_connection_dropped_during_a_validation_changes_nothing_and_the_retry_counts_once(
        pg_instance, ndsb_subset):
    inst = pg_instance
    vp = make_validation_project(inst, ndsb_subset)
    with inst.sessions() as s:
        admin = get_user_by_email(s, ADMIN_EMAIL).id
    state = ValidationState(inst, admin, project_id=vp.project_id)
    chosen = [r.id for r in state.rows[:3]]
    state.selected = chosen

    def states():
        with inst.sessions() as s:
            return {o.id: (o.status, o.annotator_id) for o in s.scalars(
                select(Object).where(Object.id.in_(chosen)))}

    def n_history():
        with inst.sessions() as s:
            return s.scalar(select(func.count()).select_from(AnnotationHistory)
                            .where(AnnotationHistory.object_id.in_(chosen)))

    before = states()
    killer = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def drop_the_connection(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO ANNOTATION_HISTORY"):
            event.remove(inst.engine, "before_cursor_execute", drop_the_connection)
            with killer.connect() as k:  # as a server restart or a network cut would
                k.execute(text("select pg_terminate_backend(:pid)"),
                          {"pid": cursor.connection.info.backend_pid})

    event.listen(inst.engine, "before_cursor_execute", drop_the_connection)
    try:
        assert state.validate() == 0
    finally:
        if event.contains(inst.engine, "before_cursor_execute", drop_the_connection):
            event.remove(inst.engine, "before_cursor_execute", drop_the_connection)
        killer.dispose()
    assert state.message_kind == "danger" and "the database did not answer" in state.message
    assert state.selected == chosen  # the selection stays, to press again
    assert states() == before and n_history() == 0  # nothing half written

    assert state.validate() == 3  # a new connection; the change happens once
    assert set(states().values()) == {("validated", admin)}
    assert n_history() == 3


def test_predict_flow_survives_a_killed_dask_worker(sqlite_instance, prefect_server, monkeypatch):
    """A worker of the cluster is SIGKILLed while it predicts a chunk: the chunk is computed
    again elsewhere, every object is predicted and written exactly once."""
    from distributed import Client, LocalCluster

    from ecotaxa_core.learn.training import train_model
    from flows.predict import predict_flow
    from learn_data import make_project, write_feature_set
    from worker_killer import WorkerKiller

    inst = sqlite_instance
    sp = make_project(inst, n_validated=(30, 30, 30), n_unclassified=3000)
    write_feature_set(inst, sp, "morpho", 8)
    model = train_model(inst, sp.project_id, "classic_rf", feature_sets=["morpho"])
    targets = sp.ids_with("unclassified")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for name, value in {"ECOTAXA_HOME": str(inst.settings.home),
                            "ECOTAXA_DATABASE_URL": inst.settings.database_url,
                            "ECOTAXA_PREDICT_CHUNK_SIZE": "100",
                            "ECOTAXA_DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}.items():
            monkeypatch.setenv(name, value)
        with WorkerKiller(client, "predict_chunk_batch") as killer:
            summary = predict_flow(project_id=sp.project_id, model_id=model.id)
        assert killer.killed, "the victim worker never held a chunk"
    assert (summary["n_predictable"], summary["n_predicted"], summary["n_chunks"]) == (
        3000, 3000, 30)
    with inst.sessions() as s:
        states = set(s.execute(select(Object.status, Object.model_id)
                               .where(Object.id.in_(targets))).all())
        history = s.scalar(select(func.count()).select_from(AnnotationHistory)
                           .where(AnnotationHistory.object_id.in_(targets)))
    assert states == {("predicted", model.id)}
    assert history == 3000  # one earlier state per object: each written once
