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
    "UnknownAnnotators",
    "UnmatchedNames",
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


def _places(where: dict[str, list[str]]) -> list[str]:
    return [f"  {name!r}: {', '.join(places[:5])}{' ...' if len(places) > 5 else ''}"
            for name, places in sorted(where.items())]


class UnknownCategories(EcoTaxaError):
    """Category names that match no taxon; ``where`` maps each name to the places it appears."""

    def __init__(self, where: dict[str, list[str]]):
        self.where = where
        self.categories = where
        super().__init__(
            f"{len(where)} unknown categor{'y' if len(where) == 1 else 'ies'} "
            "(map them to existing ones with --taxa-map or pass --create-missing-taxa):\n"
            + "\n".join(_places(where)))


class UnknownAnnotators(EcoTaxaError):
    """Annotators (name or e-mail) that match no user; ``where`` maps each to its places."""

    def __init__(self, where: dict[str, list[str]]):
        self.where = where
        self.annotators = where
        super().__init__(
            f"{len(where)} unknown annotator{'' if len(where) == 1 else 's'} "
            "(map them to existing users with --users-map or pass --create-missing-users):\n"
            + "\n".join(_places(where)))


class UnmatchedNames(UnknownCategories, UnknownAnnotators):
    """Unknown categories and unknown annotators of one import, reported together.

    ``categories`` and ``annotators`` map each unmatched name to the places it
    appears; ``where`` is ``categories``, as for :class:`UnknownCategories`.
    """

    def __init__(self, categories: dict[str, list[str]], annotators: dict[str, list[str]]):
        self.where = categories
        self.categories = categories
        self.annotators = annotators
        EcoTaxaError.__init__(
            self,
            f"{len(categories)} unknown categor{'y' if len(categories) == 1 else 'ies'} "
            "(map them to existing ones with --taxa-map or pass --create-missing-taxa):\n"
            + "\n".join(_places(categories))
            + f"\n{len(annotators)} unknown annotator{'' if len(annotators) == 1 else 's'} "
            "(map them to existing users with --users-map or pass --create-missing-users):\n"
            + "\n".join(_places(annotators)))
