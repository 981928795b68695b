"""Which projects the nightly re-prediction takes: those validated since their newest model.

A project that has trained a model once learns again, then predicts again,
when validators have validated objects after that model was made (the new
validations are the learning set's growth). Projects never trained are left
to their managers (nothing says which categories or features they want).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, ObjectStatus, TrainedModel

__all__ = ["projects_due_for_retraining"]


def projects_due_for_retraining(session: Session) -> list[int]:
    """Ids of the projects with an object validated after their newest model, ascending."""
    newest = (select(TrainedModel.project_id, func.max(TrainedModel.created_at).label("at"))
              .group_by(TrainedModel.project_id).subquery())
    last_validation = (select(Object.project_id,
                              func.max(Object.annotation_date).label("at"))
                       .where(Object.status == ObjectStatus.VALIDATED.value)
                       .group_by(Object.project_id).subquery())
    q = (select(newest.c.project_id)
         .join(last_validation, last_validation.c.project_id == newest.c.project_id)
         .where(last_validation.c.at > newest.c.at)
         .order_by(newest.c.project_id))
    return [int(pid) for pid in session.scalars(q)]
