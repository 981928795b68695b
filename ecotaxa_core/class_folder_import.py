"""Turning class folders (``<category>/<image>``) into an :class:`ImportPlan`.

Every image becomes an object validated in its folder's category by the
importing user, in one sample named after the source (folder name or zip
stem). An object's id is the image's file stem, made unique in the project
(``123``, then ``123_2`` ...).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, ObjectStatus, utcnow
from ecotaxa_core.import_checks import existing_orig_ids
from ecotaxa_core.import_plan import ImagePlan, ImportPlan, ObjectPlan, ParentPlan
from ecotaxa_core.import_sources import IMAGE_SUFFIXES, ImportSource
from ecotaxa_core.import_spool import ObjectSpool

__all__ = ["plan_class_folders"]


def plan_class_folders(session: Session, project_id: int, source: ImportSource, *,
                       user_id: int | None, spill_dir: Path | None = None) -> ImportPlan:
    """The plan of the class folders of ``source``; its objects spool to ``spill_dir``."""
    plan = ImportPlan(source=source.source, kind="class_folders",
                      objects=ObjectSpool(spill_dir))
    sample = ParentPlan(orig_id=source.name, rel=source.name, line=None)
    plan.samples[sample.orig_id] = sample
    files = [(folder, f) for folder in source.class_folders for f in sorted(folder.iterdir())
             if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
    taken = existing_orig_ids(session, project_id, (f.stem for _, f in files))
    when = utcnow()
    for folder, f in files:
        orig_id = _unique(session, project_id, f.stem, taken)
        taken.add(orig_id)
        rel = source.rel(f)
        obj = ObjectPlan(orig_id=orig_id, rel=rel, line=None, sample=sample.orig_id,
                         status=ObjectStatus.VALIDATED.value, label=folder.name,
                         annotator_id=user_id, annotation_date=when)
        obj.images.append(ImagePlan(src=str(f), rank=0, original_name=rel, rel=rel, line=None))
        plan.objects.append(obj)
    return plan


def _unique(session: Session, project_id: int, stem: str, taken: set[str]) -> str:
    if stem not in taken:
        return stem
    n = 2
    while True:
        candidate = f"{stem}_{n}"
        if candidate not in taken and session.scalar(
                select(Object.id).where(Object.project_id == project_id,
                                        Object.orig_id == candidate)) is None:
            return candidate
        n += 1
