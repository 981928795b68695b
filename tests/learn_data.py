"""Tiny synthetic projects for the learning tests: ORM objects plus separable feature rows.

Each category is a Gaussian cluster around its own centre, far enough from the
others that any sensible classifier separates them; objects to predict are
drawn from the same clusters, so the right answer is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecotaxa_core.db.models import Object, ObjectStatus
from ecotaxa_core.projects import create_project
from ecotaxa_core.taxonomy import get_or_create_taxon

CATEGORIES = ("Copepoda", "Chaetognatha", "detritus")


@dataclass
class SyntheticProject:
    project_id: int
    taxon_ids: dict[str, int]
    # object id -> the category its features were drawn from
    truth: dict[int, int] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)

    def ids_with(self, status: str) -> list[int]:
        return sorted(i for i, s in self.status.items() if s == status)


def make_project(inst, *, title: str = "Synthetic", n_validated=(30, 30, 30),
                 n_unclassified: int = 0, n_dubious: int = 0, n_predicted: int = 0,
                 categories=CATEGORIES) -> SyntheticProject:
    """A project with validated objects per category (``n_validated[i]`` of ``categories[i]``)
    and objects to predict, cycling through the categories."""
    with inst.sessions.begin() as s:
        project = create_project(s, title)
        taxa = {name: get_or_create_taxon(s, name).id for name in categories}
        plan: list[tuple[str, int]] = []
        for name, n in zip(categories, n_validated):
            plan += [(ObjectStatus.VALIDATED.value, taxa[name])] * n
        others = ([ObjectStatus.UNCLASSIFIED.value] * n_unclassified
                  + [ObjectStatus.DUBIOUS.value] * n_dubious
                  + [ObjectStatus.PREDICTED.value] * n_predicted)
        plan += [(st, taxa[categories[i % len(categories)]]) for i, st in enumerate(others)]
        objs = [Object(project_id=project.id, orig_id=f"o{i}", status=st,
                       taxon_id=(t if st != ObjectStatus.UNCLASSIFIED.value else None),
                       score=(0.5 if st == ObjectStatus.PREDICTED.value else None), extra={})
                for i, (st, t) in enumerate(plan)]
        s.add_all(objs)
        s.flush()
        sp = SyntheticProject(project.id, taxa)
        for o, (st, t) in zip(objs, plan):
            sp.truth[o.id] = t
            sp.status[o.id] = st
    return sp


def cluster_features(truth: dict[int, int], n_features: int, *, seed: int = 0,
                     separation: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Ids and a (n_objects, n_features) matrix: one well separated cluster per category."""
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(truth), dtype=np.int64)
    taxa = sorted(set(truth.values()))
    centres = np.random.default_rng(1000 + seed).normal(0, separation, (len(taxa), n_features))
    labels = np.array([taxa.index(truth[i]) for i in ids])
    X = centres[labels] + rng.normal(0, 1.0, (len(ids), n_features))
    return ids, X.astype(np.float32)


def write_feature_set(inst, sp: SyntheticProject, feature_set: str, n_features: int, *,
                      ids=None, seed: int = 0, names=None) -> list[str]:
    """Append cluster features of ``sp``'s objects (all, or ``ids``) to the store."""
    all_ids, X = cluster_features(sp.truth, n_features, seed=seed)
    names = list(names or [f"f{j:03d}" for j in range(n_features)])
    if ids is not None:
        keep = np.isin(all_ids, np.asarray(ids))
        all_ids, X = all_ids[keep], X[keep]
    inst.features.append(sp.project_id, feature_set, all_ids, X, names,
                         producer={"test": "clusters"})
    return names
