"""How flows reach the instance: settings from the environment, built once per run."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from prefect.runtime import flow_run

from ecotaxa_core.instance import Instance
from ecotaxa_core.jobs import recorded_job
from ecotaxa_core.settings import Settings


@contextmanager
def open_instance() -> Iterator[Instance]:
    inst = Instance.open(Settings())
    try:
        yield inst
    finally:
        inst.close()


@contextmanager
def stage_job(inst: Instance, kind: str, project_id: int | None,
              params: dict[str, Any]) -> Iterator[dict]:
    """A job row for this flow run; set ``job["result"]`` to the flow's summary."""
    run_id = flow_run.get_id()
    with recorded_job(inst, kind, project_id, json.loads(json.dumps(params, default=str)),
                      flow_run_id=str(run_id) if run_id else None) as job:
        yield job
