"""Prometheus metrics (``GET /_dockergate/metrics``, admins only), names ``dockergate_*``.

Counting happens in memory in the request sink; the text is rendered on scrape. A
registry of the gate's own keeps metrics of several gates in one process (tests)
apart and leaves out the client library's process collectors' duplicates.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from dockergate.audit.record import RequestRecord

if TYPE_CHECKING:
    from dockergate.admin.usage import ObjectCounts
    from dockergate.server import Gate

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
# Distinct refusal labels kept; past it, new ones count under "other" (profile rules
# and routes are a few hundred at most: this only bounds what was not foreseen).
REFUSAL_SERIES_MAX = 500


class Metrics:
    def __init__(self, gate: Gate) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(namespace="dockergate", registry=self.registry)
        r = self.registry
        # Per-request counting is plain dict arithmetic (about a microsecond); the
        # client library's labels()/observe() cost several times that on every
        # request. The families are built from these dicts at scrape time.
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> [buckets..., +Inf, sum, count]
        self.refusals: dict[str, int] = {}
        self.upstream_errors = 0
        r.register(_RequestCollector(self))
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
        key = (route, str(record.status), record.decision)
        self.requests[key] = self.requests.get(key, 0) + 1
        slots = self.latency.get(route)
        if slots is None:
            slots = self.latency[route] = [0.0] * (len(BUCKETS) + 3)
        slots[bisect.bisect_left(BUCKETS, record.seconds)] += 1
        slots[-2] += record.seconds
        slots[-1] += 1
        if record.decision == "deny" and record.rule:
            rule = refusal_label(record)
            if rule not in self.refusals and len(self.refusals) >= REFUSAL_SERIES_MAX:
                rule = "other"
            self.refusals[rule] = self.refusals.get(rule, 0) + 1
        elif record.status == 502:
            self.upstream_errors += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


def refusal_label(record: RequestRecord) -> str:
    """A refusal's ``rule`` label: a profile rule by its name (few, each worth a
    series); any other refusal by its route and status, never its message, which
    quotes the client (a path, a name): one series per distinct request would grow
    the scrape without end."""
    if record.by_profile_rule and record.rule:
        return record.rule[:120]
    return f"{record.route or 'unknown route'} ({record.status})"


class _RequestCollector(Collector):
    """Exports the request counters kept by :class:`Metrics` as Prometheus families."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "dockergate_requests",
            "Requests handled, by route, status and decision.",
            labels=["route", "status", "decision"],
        )
        for labels, n in sorted(m.requests.items()):
            requests.add_metric(list(labels), n)
        yield requests
        latency = HistogramMetricFamily(
            "dockergate_request_duration_seconds",
            "Time from request head to the end of the answer (streams: their whole life).",
            labels=["route"],
        )
        for route, slots in sorted(m.latency.items()):
            buckets: list[tuple[str, float]] = []
            running = 0.0
            for bound, hits in zip([*BUCKETS, float("inf")], slots[:-2], strict=True):
                running += hits
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
            latency.add_metric([route], buckets, slots[-2])
        yield latency
        refusals = CounterMetricFamily(
            "dockergate_refusals",
            "Requests refused by the gate: by profile rule, others by route and status.",
            labels=["rule"],
        )
        for rule, n in sorted(m.refusals.items()):
            refusals.add_metric([rule], n)
        yield refusals
        yield CounterMetricFamily(
            "dockergate_upstream_errors",
            "Requests that found the daemon unreachable.",
            value=m.upstream_errors,
        )


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
