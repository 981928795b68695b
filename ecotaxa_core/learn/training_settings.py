"""The training settings a project remembers, offered as the defaults of its next training.

A training is defined by its candidates (which models to try), its learning
set (other projects, categories, "appear as", cap, seed), its held-out
fraction and its time budget. After a training, :func:`remember_training_settings`
stores them in ``Project.settings["training"]``; the next training starts from
them (:func:`resolve_training_settings`), each setting given explicitly
replacing the remembered one.

>>> s = TrainingSettings(max_per_category=500, appear_as={12: 3})
>>> TrainingSettings.from_dict(s.to_dict()) == s
True
>>> s.to_dict()["appear_as"]
{'12': 3}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from sqlalchemy.orm import Session

from ecotaxa_core.db.models import utcnow
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.projects import get_project

__all__ = ["TrainingSettings", "remembered_training_settings", "remember_training_settings",
           "resolve_training_settings", "SETTINGS_KEY"]

SETTINGS_KEY = "training"


@dataclass(frozen=True)
class TrainingSettings:
    """What a training learns from and which models it tries.

    Attributes
    ----------
    candidates : tuple of str, optional
        Models to train, ``KIND`` or ``KIND:SET+SET``; None: the automatic choice
        (every default candidate the project's features allow, within the budget).
    other_project_ids : tuple of int
    categories : tuple of int, optional
        Taxon ids to learn (None: every validated category).
    appear_as : dict of int to int
        Category -> category it is learned as.
    max_per_category : int, optional
    seed : int
    test_size : float
        Held-out fraction of each category.
    time_budget_s : float, optional
        Seconds the training may take (None: no limit).
    """

    candidates: tuple[str, ...] | None = None
    other_project_ids: tuple[int, ...] = ()
    categories: tuple[int, ...] | None = None
    appear_as: dict[int, int] = field(default_factory=dict)
    max_per_category: int | None = None
    seed: int = 0
    test_size: float = 0.2
    time_budget_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (keys of ``appear_as`` as text)."""
        return {"candidates": None if self.candidates is None else list(self.candidates),
                "other_project_ids": list(self.other_project_ids),
                "categories": None if self.categories is None else list(self.categories),
                "appear_as": {str(k): int(v) for k, v in sorted(self.appear_as.items())},
                "max_per_category": self.max_per_category, "seed": self.seed,
                "test_size": self.test_size, "time_budget_s": self.time_budget_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainingSettings":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        if d.get("candidates") is not None:
            d["candidates"] = tuple(str(c) for c in d["candidates"])
        if d.get("categories") is not None:
            d["categories"] = tuple(int(c) for c in d["categories"])
        d["other_project_ids"] = tuple(int(p) for p in d.get("other_project_ids") or ())
        d["appear_as"] = {int(k): int(v) for k, v in (d.get("appear_as") or {}).items()}
        settings = cls(**d)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values no training can use."""
        if not 0.0 < float(self.test_size) < 1.0:
            raise EcoTaxaError(f"test_size must be between 0 and 1, got {self.test_size}")
        if self.max_per_category is not None and self.max_per_category < 1:
            raise EcoTaxaError(f"max_per_category must be at least 1, got {self.max_per_category}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise EcoTaxaError(f"the time budget must be positive, got {self.time_budget_s} s")
        if self.candidates is not None and not self.candidates:
            raise EcoTaxaError("candidates, when given, must name at least one model")


def remembered_training_settings(session: Session, project_id: int) -> TrainingSettings | None:
    """The settings of the project's last training, or None."""
    stored = (get_project(session, project_id).settings or {}).get(SETTINGS_KEY)
    return TrainingSettings.from_dict(stored["settings"]) if stored else None


def remember_training_settings(session: Session, project_id: int,
                               settings: TrainingSettings) -> None:
    """Store ``settings`` as the project's last training (in the caller's transaction)."""
    project = get_project(session, project_id)
    stored = dict(project.settings or {})
    stored[SETTINGS_KEY] = {"settings": settings.to_dict(), "saved_at": utcnow().isoformat()}
    project.settings = stored


def resolve_training_settings(remembered: TrainingSettings | None,
                              **given: Any) -> tuple[TrainingSettings, dict[str, str]]:
    """The settings of this training: each ``given`` value that is not None, else the
    remembered one, else the default; and where each came from (``given``,
    ``remembered`` or ``default``).

    >>> last = TrainingSettings(max_per_category=500, seed=3)
    >>> s, origin = resolve_training_settings(last, seed=7, test_size=None)
    >>> s.max_per_category, s.seed, origin["seed"], origin["max_per_category"], origin["test_size"]
    (500, 7, 'given', 'remembered', 'default')
    """
    base = remembered or TrainingSettings()
    unknown = set(given) - {f.name for f in fields(TrainingSettings)}
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(sorted(unknown))}")
    chosen = {k: v for k, v in given.items() if v is not None}
    settings = replace(base, **{k: _typed(k, v) for k, v in chosen.items()})
    settings.check()
    default = TrainingSettings()
    origin = {}
    for f in fields(TrainingSettings):
        if f.name in chosen:
            origin[f.name] = "given"
        elif remembered is not None and getattr(remembered, f.name) != getattr(default, f.name):
            origin[f.name] = "remembered"
        else:
            origin[f.name] = "default"
    return settings, origin


def _typed(name: str, value: Any) -> Any:
    if name in ("candidates", "other_project_ids", "categories"):
        return tuple(value)
    if name == "appear_as":
        return {int(k): int(v) for k, v in dict(value).items()}
    return value
