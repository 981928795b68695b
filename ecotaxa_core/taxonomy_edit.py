"""Editing the taxonomy tree: rename, merge, deprecate and restore taxa.

Only administrators edit the shared tree. No edit loses an object's history:
a merge moves every object of the source taxon to the target after writing
each object's previous state to ``annotation_history``, re-parents the
source's children and keeps the source as a deprecated taxon that points to
the target (``merged_into_id``), so the history still names it.

Display names stay unique and follow one rule: the name alone when no other
taxon has it (any case), else ``name<parent`` (``name<parent<grandparent`` ...
when that is still ambiguous, ``name<root`` for a taxon at the root). An edit
recomputes the display names it makes wrong, and only those.

>>> tree = {1: TaxonNode(None, "Biota", "Biota"), 2: TaxonNode(1, "egg", None),
...         3: TaxonNode(None, "Copepoda", "Copepoda"), 4: TaxonNode(3, "egg", None)}
>>> canonical_display_names(tree, [2, 4])
{2: 'egg<Biota', 4: 'egg<Copepoda'}
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Collection, Iterable, Mapping, NamedTuple

from sqlalchemy import insert, literal, select, text, update
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import AnnotationHistory, Object, Taxon, User, utcnow
from ecotaxa_core.errors import EcoTaxaError, PermissionDenied, TaxonNotFound, UserNotFound

__all__ = [
    "TaxonNode",
    "TaxonomyEditError",
    "TaxonomyEditResult",
    "canonical_display_names",
    "stale_display_names",
    "taxon_name_problem",
    "require_taxonomy_admin",
    "load_tree",
    "lock_taxa",
    "rename_taxon",
    "merge_taxa",
    "deprecate_taxon",
    "restore_taxon",
]

# Objects moved per statement in a merge (keeps memory flat for huge taxa).
MERGE_CHUNK = 5000
MAX_NAME_LENGTH = 255


class TaxonomyEditError(EcoTaxaError, ValueError):
    """An edit of the taxonomy that would break the tree (name clash, cycle ...)."""


class TaxonNode(NamedTuple):
    """One taxon as the display-name rules see it."""

    parent_id: int | None
    name: str
    display_name: str | None
    deprecated: bool = False
    merged_into_id: int | None = None


@dataclass(frozen=True)
class TaxonomyEditResult:
    """What an edit did: the taxon, objects and children moved, display names changed."""

    taxon_id: int
    display_name: str
    objects_moved: int = 0
    children_moved: int = 0
    # Every display name the edit changed: {taxon_id: new display name}.
    relabelled: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["relabelled"] = {str(k): v for k, v in self.relabelled.items()}
        return d


# ---------------------------------------------------------------- names

def taxon_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a taxon, or None when it can.

    ``<`` separates a name from its parent in labels, so it cannot be part of
    a name; tabs and line breaks would break the taxonomy file.

    >>> taxon_name_problem("egg<other")
    "a taxon name cannot contain '<' (it separates a name from its parent)"
    >>> taxon_name_problem("Oithona") is None
    True
    """
    if not name or not name.strip():
        return "a taxon name cannot be empty"
    if name != name.strip():
        return "a taxon name cannot start or end with spaces"
    if "<" in name:
        return "a taxon name cannot contain '<' (it separates a name from its parent)"
    if any(c in name for c in "\t\r\n"):
        return "a taxon name cannot contain tabs or line breaks"
    if len(name) > MAX_NAME_LENGTH:
        return f"a taxon name has at most {MAX_NAME_LENGTH} characters"
    return None


def _ancestor_names(tree: Mapping[int, TaxonNode], taxon_id: int) -> list[str]:
    names: list[str] = []
    seen = {taxon_id}
    parent = tree[taxon_id].parent_id
    while parent is not None and parent in tree and parent not in seen:
        seen.add(parent)
        names.append(tree[parent].name)
        parent = tree[parent].parent_id
    return names


def _label(name: str, ancestors: list[str], level: int) -> str:
    if level == 0:
        return name
    return name + "".join(f"<{a}" for a in (ancestors[:level] or ["root"]))


def _name_groups(tree: Mapping[int, TaxonNode]) -> dict[str, int]:
    return Counter(node.name.lower() for node in tree.values())


def canonical_display_names(tree: Mapping[int, TaxonNode], ids: Iterable[int],
                            taken: Collection[str] = ()) -> dict[int, str]:
    """The display names of ``ids`` by the rule, unique among themselves and ``taken``.

    Parameters
    ----------
    tree : every taxon, ``{id: TaxonNode}`` (the whole tree decides what is ambiguous).
    ids : the taxa to name.
    taken : display names (lower case) held by other taxa, to avoid.
    """
    sizes = _name_groups(tree)
    taken = {t.lower() for t in taken}
    by_group: dict[str, list[int]] = defaultdict(list)
    for tid in ids:
        by_group[tree[tid].name.lower()].append(tid)
    result: dict[int, str] = {}
    for key, members in by_group.items():
        members.sort()
        paths = {t: _ancestor_names(tree, t) for t in members}
        level = {t: 1 if sizes[key] > 1 else 0 for t in members}
        while True:
            labels = {t: _label(tree[t].name, paths[t], level[t]) for t in members}
            counts = Counter(lb.lower() for lb in labels.values())
            clash = [t for t in members if counts[labels[t].lower()] > 1 or labels[t].lower() in taken]
            # Go one ancestor further up for the taxa that still clash, while they can.
            grow = [t for t in clash if level[t] < max(1, len(paths[t]))]
            if not grow:
                break
            for t in grow:
                level[t] += 1
        for t in clash:  # same name and same ancestry: only the id tells them apart
            labels[t] = f"{labels[t]} #{t}"
        result.update(labels)
    return result


def _is_valid_label(tree: Mapping[int, TaxonNode], taxon_id: int, group_size: int) -> bool:
    node = tree[taxon_id]
    label = node.display_name
    if not label:
        return False
    if group_size <= 1:
        return label == node.name
    if label.endswith(f" #{taxon_id}"):
        label = label[:-len(f" #{taxon_id}")]
    ancestors = _ancestor_names(tree, taxon_id)
    return any(label == _label(node.name, ancestors, k) for k in range(1, max(1, len(ancestors)) + 1))


def stale_display_names(tree: Mapping[int, TaxonNode], candidates: Iterable[int],
                        fixed: Collection[int] = ()) -> dict[int, str]:
    """New display names for the candidates whose display name the rule no longer allows.

    A display name is kept while it is unique (any case) and is the bare name
    of an unambiguous name, or ``name<ancestor...`` (following the taxon's real
    ancestry) of an ambiguous one. ``fixed`` taxa keep theirs whatever it is.
    Returns only the display names that change.
    """
    sizes = _name_groups(tree)
    label_counts = Counter(n.display_name.lower() for n in tree.values() if n.display_name)
    stale = sorted(
        t for t in set(candidates) - set(fixed)
        if not _is_valid_label(tree, t, sizes[tree[t].name.lower()])
        or label_counts[tree[t].display_name.lower()] > 1)
    stale_set = set(stale)
    taken = {n.display_name.lower() for t, n in tree.items() if n.display_name and t not in stale_set}
    new = canonical_display_names(tree, stale, taken)
    return {t: lb for t, lb in new.items() if lb != tree[t].display_name}


# ---------------------------------------------------------------- database helpers

def require_taxonomy_admin(session: Session, user_id: int) -> User:
    """The user, if an active administrator; raises :class:`PermissionDenied` otherwise."""
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    if not (user.is_admin and user.active):
        raise PermissionDenied(f"only administrators may edit the taxonomy; {user.email} is not one")
    return user


def lock_taxa(session: Session) -> None:
    """On PostgreSQL, keep other writers off the taxa table until the transaction ends.

    Edits check the whole tree (names, cycles, display names) before writing;
    the lock keeps a concurrent import from creating a taxon in between.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE taxa IN SHARE ROW EXCLUSIVE MODE"))


def load_tree(session: Session) -> dict[int, TaxonNode]:
    """Every taxon, ``{id: TaxonNode}``."""
    session.flush()
    rows = session.execute(select(Taxon.id, Taxon.parent_id, Taxon.name, Taxon.display_name,
                                  Taxon.deprecated, Taxon.merged_into_id))
    return {r[0]: TaxonNode(r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows}


def _children(tree: Mapping[int, TaxonNode]) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for tid, node in tree.items():
        if node.parent_id is not None:
            kids[node.parent_id].append(tid)
    for v in kids.values():
        v.sort()
    return kids


def _subtree(kids: Mapping[int, list[int]], root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        t = todo.pop()
        out.append(t)
        todo.extend(kids.get(t, ()))
    return out


def apply_display_names(session: Session, changes: Mapping[int, str]) -> None:
    """Write new display names; two passes, so names may move between taxa."""
    if not changes:
        return
    session.execute(update(Taxon), [dict(id=t, display_name=f"\x01relabel {t}") for t in changes])
    session.execute(update(Taxon), [dict(id=t, display_name=lb) for t, lb in changes.items()])


def expire_taxa(session: Session) -> None:
    """Make loaded Taxon objects reload after statements that changed their rows."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Taxon):
            session.expire(obj)


def _get(tree: Mapping[int, TaxonNode], taxon_id: int) -> TaxonNode:
    if taxon_id not in tree:
        raise TaxonNotFound(f"no taxon with id {taxon_id}")
    return tree[taxon_id]


def _relabel(session: Session, tree: dict[int, TaxonNode], candidates: Iterable[int]) -> dict[int, str]:
    changes = stale_display_names(tree, candidates)
    apply_display_names(session, changes)
    for t, lb in changes.items():
        tree[t] = tree[t]._replace(display_name=lb)
    return changes


def _affected_by_move(tree: Mapping[int, TaxonNode], kids: Mapping[int, list[int]],
                      roots: Iterable[int], names: Iterable[str] = ()) -> set[int]:
    """Taxa whose display name may change when ``roots`` are renamed or moved.

    Those in the subtrees of ``roots`` (their ``name<ancestor`` labels), and
    every taxon sharing one of ``names`` (their ambiguity changes).
    """
    keys = {n.lower() for n in names}
    out = {t for t, node in tree.items() if node.name.lower() in keys}
    for r in roots:
        out.update(_subtree(kids, r))
    return out


# ---------------------------------------------------------------- edits

def rename_taxon(session: Session, taxon_id: int, new_name: str, user_id: int) -> TaxonomyEditResult:
    """Rename a taxon; its objects and history keep pointing to it.

    Refuses a name a sibling already has (any case). The display names the
    rename makes ambiguous or unambiguous are recomputed (the renamed taxon's,
    those of taxa sharing its old or new name, and ``name<renamed`` labels below it).

    Raises
    ------
    PermissionDenied : ``user_id`` is not an administrator.
    TaxonNotFound : no such taxon.
    TaxonomyEditError : a bad name, or a sibling with that name.
    """
    require_taxonomy_admin(session, user_id)
    lock_taxa(session)
    tree = load_tree(session)
    node = _get(tree, taxon_id)
    new_name = (new_name or "").strip()
    problem = taxon_name_problem(new_name)
    if problem:
        raise TaxonomyEditError(f"cannot rename taxon {taxon_id} to {new_name!r}: {problem}")
    sibling = next((t for t, n in tree.items() if t != taxon_id and n.parent_id == node.parent_id
                    and n.name.lower() == new_name.lower()), None)
    if sibling is not None:
        raise TaxonomyEditError(
            f"cannot rename {node.display_name!r} (id {taxon_id}) to {new_name!r}: its sibling "
            f"{tree[sibling].display_name!r} (id {sibling}) already has that name; merge them instead")
    old_name = node.name
    session.execute(update(Taxon).where(Taxon.id == taxon_id).values(name=new_name))
    tree[taxon_id] = node._replace(name=new_name)
    relabelled = _relabel(session, tree, _affected_by_move(tree, _children(tree), [taxon_id],
                                                           [old_name, new_name]))
    expire_taxa(session)
    return TaxonomyEditResult(taxon_id, tree[taxon_id].display_name, relabelled=relabelled)


def _plan_merge(tree: Mapping[int, TaxonNode], kids: Mapping[int, list[int]], source: int,
                target: int, merges: list[tuple[int, int]], moves: list[tuple[int, int]]) -> None:
    """Fill ``merges`` (source, target) and ``moves`` (child, new parent); raise if impossible."""
    merges.append((source, target))
    by_name = {tree[c].name.lower(): c for c in kids.get(target, ()) if c != source}
    for child in kids.get(source, ()):
        key = tree[child].name.lower()
        twin = by_name.get(key)
        if twin is None:
            if tree[source].parent_id == target and tree[source].name.lower() == key:
                raise TaxonomyEditError(
                    f"cannot merge {tree[source].display_name!r} into its parent: its child "
                    f"{tree[child].display_name!r} (id {child}) would get its own name as a sibling; "
                    "rename the child first")
            moves.append((child, target))
        elif tree[twin].deprecated:
            raise TaxonomyEditError(
                f"cannot merge: child {tree[child].display_name!r} (id {child}) would join "
                f"{tree[twin].display_name!r} (id {twin}), which is deprecated; restore or rename it first")
        else:
            # A child with the same name on both sides is one taxon: merge it too.
            _plan_merge(tree, kids, child, twin, merges, moves)


def _move_objects(session: Session, source_id: int, target_id: int, user_id: int) -> int:
    """Move every object of ``source_id`` to ``target_id``, history first; returns how many."""
    when = utcnow()
    moved = 0
    previous = select(Object.id, literal(when, AnnotationHistory.changed_at.type),
                      literal(user_id, AnnotationHistory.changed_by_id.type), Object.status,
                      Object.taxon_id, Object.score, Object.annotator_id, Object.annotation_date,
                      Object.model_id)
    columns = ["object_id", "changed_at", "changed_by_id", "status", "taxon_id", "score",
               "annotator_id", "annotation_date", "model_id"]
    while True:
        ids = list(session.scalars(select(Object.id).where(Object.taxon_id == source_id)
                                   .order_by(Object.id).limit(MERGE_CHUNK).with_for_update()))
        if not ids:
            return moved
        session.execute(insert(AnnotationHistory).from_select(columns, previous.where(Object.id.in_(ids))))
        # Status, annotator and date stay: the decision is the same, only the category's id changed.
        session.execute(update(Object).where(Object.id.in_(ids)).values(taxon_id=target_id)
                        .execution_options(synchronize_session=False))
        moved += len(ids)


def merge_taxa(session: Session, source_id: int, target_id: int, user_id: int) -> TaxonomyEditResult:
    """Merge taxon ``source_id`` into ``target_id``, in every project.

    Each object of the source first gets its current state written to
    ``annotation_history`` (by ``user_id``), then moves to the target keeping
    its status, annotator and date. Children of the source move under the
    target; a child whose name the target already has among its children is
    merged into that one the same way. The source stays in the tree, deprecated,
    with ``merged_into_id`` = target (taxa merged into the source earlier now
    point to the target too).

    Raises
    ------
    PermissionDenied : ``user_id`` is not an administrator.
    TaxonNotFound : either taxon does not exist.
    TaxonomyEditError : merging a taxon into itself or its own descendant, into a
        deprecated taxon, or a source already merged into another taxon.
    """
    require_taxonomy_admin(session, user_id)
    lock_taxa(session)
    tree = load_tree(session)
    source, target = _get(tree, source_id), _get(tree, target_id)
    if source_id == target_id:
        raise TaxonomyEditError(f"cannot merge {source.display_name!r} (id {source_id}) into itself")
    kids = _children(tree)
    if target_id in _subtree(kids, source_id):
        raise TaxonomyEditError(f"cannot merge {source.display_name!r} (id {source_id}) into its own "
                                f"descendant {target.display_name!r} (id {target_id})")
    if target.deprecated:
        hint = f" (it was merged into id {target.merged_into_id})" if target.merged_into_id else ""
        raise TaxonomyEditError(f"cannot merge into {target.display_name!r} (id {target_id}): it is "
                                f"deprecated{hint}")
    if source.merged_into_id not in (None, target_id):
        raise TaxonomyEditError(f"{source.display_name!r} (id {source_id}) was already merged into "
                                f"id {source.merged_into_id}")
    merges: list[tuple[int, int]] = []
    moves: list[tuple[int, int]] = []
    _plan_merge(tree, kids, source_id, target_id, merges, moves)

    objects_moved = sum(_move_objects(session, s, t, user_id) for s, t in merges)
    if moves:
        session.execute(update(Taxon), [dict(id=c, parent_id=p) for c, p in moves])
    for s, t in merges:
        session.execute(update(Taxon).where(Taxon.merged_into_id == s).values(merged_into_id=t))
        session.execute(update(Taxon).where(Taxon.id == s).values(deprecated=True, merged_into_id=t))
    for c, p in moves:
        tree[c] = tree[c]._replace(parent_id=p)
    relabelled = _relabel(session, tree, _affected_by_move(tree, _children(tree), [c for c, _ in moves]))
    expire_taxa(session)
    return TaxonomyEditResult(target_id, tree[target_id].display_name, objects_moved=objects_moved,
                              children_moved=len(moves), relabelled=relabelled)


def _set_deprecated(session: Session, taxon_id: int, user_id: int, deprecated: bool) -> TaxonomyEditResult:
    require_taxonomy_admin(session, user_id)
    taxon = session.get(Taxon, taxon_id)
    if taxon is None:
        raise TaxonNotFound(f"no taxon with id {taxon_id}")
    taxon.deprecated = deprecated
    if not deprecated:
        taxon.merged_into_id = None
    session.flush()
    return TaxonomyEditResult(taxon_id, taxon.display_name)


def deprecate_taxon(session: Session, taxon_id: int, user_id: int) -> TaxonomyEditResult:
    """Stop offering a taxon for new classifications; its objects keep it.

    Raises :class:`PermissionDenied` for a non-administrator and
    :class:`TaxonNotFound` for an unknown id.
    """
    return _set_deprecated(session, taxon_id, user_id, True)


def restore_taxon(session: Session, taxon_id: int, user_id: int) -> TaxonomyEditResult:
    """Offer a deprecated (or merged) taxon again; objects moved by a merge stay where they are."""
    return _set_deprecated(session, taxon_id, user_id, False)
