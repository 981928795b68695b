"""Copy part of a project into a new one (subset), or merge one project into another.

Both check that the user may manage the projects involved, hold their import
locks and are all or nothing: vault files and feature rows are written before
the database commits and removed again if anything fails. A subset copies what
an :class:`~ecotaxa_core.object_filter.ObjectFilter` keeps (or a fraction per
category of it) with batched inserts; a merge refuses projects whose samples,
acquisitions or processes of the same orig_id disagree.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import (Acquisition, Image, Object, Process, Project, Sample,
                                    TrainedModel, User)
from ecotaxa_core.errors import EcoTaxaError, ObjectNotFound
from ecotaxa_core.import_journal import project_lock
from ecotaxa_core.instance import Instance
from ecotaxa_core.object_filter import ObjectFilter
from ecotaxa_core.progress import Progress, report
from ecotaxa_core.projects import create_project, get_project
from ecotaxa_core.rights import Action, require

__all__ = ["subset_project", "merge_projects", "MergeRefused"]

_CHUNK = 1000  # objects per batch: bounded memory and IN lists on both databases
_FEATURE_CHUNK = 10000
_COPY_THREADS = 8


class MergeRefused(EcoTaxaError):
    """Two projects that cannot be merged; ``clashes`` lists why (capped)."""

    def __init__(self, message: str, clashes: list[str]):
        super().__init__(message)
        self.clashes = clashes


def _chunks(ids: Sequence[int], size: int = _CHUNK) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start:start + size])


def _rank(seed: int, orig_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{orig_id}".encode(), digest_size=8).digest()


def _choose(session: Session, project_id: int, fraction: float | None,
            object_ids: Sequence[int] | None, object_filter: ObjectFilter | None,
            seed: int) -> list[int]:
    """The ids to copy: ``object_ids``, or what the filter keeps, then a fraction of it."""
    if object_ids is not None:
        if object_filter is not None or fraction is not None:
            raise EcoTaxaError("give object ids, or a filter and/or a fraction, not both")
        wanted = sorted({int(i) for i in object_ids})
        found: set[int] = set()
        for chunk in _chunks(wanted):
            found.update(session.scalars(select(Object.id).where(
                Object.id.in_(chunk), Object.project_id == project_id)))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise ObjectNotFound(f"objects {missing[:10]} are not in project {project_id}")
        chosen = wanted
    else:
        if fraction is None and object_filter is None:
            raise EcoTaxaError("give object ids, a filter or a fraction per category in (0, 1]")
        if fraction is not None and not 0 < fraction <= 1:
            raise EcoTaxaError(f"the fraction per category must be in (0, 1], not {fraction}")
        where = (object_filter or ObjectFilter()).where_clauses(session, project_id)
        rows = session.execute(select(Object.id, Object.orig_id, Object.taxon_id)
                               .where(*where)).all()
        if fraction is None:
            chosen = sorted(r.id for r in rows)
        else:
            by_taxon: dict[Any, list] = defaultdict(list)
            for r in rows:
                by_taxon[r.taxon_id].append(r)
            chosen = []
            for members in by_taxon.values():
                members.sort(key=lambda r: _rank(seed, r.orig_id))
                chosen += [r.id for r in members[:math.ceil(fraction * len(members))]]
            chosen.sort()
    if not chosen:
        raise EcoTaxaError(f"no object of project {project_id} to copy: the filter keeps none")
    return chosen


def _by_orig_id(session: Session, model, project_id: int, orig_ids: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for start in range(0, len(orig_ids), _CHUNK):
        ids.update(session.execute(select(model.orig_id, model.id).where(
            model.project_id == project_id,
            model.orig_id.in_(orig_ids[start:start + _CHUNK]))).all())
    return ids


def _copy_rows(session: Session, model, old_ids: list[int], new_project: int,
               parents: dict[str, dict[int, int]]) -> dict[int, int]:
    """Insert copies of the rows ``old_ids`` of ``model`` into ``new_project``, in batches;
    parent ids are mapped by ``parents`` (column -> old id -> new id). Returns old -> new id.

    The new ids are read back by (project, orig_id), the rows' unique key: asked
    for them in the insert, SQLAlchemy would insert one row at a time on SQLite.
    """
    columns = [c for c in model.__table__.columns if c.key not in ("id", "project_id")]
    mapping: dict[int, int] = {}
    for chunk in _chunks(old_ids):
        rows, old_by_orig = [], {}
        for r in session.execute(select(model.__table__).where(model.id.in_(chunk))).mappings():
            row = {c.key: r[c.key] for c in columns}
            row["project_id"] = new_project
            for key, ids in parents.items():
                if row[key] is not None:
                    row[key] = ids[row[key]]
            rows.append(row)
            old_by_orig[r["orig_id"]] = r["id"]
        if rows:
            session.execute(insert(model), rows)
        new_by_orig = _by_orig_id(session, model, new_project, list(old_by_orig))
        mapping.update({old: new_by_orig[orig] for orig, old in old_by_orig.items()})
    return mapping


def _copy_images(session: Session, inst: Instance, id_map: dict[int, int],
                 written: list[str], progress: Progress | None = None) -> None:
    """Image rows and vault files of the copied objects (``id_map``: old -> new object id)."""
    done = 0
    for chunk in _chunks(sorted(id_map)):
        done += len(chunk)
        report(progress, "objects' images", done - len(chunk), len(id_map))
        old = session.execute(select(Image.object_id, Image.rank, Image.file_path,
                                     Image.thumb_path, Image.original_name, Image.width,
                                     Image.height).where(Image.object_id.in_(chunk))).all()
        if not old:
            continue
        session.execute(insert(Image), [
            dict(object_id=id_map[im.object_id], rank=im.rank, file_path="",
                 original_name=im.original_name, width=im.width, height=im.height)
            for im in old])
        new_ids = {(oid, rank): iid for iid, oid, rank in session.execute(
            select(Image.id, Image.object_id, Image.rank)
            .where(Image.object_id.in_([id_map[i] for i in chunk])))}
        updates, copies = [], []
        for im in old:
            image_id = new_ids[(id_map[im.object_id], im.rank)]
            rel, thumb = inst.vault.rel_paths(image_id, im.rank, Path(im.file_path).suffix)
            copies += [(src, dest) for src, dest in ((im.file_path, rel), (im.thumb_path, thumb))
                       if src]
            updates.append(dict(id=image_id, file_path=rel,
                                thumb_path=thumb if im.thumb_path else None))
        written += [dest for _, dest in copies]
        # File copies wait on the disk or the network, not the CPU: threads overlap them.
        with ThreadPoolExecutor(_COPY_THREADS) as pool:
            list(pool.map(lambda c: inst.vault.copy(*c), copies))
        session.execute(update(Image), updates)


def _copy_parents(session: Session, object_ids: list[int], new_project: int
                  ) -> dict[str, dict[int, int]]:
    """Copy the samples, acquisitions and processes the objects use (and the parents of
    those) into ``new_project``; old -> new ids per object column."""
    used: dict[str, set[int]] = defaultdict(set)
    for chunk in _chunks(object_ids):
        for sid, aid, pid in session.execute(
                select(Object.sample_id, Object.acquisition_id, Object.process_id)
                .where(Object.id.in_(chunk))):
            used["sample_id"].add(sid)
            used["acquisition_id"].add(aid)
            used["process_id"].add(pid)
    acq_ids = _used(used["acquisition_id"], _referenced(
        session, Process.acquisition_id, Process.id, used["process_id"]))
    sample_ids = _used(used["sample_id"], _referenced(
        session, Acquisition.sample_id, Acquisition.id, acq_ids))
    maps = {"sample_id": _copy_rows(session, Sample, sample_ids, new_project, {})}
    maps["acquisition_id"] = _copy_rows(session, Acquisition, acq_ids, new_project,
                                        {"sample_id": maps["sample_id"]})
    maps["process_id"] = _copy_rows(session, Process, _used(used["process_id"]), new_project,
                                    {"acquisition_id": maps["acquisition_id"]})
    return maps


def subset_project(inst: Instance, project_id: int, user_id: int, *, title: str,
                   fraction_per_category: float | None = None,
                   object_ids: Sequence[int] | None = None,
                   object_filter: ObjectFilter | None = None, seed: int = 0,
                   progress: Progress | None = None) -> int:
    """Copy objects into a new project; returns its id.

    The objects are ``object_ids``; or those ``object_filter`` keeps (every
    object without one), of which, with ``fraction_per_category``, only in each
    category (unclassified counting as one) the ``ceil(fraction * n)`` objects
    that rank first by a hash of ``seed`` and their orig_id: the same choice on
    every run and instance. Samples, acquisitions and processes they use, their
    images (new vault files), feature rows and classification are copied, in
    batches; the user manages the new project. Refuses to copy nothing.
    ``progress`` hears of the rows, each batch of images, and the features.
    """
    written: list[str] = []
    new_id: int | None = None
    with project_lock(inst.settings.work_dir, project_id):
        try:
            with inst.sessions.begin() as s:
                require(s, user_id, project_id, Action.MANAGE)
                source = get_project(s, project_id)
                chosen = _choose(s, project_id, fraction_per_category, object_ids,
                                 object_filter, seed)
                project = create_project(s, title, source.instrument, owner=s.get(User, user_id),
                                         pixel_size_um=source.pixel_size_um)
                project.free_columns = dict(source.free_columns or {})
                project.settings = dict(source.settings or {})
                s.flush()
                new_id = project.id
                report(progress, "objects", 0, len(chosen))
                maps = _copy_parents(s, chosen, new_id)
                id_map = _copy_rows(s, Object, chosen, new_id, maps)
                report(progress, "objects", len(chosen), len(chosen))
                _copy_images(s, inst, id_map, written, progress)
                report(progress, "objects' images", len(id_map), len(id_map))
                _copy_features(inst, project_id, new_id, id_map)
                report(progress, "feature sets", 1, 1)
        except BaseException:
            inst.vault.remove(*written)
            if new_id is not None:
                inst.features.delete_project(new_id)
            raise
    return new_id


def _used(*groups: Iterable[int | None]) -> list[int]:
    return sorted({i for group in groups for i in group if i is not None})


def _referenced(session: Session, column, key, ids: Iterable[int | None]) -> list[int]:
    """``column`` of the rows whose ``key`` is one of ``ids`` (a parent of each)."""
    out: list[int] = []
    for chunk in _chunks(_used(ids)):
        out += session.scalars(select(column).where(key.in_(chunk)))
    return out


def _copy_features(inst: Instance, source_id: int, target_id: int,
                   id_map: dict[int, int]) -> None:
    store = inst.features
    old_ids = np.asarray(sorted(id_map), dtype=np.int64)
    for name in store.feature_sets(source_id):
        have = old_ids[np.isin(old_ids, store.object_ids(source_id, name))]
        for start in range(0, len(have), _FEATURE_CHUNK):
            part = have[start:start + _FEATURE_CHUNK]
            m = store.read(source_id, name, part)
            store.append(target_id, name, [id_map[int(i)] for i in part], m.values,
                         m.feature_names, producer=store.attrs(source_id, name))


_MAX_CLASHES = 100  # clashes kept in MergeRefused.clashes; the message shows fewer
# Level, model, columns compared besides the free fields, parent whose orig_id must match.
_LEVELS = (("sample", Sample, ("lat", "lon"), None),
           ("acquisition", Acquisition, ("instrument",), (Sample, "sample_id", "sample")),
           ("process", Process, (), (Acquisition, "acquisition_id", "acquisition")))


def _refuse(what: str, clashes: list[str], shown: int = 20) -> None:
    more = f" ... and {len(clashes) - shown} more" if len(clashes) > shown else ""
    raise MergeRefused(f"{len(clashes)} {what}: {'; '.join(clashes[:shown])}{more}",
                       clashes[:_MAX_CLASHES])


def _shared_rows(session: Session, level: tuple, project_id: int, other_id: int) -> dict:
    """orig_id -> (compared values..., extra, parent orig_id) of the rows of ``project_id``
    whose orig_id ``other_id`` has too."""
    _, model, columns, parent = level
    query = select(model.orig_id, *(getattr(model, c) for c in columns), model.extra)
    if parent is not None:
        parent_model, key, _ = parent
        query = query.add_columns(parent_model.orig_id).join(
            parent_model, parent_model.id == getattr(model, key))
    query = query.where(model.project_id == project_id, model.orig_id.in_(
        select(model.orig_id).where(model.project_id == other_id)))
    return {row[0]: row[1:] for row in session.execute(query)}


def _metadata_clashes(session: Session, target_id: int, source_id: int) -> list[str]:
    """One line per sample/acquisition/process of both projects whose metadata differ."""
    clashes = []
    for level in _LEVELS:
        name, _, columns, parent = level
        target = _shared_rows(session, level, target_id, source_id)
        source = _shared_rows(session, level, source_id, target_id)
        for orig in sorted(target):
            mine, theirs = target[orig], source[orig]
            diffs = [(c, a, b) for c, a, b in zip(columns, mine, theirs) if a != b]
            if parent is not None and mine[-1] != theirs[-1]:
                diffs.append((parent[2], mine[-1], theirs[-1]))
            extra_a, extra_b = mine[len(columns)] or {}, theirs[len(columns)] or {}
            for key in sorted(set(extra_a) | set(extra_b)):
                if extra_a.get(key) != extra_b.get(key):
                    diffs.append((key, extra_a.get(key), extra_b.get(key)))
            if diffs:
                clashes.append(f"{name} {orig!r}: " + ", ".join(
                    f"{c} {a!r} vs {b!r}" for c, a, b in diffs))
    return clashes


def _merge_checks(session: Session, inst: Instance, target_id: int, source_id: int) -> None:
    clashes = sorted(session.scalars(
        select(Object.orig_id).where(Object.project_id == source_id,
                                     Object.orig_id.in_(select(Object.orig_id).where(
                                         Object.project_id == target_id)))))
    if clashes:
        _refuse("object orig_id(s) exist in both projects", clashes)
    clashes = _metadata_clashes(session, target_id, source_id)
    if clashes:
        _refuse(f"sample/acquisition/process orig_id(s) exist in both projects with different "
                f"metadata (project {target_id} vs project {source_id})", clashes, shown=10)
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


def merge_projects(inst: Instance, target_id: int, source_id: int, user_id: int, *,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Move every object of ``source_id`` into ``target_id``, then delete the source.

    Samples, acquisitions and processes are matched by orig_id, free columns by
    name (union). Feature rows are appended to the target's sets of the same
    name. Refuses (:class:`MergeRefused`, listing the clashes), before writing
    anything, when an object orig_id is in both projects, when a sample,
    acquisition or process of the same orig_id has other metadata in each
    (lat, lon, instrument, parent, free fields: none is silently kept), or
    when a feature set differs. Object ids do not change, so images stay
    where they are. ``progress`` hears of the checks, the objects, and each
    feature set.
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
                report(progress, "checks", 0, 1)
                _merge_checks(s, inst, target_id, source_id)
                report(progress, "checks", 1, 1)
                samples, n_samples = _match_by_orig_id(s, Sample, source_id, target_id, None, {})
                acqs, n_acqs = _match_by_orig_id(s, Acquisition, source_id, target_id,
                                                 "sample_id", samples)
                procs, n_procs = _match_by_orig_id(s, Process, source_id, target_id,
                                                   "acquisition_id", acqs)
                object_ids = list(s.scalars(select(Object.id)
                                            .where(Object.project_id == source_id)))
                report(progress, "objects", 0, len(object_ids))
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
                report(progress, "objects", len(object_ids), len(object_ids))
                target, source = s.get(Project, target_id), s.get(Project, source_id)
                columns = {k: dict(v) for k, v in (target.free_columns or {}).items()}
                for prefix, cols in (source.free_columns or {}).items():
                    for col, kind in cols.items():
                        columns.setdefault(prefix, {}).setdefault(col, kind)
                target.free_columns = columns
                model_ids = list(s.scalars(select(TrainedModel.id)
                                           .where(TrainedModel.project_id == source_id)))
                n_features = 0
                sets = store.feature_sets(source_id)
                for k, name in enumerate(sets):
                    report(progress, "feature sets", k, len(sets))
                    m = store.read(source_id, name)
                    n_features += store.append(target_id, name, m.object_ids, m.values,
                                               m.feature_names,
                                               producer=store.attrs(source_id, name))
                report(progress, "feature sets", len(sets), len(sets))
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
