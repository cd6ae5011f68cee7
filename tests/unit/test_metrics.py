"""The request counters are kept in plain dicts and exported at scrape time: the
families must read as the client library's own would (names, labels, cumulative
histogram buckets, sum and count)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dockergate.audit.record import RequestRecord
from dockergate.metrics import Metrics


def record(route: str, status: int, seconds: float, rule: str | None = None) -> RequestRecord:
    return RequestRecord(
        started=0.0,
        user="bob",
        identified_by="unix uid 1000",
        listener="unix",
        method="GET",
        path="/x",
        route=route,
        kind=None,
        object_id=None,
        decision="deny" if rule else "allow",
        rule=rule,
        status=status,
        seconds=seconds,
    )


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_and_histogram_export() -> None:
    gate: Any = SimpleNamespace(connections={}, streams=0)
    m = Metrics(gate)
    m.observe(record("system.ping", 200, 0.0004))
    m.observe(record("system.ping", 200, 0.003))
    m.observe(record("system.ping", 200, 100.0))  # beyond the last bucket
    m.observe(record("container.create", 403, 0.002, rule="profile member: privileged"))
    m.observe(record("container.list", 502, 0.001))
    got = samples(m)
    ping = (("decision", "allow"), ("route", "system.ping"), ("status", "200"))
    assert got[("dockergate_requests_total", ping)] == 3
    hist = "dockergate_request_duration_seconds"
    route = (("route", "system.ping"),)
    assert got[(f"{hist}_bucket", (("le", "0.0005"), *route))] == 1
    assert got[(f"{hist}_bucket", (("le", "0.005"), *route))] == 2
    assert got[(f"{hist}_bucket", (("le", "60.0"), *route))] == 2
    assert got[(f"{hist}_bucket", (("le", "+Inf"), *route))] == 3
    assert got[(f"{hist}_count", route)] == 3
    assert abs(got[(f"{hist}_sum", route)] - 100.0034) < 1e-9
    assert got[("dockergate_refusals_total", (("rule", "profile member: privileged"),))] == 1
    assert got[("dockergate_upstream_errors_total", ())] == 1
    assert got[("dockergate_open_connections", ())] == 0


def test_refusal_labels_are_rules_or_routes_never_messages() -> None:
    """Round 31f: a label per distinct message grew the scrape without end."""
    from dockergate.audit.record import RequestRecord
    from dockergate.metrics import refusal_label

    def record(rule: str, route: str | None, status: int = 403) -> RequestRecord:
        return RequestRecord(
            started=0.0,
            user="u",
            identified_by="x",
            listener="unix",
            method="GET",
            path="/x",
            route=route,
            kind=None,
            object_id=None,
            decision="deny",
            rule=rule,
            status=status,
            seconds=0.0,
            detail=None,
        )

    assert refusal_label(record("profile member: privileged", "container.create")) == (
        "profile member: privileged"
    )
    labels = {refusal_label(record(f"may not call GET /nosuch-{i}", None)) for i in range(50)}
    assert labels == {"unknown route (403)"}
    assert refusal_label(record("No such container: x", "container.inspect", 404)) == (
        "container.inspect (404)"
    )
