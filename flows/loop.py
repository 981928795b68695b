"""The whole loop as one flow: import, features, training, prediction, export."""

from __future__ import annotations

import sys
from typing import Any, Optional

from prefect import flow

from flows.export import export_flow
from flows.features import features_flow
from flows.import_bundle import import_flow
from flows.predict import predict_flow
from flows.train import train_flow


@flow(name="loop", log_prints=True)
def loop_flow(project_id: int, path: str, out_dir: str, create_missing_taxa: bool = False,
              user_email: Optional[str] = None,
              create_missing_users: bool = False) -> dict[str, Any]:
    """Run every stage on one project; each stage is a sub-flow with its own run."""
    imported = import_flow(project_id=project_id, path=path,
                           create_missing_taxa=create_missing_taxa, user_email=user_email,
                           create_missing_users=create_missing_users)
    features = features_flow(project_id=project_id)
    trained = train_flow(project_id=project_id)
    predicted = predict_flow(project_id=project_id)
    exported = export_flow(project_id=project_id, out_dir=out_dir)
    return {"import": imported, "features": features, "train": trained,
            "predict": predicted, "export": exported}


if __name__ == "__main__":
    print(loop_flow(int(sys.argv[1]), sys.argv[2], sys.argv[3], "--create-missing-taxa" in sys.argv,
                    create_missing_users="--create-missing-users" in sys.argv))
