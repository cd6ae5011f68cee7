"""Prometheus metrics (``GET /_dockergate/metrics``, admins only), names ``dockergate_*``.

Counting happens in memory in the request sink; the text is rendered on scrape. A
registry of the gate's own keeps metrics of several gates in one process (tests)
apart and leaves out the client library's process collectors' duplicates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from dockergate.audit.record import RequestRecord

if TYPE_CHECKING:
    from dockergate.admin.usage import ObjectCounts
    from dockergate.server import Gate

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


class Metrics:
    def __init__(self, gate: Gate) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(namespace="dockergate", registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "dockergate_requests",
            "Requests handled, by route, status and decision.",
            ["route", "status", "decision"],
            registry=r,
        )
        self.latency = Histogram(
            "dockergate_request_duration_seconds",
            "Time from request head to the end of the answer (streams: their whole life).",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "dockergate_refusals", "Requests refused by the gate, by rule.", ["rule"], registry=r
        )
        self.upstream_errors = Counter(
            "dockergate_upstream_errors", "Requests that found the daemon unreachable.", registry=r
        )
        connections = Gauge(
            "dockergate_open_connections", "Client connections open now.", registry=r
        )
        connections.set_function(lambda: len(gate.connections))
        streams = Gauge(
            "dockergate_open_streams",
            "Upgraded (attach, exec, BuildKit) streams open now.",
            registry=r,
        )
        streams.set_function(lambda: gate.streams)

    def observe(self, record: RequestRecord) -> None:
        """The gate's request sink: count, time, and file refusals under their rule."""
        route = record.route or "unknown"
        self.requests.labels(route, str(record.status), record.decision).inc()
        self.latency.labels(route).observe(record.seconds)
        if record.decision == "deny" and record.rule:
            self.refusals.labels(record.rule[:120]).inc()
        elif record.status == 502:
            self.upstream_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def render_object_counts(counts: ObjectCounts | None) -> bytes:
    """``dockergate_user_objects{user,kind}`` and ``dockergate_user_containers_running``,
    counted from the daemon at scrape time (owner labels live on the daemon, not in the
    gate), plus ``dockergate_user_objects_up``: 0 when the daemon could not be asked."""
    registry = CollectorRegistry(auto_describe=False)
    up = Gauge(
        "dockergate_user_objects_up",
        "1 if the per-user object counts below were read from the daemon at this scrape.",
        registry=registry,
    )
    up.set(1 if counts is not None else 0)
    if counts is not None:
        objects = Gauge(
            "dockergate_user_objects",
            "Objects carrying each owner label on this engine, by kind (swarm kinds only "
            "on managers).",
            ["user", "kind"],
            registry=registry,
        )
        running = Gauge(
            "dockergate_user_containers_running",
            "Running containers (service tasks included) of each owner on this engine.",
            ["user"],
            registry=registry,
        )
        for user, kinds in sorted(counts.by_user.items()):
            for kind in counts.kinds:
                objects.labels(user, kind).set(kinds.get(kind, 0))
            running.labels(user).set(counts.running.get(user, 0))
    return generate_latest(registry)
