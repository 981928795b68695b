"""The validation page a user left in each project, to open it there again.

A view is the page's URL query (``{"category": "12", "sort": "score_asc"}``):
plain text keys and values, at most 4 KB, that the page reads back with its
own checks. Saving needs the right to view the project.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ecotaxa_core.db.engine import json_dumps
from ecotaxa_core.db.models import SavedView, utcnow
from ecotaxa_core.errors import EcoTaxaError
from ecotaxa_core.rights import Action, require

__all__ = ["save_view", "saved_view", "MAX_VIEW_BYTES"]

MAX_VIEW_BYTES = 4096


def save_view(session: Session, user_id: int, project_id: int, query: dict[str, str]) -> None:
    """Remember ``query`` as the user's view of the project (replacing the previous one)."""
    require(session, user_id, project_id, Action.VIEW)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in query.items()):
        raise EcoTaxaError(f"a saved view holds text keys and values, not {query!r}")
    if len(json_dumps(query).encode()) > MAX_VIEW_BYTES:
        raise EcoTaxaError(f"a saved view is at most {MAX_VIEW_BYTES} bytes of JSON")
    row = session.get(SavedView, (int(user_id), int(project_id)))
    if row is None:
        session.add(SavedView(user_id=int(user_id), project_id=int(project_id), query=dict(query),
                              saved_at=utcnow()))
    else:
        row.query, row.saved_at = dict(query), utcnow()


def saved_view(session: Session, user_id: int, project_id: int) -> dict[str, str]:
    """The user's last saved view of the project (empty when none)."""
    row = session.get(SavedView, (int(user_id), int(project_id)))
    return dict(row.query) if row is not None else {}
