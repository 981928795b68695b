"""Which projects the nightly re-prediction takes, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ecotaxa_core.db.models import Object, TrainedModel
from ecotaxa_core.learn.retraining_due import projects_due_for_retraining
from ecotaxa_core.projects import create_project


def test_projects_validated_since_their_newest_model_are_due(instance):
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with instance.sessions.begin() as s:
        due, quiet, untrained, only_predicted = (create_project(s, n).id for n in (
            "validated since", "nothing new", "never trained", "predicted since"))

        def model(pid, at):
            s.add(TrainedModel(project_id=pid, name="m", kind="deep_logreg", feature_sets=[],
                               path="x", created_at=at))

        def obj(pid, orig, status, at):
            s.add(Object(project_id=pid, orig_id=orig, status=status, annotation_date=at))

        model(due, t0)
        model(due, t0 + timedelta(days=2))  # the newest counts
        obj(due, "a", "validated", t0 + timedelta(days=1))
        obj(due, "b", "validated", t0 + timedelta(days=3))
        model(quiet, t0 + timedelta(days=5))
        obj(quiet, "c", "validated", t0 + timedelta(days=4))
        obj(untrained, "d", "validated", t0 + timedelta(days=9))
        model(only_predicted, t0)
        obj(only_predicted, "e", "predicted", t0 + timedelta(days=1))
        obj(only_predicted, "f", "dubious", t0 + timedelta(days=1))
    with instance.sessions() as s:
        assert projects_due_for_retraining(s) == [due]
