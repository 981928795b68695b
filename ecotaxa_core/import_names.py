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
from ecotaxa_core.import_plan import ObjectPlan
from ecotaxa_core.taxonomy import CategoryResolver
from ecotaxa_core.tsv.issues import ImportReport
from ecotaxa_core.users import create_annotator, find_annotator

__all__ = ["NameAnswers", "NameSurvey", "AnnotatorResolver", "category_resolver", "annotator_resolver",
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


def _where(plan_kind: str, obj: ObjectPlan) -> str:
    if plan_kind == "class_folders":
        return f"folder {Path(obj.rel).parent.as_posix()}"
    return obj.where


_MAX_PLACES = 20  # places kept per name, as the resolvers keep them


class NameSurvey:
    """The names the classified objects of an import give, gathered in one pass over
    them (:meth:`add`): category labels and annotators with the first places they
    appear, and the category ids given with or without a label.

    Resolvers are built from it (:func:`category_resolver`,
    :func:`annotator_resolver`), so the objects (on disk, see
    :mod:`~ecotaxa_core.import_spool`) are read once; only a refused import reads
    them again, to report each line.
    """

    def __init__(self, plan_kind: str):
        self.plan_kind = plan_kind
        self.labels: dict[str, list[str]] = {}  # label -> places
        self.label_ids: dict[str, int] = {}  # label -> first id given with it
        self.people: dict[tuple[str | None, str | None], list[str]] = {}  # person -> places
        self.ids_alone: set[int] = set()  # ids given without a label
        self.pairs: set[tuple[str, int]] = set()  # (label, id) given together

    def add(self, obj: ObjectPlan) -> None:
        label, category_id = obj.label, obj.category_id
        if label is not None:
            places = self.labels.get(label)
            if places is None:
                places = self.labels[label] = []
            if len(places) < _MAX_PLACES:
                where = _where(self.plan_kind, obj)
                if where not in places:
                    places.append(where)
            if category_id is not None:
                self.label_ids.setdefault(label, category_id)
                self.pairs.add((label, category_id))
        elif category_id is not None:
            self.ids_alone.add(category_id)
        if obj.annotator_id is None and (obj.annotator_name or obj.annotator_email):
            person = AnnotatorResolver.person(obj)
            places = self.people.get(person)
            if places is None:
                places = self.people[person] = []
            if len(places) < _MAX_PLACES and (where := obj.where) not in places:
                places.append(where)


def category_resolver(survey: NameSurvey, answers: NameAnswers, create: bool
                      ) -> CategoryResolver:
    resolver = CategoryResolver(create_missing=create, mapping=answers.taxa_map)
    for label, places in survey.labels.items():
        for where in places:
            resolver.add(label, where, survey.label_ids.get(label))
    return resolver


def annotator_resolver(survey: NameSurvey, answers: NameAnswers, create: bool
                       ) -> AnnotatorResolver:
    resolver = AnnotatorResolver(mapping=answers.users_map, create_missing=create)
    for (name, email), places in survey.people.items():
        for where in places:
            resolver.add(name, email, where)
    return resolver


def check_names(session: Session, survey: NameSurvey, objects: Iterable[ObjectPlan],
                answers: NameAnswers, report: ImportReport) -> bool:
    """Match every name of ``survey`` (of ``objects``), read-only; raise what stays
    unmatched. Returns whether the import will create names (``answers`` let it
    create some that are missing).

    Category ids that contradict a matched name go to ``report`` (see
    :func:`check_category_ids`); the caller raises it before this function's
    own error, a file problem being the first thing to fix.
    """
    categories = category_resolver(survey, answers, create=False)
    taxa, unknown_taxa = categories.resolve_known(session)
    check_category_ids(session, survey, objects, taxa, answers, report)
    report.raise_if_any()
    _, unknown_people = annotator_resolver(survey, answers, create=False).resolve_known(session)
    creates = bool((answers.create_missing_taxa and unknown_taxa)
                   or (answers.create_missing_users and unknown_people))
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
    return creates


def check_category_ids(session: Session, survey: NameSurvey, objects: Iterable[ObjectPlan],
                       taxa: dict[str, int], answers: NameAnswers, report: ImportReport) -> None:
    """A category id given with a name must not contradict it.

    Ids in EcoTaxa files are EcoTaxa's own; a taxon created from such a file
    keeps that id when it is free. The name decides, except that an id naming
    no taxon here, given with the name of a taxon we have, is refused as EcoTaxa
    refuses unknown ids. (An id that is another local taxon is ignored: local
    ids and EcoTaxa ids share one range and may collide.) A label the user
    mapped is not checked: the map is their answer.
    """
    pairs = {(label, i) for label, i in survey.pairs
             if label in taxa and taxa[label] != i and label.strip().lower() not in answers.taxa_map}
    ids = sorted({i for _, i in pairs})
    local: set[int] = set()
    for start in range(0, len(ids), 500):
        local.update(session.scalars(select(Taxon.id).where(Taxon.id.in_(ids[start:start + 500]))))
    wrong = {(label, i) for label, i in pairs if i not in local}
    if not wrong:
        return
    for obj in objects:  # a refusal: each line is reported
        if obj.label is not None and (obj.label, obj.category_id) in wrong:
            report.add(obj.rel, obj.line, "object_annotation_category_id", str(obj.category_id),
                       "unknown_category_id",
                       f"category id {obj.category_id} is not a taxon of this instance, while "
                       f"{obj.label!r} is taxon {taxa[obj.label]}: correct or remove the id")
