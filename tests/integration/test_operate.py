"""Operating the gate: health without credentials on the unix socket, Prometheus
metrics for admins (parsed with the client library's own parser)."""

from __future__ import annotations

import contextlib
import json
import signal

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


def _server_cert(gate, server_hostname="localhost"):
    """The TLS listener's certificate as a client with the admin bundle sees it, and
    the open connection (left open: the caller checks it survives a rotation)."""
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(gate.admin_cert_dir / "ca.pem"))
    ctx.load_cert_chain(gate.admin_cert_dir / "cert.pem", gate.admin_cert_dir / "key.pem")
    raw = socket.create_connection(("127.0.0.1", gate.tls_port), timeout=10)
    conn = ctx.wrap_socket(raw, server_hostname=server_hostname)
    return conn.getpeercert(), conn


def _ping_over(conn):
    conn.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"OK"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_rotate_server_cert_reaches_a_running_gate(gate_factory, cli):
    """`init --rotate-server-cert` issues a new certificate from the same CA and tells
    the running gate (SIGHUP): new handshakes get it, open connections and every
    issued bundle keep working; a broken certificate file is refused on reload and
    the previous one stays in service."""
    import time

    g = gate_factory()
    before, old_conn = _server_cert(g)
    assert ("DNS", "rotated.example") not in before["subjectAltName"]
    assert _ping_over(old_conn).startswith(b"HTTP/1.1 200")

    r = g.dockergate("init", "--rotate-server-cert", "--hostname", "rotated.example")
    assert "sent SIGHUP to dockergate" in r.stdout, r.stdout
    deadline = time.monotonic() + 10
    while True:
        after, conn = _server_cert(g, server_hostname="rotated.example")
        conn.close()
        if after["serialNumber"] != before["serialNumber"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["serialNumber"] != before["serialNumber"]
    assert ("DNS", "rotated.example") in after["subjectAltName"]
    assert after["issuer"] == before["issuer"]
    assert _ping_over(old_conn).startswith(b"HTTP/1.1 200")  # kept its session
    old_conn.close()
    r = cli(["version", "--format", "{{.Server.APIVersion}}"], listener="tls", gate=g)
    assert r.returncode == 0, r.stderr  # the admin bundle issued before is still good

    # A mismatched pair (another certificate's key) is refused; the listener keeps
    # presenting the rotated certificate.
    pki = g.state_dir / "pki"
    key = (pki / "server-key.pem").read_bytes()
    (pki / "server-key.pem").write_bytes((g.admin_cert_dir / "key.pem").read_bytes())
    try:
        size = g.log_size()
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "server certificate reload failed" not in g.log(size):
            assert time.monotonic() < deadline, g.log(size)
            time.sleep(0.1)
        still, conn = _server_cert(g, server_hostname="rotated.example")
        conn.close()
        assert still["serialNumber"] == after["serialNumber"]
    finally:
        (pki / "server-key.pem").write_bytes(key)
