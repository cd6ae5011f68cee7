"""The gate against a dead, restarting or remote daemon, and its own shutdown."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import describe

pytestmark = pytest.mark.timeout(120)


class UnixRelay:
    """A byte relay on a unix socket in front of the daemon that can be stopped and
    started again: to the gate it looks like a daemon restart."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self.server: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(64)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns.clear()
        self.path.unlink(missing_ok=True)


def test_daemon_unreachable_is_a_502_with_the_address(gate_factory, cli, tmp_path):
    missing = f"unix://{tmp_path}/no-daemon.sock"
    g = gate_factory(upstream=missing)
    r = cli(["ps"], gate=g)
    assert r.returncode != 0
    assert f"dockergate: Docker daemon unreachable at {missing}" in r.stderr, describe(r)
    assert g.alive()


def test_daemon_restart_recovers_without_restarting_the_gate(
    gate_factory, cli, docker_host, session_dir
):
    relay = UnixRelay(
        Path(session_dir) / f"relay-{os.getpid()}.sock", docker_host.removeprefix("unix://")
    )
    relay.start()
    g = gate_factory(upstream=f"unix://{relay.path}")
    try:
        assert cli(["ps"], gate=g).returncode == 0  # fills the gate's keep-alive pool
        relay.stop()
        r = cli(["ps"], gate=g)
        assert r.returncode != 0 and "unreachable" in r.stderr, describe(r)
        relay.start()
        r = cli(["ps"], gate=g)
        assert r.returncode == 0, describe(r)
        assert cli(["run", "--rm", "busybox", "echo", "back"], gate=g).stdout.strip() == "back"
    finally:
        relay.stop()


def test_sigterm_with_open_streams_stops_within_the_grace(gate_factory, cli):
    os.environ["DOCKERGATE_SHUTDOWN_GRACE"] = "1"
    try:
        g = gate_factory()
    finally:
        del os.environ["DOCKERGATE_SHUTDOWN_GRACE"]
    events = cli.popen(["events"], gate=g)
    try:
        time.sleep(1.0)
        assert g.proc is not None
        started = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        g.proc.wait(timeout=15)
        took = time.monotonic() - started
        assert g.proc.returncode == 0, g.log()
        assert took < 5, took
        assert events.wait(timeout=10) is not None  # the client saw its stream end
        assert "Traceback" not in g.log(), g.log()
        g.proc = None  # stopped here on purpose: nothing left for the fixture to stop
    finally:
        events.kill()


def test_remote_daemon_over_tls(gate, gate_factory, cli, names):
    """A gate whose upstream is tcp:// + TLS (here: the session gate's TLS listener with
    the admin bundle), streams and half-close included."""
    bundle = gate.admin_cert_dir
    env = {
        "DOCKERGATE_UPSTREAM_CA": str(bundle / "ca.pem"),
        "DOCKERGATE_UPSTREAM_CERT": str(bundle / "cert.pem"),
        "DOCKERGATE_UPSTREAM_KEY": str(bundle / "key.pem"),
    }
    os.environ.update(env)
    try:
        g = gate_factory(upstream=gate.tls_url)
    finally:
        for k in env:
            del os.environ[k]
    r = cli(["run", "--rm", "-i", "busybox", "cat"], input="through two gates\n", gate=g)
    assert r.stdout == "through two gates\n", describe(r)
    c = names("remote")
    assert cli(["run", "-d", "--name", c, "busybox", "sleep", "60"], gate=g).returncode == 0
    r = cli(["exec", c, "sh", "-c", "sleep .3; echo late"], gate=g)
    assert r.stdout == "late\n", describe(r)
