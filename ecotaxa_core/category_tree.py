"""A project's categories as a tree, with validated / predicted / dubious counts.

The validation page's taxonomy panel: every category that holds objects of
the project, with its ancestors up to the root (so that a whole branch can be
filtered on), each with its own counts and the counts of its whole subtree.
The per-category counts come from one grouped query on the objects
(:func:`~ecotaxa_core.queries.category_counts`); ancestors are then read
level by level from the taxonomy, a few small queries however deep the tree.

>>> [(n.depth, n.name) for n in flatten([CategoryNode(1, "Biota", 0, children=[
...     CategoryNode(2, "Copepoda", 1)])])]
[(0, 'Biota'), (1, 'Copepoda')]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Taxon
from ecotaxa_core.queries import category_counts

__all__ = ["CategoryNode", "category_tree", "flatten"]


@dataclass
class CategoryNode:
    taxon_id: int
    name: str  # display name
    depth: int  # 0 for a root of the tree shown
    n_validated: int = 0  # objects in this very category
    n_predicted: int = 0
    n_dubious: int = 0
    total_validated: int = 0  # in the category and all its descendants
    total_predicted: int = 0
    total_dubious: int = 0
    children: list["CategoryNode"] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.total_validated + self.total_predicted + self.total_dubious


def category_tree(session: Session, project_id: int) -> list[CategoryNode]:
    """The roots of the project's category tree, children sorted by name."""
    counts = {c.taxon_id: c for c in category_counts(session, project_id)}
    parent_of: dict[int, int | None] = {}
    names: dict[int, str] = {}
    missing = set(counts)
    while missing:
        rows = session.execute(select(Taxon.id, Taxon.parent_id, Taxon.display_name)
                               .where(Taxon.id.in_(sorted(missing)))).all()
        for taxon_id, parent_id, name in rows:
            parent_of[taxon_id], names[taxon_id] = parent_id, name
        missing = {p for _, p, _ in rows if p is not None and p not in parent_of}
    nodes = {t: CategoryNode(t, names[t], 0) for t in parent_of}
    for t, c in counts.items():
        nodes[t].n_validated, nodes[t].n_predicted, nodes[t].n_dubious = (
            c.n_validated, c.n_predicted, c.n_dubious)
    roots = []
    for t, node in nodes.items():
        parent = parent_of[t]
        (nodes[parent].children if parent in nodes else roots).append(node)

    def finish(node: CategoryNode, depth: int) -> None:
        node.depth = depth
        node.children.sort(key=lambda n: n.name.lower())
        node.total_validated, node.total_predicted, node.total_dubious = (
            node.n_validated, node.n_predicted, node.n_dubious)
        for child in node.children:
            finish(child, depth + 1)
            node.total_validated += child.total_validated
            node.total_predicted += child.total_predicted
            node.total_dubious += child.total_dubious

    roots.sort(key=lambda n: n.name.lower())
    for root in roots:
        finish(root, 0)
    return roots


def flatten(roots: list[CategoryNode]) -> list[CategoryNode]:
    """Depth-first, parents before their children: the order a tree list shows."""
    out: list[CategoryNode] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out
