"""The model registry: fitted pipelines on disk, described by ``trained_models`` rows.

A model ``<id>`` lives in ``models_dir/<id>/``:

- ``model.joblib``: the fitted scikit-learn pipeline (imputer medians included);
- ``model.json``: what a prediction needs besides the pipeline (kind, feature
  sets, feature names in column order, class list and names), so a Dask worker
  can predict from the folder alone, without the database.

The ``trained_models`` row holds the same plus the learning-set definition,
the classifier parameters and the metrics. Saving writes the files and the row
together: if either fails, neither remains.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import joblib
import numpy as np
import sklearn
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import TrainedModel
from ecotaxa_core.errors import ModelNotFound

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
]

MODEL_FILE = "model.joblib"
CARD_FILE = "model.json"


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


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


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
            _write_atomically(model_dir / MODEL_FILE, lambda p: joblib.dump(pipeline, p))
            _write_atomically(model_dir / CARD_FILE, lambda p: p.write_text(
                json.dumps({"model_id": row.id, "project_id": int(project_id), **card}, indent=1)))
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
