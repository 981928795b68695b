"""Object listings for the validation dashboard: filters, sorting, pages and counts.

The dashboard never writes SQL: it asks these functions for one page of
objects (with their category, score, first thumbnail and annotator), for the
per-category counts of a project, and for the taxa matching what a user types
in the category picker. Changes go through :mod:`ecotaxa_core.annotation`.

>>> SORTS
('score_desc', 'score_asc', 'annotated_desc', 'annotated_asc', 'random', 'id', 'orig_id')
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session, aliased

from ecotaxa_core.db.models import (
    Image,
    Membership,
    Object,
    ObjectStatus,
    Project,
    Role,
    Sample,
    Taxon,
    User,
)
from ecotaxa_core.errors import EcoTaxaError, UserNotFound
from ecotaxa_core.object_filter import ObjectFilter, free_column_value, object_free_columns
from ecotaxa_core.similarity import rank_by_similarity
from ecotaxa_core.store.feature_store import FeatureStore

__all__ = [
    "SORTS",
    "FIXED_SORT_FIELDS",
    "field_sort",
    "sortable_fields",
    "ObjectRow",
    "CategoryCount",
    "TaxonChoice",
    "ProjectChoice",
    "list_objects",
    "list_objects_by_similarity",
    "matching_ids",
    "rows_for_ids",
    "category_counts",
    "taxa_for_picker",
    "projects_for_user",
    "current_states",
    "project_samples",
    "ProjectListing",
    "project_listing",
    "project_annotators",
]

SORTS = ("score_desc", "score_asc", "annotated_desc", "annotated_asc", "random", "id", "orig_id")
# "random": a fixed shuffle of ids (id times a multiplier, modulo a prime below 2**31: a
# one-to-one map), the same for everyone and stable across pages; the seed draws the
# multiplier, hence another shuffle.
_HASH_MODULUS = 2_147_483_629

_ANNOTATING_ROLES = (Role.ANNOTATOR.value, Role.MANAGER.value)


@dataclass(frozen=True)
class ObjectRow:
    """One object as the validation grid shows it."""

    id: int
    orig_id: str
    status: str
    taxon_id: int | None
    category: str | None  # display name of the taxon
    score: float | None
    thumb_path: str | None  # relative to the vault root; first image (rank 0), or the image
    # itself when it is small enough to be its own thumbnail
    annotator: str | None  # name of the user who made the last change
    annotation_date: datetime | None = None  # when the last change was made
    fields: dict | None = None  # orig_id, date, time, depths, position and free columns
    image_size: tuple[int, int] | None = None  # (width, height) in pixels of the first image
    # itself (not of its thumbnail): with the pixel size, the scale of what is shown


class CategoryCount(NamedTuple):
    taxon_id: int
    display_name: str
    n_validated: int
    n_predicted: int
    n_dubious: int


class TaxonChoice(NamedTuple):
    taxon_id: int
    display_name: str


class ProjectChoice(NamedTuple):
    project_id: int
    title: str
    can_annotate: bool


# Sorting by a field: "field:NAME" (lowest first) or "field:NAME:desc" (highest first); NAME is
# one of these object columns or a free object column of the project (numbers sort as numbers).
FIXED_SORT_FIELDS = ("orig_id", "date", "time", "depth_min", "depth_max", "lat", "lon")
_FIELD_SORT = "field:"


def field_sort(name: str, descending: bool = False) -> str:
    """The ``sort`` that orders by a field.

    >>> field_sort("area", descending=True)
    'field:area:desc'
    """
    return f"{_FIELD_SORT}{name}{':desc' if descending else ''}"


def sortable_fields(session: Session, project_id: int) -> list[str]:
    """The fields a project's objects can be sorted by: the fixed ones, then its free
    object columns in their import order."""
    project = session.get(Project, int(project_id))
    if project is None:
        raise EcoTaxaError(f"no project with id {project_id}")
    return list(FIXED_SORT_FIELDS) + [k for k, _ in object_free_columns(project).values()]


def _field_order(session: Session, project_id: int, sort: str):
    spec = sort[len(_FIELD_SORT):]
    name, descending = (spec[:-len(":desc")], True) if spec.endswith(":desc") else (spec, False)
    if name in FIXED_SORT_FIELDS:
        column = getattr(Object, name)
    else:
        project = session.get(Project, int(project_id))
        free = object_free_columns(project) if project is not None else {}
        if name.lower() not in free:
            raise EcoTaxaError(f"cannot sort by {name!r}: project {project_id} has no such "
                               f"field; it has {', '.join(sortable_fields(session, project_id))}")
        column = free_column_value(session, *free[name.lower()])
    # Objects without a value come last either way; ties in object id order.
    return ((column.desc() if descending else column.asc()).nulls_last(), Object.id)


def _order_by(sort: str, seed: int = 0, session: Session | None = None,
              project_id: int | None = None):
    if sort.startswith(_FIELD_SORT) and session is not None:
        return _field_order(session, project_id, sort)
    if sort == "score_desc":
        return (Object.score.desc().nulls_last(), Object.id)
    if sort == "score_asc":
        return (Object.score.asc().nulls_last(), Object.id)
    if sort == "annotated_desc":
        return (Object.annotation_date.desc().nulls_last(), Object.id)
    if sort == "annotated_asc":
        return (Object.annotation_date.asc().nulls_last(), Object.id)
    if sort == "random":
        multiplier = random.Random(int(seed)).randrange(_HASH_MODULUS // 7, _HASH_MODULUS)
        shuffled = Object.id % _HASH_MODULUS * multiplier % _HASH_MODULUS
        return (shuffled, Object.id)
    if sort == "id":
        return (Object.id,)
    if sort == "orig_id":
        return (Object.orig_id, Object.id)
    raise EcoTaxaError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)} or "
                       f"'field:NAME' / 'field:NAME:desc'")


def _check_status(status: str | None) -> str | None:
    if status is None:
        return None
    try:
        return ObjectStatus(status).value
    except ValueError:
        raise EcoTaxaError(f"unknown status {status!r}; use one of "
                           f"{', '.join(s.value for s in ObjectStatus)}") from None


def list_objects(session: Session, project_id: int, *, taxon_id: int | None = None,
                 status: str | None = None, object_filter: ObjectFilter | None = None,
                 within: Select | None = None, sort: str = "score_desc", seed: int = 0,
                 limit: int = 60, offset: int = 0) -> tuple[list[ObjectRow], int]:
    """One page of a project's objects, and how many objects match the filters.

    Parameters
    ----------
    session : an open session.
    project_id : the project whose objects are listed.
    taxon_id : only objects currently in this category (None: any category).
    status : only objects with this status (``unclassified``, ``predicted``,
        ``dubious``, ``validated``; None: any).
    object_filter : any other criteria (:class:`ObjectFilter`: categories
        with their children, samples, dates, depths, annotators, score range,
        free columns ...); raises its :class:`InvalidFilter` for names the
        project does not have.
    within : only objects whose id this ``SELECT Object.id`` returns (say,
        :func:`~ecotaxa_core.learn.thresholds.bulk_validation_select`).
    sort : ``score_desc`` / ``score_asc`` (objects without a score come last
        either way), ``annotated_desc`` / ``annotated_asc`` (date of the last
        change; never changed last), ``random`` (a shuffle fixed by ``seed``),
        ``id`` or ``orig_id``, or a field: ``field:NAME`` (lowest first) or
        ``field:NAME:desc`` (:func:`field_sort`; NAME from :func:`sortable_fields`:
        numeric free columns sort as numbers, objects without a value last);
        ties are broken by object id so pages never overlap.
    limit, offset : the page.

    Returns
    -------
    (rows, total) : the page's rows and the number of matching objects.
    """
    order = _order_by(sort, seed, session, project_id)
    status = _check_status(status)
    if limit < 1 or offset < 0:
        raise EcoTaxaError(f"invalid page: limit={limit} (>= 1), offset={offset} (>= 0)")
    conditions = _conditions(session, project_id, taxon_id, status, object_filter, within)
    total = session.scalar(select(func.count()).select_from(Object).where(*conditions))
    q = _row_query().where(*conditions).order_by(*order).limit(limit).offset(offset)
    return [_object_row(r) for r in session.execute(q)], int(total or 0)


def list_objects_by_similarity(session: Session, store: FeatureStore, project_id: int,
                               reference_id: int, *, most_similar_first: bool = True,
                               taxon_id: int | None = None, status: str | None = None,
                               object_filter: ObjectFilter | None = None,
                               within: Select | None = None, limit: int = 60,
                               offset: int = 0) -> tuple[list[ObjectRow], int]:
    """One page of the objects that pass the filters, the most (or least) similar to
    ``reference_id`` first (:func:`~ecotaxa_core.similarity.rank_by_similarity`:
    deep features; objects without a vector last); and how many pass the filters.

    Raises :class:`~ecotaxa_core.similarity.NoSimilarityFeatures` when the
    project or the reference object has no vector.
    """
    status = _check_status(status)
    if limit < 1 or offset < 0:
        raise EcoTaxaError(f"invalid page: limit={limit} (>= 1), offset={offset} (>= 0)")
    conditions = _conditions(session, project_id, taxon_id, status, object_filter, within)
    ids = np.fromiter(session.scalars(select(Object.id).where(*conditions)), dtype=np.int64)
    ranked = rank_by_similarity(store, project_id, reference_id, ids,
                                most_similar_first=most_similar_first, limit=offset + limit)
    return rows_for_ids(session, project_id, ranked[offset:].tolist()), len(ids)


def rows_for_ids(session: Session, project_id: int, object_ids: Sequence[int]) -> list[ObjectRow]:
    """The grid rows of these objects of the project, in the order given (others left out)."""
    ids = [int(i) for i in object_ids]
    if not ids:
        return []
    found = {r[0]: _object_row(r) for r in session.execute(
        _row_query().where(Object.project_id == project_id, Object.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def matching_ids(session: Session, project_id: int, *, taxon_id: int | None = None,
                 status: str | None = None, object_filter: ObjectFilter | None = None,
                 within: Select | None = None) -> list[int]:
    """Ids of every object that passes the filters (as :func:`list_objects` takes them), sorted."""
    conditions = _conditions(session, project_id, taxon_id, _check_status(status),
                             object_filter, within)
    return list(session.scalars(select(Object.id).where(*conditions).order_by(Object.id)))


def _conditions(session: Session, project_id: int, taxon_id: int | None, status: str | None,
                object_filter: ObjectFilter | None, within: Select | None = None) -> list:
    conditions = [Object.project_id == project_id]
    if taxon_id is not None:
        conditions.append(Object.taxon_id == taxon_id)
    if status is not None:
        conditions.append(Object.status == status)
    if object_filter is not None:
        conditions.extend(object_filter.where_clauses(session, project_id))
    if within is not None:
        conditions.append(Object.id.in_(within))
    return conditions


def _row_query():
    annotator = aliased(User)
    return (select(Object.id, Object.orig_id, Object.status, Object.taxon_id, Taxon.display_name,
                   Object.score, func.coalesce(Image.thumb_path, Image.file_path), annotator.name,
                   Object.annotation_date, Object.date, Object.time, Object.depth_min,
                   Object.depth_max, Object.lat, Object.lon, Object.extra, Image.width,
                   Image.height)
            .outerjoin(Taxon, Taxon.id == Object.taxon_id)
            .outerjoin(Image, and_(Image.object_id == Object.id, Image.rank == 0))
            .outerjoin(annotator, annotator.id == Object.annotator_id))


def _object_row(r) -> ObjectRow:
    fields = {"orig_id": r[1], "date": r[9], "time": r[10], "depth_min": r[11],
              "depth_max": r[12], "lat": r[13], "lon": r[14], **(r[15] or {})}
    return ObjectRow(id=r[0], orig_id=r[1], status=r[2], taxon_id=r[3], category=r[4],
                     score=r[5], thumb_path=r[6], annotator=r[7], annotation_date=r[8],
                     fields=fields, image_size=(r[16], r[17]) if r[16] else None)


def category_counts(session: Session, project_id: int) -> list[CategoryCount]:
    """Per category present in the project: validated, predicted and dubious objects.

    Sorted by display name; objects without a category are not counted. One
    grouped count that the (project_id, status, taxon_id) index answers alone
    (no row read), then the names of the categories found.
    """
    counts: dict[int, dict[str, int]] = {}
    for status, taxon_id, n in session.execute(
            select(Object.status, Object.taxon_id, func.count())
            .where(Object.project_id == project_id, Object.taxon_id.is_not(None))
            .group_by(Object.status, Object.taxon_id)):
        counts.setdefault(int(taxon_id), {})[status] = int(n)
    if not counts:
        return []
    names = dict(session.execute(select(Taxon.id, Taxon.display_name)
                                 .where(Taxon.id.in_(list(counts)))).all())
    out = [CategoryCount(t, names.get(t, f"taxon {t}"), c.get(ObjectStatus.VALIDATED.value, 0),
                         c.get(ObjectStatus.PREDICTED.value, 0), c.get(ObjectStatus.DUBIOUS.value, 0))
           for t, c in counts.items()]
    return sorted(out, key=lambda c: c.display_name)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def taxa_for_picker(session: Session, query: str, limit: int = 20) -> list[TaxonChoice]:
    """Taxa whose display name contains ``query`` (any case), for a type-ahead picker.

    Names that start with the query come first, then shorter names, then
    alphabetical order. An empty query lists the first taxa alphabetically.
    Deprecated and merged taxa are not offered (objects may still be in them).
    """
    text = query.strip().lower()
    name = func.lower(Taxon.display_name)
    q = select(Taxon.id, Taxon.display_name).where(Taxon.deprecated.is_(False),
                                                   Taxon.merged_into_id.is_(None))
    if text:
        pattern = _like_escape(text)
        q = q.where(name.like(f"%{pattern}%", escape="\\"))
        starts = case((name.like(f"{pattern}%", escape="\\"), 0), else_=1)
        q = q.order_by(starts, func.length(Taxon.display_name), name)
    else:
        q = q.order_by(name)
    return [TaxonChoice(int(r[0]), r[1]) for r in session.execute(q.limit(limit))]


def projects_for_user(session: Session, user_id: int) -> list[ProjectChoice]:
    """The projects a user may open in the dashboard, by id.

    An administrator sees every project and may annotate all of them; other
    users see the projects they are members of, and may annotate those where
    they are annotator or manager.
    """
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    if user.is_admin:
        return [ProjectChoice(pid, title, True)
                for pid, title in session.execute(select(Project.id, Project.title)
                                                  .order_by(Project.id))]
    q = (select(Project.id, Project.title, Membership.role)
         .join(Membership, and_(Membership.project_id == Project.id, Membership.user_id == user_id))
         .order_by(Project.id))
    return [ProjectChoice(pid, title, role in _ANNOTATING_ROLES)
            for pid, title, role in session.execute(q)]



def current_states(session: Session, project_id: int,
                   object_ids: Iterable[int]) -> dict[int, tuple[str, int | None, datetime | None]]:
    """``{object_id: (status, taxon_id, annotation_date)}`` now, for objects of the project.

    What a page compares with the rows it shows to find the tiles someone else
    changed since; objects deleted since are absent.
    """
    ids = sorted({int(i) for i in object_ids})
    if not ids:
        return {}
    q = select(Object.id, Object.status, Object.taxon_id, Object.annotation_date).where(
        Object.project_id == project_id, Object.id.in_(ids))
    return {r[0]: (r[1], r[2], r[3]) for r in session.execute(q)}


def project_samples(session: Session, project_id: int) -> list[str]:
    """The orig_ids of the project's samples, sorted."""
    return list(session.scalars(select(Sample.orig_id).where(Sample.project_id == project_id)
                                .order_by(Sample.orig_id)))


def project_annotators(session: Session, project_id: int) -> list[tuple[int, str]]:
    """``(user_id, name)`` of everyone who made the last change of some object, by name."""
    who = select(Object.annotator_id).where(Object.project_id == project_id,
                                            Object.annotator_id.is_not(None)).distinct()
    return [(int(i), n) for i, n in session.execute(
        select(User.id, User.name).where(User.id.in_(who)).order_by(User.name, User.id))]


class ProjectListing(NamedTuple):
    project_id: int
    title: str
    instrument: str | None
    role: str  # visitor, annotator, manager, or "administrator"
    n_objects: int
    n_validated: int
    n_predicted: int

    @property
    def percent_validated(self) -> float:
        return 100.0 * self.n_validated / self.n_objects if self.n_objects else 0.0

    @property
    def percent_predicted(self) -> float:
        return 100.0 * self.n_predicted / self.n_objects if self.n_objects else 0.0


def project_listing(session: Session, user_id: int) -> list[ProjectListing]:
    """The projects the user may open, with their objects counted by status and the user's role.

    One grouped count over the listed projects' objects (the (project_id,
    status, taxon_id) index answers it without reading the rows).
    """
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    roles = dict(session.execute(select(Membership.project_id, Membership.role)
                                 .where(Membership.user_id == user_id)).all())
    q = select(Project.id, Project.title, Project.instrument).order_by(Project.id)
    if not user.is_admin:
        q = q.where(Project.id.in_(list(roles)))
    projects = session.execute(q).all()
    counts: dict[int, dict[str, int]] = {}
    if projects:
        for pid, status, n in session.execute(
                select(Object.project_id, Object.status, func.count())
                .where(Object.project_id.in_([p[0] for p in projects]))
                .group_by(Object.project_id, Object.status)):
            counts.setdefault(pid, {})[status] = int(n)
    out = []
    for pid, title, instrument in projects:
        c = counts.get(pid, {})
        role = roles.get(pid) or "administrator"
        out.append(ProjectListing(pid, title, instrument, role, sum(c.values()),
                                  c.get(ObjectStatus.VALIDATED.value, 0),
                                  c.get(ObjectStatus.PREDICTED.value, 0)))
    return out
