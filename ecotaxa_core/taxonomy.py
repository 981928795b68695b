"""The taxonomy tree: parsing category names and resolving them to taxa.

EcoTaxa users name categories by their name (``Oncaeidae``), by their display
name ``name<parent`` or by ``name (parent)``. Matching ignores case.

>>> parse_category_name("egg<other")
('egg', 'other')
>>> parse_category_name("Other (Biota)")
('Other', 'Biota')
>>> parse_category_name(" detritus ")
('detritus', None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Taxon
from ecotaxa_core.errors import TaxonNotFound, UnknownCategories

__all__ = [
    "parse_category_name",
    "CategoryResolver",
    "get_or_create_taxon",
    "taxon_by_display_name",
    "taxon_names",
    "follow_merges",
]

_PAREN = re.compile(r"^(?P<name>.+?)\s*\((?P<parent>[^()]+)\)\s*$")


def parse_category_name(text: str) -> tuple[str, str | None]:
    """Split a category label into (name, parent name or None)."""
    text = text.strip()
    if "<" in text:
        name, parent = text.split("<", 1)
        return name.strip(), parent.strip() or None
    m = _PAREN.match(text)
    if m:
        return m.group("name").strip(), m.group("parent").strip()
    return text, None


def _display_name(session: Session, name: str, parent: Taxon | None) -> str:
    """The name alone if no other taxon has it, else ``name<parent``."""
    clash = session.scalar(select(func.count()).select_from(Taxon)
                           .where(func.lower(Taxon.display_name) == name.lower()))
    if not clash:
        return name
    if parent is None:
        return f"{name}<root"
    candidate = f"{name}<{parent.name}"
    n = 1
    while session.scalar(select(func.count()).select_from(Taxon)
                         .where(Taxon.display_name == candidate)):
        n += 1
        candidate = f"{name}<{parent.name} ({n})"
    return candidate


def _find(session: Session, name: str, parent_name: str | None) -> list[Taxon]:
    q = select(Taxon).where(func.lower(Taxon.name) == name.lower())
    found = list(session.scalars(q))
    if parent_name is not None:
        found = [t for t in found
                 if t.parent is not None and t.parent.name.lower() == parent_name.lower()]
    return found


def get_or_create_taxon(session: Session, name: str, parent: Taxon | None = None,
                        taxon_id: int | None = None) -> Taxon:
    """The taxon ``name`` under ``parent`` (None: at the root), created if missing.

    A created taxon takes ``taxon_id`` when it is given and free (an import
    keeps EcoTaxa's own ids, so exports map back to EcoTaxa's taxonomy).
    """
    q = select(Taxon).where(func.lower(Taxon.name) == name.lower())
    q = q.where(Taxon.parent_id.is_(None) if parent is None else Taxon.parent_id == parent.id)
    taxon = session.scalar(q)
    if taxon is None:
        use_id = taxon_id if taxon_id is not None and session.get(Taxon, taxon_id) is None else None
        taxon = Taxon(id=use_id, name=name, parent_id=parent.id if parent else None,
                      display_name=_display_name(session, name, parent))
        session.add(taxon)
        session.flush()
        if use_id is not None and session.get_bind().dialect.name == "postgresql":
            # An explicit id does not move PostgreSQL's sequence: move it past the ids in use.
            session.execute(text("SELECT setval(pg_get_serial_sequence('taxa', 'id'), "
                                 "(SELECT max(id) FROM taxa))"))
    return taxon


def taxon_by_display_name(session: Session, label: str) -> Taxon:
    """The taxon a user names; raises :class:`TaxonNotFound` if none or several match."""
    taxon = session.scalar(select(Taxon).where(func.lower(Taxon.display_name) == label.strip().lower()))
    if taxon is not None:
        return taxon
    name, parent = parse_category_name(label)
    found = _find(session, name, parent)
    if len(found) != 1:
        raise TaxonNotFound(f"category {label!r} " + ("matches no taxon" if not found
                                                       else f"is ambiguous ({len(found)} taxa)"))
    return found[0]


def taxon_by_id_or_name(session: Session, text: str) -> Taxon:
    """The taxon a user names by id (digits) or display name; :class:`TaxonNotFound` if none."""
    text = str(text).strip()
    if text.isdigit():
        taxon = session.get(Taxon, int(text))
        if taxon is None:
            raise TaxonNotFound(f"no category with id {text}")
        return taxon
    return taxon_by_display_name(session, text)


def follow_merges(session: Session, taxon: Taxon) -> Taxon:
    """The taxon a merged one now lives in (itself when it was never merged)."""
    seen = {taxon.id}
    while taxon.merged_into_id is not None and taxon.merged_into_id not in seen:
        taxon = session.get(Taxon, taxon.merged_into_id)
        seen.add(taxon.id)
    return taxon


def taxon_names(session: Session, taxon_ids) -> dict[int, str]:
    """Display names of the given taxa."""
    ids = [int(t) for t in set(taxon_ids) if t is not None]
    if not ids:
        return {}
    return dict(session.execute(select(Taxon.id, Taxon.display_name).where(Taxon.id.in_(ids))).all())


@dataclass
class CategoryResolver:
    """Resolves the category labels of an import in one pass.

    Collect every label with :meth:`add` (with where it was seen), then call
    :meth:`resolve`: it returns ``{label: taxon_id}`` or raises
    :class:`UnknownCategories` listing every label that matches nothing, so a
    user sees all of them at once. With ``create_missing``, unmatched labels are
    created under the parent their label gives (``a<b``, ``a (b)``), the parent
    itself created at the root when it is unknown too. ``mapping`` sends labels
    (lower case) straight to a taxon id, before any matching (a user's answer,
    see :mod:`~ecotaxa_core.import_maps`).
    """

    create_missing: bool = False
    mapping: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._where: dict[str, list[str]] = {}
        self._ids: dict[str, int] = {}

    def add(self, label: str, where: str, taxon_id: int | None = None) -> None:
        """Record a label; ``taxon_id`` is the id to give its taxon if it gets created."""
        places = self._where.setdefault(label, [])
        if len(places) < 20 and where not in places:
            places.append(where)
        if taxon_id is not None:
            self._ids.setdefault(label, int(taxon_id))

    def _id_for(self, label: str, name: str) -> int | None:
        """The id given with ``label``, or with another label of the same name."""
        if label in self._ids:
            return self._ids[label]
        ids = {i for lb, i in self._ids.items() if parse_category_name(lb)[0].lower() == name.lower()}
        return ids.pop() if len(ids) == 1 else None

    def labels(self) -> list[str]:
        """The labels added so far, in order."""
        return list(self._where)

    def resolve(self, session: Session) -> dict[str, int]:
        """``{label: taxon_id}``; raises :class:`UnknownCategories` if a label matches nothing."""
        resolved, unknown = self.resolve_known(session)
        if unknown:
            raise UnknownCategories(unknown)
        return resolved

    def resolve_known(self, session: Session) -> tuple[dict[str, int], dict[str, list[str]]]:
        """``({label: taxon_id}, {unknown label: places})``, creating taxa if allowed."""
        resolved: dict[str, int] = {}
        unknown: dict[str, list[str]] = {}
        # A parent named by another label of the same import ("egg<other" and
        # "other<Biota") is that label's taxon, so it is resolved first.
        qualified = {parse_category_name(lb)[0].lower(): lb for lb in self._where
                     if parse_category_name(lb)[1] is not None}

        def one(label: str, seen: frozenset[str]) -> int | None:
            if label in resolved:
                return resolved[label]
            mapped = self.mapping.get(label.strip().lower())
            if mapped is not None:
                resolved[label] = mapped
                return mapped
            name, parent_name = parse_category_name(label)
            if parent_name is not None:
                parent_label = qualified.get(parent_name.lower())
                if parent_label is not None and parent_label not in seen:
                    one(parent_label, seen | {label})
            elif name.lower() in qualified and qualified[name.lower()] not in seen:
                # A bare name that a qualified label of this import defines.
                one(qualified[name.lower()], seen | {label})
            taxon = self._match(session, label)
            if taxon is None and self.create_missing:
                parent = None
                if parent_name is not None:
                    parents = _find(session, parent_name, None)
                    parent = parents[0] if len(parents) == 1 else get_or_create_taxon(session, parent_name)
                taxon = get_or_create_taxon(session, name, parent, self._id_for(label, name))
            if taxon is None:
                unknown[label] = self._where[label]
                return None
            resolved[label] = taxon.id
            return taxon.id

        for label in self._where:
            one(label, frozenset())
        return resolved, unknown

    @staticmethod
    def _match(session: Session, label: str) -> Taxon | None:
        try:
            taxon = taxon_by_display_name(session, label)
        except TaxonNotFound:
            return None
        return follow_merges(session, taxon)
