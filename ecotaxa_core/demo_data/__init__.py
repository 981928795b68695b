"""The bundled demo sample (real NDSB images) and how to score predictions on it.

>>> DEMO_BUNDLE.exists() and DEMO_TRUTH.exists()
True
"""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import Object, Taxon

__all__ = ["DEMO_BUNDLE", "DEMO_TRUTH", "score_against_truth"]

DEMO_BUNDLE = Path(__file__).parent / "ndsb_demo.zip"
DEMO_TRUTH = Path(__file__).parent / "ndsb_demo_truth.tsv"


def score_against_truth(session: Session, project_id: int, truth_path: Path = DEMO_TRUTH) -> dict:
    """Accuracy of the project's current categories on objects whose truth is known.

    ``truth_path`` is a TSV of ``object_id``, ``category`` (the object's orig id
    and its true category name). Objects without a category count as wrong.
    """
    with open(truth_path, newline="") as f:
        truth = {r["object_id"]: r["category"] for r in csv.DictReader(f, delimiter="\t")}
    rows = session.execute(
        select(Object.orig_id, Object.status, Taxon.name)
        .outerjoin(Taxon, Taxon.id == Object.taxon_id)
        .where(Object.project_id == project_id, Object.orig_id.in_(list(truth)))).all()
    n = len(rows)
    correct = sum(1 for orig, _status, name in rows if name == truth[orig])
    by_status: dict[str, int] = {}
    for _orig, status, _name in rows:
        by_status[status] = by_status.get(status, 0) + 1
    return {"n": n, "n_correct": correct, "accuracy": correct / n if n else float("nan"),
            "statuses": by_status}
