"""Operating the gate: health without credentials on the unix socket, Prometheus
metrics for admins (parsed with the client library's own parser)."""

from __future__ import annotations

import contextlib
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


def test_metrics_count_each_users_objects(gate, cli, unix_user, direct_client):
    """Per-user object counts, read from the daemon's owner labels at scrape time."""
    from tests.integration.test_hostile import Raw

    u = unix_user("metricsowner")
    gate.dockergate("user", "add", "metrics-owner", "--profile", "member", "--uid", str(u.uid))
    names = [f"metrics-owner-{i}" for i in range(3)]
    try:
        for name in names[:2]:
            r = cli(["run", "-d", "--name", name, "busybox", "sleep", "300"], user=u)
            assert r.returncode == 0, r.stderr
        r = cli(["create", "--name", names[2], "busybox", "true"], user=u)
        assert r.returncode == 0, r.stderr
        r = cli(["volume", "create", "metrics-owner-v"], user=u)
        assert r.returncode == 0, r.stderr

        def samples():
            reply = raw_request(gate.socket, "GET", "/_dockergate/metrics")
            assert reply.status == 200, reply
            out = {}
            for family in text_string_to_metric_families(reply.body.decode()):
                for s in family.samples:
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
            return out

        got = samples()
        assert got[("dockergate_user_objects_up", ())] == 1
        mine = {
            dict(labels)["kind"]: value
            for (name, labels), value in got.items()
            if name == "dockergate_user_objects" and dict(labels).get("user") == "metrics-owner"
        }
        assert mine["container"] == 3 and mine["volume"] == 1, mine
        assert mine["service"] == 0 and mine["network"] == 0, mine  # a manager: listed, none
        running = ("dockergate_user_containers_running", (("user", "metrics-owner"),))
        assert got[running] == 2
        # The counts follow the daemon, not the gate's memory.
        direct_client.containers.get(names[0]).remove(force=True)
        assert samples()[running] == 1
        # A member may not read them (the whole endpoint is admin-only).
        r = Raw(str(gate.socket), u.uid).request("GET", "/_dockergate/metrics")
        assert r.status == 403
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                direct_client.containers.get(name).remove(force=True)
        with contextlib.suppress(Exception):
            direct_client.volumes.get("metrics-owner-v").remove(force=True)


def test_metrics_refused_for_members(gate, unix_user):
    from tests.integration.test_hostile import Raw

    u = unix_user("metricsmember")
    gate.dockergate("user", "add", "metrics-member", "--profile", "member", "--uid", str(u.uid))
    r = Raw(str(gate.socket), u.uid).request("GET", "/_dockergate/metrics")
    assert r.status == 403 and "admins only" in r.message
