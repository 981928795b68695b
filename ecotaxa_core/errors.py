"""Typed errors of the domain library; all derive from :class:`EcoTaxaError`."""

from __future__ import annotations

__all__ = [
    "EcoTaxaError",
    "NotFoundError",
    "ProjectNotFound",
    "ObjectNotFound",
    "TaxonNotFound",
    "UserNotFound",
    "ModelNotFound",
    "PermissionDenied",
    "UnknownCategories",
    "InstanceNotInitialised",
]


class EcoTaxaError(Exception):
    """Base of every error this library raises on purpose."""


class NotFoundError(EcoTaxaError, LookupError):
    pass


class ProjectNotFound(NotFoundError):
    def __init__(self, project_id: int | str):
        super().__init__(f"project {project_id} does not exist")
        self.project_id = project_id


class ObjectNotFound(NotFoundError):
    pass


class TaxonNotFound(NotFoundError):
    pass


class UserNotFound(NotFoundError):
    pass


class ModelNotFound(NotFoundError):
    pass


class PermissionDenied(EcoTaxaError):
    pass


class InstanceNotInitialised(EcoTaxaError):
    pass


class UnknownCategories(EcoTaxaError):
    """Category names that match no taxon; ``where`` maps each name to the places it appears."""

    def __init__(self, where: dict[str, list[str]]):
        self.where = where
        lines = [f"  {name!r}: {', '.join(places[:5])}{' ...' if len(places) > 5 else ''}"
                 for name, places in sorted(where.items())]
        super().__init__(
            f"{len(where)} unknown categor{'y' if len(where) == 1 else 'ies'} "
            "(map them to existing ones or pass --create-missing-taxa):\n" + "\n".join(lines))
