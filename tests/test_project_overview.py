"""The project page's figures, on SQLite and PostgreSQL: counts, samples, histograms, models."""

from __future__ import annotations

import panel as pn
import pytest
from sqlalchemy import select

from ecotaxa_core.db.models import Object, Role, Sample
from ecotaxa_core.errors import PermissionDenied
from ecotaxa_core.learn import predict_project, train_model
from ecotaxa_core.project_overview import SCORE_BINS, project_overview
from ecotaxa_core.projects import set_member
from ecotaxa_core.users import create_user
from learn_data import cluster_features, make_project


def test_counts_samples_score_histograms_and_trainings(instance):
    sp = make_project(instance, n_validated=(30, 20, 10), n_unclassified=12, n_dubious=2)
    ids, X = cluster_features(sp.truth, 4, separation=1.0)
    instance.features.append(sp.project_id, "morpho", ids, X, [f"f{j}" for j in range(4)])
    model = train_model(instance, sp.project_id, "deep_logreg", feature_sets=["morpho"])
    predict_project(instance, sp.project_id, model.id)
    with instance.sessions.begin() as s:
        station = Sample(project_id=sp.project_id, orig_id="st1")
        s.add(station)
        s.flush()
        first = sorted(sp.truth)[:25]  # 25 validated objects of the first category
        for o in s.scalars(select(Object).where(Object.id.in_(first))):
            o.sample_id = station.id
        visitor = create_user(s, "v@example.org", "v", "pw")
        stranger = create_user(s, "x@example.org", "x", "pw")
        s.flush()
        set_member(s, sp.project_id, visitor.id, Role.VISITOR)
        visitor, stranger = visitor.id, stranger.id
    with instance.sessions() as s:
        view = project_overview(s, sp.project_id, visitor, models_dir=instance.models_dir)
        with pytest.raises(PermissionDenied):
            project_overview(s, sp.project_id, stranger)
        scores = {o.id: o.score for o in s.scalars(
            select(Object).where(Object.project_id == sp.project_id, Object.status == "predicted"))}

    assert view.status_counts == {"unclassified": 0, "predicted": 12, "dubious": 2,
                                  "validated": 60, "total": 74}
    assert view.percent_validated == pytest.approx(100 * 60 / 74)
    assert [c.n_validated for c in view.categories] == [30, 20, 10]  # largest first
    assert sum(c.n_predicted for c in view.categories) == 12
    assert [(x.sample, x.n_validated, x.n_predicted) for x in view.samples] == [
        ("(no sample)", 35, 12), ("st1", 25, 0)]
    expected = [0] * SCORE_BINS
    for score in scores.values():
        expected[min(SCORE_BINS - 1, int(score * SCORE_BINS))] += 1
    assert view.score_histograms["predicted"] == expected and sum(expected) == 12
    assert view.score_histograms["validated"] == [0] * SCORE_BINS  # validation clears scores
    assert [m["id"] for m in view.models] == [model.id]
    assert view.confusion_plots[model.id].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A newer training that predicted nothing: the page still knows which model predicts,
    # and keeps it listed even beyond the list's length.
    newer = train_model(instance, sp.project_id, "deep_logreg", feature_sets=["morpho"],
                        reuse=False)  # the same learning set: only asked for, a new model
    with instance.sessions() as s:
        view = project_overview(s, sp.project_id, visitor, models_dir=instance.models_dir,
                                max_models=1)
    assert [m["id"] for m in view.models] == [newer.id, model.id]
    assert view.predicting_model_id == model.id

    from dashboards.project_page import ProjectPage

    (instance.settings.imports_dir / "cruise_9").mkdir(parents=True)  # the import inbox
    page = ProjectPage(instance, visitor, sp.project_id, poll_ms=0)
    [entry] = [w for w in page.__panel__().select(pn.widgets.Select)
               if "et-import-entry" in w.css_classes]
    assert entry.options == ["cruise_9"] and entry.value == "cruise_9"
    [which] = [w for w in page.__panel__().select(pn.widgets.Select)
               if "et-confusion-model" in w.css_classes]
    assert which.value == model.id and "(predicting)" in next(
        k for k, v in which.options.items() if v == model.id)
    [plot] = page.__panel__().select(pn.pane.PNG)
    assert plot.object == str(view.confusion_plots[model.id])
    which.value = newer.id
    assert plot.object == str(view.confusion_plots[newer.id])
