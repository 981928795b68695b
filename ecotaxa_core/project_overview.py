"""A project at a glance: objects per status, category and sample, score histograms, trainings.

What the dashboard's project page plots. Each figure is one grouped query
over the objects (served by the (project_id, status, taxon_id) and
(project_id, score) indexes), so the page stays quick on large projects; the
model list comes from the registry, with the path of each model's confusion
matrix plot when it has one. Members of the project (any role) may read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, ObjectStatus, Project, Sample
from ecotaxa_core.learn.registry import CONFUSION_PNG, list_model_summaries
from ecotaxa_core.learn.thresholds import current_prediction_model
from ecotaxa_core.queries import category_counts
from ecotaxa_core.rights import Action, require

__all__ = ["ProjectOverview", "SampleCount", "project_overview", "SCORE_BINS"]

SCORE_BINS = 20  # score histogram: [0, 0.05), [0.05, 0.1) ... [0.95, 1]


@dataclass(frozen=True)
class SampleCount:
    sample: str  # orig_id, or "(no sample)"
    n_validated: int
    n_predicted: int
    n_dubious: int
    n_unclassified: int


@dataclass(frozen=True)
class ProjectOverview:
    project_id: int
    title: str
    instrument: str | None
    status_counts: dict[str, int]  # per status, and "total"
    categories: list[Any]  # queries.CategoryCount, largest first
    samples: list[SampleCount]  # by orig_id
    # Objects per score bin (SCORE_BINS bins over [0, 1]), for predicted and validated ones.
    score_histograms: dict[str, list[int]] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)  # registry summaries, newest first
    confusion_plots: dict[int, Path] = field(default_factory=dict)  # model id -> PNG
    predicting_model_id: int | None = None  # the model behind most current predictions

    @property
    def percent_validated(self) -> float:
        total = self.status_counts.get("total", 0)
        return 100.0 * self.status_counts.get(ObjectStatus.VALIDATED.value, 0) / total if total else 0.0

    @property
    def percent_predicted(self) -> float:
        total = self.status_counts.get("total", 0)
        return 100.0 * self.status_counts.get(ObjectStatus.PREDICTED.value, 0) / total if total else 0.0


def project_overview(session: Session, project_id: int, user_id: int,
                     models_dir: Path | None = None, max_models: int = 10) -> ProjectOverview:
    """The figures of the project page, as ``user_id`` may see them."""
    require(session, user_id, project_id, Action.VIEW)
    project = session.get(Project, int(project_id))
    pid = project.id
    by_status = dict(session.execute(select(Object.status, func.count())
                                     .where(Object.project_id == pid)
                                     .group_by(Object.status)).all())
    status_counts = {s.value: int(by_status.get(s.value, 0)) for s in ObjectStatus}
    status_counts["total"] = sum(status_counts.values())
    categories = sorted(category_counts(session, pid),
                        key=lambda c: (-(c.n_validated + c.n_predicted + c.n_dubious),
                                       c.display_name))
    per_sample: dict[str, dict[str, int]] = {}
    for sample, status, n in session.execute(
            select(Sample.orig_id, Object.status, func.count())
            .select_from(Object).outerjoin(Sample, Sample.id == Object.sample_id)
            .where(Object.project_id == pid).group_by(Sample.orig_id, Object.status)):
        per_sample.setdefault(sample or "(no sample)", {})[status] = int(n)
    samples = [SampleCount(name, c.get("validated", 0), c.get("predicted", 0), c.get("dubious", 0),
                           c.get("unclassified", 0)) for name, c in sorted(per_sample.items())]
    histograms = {}
    for status in (ObjectStatus.PREDICTED.value, ObjectStatus.VALIDATED.value):
        bin_ = _score_bin(session.get_bind().dialect.name)
        counts = [0] * SCORE_BINS
        for b, n in session.execute(select(bin_, func.count())
                                    .where(Object.project_id == pid, Object.status == status,
                                           Object.score.is_not(None))
                                    .group_by(bin_)):
            counts[min(SCORE_BINS - 1, max(0, int(b)))] += int(n)  # a score of 1: last bin
        histograms[status] = counts
    predicting = current_prediction_model(session, pid)
    models = list_model_summaries(session, pid)
    models = [m for k, m in enumerate(models) if k < max_models or m["id"] == predicting]
    plots = {}
    if models_dir is not None:
        for m in models:
            png = Path(models_dir) / str(m["id"]) / CONFUSION_PNG
            if png.is_file():
                plots[m["id"]] = png
    return ProjectOverview(project_id=pid, title=project.title, instrument=project.instrument,
                           status_counts=status_counts, categories=categories, samples=samples,
                           score_histograms=histograms, models=models, confusion_plots=plots,
                           predicting_model_id=predicting)


def _score_bin(dialect: str):
    """The histogram bin of ``Object.score`` (0 .. SCORE_BINS, 1.0 falling in SCORE_BINS)."""
    scaled = Object.score * SCORE_BINS
    if dialect == "sqlite":  # no floor() without the math extension; scores are >= 0
        return cast(scaled, Integer)
    return func.floor(scaled)  # PostgreSQL rounds a cast to integer
