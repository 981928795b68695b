"""Retries for the tasks that touch the database, the feature store or the Dask cluster.

A task retries (three times, after about 2, 4 and 8 s, jittered) only when it
failed for a passing reason: the database dropped the connection or did not
answer, a socket closed, a worker's connection died, a timeout. Bad input,
missing rights or a bug fail at once: retrying them would only repeat the
error. Only tasks that leave nothing half done when they fail take these
options (reads, transactions, journaled feature appends).
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff
from sqlalchemy.exc import DisconnectionError, OperationalError

__all__ = ["TRANSIENT_ERRORS", "transient_failure", "ON_TRANSIENT_ERRORS"]

try:  # distributed's own "connection closed"
    from distributed.comm.core import CommClosedError
except ImportError:  # pragma: no cover - distributed is a dependency
    CommClosedError = ConnectionError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, DisconnectionError, ConnectionError, TimeoutError, CommClosedError)


def transient_failure(_task, _task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only the errors of :data:`TRANSIENT_ERRORS`."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception as raised:  # the result itself may be unreadable
            error = raised
    return isinstance(error, TRANSIENT_ERRORS)


ON_TRANSIENT_ERRORS: dict[str, Any] = dict(
    retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5, retry_condition_fn=transient_failure)
