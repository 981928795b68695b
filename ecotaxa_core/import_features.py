"""The "tsv" feature set an import writes: numeric ``object_*`` columns of the files.

New objects' rows are appended (and undone by truncating the store back to
its former length). The whole set is rewritten instead when the import brings
numeric columns the set lacks (the new set holds the union, existing rows
keeping their values, NaN in the new columns) or, in an update mode, changes
values of existing rows. A rewrite first moves the old store aside (a rename)
and writes the new one; undoing it puts the old store back, finishing it
removes the old one. Both undo paths are recorded in the import journal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ecotaxa_core.import_plan import FreeValues, ImportPlan, ObjectPlan
from ecotaxa_core.import_spool import batched
from ecotaxa_core.reimport import ImportDelta
from ecotaxa_core.store.feature_store import FeatureStore

__all__ = ["TSV_FEATURE_SET", "FeaturePlan", "plan_features", "write_features",
           "undo_features", "finish_features"]

TSV_FEATURE_SET = "tsv"
_PRODUCER = {"kind": "tsv"}


@dataclass
class FeaturePlan:
    """How the import changes the project's "tsv" feature set."""

    names: list[str]
    n_rows_before: int
    rewrite: bool = False
    # Rows of existing objects to set (update modes): {object id: {feature: value}}.
    updated: dict[int, dict[str, float]] = field(default_factory=dict)
    new_objects: Iterable[ObjectPlan] = ()  # re-iterable (see reimport.NewObjects)

    @property
    def writes(self) -> bool:
        return self.rewrite or bool(self.new_objects and self.names) or bool(self.updated)


def _numeric_present(plan: ImportPlan, obj: ObjectPlan) -> list[str]:
    return [name for name, kind in plan.free_columns["object"].items()
            if kind == "f" and f"object_{name}" in obj.present]


def backup_path(features: FeatureStore, project_id: int, run_id: str) -> str:
    """Where a rewrite keeps the old store until the import commits (relative to the
    feature store's root)."""
    return features.backup_rel(project_id, TSV_FEATURE_SET, run_id)


def plan_features(features: FeatureStore, project_id: int, plan: ImportPlan,
                  delta: ImportDelta) -> FeaturePlan:
    exists = features.exists(project_id, TSV_FEATURE_SET)
    stored = features.feature_names(project_id, TSV_FEATURE_SET) if exists else []
    names = stored + [n for n in plan.feature_names if n not in stored]
    fplan = FeaturePlan(names=names, n_rows_before=features.n_rows(project_id, TSV_FEATURE_SET),
                        new_objects=delta.new_objects)
    for object_id, obj in delta.updates:
        present = _numeric_present(plan, obj)
        if present:
            fplan.updated[object_id] = {n: obj.extra.get(n, math.nan) for n in present}
    if not exists:
        return fplan
    grows = len(names) > len(stored) and bool(fplan.new_objects or fplan.updated)
    fplan.rewrite = grows or _changes_stored_rows(features, project_id, fplan)
    return fplan


def _changes_stored_rows(features: FeatureStore, project_id: int, fplan: FeaturePlan) -> bool:
    if not fplan.updated:
        return False
    ids = sorted(fplan.updated)
    stored = features.read(project_id, TSV_FEATURE_SET, ids)
    present = np.isin(np.asarray(ids), features.object_ids(project_id, TSV_FEATURE_SET))
    column = {n: i for i, n in enumerate(stored.feature_names)}
    for row, object_id, there in zip(stored.values, ids, present):
        if not there:
            continue
        for name, value in fplan.updated[object_id].items():
            if name not in column:
                return True
            old = float(row[column[name]])
            new = float(np.float32(value))
            if not (old == new or (math.isnan(old) and math.isnan(new))):
                return True
    return False


def _rows(objects: Sequence[ObjectPlan], names: list[str]) -> np.ndarray:
    """The feature matrix of ``objects``: their numeric free values, NaN where none."""
    out = np.full((len(objects), len(names)), np.nan, dtype=np.float32)
    where = {n: j for j, n in enumerate(names)}
    by_layout: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, o in enumerate(objects):
        extra = o.extra
        if isinstance(extra, FreeValues):  # packed numbers: copied by position
            found = by_layout.get(id(extra.layout))
            if found is None:
                here, there = extra.layout.positions(names)
                found = by_layout[id(extra.layout)] = (np.asarray(here, dtype=np.intp),
                                                       np.asarray(there, dtype=np.intp))
            if len(found[0]):
                out[i, found[1]] = np.frombuffer(extra.numbers, dtype=np.float64)[found[0]]
        else:
            for name, value in extra.items():
                if name in where and isinstance(value, float):
                    out[i, where[name]] = value
    return out


def write_features(features: FeatureStore, project_id: int, fplan: FeaturePlan,
                   new_ids: list[int], run_id: str) -> int:
    """Write the rows ``fplan`` describes; ``new_ids`` are the new objects' ids, in order."""
    if not fplan.names or not fplan.writes:
        return 0
    if fplan.rewrite:
        return _rewrite(features, project_id, fplan, new_ids, run_id)
    stored = set(features.object_ids(project_id, TSV_FEATURE_SET).tolist())
    updated_ids = [i for i in sorted(fplan.updated) if i not in stored]
    n = 0
    if updated_ids:
        values = np.array([[fplan.updated[i].get(name, math.nan) for name in fplan.names]
                           for i in updated_ids], dtype=np.float32)
        n += features.append(project_id, TSV_FEATURE_SET, updated_ids, values, fplan.names,
                             producer=_PRODUCER)
    start = 0
    for batch in batched(fplan.new_objects, _APPEND_ROWS):  # a few MB at a time
        n += features.append(project_id, TSV_FEATURE_SET, new_ids[start:start + len(batch)],
                             _rows(batch, fplan.names), fplan.names, producer=_PRODUCER)
        start += len(batch)
    return n


_APPEND_ROWS = 16384  # rows a feature store append holds at most


def _rewrite(features: FeatureStore, project_id: int, fplan: FeaturePlan, new_ids: list[int],
             run_id: str) -> int:
    old = features.read(project_id, TSV_FEATURE_SET)
    producer: dict[str, Any] = features.attrs(project_id, TSV_FEATURE_SET) or _PRODUCER
    column = {n: i for i, n in enumerate(fplan.names)}
    values = np.full((old.n_samples, len(fplan.names)), np.nan, dtype=np.float32)
    for j, name in enumerate(old.feature_names):
        values[:, column[name]] = old.values[:, j]
    ids = old.object_ids.tolist()
    position = {object_id: i for i, object_id in enumerate(ids)}
    extra_ids, extra_rows = [], []
    for object_id, given in sorted(fplan.updated.items()):
        i = position.get(object_id)
        if i is None:
            row = np.full(len(fplan.names), np.nan, dtype=np.float32)
            extra_ids.append(object_id)
            extra_rows.append(row)
        else:
            row = values[i]
        for name, value in given.items():
            row[column[name]] = value
    all_ids = ids + extra_ids + list(new_ids)
    all_values = np.vstack([values] + [r[None, :] for r in extra_rows]
                           + [_rows(list(fplan.new_objects), fplan.names)])
    features.set_aside(project_id, TSV_FEATURE_SET, run_id)
    return features.append(project_id, TSV_FEATURE_SET, all_ids, all_values, fplan.names,
                           producer=producer)


def undo_features(features: FeatureStore, project_id: int, n_rows_before: int,
                  backup: str | None) -> None:
    """Put the "tsv" set back as it was before an import that did not commit.

    ``backup`` is what :func:`backup_path` named, if the import rewrote the set.
    """
    if backup is not None and features.put_back(project_id, TSV_FEATURE_SET, backup):
        return
    features.truncate(project_id, TSV_FEATURE_SET, n_rows_before)
    features.remove_partial_files(project_id, TSV_FEATURE_SET)


def finish_features(features: FeatureStore, backup: str | None) -> None:
    """After the commit: drop the old store a rewrite kept."""
    if backup is not None:
        features.drop_backup(backup)
