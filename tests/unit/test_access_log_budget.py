"""The access log of callers nobody identified is budgeted (round 32b)."""

from __future__ import annotations

import logging

import pytest

from dockergate.audit.record import RequestRecord
from dockergate.server import AccessLogBudget


def _record(user: str | None, at: float) -> RequestRecord:
    return RequestRecord(
        started=at,
        user=user,
        identified_by="tls 127.0.0.1",
        listener="tls",
        method="GET",
        path="/_ping",
        route="system.ping",
        kind=None,
        object_id=None,
        decision="deny",
        rule="not identified",
        status=403,
        seconds=0.0,
        detail=None,
    )


def test_unidentified_callers_get_a_budget_and_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    budget = AccessLogBudget(per_minute=3)
    allowed = [budget.allows(_record(None, 1000.0 + i)) for i in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    assert all(budget.allows(_record("alice", 1005.0)) for _ in range(10))  # users: all
    with caplog.at_level(logging.INFO, logger="dockergate.access"):
        assert budget.allows(_record(None, 1061.0))  # a new minute
    assert "7 more requests of unidentified callers" in caplog.text
