"""How a flow run tells how far it is: a Prefect progress artifact, and the run's log.

:class:`RunProgress` is a :class:`ecotaxa_core.progress.Progress` callback.
The tasks call it after each chunk; it logs the line and keeps one progress
artifact per step of the run up to date (percent, and as description the
objects done, the rate and the time left), at most once a second. The
Prefect UI shows it with the run; the dashboard's project page reads it
(``dashboards.flow_runs``). An artifact that cannot be written (the API is
away for a moment) costs a warning, never the run.
"""

from __future__ import annotations

import time
from typing import Callable
from uuid import UUID

from ecotaxa_core.progress import describe_progress

__all__ = ["RunProgress", "PROGRESS_EVERY_S"]

PROGRESS_EVERY_S = 1.0


class RunProgress:
    """Progress of one flow run's steps, as artifacts keyed ``<stage>-progress``."""

    def __init__(self, stage: str, log: Callable[..., None] | None = None):
        self._key = f"{stage}-progress".lower().replace("_", "-")
        self._log = log
        self._artifacts: dict[str, UUID] = {}
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self._started.setdefault(what, now)
        if done < total and now - self._last.get(what, 0.0) < PROGRESS_EVERY_S:
            return
        self._last[what] = now
        line = describe_progress(what, done, total, now - start)
        if self._log is not None:
            self._log(line)
        self._publish(what, 100.0 * done / total if total else 100.0, line)

    def _publish(self, what: str, percent: float, line: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact
        from prefect.logging import get_run_logger

        try:
            if what not in self._artifacts:
                self._artifacts[what] = create_progress_artifact(
                    percent, key=self._key, description=line)
            else:
                update_progress_artifact(self._artifacts[what], percent, description=line)
        except Exception as error:  # the API is down or slow: the work goes on
            get_run_logger().warning("progress not published (%s): %s", line, error)
