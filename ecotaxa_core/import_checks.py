"""Checks of an import against what the project already holds.

Run before anything is written, in a read-only session: an acquisition moved
to another sample, a free column whose type changed, category ids (given
without a name) that name no taxon here. Objects already present are not a
problem: :mod:`~ecotaxa_core.reimport` skips or updates them.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Acquisition, Object, Project, Sample, Taxon
from ecotaxa_core.import_features import TSV_FEATURE_SET
from ecotaxa_core.import_names import NameSurvey
from ecotaxa_core.import_plan import ImportPlan, ObjectPlan
from ecotaxa_core.tsv.issues import ImportReport

__all__ = ["check_against_project", "existing_orig_ids", "TSV_FEATURE_SET"]

_CHUNK = 500


def _chunks(values: Iterable, size: int = _CHUNK) -> Iterator[list]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def existing_orig_ids(session: Session, project_id: int, orig_ids: Iterable[str]) -> set[str]:
    """Those of ``orig_ids`` that objects of the project already have."""
    found: set[str] = set()
    for chunk in _chunks(set(orig_ids)):
        found.update(session.scalars(select(Object.orig_id).where(
            Object.project_id == project_id, Object.orig_id.in_(chunk))))
    return found


def check_against_project(session: Session, project_id: int, plan: ImportPlan,
                          names: NameSurvey, classified: Iterable[ObjectPlan],
                          report: ImportReport) -> None:
    """Problems of ``plan`` against project ``project_id``, into ``report``.

    ``classified`` are the objects whose classification the import writes,
    ``names`` what they name.
    """
    project = session.get(Project, project_id)
    _acquisitions_elsewhere(session, project_id, plan, report)
    _free_column_types(project, plan, report)
    _category_ids(session, names.ids_alone, classified, report)


def _acquisitions_elsewhere(session: Session, project_id: int, plan: ImportPlan,
                            report: ImportReport) -> None:
    for chunk in _chunks(plan.acquisitions):
        rows = session.execute(
            select(Acquisition.orig_id, Sample.orig_id)
            .join(Sample, Sample.id == Acquisition.sample_id)
            .where(Acquisition.project_id == project_id, Acquisition.orig_id.in_(chunk))).all()
        for acq_orig, sample_orig in rows:
            acq = plan.acquisitions[acq_orig]
            if acq.parent != sample_orig:
                report.add(acq.rel, acq.line, "sample_id",
                           acq.parent, "hierarchy_conflict",
                           f"acquisition {acq_orig!r} already belongs to sample {sample_orig!r} "
                           f"in project {project_id}; it cannot also belong to sample "
                           f"{acq.parent!r}")


def _free_column_types(project: Project, plan: ImportPlan, report: ImportReport) -> None:
    known = project.free_columns or {}
    for prefix, columns in plan.free_columns.items():
        for name, kind in columns.items():
            before = (known.get(prefix) or {}).get(name)
            if before is not None and before != kind:
                report.add(plan.column_files.get(f"{prefix}_{name}", plan.source), 2,
                           f"{prefix}_{name}", f"[{kind}]", "column_type_conflict",
                           f"column {prefix}_{name!s} is [{kind}] here but [{before}] in "
                           f"project {project.id}")


def _category_ids(session: Session, alone: set[int], objects: Iterable[ObjectPlan],
                  report: ImportReport) -> None:
    """A category id given without a name must be a taxon of this instance."""
    known: set[int] = set()
    for chunk in _chunks(alone):
        known.update(session.scalars(select(Taxon.id).where(Taxon.id.in_(chunk))))
    if alone <= known:
        return
    for obj in objects:  # a refusal: each line is reported
        if obj.label is None and obj.category_id is not None and obj.category_id not in known:
            report.add(obj.rel, obj.line, "object_annotation_category_id", str(obj.category_id),
                       "unknown_category_id",
                       f"category id {obj.category_id} is not a taxon of this instance")
