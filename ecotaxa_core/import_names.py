"""Matching the categories and annotators an import names to taxa and users here.

Before anything is written, :func:`check_names` matches every category label
and every annotator of the objects the import will classify, read-only, and
raises one error listing everything left unmatched with the places it appears
(:class:`~ecotaxa_core.errors.UnknownCategories`,
:class:`~ecotaxa_core.errors.UnknownAnnotators`, or both at once as
:class:`~ecotaxa_core.errors.UnmatchedNames`), so the user answers all of it in
one go: map files (:mod:`~ecotaxa_core.import_maps`), or creating what is
missing. The writer then resolves the same names inside its transaction,
creating taxa and password-less users only when allowed.

Annotators match a user by e-mail, then by name, ignoring case; a users map
answer (by e-mail or by name) comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Taxon
from ecotaxa_core.errors import UnknownAnnotators, UnknownCategories, UnmatchedNames
from ecotaxa_core.import_plan import ImportPlan, ObjectPlan
from ecotaxa_core.taxonomy import CategoryResolver
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.users import create_annotator, find_annotator

__all__ = ["NameAnswers", "AnnotatorResolver", "category_resolver", "annotator_resolver",
           "check_names", "check_category_ids"]

Person = tuple[str | None, str | None]  # (name, e-mail) as the source gives them


@dataclass(frozen=True)
class NameAnswers:
    """How unmatched names are answered: maps (lower-case name -> id) and creation flags."""

    taxa_map: dict[str, int] = field(default_factory=dict)
    users_map: dict[str, int] = field(default_factory=dict)
    create_missing_taxa: bool = False
    create_missing_users: bool = False


def _person_key(name: str | None, email: str | None) -> str:
    """How an annotator is named in messages and in users map files."""
    return (name or "").strip() or (email or "").strip()


@dataclass
class AnnotatorResolver:
    """Resolves the annotators of an import in one pass, as :class:`CategoryResolver` does."""

    mapping: dict[str, int] = field(default_factory=dict)
    create_missing: bool = False

    def __post_init__(self) -> None:
        self._where: dict[Person, list[str]] = {}

    def add(self, name: str | None, email: str | None, where: str) -> None:
        places = self._where.setdefault(((name or "").strip() or None,
                                         (email or "").strip().lower() or None), [])
        if len(places) < 20 and where not in places:
            places.append(where)

    def resolve_known(self, session: Session) -> tuple[dict[Person, int], dict[str, list[str]]]:
        """``({(name, email): user id}, {unmatched name or e-mail: places})``."""
        resolved: dict[Person, int] = {}
        unknown: dict[str, list[str]] = {}
        for person, places in self._where.items():
            name, email = person
            user_id = self._mapped(name, email)
            if user_id is None:
                user = find_annotator(session, name, email)
                if user is None and self.create_missing:
                    user = create_annotator(session, name, email)
                user_id = user.id if user is not None else None
            if user_id is None:
                unknown.setdefault(_person_key(name, email), []).extend(places)
            else:
                resolved[person] = user_id
        return resolved, unknown

    def resolve(self, session: Session) -> dict[Person, int]:
        resolved, unknown = self.resolve_known(session)
        if unknown:
            raise UnknownAnnotators(unknown)
        return resolved

    def _mapped(self, name: str | None, email: str | None) -> int | None:
        for key in (email, name):
            if key and key.lower() in self.mapping:
                return self.mapping[key.lower()]
        return None

    @staticmethod
    def person(obj: ObjectPlan) -> Person:
        return ((obj.annotator_name or "").strip() or None,
                (obj.annotator_email or "").strip().lower() or None)


def _where(plan: ImportPlan, obj: ObjectPlan) -> str:
    if plan.kind == "class_folders":
        return f"folder {Path(obj.rel).parent.as_posix()}"
    return obj.where


def category_resolver(plan: ImportPlan, objects: Iterable[ObjectPlan],
                      answers: NameAnswers, create: bool) -> CategoryResolver:
    resolver = CategoryResolver(create_missing=create, mapping=answers.taxa_map)
    for obj in objects:
        if obj.label is not None:
            resolver.add(obj.label, _where(plan, obj), obj.category_id)
    return resolver


def annotator_resolver(objects: Iterable[ObjectPlan], answers: NameAnswers,
                       create: bool) -> AnnotatorResolver:
    resolver = AnnotatorResolver(mapping=answers.users_map, create_missing=create)
    for obj in objects:
        if obj.annotator_id is None and (obj.annotator_name or obj.annotator_email):
            resolver.add(obj.annotator_name, obj.annotator_email, obj.where)
    return resolver


def check_names(session: Session, plan: ImportPlan, objects: list[ObjectPlan],
                answers: NameAnswers, report: ImportReport) -> None:
    """Match every name ``objects`` give, read-only; raise what stays unmatched.

    Category ids that contradict a matched name go to ``report`` (see
    :func:`check_category_ids`); the caller raises it before this function's
    own error, a file problem being the first thing to fix.
    """
    categories = category_resolver(plan, objects, answers, create=False)
    taxa, unknown_taxa = categories.resolve_known(session)
    check_category_ids(session, objects, taxa, answers, report)
    report.raise_if_any()
    _, unknown_people = annotator_resolver(objects, answers, create=False).resolve_known(session)
    if answers.create_missing_taxa:
        unknown_taxa = {}
    if answers.create_missing_users:
        unknown_people = {}
    if unknown_taxa and unknown_people:
        raise UnmatchedNames(unknown_taxa, unknown_people)
    if unknown_taxa:
        raise UnknownCategories(unknown_taxa)
    if unknown_people:
        raise UnknownAnnotators(unknown_people)


def check_category_ids(session: Session, objects: Iterable[ObjectPlan], taxa: dict[str, int],
                       answers: NameAnswers, report: ImportReport) -> None:
    """A category id given with a name must not contradict it.

    Ids in EcoTaxa files are EcoTaxa's own; a taxon created from such a file
    keeps that id when it is free. The name decides, except that an id naming
    no taxon here, given with the name of a taxon we have, is refused as EcoTaxa
    refuses unknown ids. (An id that is another local taxon is ignored: local
    ids and EcoTaxa ids share one range and may collide.) A label the user
    mapped is not checked: the map is their answer.
    """
    objects = [o for o in objects if o.label is not None and o.category_id is not None
               and o.label in taxa and taxa[o.label] != o.category_id
               and o.label.strip().lower() not in answers.taxa_map]
    ids = sorted({o.category_id for o in objects})
    local: set[int] = set()
    for start in range(0, len(ids), 500):
        local.update(session.scalars(select(Taxon.id).where(Taxon.id.in_(ids[start:start + 500]))))
    for obj in objects:
        if obj.category_id not in local:
            report.add(obj.rel, obj.line, "object_annotation_category_id", str(obj.category_id),
                       "unknown_category_id",
                       f"category id {obj.category_id} is not a taxon of this instance, while "
                       f"{obj.label!r} is taxon {taxa[obj.label]}: correct or remove the id")
