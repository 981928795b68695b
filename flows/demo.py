"""The demo: a local instance, the bundled NDSB sample, and the whole loop.

Not a flow itself: it prepares the instance (which has no Prefect state yet)
and then runs :func:`flows.loop.loop_flow`.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import inspect

from ecotaxa_core.demo_data import DEMO_BUNDLE, DEMO_TRUTH, score_against_truth
from ecotaxa_core.instance import Instance, init_instance
from ecotaxa_core.projects import create_project
from ecotaxa_core.settings import Settings
from ecotaxa_core.users import first_admin

DEMO_ADMIN = "admin@localhost"


def demo_run(settings: Settings) -> dict[str, Any]:
    from flows.loop import loop_flow

    t0 = time.perf_counter()
    password = None
    settings.ensure_dirs()
    probe = Instance.open(settings, check=False)
    fresh = not inspect(probe.engine).has_table("projects")
    probe.close()
    if fresh:
        password = secrets.token_urlsafe(12)
        inst = init_instance(settings, DEMO_ADMIN, password)
    else:
        inst = Instance.open(settings)
    try:
        with inst.sessions.begin() as s:
            admin = first_admin(s)
            project = create_project(s, "NDSB demo (ISIIS, Straits of Florida 2014)",
                                     instrument="isiis", owner=admin)
            project_id, admin_email = project.id, admin.email
        out_dir = (settings.exports_dir / f"project_{project_id}").resolve()
        loop = loop_flow(project_id=project_id, path=str(DEMO_BUNDLE), out_dir=str(out_dir),
                         create_missing_taxa=True, create_missing_users=True)
        with inst.sessions() as s:
            scored = score_against_truth(s, project_id, DEMO_TRUTH)
    finally:
        inst.close()
    models = [{"model_id": m["model_id"], "kind": m["kind"],
               "accuracy": m["metrics"]["accuracy"],
               "balanced_accuracy": m["metrics"]["balanced_accuracy"]}
              for m in loop["train"]["models"]]
    return {
        "seconds": time.perf_counter() - t0,
        "home": str(settings.home.resolve()),
        "project_id": project_id,
        "n_objects": loop["import"]["n_objects"],
        "models": models,
        "prediction_model_id": loop["predict"]["model_id"],
        "n_unvalidated": scored["n"],
        "prediction_accuracy": scored["accuracy"],
        "export_bundle": loop["export"]["bundle"],
        "export_counts": loop["export"]["counts"],
        "dashboard_url": f"http://{settings.dashboard_address}:{settings.dashboard_port}/",
        "admin_email": admin_email,
        "admin_password": password,
        "stages": loop,
    }
