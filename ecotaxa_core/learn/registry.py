"""The model registry: fitted pipelines on disk, described by ``trained_models`` rows.

A model ``<id>`` lives in ``models_dir/<id>/``:

- ``model.joblib``: the fitted scikit-learn pipeline (imputer medians included);
- ``model.json``: what a prediction needs besides the pipeline (kind, feature
  sets, feature names in column order, class list and names), so a Dask worker
  can predict from the folder alone, without the database;
- ``confusion_matrix.png``: the held-out confusion matrix, rows normalised
  (when the model was evaluated on a held-out part).

The ``trained_models`` row holds the same plus the learning-set definition,
the classifier parameters and the metrics. Saving writes the files and the row
together: if either fails, neither remains.

:func:`model_summary`, :func:`list_model_summaries`, :func:`compare_models`
and :func:`model_report` describe registered models for people (``ecotaxa
models list / compare / show``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import joblib
import numpy as np
import sklearn
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import TrainedModel, User
from ecotaxa_core.durable_files import write_atomically
from ecotaxa_core.errors import ModelNotFound
from ecotaxa_core.learn.fast_inference import compile_predict_proba

__all__ = [
    "LoadedModel",
    "MODEL_FILE",
    "CARD_FILE",
    "save_model",
    "get_model",
    "load_model",
    "load_model_files",
    "list_models",
    "best_model",
    "strict_json",
    "CONFUSION_PNG",
    "model_summary",
    "list_model_summaries",
    "compare_models",
    "model_report",
]

MODEL_FILE = "model.joblib"
CARD_FILE = "model.json"
CONFUSION_PNG = "confusion_matrix.png"


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to predict."""

    model_id: int
    kind: str
    pipeline: Any  # fitted sklearn Pipeline
    classes: np.ndarray  # taxon ids, in predict_proba column order
    class_names: list[str]
    feature_sets: list[str]
    feature_names: list[str]  # "<set>:<feature>", in the pipeline's column order

    @cached_property
    def predict_proba(self) -> Callable[[np.ndarray], np.ndarray]:
        """``pipeline.predict_proba`` in float32 (see :mod:`~ecotaxa_core.learn.fast_inference`)."""
        return compile_predict_proba(self.pipeline)


def strict_json(value: Any) -> Any:
    """``value`` as strict JSON types: numpy scalars to Python, NaN and infinities to None.

    PostgreSQL's JSON type refuses NaN, which Python's json module would write.

    >>> strict_json({"a": np.float32(0.5), "b": [float("nan"), np.int64(3)]})
    {'a': 0.5, 'b': [None, 3]}
    """
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _has_confusion_matrix(metrics: Mapping[str, Any]) -> bool:
    confusion = metrics.get("confusion_matrix")
    return isinstance(confusion, Mapping) and bool(confusion.get("labels"))


def _plot_title(name: str, metrics: Mapping[str, Any]) -> str:
    name = name if len(name) <= 70 else name[:69] + "…"
    title = f"{name}\nheld-out confusion matrix, rows normalised\n{metrics.get('n_test')} objects"
    if isinstance(metrics.get("accuracy"), (int, float)):
        title += f", accuracy {metrics['accuracy']:.3f}"
    return title


def save_model(inst, project_id: int, *, name: str, kind: str, pipeline,
               feature_sets: Sequence[str], feature_names: Sequence[str],
               class_names: Mapping[int, str], learning_set_definition: Mapping[str, Any],
               parameters: Mapping[str, Any], metrics: Mapping[str, Any],
               created_by: int | None = None) -> TrainedModel:
    """Register a fitted pipeline; returns its (detached) ``TrainedModel`` row.

    The row is inserted first to get its id, the files are written under
    ``models_dir/<id>``, then the transaction commits. Any failure removes the
    folder and rolls the row back.
    """
    classes = [int(c) for c in pipeline.classes_]
    card = {
        "kind": kind,
        "feature_sets": list(feature_sets),
        "feature_names": list(feature_names),
        "classes": classes,
        "class_names": [class_names.get(c, str(c)) for c in classes],
        "sklearn_version": sklearn.__version__,
    }
    settings = strict_json({
        "learning_set": dict(learning_set_definition),
        "feature_names": card["feature_names"],
        "classes": classes,
        "class_names": card["class_names"],
        "parameters": dict(parameters),
        "sklearn_version": sklearn.__version__,
    })
    metrics = strict_json(dict(metrics))
    model_dir: Path | None = None
    try:
        with inst.sessions.begin() as session:
            row = TrainedModel(project_id=int(project_id), name=name, kind=kind,
                               feature_sets=list(feature_sets), path="", settings=settings,
                               metrics=metrics, created_by_id=created_by)
            session.add(row)
            session.flush()
            model_dir = Path(inst.models_dir) / str(row.id)
            # A folder with this id can only be the leftover of a save that died
            # before committing (SQLite reuses rolled-back ids): nothing owns it.
            shutil.rmtree(model_dir, ignore_errors=True)
            model_dir.mkdir(parents=True)
            write_atomically(model_dir / MODEL_FILE, lambda p: joblib.dump(pipeline, p))
            write_atomically(model_dir / CARD_FILE, lambda p: p.write_text(
                json.dumps({"model_id": row.id, "project_id": int(project_id), **card}, indent=1)))
            if _has_confusion_matrix(metrics):
                from ecotaxa_core.learn.confusion_plot import plot_confusion_matrix

                write_atomically(model_dir / CONFUSION_PNG, lambda p: plot_confusion_matrix(
                    metrics["confusion_matrix"], p, title=_plot_title(name, metrics)))
            row.path = f"{row.id}/{MODEL_FILE}"
        return row
    except BaseException:
        if model_dir is not None:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise


def get_model(session: Session, model_id: int) -> TrainedModel:
    row = session.get(TrainedModel, int(model_id))
    if row is None:
        raise ModelNotFound(f"no trained model with id {model_id}")
    return row


def load_model_files(models_dir: str | os.PathLike, model_id: int, model_path: str) -> LoadedModel:
    """Load a model from its folder alone (what a Dask worker does)."""
    path = Path(models_dir) / model_path
    card_path = path.with_name(CARD_FILE)
    if not path.exists() or not card_path.exists():
        raise ModelNotFound(f"model {model_id}: {path} or its {CARD_FILE} is missing")
    card = json.loads(card_path.read_text())
    pipeline = joblib.load(path)
    classes = np.asarray(pipeline.classes_, dtype=np.int64)
    if classes.tolist() != card["classes"]:
        raise ModelNotFound(f"model {model_id}: {path} does not match its {CARD_FILE}")
    return LoadedModel(model_id=int(model_id), kind=card["kind"], pipeline=pipeline,
                       classes=classes, class_names=list(card["class_names"]),
                       feature_sets=list(card["feature_sets"]),
                       feature_names=list(card["feature_names"]))


def load_model(inst, model_id: int) -> LoadedModel:
    """The registered model ``model_id``, ready to predict."""
    with inst.sessions() as session:
        row = get_model(session, model_id)
        path = row.path
    return load_model_files(inst.models_dir, model_id, path)


def model_with_fingerprint(session: Session, models_dir: str | os.PathLike, project_id: int,
                           fingerprint: str) -> TrainedModel | None:
    """The project's newest model with that training fingerprint whose files are there."""
    for row in sorted(list_models(session, project_id), key=lambda r: r.id, reverse=True):
        if (row.settings or {}).get("parameters", {}).get("fingerprint") == fingerprint \
                and (Path(models_dir) / row.path).is_file():
            return row
    return None


def list_models(session: Session, project_id: int) -> list[TrainedModel]:
    """The project's models, newest first."""
    return list(session.scalars(select(TrainedModel)
                                .where(TrainedModel.project_id == int(project_id))
                                .order_by(TrainedModel.created_at.desc(), TrainedModel.id.desc())))


def _held_out_accuracy(row: TrainedModel) -> float | None:
    value = (row.metrics or {}).get("accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def best_model(session: Session, project_id: int) -> TrainedModel:
    """The project's model with the highest held-out accuracy (the newest on ties).

    Models without a held-out evaluation rank after every evaluated one.
    """
    rows = list_models(session, project_id)
    if not rows:
        raise ModelNotFound(f"project {project_id} has no trained model; train one first")

    def rank(row: TrainedModel):
        acc = _held_out_accuracy(row)
        return (acc is not None, acc if acc is not None else 0.0, row.id)

    return max(rows, key=rank)


# -- descriptions for people -----------------------------------------------------------------

def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def model_summary(row: TrainedModel, *, created_by: str | None = None) -> dict[str, Any]:
    """One JSON-able line describing a registered model: what it learned and how well.

    Parameters
    ----------
    row : TrainedModel
    created_by : str, optional
        E-mail of the user who trained it (the row holds only the user id).

    Returns
    -------
    dict
        ``id``, ``name``, ``kind``, ``feature_sets``, ``created_at`` (ISO),
        ``created_by``, ``n_objects`` and ``n_categories`` learned, held-out
        ``accuracy``, ``balanced_accuracy``, ``log_loss``, support-weighted
        ``plankton_precision`` / ``plankton_recall``, ``fit_seconds`` (the final
        fit) and, at the stored ``target_precision``, the held-out ``coverage``
        (fraction of objects above their category's threshold) and its
        ``expected_error_rate``. Absent values are None.
    """
    metrics = row.metrics or {}
    settings = row.settings or {}
    thresholds = metrics.get("thresholds") or {}
    n_objects = (settings.get("learning_set") or {}).get("n_objects", metrics.get("n_final_train"))
    return {
        "id": row.id,
        "project_id": row.project_id,
        "name": row.name,
        "kind": row.kind,
        "feature_sets": list(row.feature_sets or []),
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "created_by_id": row.created_by_id,
        "created_by": created_by,
        "n_objects": n_objects,
        "n_categories": len(settings.get("classes") or []),
        "evaluation": metrics.get("evaluation"),
        "n_test": metrics.get("n_test"),
        "accuracy": _number(metrics, "accuracy"),
        "balanced_accuracy": _number(metrics, "balanced_accuracy"),
        "log_loss": _number(metrics, "log_loss"),
        "plankton_precision": _number(metrics, "plankton_weighted_precision"),
        "plankton_recall": _number(metrics, "plankton_weighted_recall"),
        "fit_seconds": _number(metrics, "final_fit_seconds"),
        "total_seconds": _number(metrics, "total_seconds"),
        "target_precision": _number(thresholds, "target_precision"),
        "coverage": _number(thresholds, "fraction_bulk_validatable"),
        "expected_error_rate": _number(thresholds, "expected_error_rate"),
    }


def _emails(session: Session, rows: Sequence[TrainedModel]) -> dict[int, str]:
    ids = {r.created_by_id for r in rows if r.created_by_id is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.email).where(User.id.in_(ids))).all())


def list_model_summaries(session: Session, project_id: int) -> list[dict[str, Any]]:
    """:func:`model_summary` of each of the project's models, newest first.

    Raises
    ------
    ProjectNotFound
        No project ``project_id``.
    """
    from ecotaxa_core.projects import get_project

    get_project(session, project_id)
    rows = list_models(session, project_id)
    emails = _emails(session, rows)
    return [model_summary(r, created_by=emails.get(r.created_by_id)) for r in rows]


#: Summary columns compared across models, and whether higher is better.
COMPARED = {"accuracy": True, "balanced_accuracy": True, "log_loss": False,
            "plankton_precision": True, "plankton_recall": True, "coverage": True}


def compare_models(session: Session, model_ids: Sequence[int]) -> dict[str, Any]:
    """One :func:`model_summary` per model, in the order asked, and the best id per measure.

    Models of different projects may be compared; their held-out parts differ,
    so the figures are comparable only as far as the learning sets are.

    Raises
    ------
    ModelNotFound
        Any of ``model_ids`` is not a registered model (all unknown ids named).
    ValueError
        ``model_ids`` is empty.
    """
    if not model_ids:
        raise ValueError("compare_models needs at least one model id")
    wanted = [int(i) for i in model_ids]
    rows = {r.id: r for r in session.scalars(select(TrainedModel)
                                             .where(TrainedModel.id.in_(set(wanted))))}
    unknown = [i for i in dict.fromkeys(wanted) if i not in rows]
    if unknown:
        raise ModelNotFound(f"no trained model with id {', '.join(map(str, unknown))}")
    emails = _emails(session, list(rows.values()))
    summaries = [model_summary(rows[i], created_by=emails.get(rows[i].created_by_id))
                 for i in dict.fromkeys(wanted)]
    best: dict[str, int | None] = {}
    for key, higher in COMPARED.items():
        scored = [(s[key] if higher else -s[key], s["id"]) for s in summaries
                  if s[key] is not None]
        best[key] = max(scored)[1] if scored else None
    return {"models": summaries, "best": best,
            "projects": sorted({s["project_id"] for s in summaries})}


def model_report(session: Session, models_dir: str | os.PathLike, model_id: int) -> dict[str, Any]:
    """Everything known about one model: summary, metrics, per-category table, thresholds.

    ``per_class`` is a list sorted by held-out support (most first), each row
    with the category's precision, recall, F1 and score threshold;
    ``confusion_matrix_png`` is the plot's path, or None when there is none.

    Raises
    ------
    ModelNotFound
        No model ``model_id``.
    """
    row = get_model(session, model_id)
    metrics = dict(row.metrics or {})
    thresholds = metrics.get("thresholds") or {}
    per_threshold = thresholds.get("per_class") or {}
    per_class = []
    for name, entry in (metrics.get("per_class") or {}).items():
        t = per_threshold.get(name) or {}
        per_class.append({"category": name, **entry,
                          "threshold": t.get("threshold"),
                          "threshold_precision": t.get("precision"),
                          "threshold_coverage": t.get("coverage"),
                          "threshold_reason": t.get("reason")})
    per_class.sort(key=lambda r: (-r.get("support", 0), r["category"]))
    png = Path(models_dir) / str(row.id) / CONFUSION_PNG
    return {
        "summary": model_summary(row, created_by=_emails(session, [row]).get(row.created_by_id)),
        "path": str(Path(models_dir) / row.path),
        "confusion_matrix_png": str(png) if png.is_file() else None,
        "per_class": per_class,
        "thresholds": {k: v for k, v in thresholds.items() if k != "per_class"},
        "metrics": {k: v for k, v in metrics.items()
                    if k not in ("per_class", "confusion_matrix", "thresholds")},
        "confusion_matrix": metrics.get("confusion_matrix"),
        "settings": row.settings,
    }
