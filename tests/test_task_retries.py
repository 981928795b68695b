"""Tasks that touch the database, the store or the cluster retry passing failures only."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from ecotaxa_core.errors import EcoTaxaError
from tasks.retries import ON_TRANSIENT_ERRORS, transient_failure


def test_a_dropped_connection_is_retried_a_bad_input_is_not(prefect_server):
    from prefect import flow, task

    calls = {"flaky": 0, "bad": 0}

    @task(**{**ON_TRANSIENT_ERRORS, "retry_delay_seconds": 0})
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise OperationalError("SELECT 1", {}, ConnectionResetError("server closed the "
                                                                         "connection"))
        return "read"

    @task(**{**ON_TRANSIENT_ERRORS, "retry_delay_seconds": 0})
    def bad() -> None:
        calls["bad"] += 1
        raise EcoTaxaError("project 7 has no sample 'x'")

    @flow
    def uses(which: str):
        return flaky() if which == "flaky" else bad()

    assert uses("flaky") == "read" and calls["flaky"] == 3
    with pytest.raises(EcoTaxaError, match="no sample"):
        uses("bad")
    assert calls["bad"] == 1


def test_the_pipeline_tasks_that_touch_shared_state_retry_on_transient_errors():
    from tasks.features import append_features, find_pending_objects, refit_deep_pca
    from tasks.learn import find_predictable_objects, write_predictions_task

    for t in (find_pending_objects, append_features, refit_deep_pca, find_predictable_objects,
              write_predictions_task):
        assert (t.retries, t.retry_condition_fn) == (3, transient_failure), t.name
