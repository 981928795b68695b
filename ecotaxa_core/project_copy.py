"""Copy part of a project into a new one (subset), or merge one project into another.

Both check that the user may manage the projects involved, hold their import
locks and are all or nothing: vault files and feature rows are written before
the database commits and removed again if anything fails.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, Image, Object, Process, Project, Sample,
                                    TrainedModel, User)
from ecotaxa_core.errors import EcoTaxaError, ObjectNotFound
from ecotaxa_core.import_journal import project_lock
from ecotaxa_core.instance import Instance
from ecotaxa_core.projects import create_project, get_project
from ecotaxa_core.rights import Action, require

__all__ = ["subset_project", "merge_projects", "MergeRefused"]

_OBJECT_COPIED = ("orig_id", "lat", "lon", "date", "time", "depth_min", "depth_max", "status",
                  "taxon_id", "score", "annotator_id", "annotation_date", "model_id",
                  "top_predictions", "extra")


class MergeRefused(EcoTaxaError):
    """Two projects that cannot be merged; ``clashes`` lists why."""

    def __init__(self, message: str, clashes: list[str]):
        super().__init__(message)
        self.clashes = clashes


def _rank(seed: int, orig_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{orig_id}".encode(), digest_size=8).digest()


def _choose(session: Session, project_id: int, fraction: float | None,
            object_ids: Sequence[int] | None, seed: int) -> list[int]:
    rows = session.execute(select(Object.id, Object.orig_id, Object.taxon_id)
                           .where(Object.project_id == project_id)).all()
    if object_ids is not None:
        wanted = {int(i) for i in object_ids}
        missing = sorted(wanted - {r.id for r in rows})
        if missing:
            raise ObjectNotFound(f"objects {missing[:10]} are not in project {project_id}")
        return sorted(wanted)
    if fraction is None or not 0 < fraction <= 1:
        raise EcoTaxaError("give object ids or a fraction per category in (0, 1]")
    by_taxon: dict[Any, list] = defaultdict(list)
    for r in rows:
        by_taxon[r.taxon_id].append(r)
    chosen: list[int] = []
    for members in by_taxon.values():
        members.sort(key=lambda r: _rank(seed, r.orig_id))
        chosen += [r.id for r in members[:math.ceil(fraction * len(members))]]
    return sorted(chosen)


def _copy_rows(session: Session, model, ids: set[int], new_project: int,
               parent_key: str | None, parent_map: dict[int, int]) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for old in session.scalars(select(model).where(model.id.in_(sorted(ids))).order_by(model.id)):
        fields = {c.key: getattr(old, c.key) for c in model.__table__.columns
                  if c.key not in ("id", "project_id")}
        if parent_key:
            fields[parent_key] = parent_map[fields[parent_key]]
        new = model(project_id=new_project, **fields)
        session.add(new)
        session.flush()
        mapping[old.id] = new.id
    return mapping


def subset_project(inst: Instance, project_id: int, user_id: int, *, title: str,
                   fraction_per_category: float | None = None,
                   object_ids: Sequence[int] | None = None, seed: int = 0) -> int:
    """Copy objects into a new project; returns its id.

    The objects are ``object_ids``, or in each category (unclassified counting
    as one) the ``ceil(fraction * n)`` objects that rank first by a hash of
    ``seed`` and their orig_id: the same choice on every run and instance.
    Samples, acquisitions and processes they use, their images (new vault
    files), feature rows and classification are copied; the user manages the
    new project.
    """
    written: list[str] = []
    new_id: int | None = None
    with project_lock(inst.settings.work_dir, project_id):
        try:
            with inst.sessions.begin() as s:
                require(s, user_id, project_id, Action.MANAGE)
                source = get_project(s, project_id)
                chosen = _choose(s, project_id, fraction_per_category, object_ids, seed)
                project = create_project(s, title, source.instrument, owner=s.get(User, user_id),
                                         pixel_size_um=source.pixel_size_um)
                project.free_columns = dict(source.free_columns or {})
                project.settings = dict(source.settings or {})
                new_id = project.id
                objects = list(s.scalars(select(Object).where(Object.id.in_(chosen))
                                         .order_by(Object.id)))
                samples = _copy_rows(s, Sample, {o.sample_id for o in objects if o.sample_id},
                                     new_id, None, {})
                acqs = _copy_rows(s, Acquisition,
                                  {o.acquisition_id for o in objects if o.acquisition_id},
                                  new_id, "sample_id", samples)
                procs = _copy_rows(s, Process, {o.process_id for o in objects if o.process_id},
                                   new_id, "acquisition_id", acqs)
                id_map: dict[int, int] = {}
                for old in objects:
                    new = Object(project_id=new_id, sample_id=samples.get(old.sample_id),
                                 acquisition_id=acqs.get(old.acquisition_id),
                                 process_id=procs.get(old.process_id),
                                 **{k: getattr(old, k) for k in _OBJECT_COPIED})
                    s.add(new)
                    s.flush()
                    id_map[old.id] = new.id
                    for im in old.images:
                        copy = Image(object_id=new.id, rank=im.rank, file_path="",
                                     original_name=im.original_name, width=im.width,
                                     height=im.height)
                        s.add(copy)
                        s.flush()
                        rel, thumb = inst.vault.rel_paths(copy.id, im.rank,
                                                          Path(im.file_path).suffix)
                        for src, dest in ((im.file_path, rel), (im.thumb_path, thumb)):
                            if src:
                                inst.vault.path(dest).parent.mkdir(parents=True, exist_ok=True)
                                written.append(dest)
                                shutil.copyfile(inst.vault.path(src), inst.vault.path(dest))
                        copy.file_path, copy.thumb_path = rel, thumb if im.thumb_path else None
                _copy_features(inst, project_id, new_id, id_map)
        except BaseException:
            inst.vault.remove(*written)
            if new_id is not None:
                shutil.rmtree(inst.features.root / f"project_{new_id}", ignore_errors=True)
            raise
    return new_id


def _copy_features(inst: Instance, source_id: int, target_id: int,
                   id_map: dict[int, int]) -> None:
    store = inst.features
    old_ids = np.asarray(sorted(id_map), dtype=np.int64)
    for name in store.feature_sets(source_id):
        have = old_ids[np.isin(old_ids, store.object_ids(source_id, name))]
        if len(have) == 0:
            continue
        m = store.read(source_id, name, have)
        store.append(target_id, name, [id_map[int(i)] for i in have], m.values, m.feature_names,
                     producer=store.attrs(source_id, name))


def _merge_checks(session: Session, inst: Instance, target_id: int, source_id: int) -> None:
    clashes = sorted(session.scalars(
        select(Object.orig_id).where(Object.project_id == source_id,
                                     Object.orig_id.in_(select(Object.orig_id).where(
                                         Object.project_id == target_id)))))
    if clashes:
        raise MergeRefused(f"{len(clashes)} object orig_id(s) exist in both projects: "
                           f"{', '.join(clashes[:20])}{' ...' if len(clashes) > 20 else ''}",
                           clashes)
    store = inst.features
    bad = []
    for name in store.feature_sets(source_id):
        if store.exists(target_id, name) and (
                store.feature_names(source_id, name) != store.feature_names(target_id, name)
                or store.attrs(source_id, name) != store.attrs(target_id, name)):
            bad.append(name)
    if bad:
        raise MergeRefused(f"feature sets {bad} differ between project {source_id} and "
                           f"{target_id} (other features or extractor)", bad)


def _match_by_orig_id(session: Session, model, source_id: int, target_id: int,
                      parent_key: str | None, parent_map: dict[int, int]) -> tuple[dict, int]:
    """Map source rows onto target rows of the same orig_id; move the others. Returns
    (source id -> target id for matched rows, number moved)."""
    target = dict(session.execute(select(model.orig_id, model.id)
                                  .where(model.project_id == target_id)).all())
    matched: dict[int, int] = {}
    moved = 0
    for row in session.scalars(select(model).where(model.project_id == source_id)):
        if row.orig_id in target:
            matched[row.id] = target[row.orig_id]
        else:
            row.project_id = target_id
            if parent_key and getattr(row, parent_key) in parent_map:
                setattr(row, parent_key, parent_map[getattr(row, parent_key)])
            moved += 1
    session.flush()
    return matched, moved


def merge_projects(inst: Instance, target_id: int, source_id: int, user_id: int) -> dict[str, Any]:
    """Move every object of ``source_id`` into ``target_id``, then delete the source.

    Samples, acquisitions and processes are matched by orig_id (the target's
    metadata wins), free columns by name (union). Feature rows are appended to
    the target's sets of the same name. Refuses, before writing anything, when
    an object orig_id is in both projects or a feature set differs. Object ids
    do not change, so images stay where they are.
    """
    if int(target_id) == int(source_id):
        raise EcoTaxaError("cannot merge a project into itself")
    first, second = sorted((int(target_id), int(source_id)))
    store = inst.features
    before = {n: store.n_rows(target_id, n) for n in store.feature_sets(target_id)}
    with project_lock(inst.settings.work_dir, first), \
            project_lock(inst.settings.work_dir, second):
        try:
            with inst.sessions.begin() as s:
                require(s, user_id, target_id, Action.MANAGE)
                require(s, user_id, source_id, Action.MANAGE)
                _merge_checks(s, inst, target_id, source_id)
                samples, n_samples = _match_by_orig_id(s, Sample, source_id, target_id, None, {})
                acqs, n_acqs = _match_by_orig_id(s, Acquisition, source_id, target_id,
                                                 "sample_id", samples)
                procs, n_procs = _match_by_orig_id(s, Process, source_id, target_id,
                                                   "acquisition_id", acqs)
                object_ids = list(s.scalars(select(Object.id)
                                            .where(Object.project_id == source_id)))
                for old, new in samples.items():
                    s.execute(update(Object).where(Object.project_id == source_id,
                                                   Object.sample_id == old).values(sample_id=new))
                for old, new in acqs.items():
                    s.execute(update(Object).where(Object.project_id == source_id,
                                                   Object.acquisition_id == old)
                              .values(acquisition_id=new))
                for old, new in procs.items():
                    s.execute(update(Object).where(Object.project_id == source_id,
                                                   Object.process_id == old)
                              .values(process_id=new))
                s.execute(update(Object).where(Object.project_id == source_id)
                          .values(project_id=target_id))
                target, source = s.get(Project, target_id), s.get(Project, source_id)
                columns = {k: dict(v) for k, v in (target.free_columns or {}).items()}
                for prefix, cols in (source.free_columns or {}).items():
                    for col, kind in cols.items():
                        columns.setdefault(prefix, {}).setdefault(col, kind)
                target.free_columns = columns
                model_ids = list(s.scalars(select(TrainedModel.id)
                                           .where(TrainedModel.project_id == source_id)))
                n_features = 0
                for name in store.feature_sets(source_id):
                    m = store.read(source_id, name)
                    n_features += store.append(target_id, name, m.object_ids, m.values,
                                               m.feature_names,
                                               producer=store.attrs(source_id, name))
                s.flush()
                s.delete(source)
        except BaseException:
            for name in store.feature_sets(target_id):
                store.truncate(target_id, name, before.get(name, 0))
            raise
        shutil.rmtree(store.root / f"project_{int(source_id)}", ignore_errors=True)
        for model_id in model_ids:
            shutil.rmtree(Path(inst.models_dir) / str(int(model_id)), ignore_errors=True)
    return {"target_id": int(target_id), "source_id": int(source_id),
            "n_objects": len(object_ids), "n_samples_moved": n_samples,
            "n_samples_matched": len(samples), "n_acquisitions_moved": n_acqs,
            "n_processes_moved": n_procs, "n_feature_rows": n_features}
