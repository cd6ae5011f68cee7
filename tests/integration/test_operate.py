"""Operating the gate: health without credentials on the unix socket, Prometheus
metrics for admins (parsed with the client library's own parser)."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import raw_request

pytestmark = pytest.mark.timeout(60)


def test_health_answers_anyone_on_the_unix_socket(gate, unix_user):
    from tests.integration.test_hostile import Raw

    stranger = unix_user("healthcheck")  # not registered: health still answers
    r = Raw(str(gate.socket), stranger.uid).request("GET", "/_dockergate/health")
    assert r.status == 200, r.body
    data = json.loads(r.body)
    assert data["status"] == "ok" and data["upstream"]["ok"] and data["store"]["ok"]
    r = Raw(str(gate.socket), stranger.uid).request("GET", "/_dockergate/whoami")
    assert r.status == 403  # everything else needs a registered user


def test_metrics_for_admins(gate, cli, unix_user):
    cli(["ps"])
    cli(["run", "--rm", "--privileged", "busybox", "true"])  # admin: allowed
    reply = raw_request(gate.socket, "GET", "/_dockergate/metrics")
    assert reply.status == 200, reply
    assert reply.header("content-type").startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    for name in (
        "dockergate_requests",
        "dockergate_request_duration_seconds",
        "dockergate_open_connections",
        "dockergate_open_streams",
        "dockergate_refusals",
        "dockergate_upstream_errors",
    ):
        assert name in families, sorted(families)
    routes = {s.labels.get("route") for s in families["dockergate_requests"].samples}
    assert "container.list" in routes and "container.create" in routes


def test_metrics_refused_for_members(gate, unix_user):
    from tests.integration.test_hostile import Raw

    u = unix_user("metricsmember")
    gate.dockergate("user", "add", "metrics-member", "--profile", "member", "--uid", str(u.uid))
    r = Raw(str(gate.socket), u.uid).request("GET", "/_dockergate/metrics")
    assert r.status == 403 and "admins only" in r.message
