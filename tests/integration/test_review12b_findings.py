"""Review round 12b: streaming robustness on uvloop (the default) and over TLS.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what a client
would get from the daemon directly. The ``test_works_*`` tests pass and pin what
holds up. Only the local ``busybox`` image is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import parse_head, read_head, read_response, unix_connect, wait_until

pytestmark = pytest.mark.timeout(120)

MEMBER = "r12b-m"


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _daemon_pid(docker_host: str) -> int:
    path = docker_host.removeprefix("unix://").encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"dockerd") and any(path in a for a in cmd):
            return int(d)
    raise RuntimeError(f"no dockerd serving {docker_host}")


def _tls_connect(gate, cert_dir: Path | None = None) -> ssl.SSLSocket:
    d = Path(cert_dir or gate.admin_cert_dir)
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(str(d / "cert.pem"), str(d / "key.pem"))
    raw = socket.create_connection((gate.tls_host, gate.tls_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=gate.tls_host)


def _connect(gate, via: str, docker_host: str) -> socket.socket:
    if via == "direct":
        return unix_connect(docker_host.removeprefix("unix://"))
    if via == "tls":
        return _tls_connect(gate)
    return unix_connect(str(gate.socket))


def _read_to_close(s: socket.socket, timeout: float = 15.0) -> bytes:
    s.settimeout(timeout)
    parts = []
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := s.recv(1 << 16):
            parts.append(chunk)
    return b"".join(parts)


def _dechunk(body: bytes) -> bytes:
    out, i = [], 0
    while True:
        eol = body.index(b"\r\n", i)
        size = int(body[i:eol].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[eol + 2 : eol + 2 + size])
        i = eol + 2 + size + 2


@pytest.fixture
def sleeper(direct_client) -> Iterator[object]:
    c = direct_client.containers.run(
        "busybox", ["sleep", "600"], name="r12b-" + uuid.uuid4().hex[:6], detach=True
    )
    yield c
    with contextlib.suppress(Exception):
        c.remove(force=True)


@pytest.fixture(scope="module")
def member_bundle(gate, unix_user) -> Iterator[Path]:
    u = unix_user("r12bm")
    gate.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(u.uid))
    d = Path(tempfile.mkdtemp(prefix="dgt-r12b-"))
    gate.dockergate("user", "cert", MEMBER, "--out", str(d / "bundle"))
    yield d / "bundle"
    shutil.rmtree(d, ignore_errors=True)


def _member_events(gate, bundle: Path, since: int, until: int, version: str) -> bytes:
    s = _tls_connect(gate, bundle)
    with contextlib.closing(s):
        s.sendall(
            f"GET /v1.41/events?since={since}&until={until} {version}\r\n"
            "Host: docker\r\nConnection: close\r\n\r\n".encode()
        )
        data = _read_to_close(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], data[:300]
    return _dechunk(body) if b"transfer-encoding: chunked" in head.lower() else body


# ------------------------------------------------------------------------ findings


def test_finding_http10_events_not_filtered_for_members(gate, member_bundle, direct_client):
    """High: a member's ``GET /events`` in HTTP/1.0 skips the per-user event filter
    (relay_response's HTTP/1.0 branch comes before the event_filter one): the member
    reads every user's container names, images, exec commands and labels."""
    since = int(time.time()) - 1
    secret = "r12b-secret-" + uuid.uuid4().hex[:6]
    direct_client.containers.create("busybox", "true", name=secret).remove()
    until = int(time.time()) + 1
    time.sleep(1.2)
    http11 = _member_events(gate, member_bundle, since, until, "HTTP/1.1")
    assert secret.encode() not in http11  # the filter works in HTTP/1.1
    http10 = _member_events(gate, member_bundle, since, until, "HTTP/1.0")
    assert secret.encode() not in http10, (
        "an admin's container events reach a member through an HTTP/1.0 /events",
        http10[:300],
    )


@pytest.mark.parametrize(("what", "via"), [("logs", "unix"), ("events", "unix"), ("events", "tls")])
def test_finding_http10_stream_client_gone_pins_daemon_connection(
    gate, docker_host, via, what, sleeper
):
    """Medium: an HTTP/1.0 stream (events, logs -f, wait) is relayed without the
    watcher: a client that leaves keeps the daemon connection (and, on the unix
    socket, the client's fd) until the stream next sends something, hours later for
    a quiet ``events``. The daemon frees them at once when the client is direct
    (test_works_direct_daemon_frees_http10_stream)."""
    target = {
        "events": "/v1.41/events",
        "logs": f"/v1.41/containers/{sleeper.id}/logs?follow=1&stdout=1",
    }[what]
    gpid, dpid = gate.proc.pid, _daemon_pid(docker_host)
    time.sleep(1.0)
    g0, d0 = _fds(gpid), _fds(dpid)
    socks = []
    for _ in range(3):
        s = _connect(gate, via, docker_host)
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        head, _ = read_head(s)
        assert parse_head(head)[0] == 200, head
        socks.append(s)
    for s in socks:
        s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_fds(gpid) > g0 + 1 or _fds(dpid) > d0 + 1):
        time.sleep(0.2)
    assert (_fds(gpid), _fds(dpid)) <= (g0 + 1, d0 + 1), (
        f"gate fds {g0} -> {_fds(gpid)}, daemon fds {d0} -> {_fds(dpid)} "
        "5 s after three HTTP/1.0 clients left"
    )


# --------------------------------------------------------------------------- works


@pytest.mark.parametrize("what", ["events", "logs"])
def test_works_direct_daemon_frees_http10_stream(docker_host, what, sleeper):
    target = {
        "events": "/v1.41/events",
        "logs": f"/v1.41/containers/{sleeper.id}/logs?follow=1&stdout=1",
    }[what]
    dpid = _daemon_pid(docker_host)
    time.sleep(0.3)
    d0 = _fds(dpid)
    socks = []
    for _ in range(3):
        s = unix_connect(docker_host.removeprefix("unix://"))
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        read_head(s)
        socks.append(s)
    for s in socks:
        s.close()
    wait_until(lambda: _fds(dpid) <= d0 + 1, 5, 0.2, "the daemon's fds back")


@pytest.mark.parametrize("via", ["unix", "tls"])
@pytest.mark.parametrize("what", ["logs", "stats", "events", "wait"])
def test_works_killed_cli_stream_frees_fds(gate, cli, via, what, sleeper):
    pid = gate.proc.pid
    args = {
        "logs": ["logs", "-f", sleeper.id],
        "stats": ["stats", sleeper.id],
        "events": ["events"],
        "wait": ["wait", sleeper.id],
    }[what]
    time.sleep(0.3)
    before = _fds(pid)
    procs = [
        subprocess.Popen(
            [cli.docker, *args],
            env=cli.env(via),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    wait_until(lambda: _fds(pid) >= before + 3, 10, 0.1, "the streams open")
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    wait_until(lambda: _fds(pid) <= before + 1, 8, 0.2, "the gate's fds back")


class _OneFile:
    """A socket whose makefile() is always the same buffered file: http.client reads
    one response, and the bytes of the next stay in the buffer (the helpers'
    read_response drops what a recv brought past the response it reads)."""

    def __init__(self, sock: Any) -> None:
        self.file = sock.makefile("rb")

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def close(self) -> None:
        """http.client closes the file after each response: keep it for the next."""


def _pipelined_responses(sock: Any, count: int) -> list[tuple[int, bytes]]:
    shared = _OneFile(sock)
    out = []
    for _ in range(count):
        response = http.client.HTTPResponse(shared)  # type: ignore[arg-type]
        response.begin()
        out.append((response.status, response.read()))
    return out


@pytest.mark.parametrize("via", ["unix", "tls"])
def test_works_pipelined_after_held_answers(gate, docker_host, via, sleeper):
    reqs = (
        b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\n\r\n"
        + f"GET /v1.41/containers/{sleeper.id}/top HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
        + b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
    )
    got = {}
    for who in ("direct", via):
        with contextlib.closing(_connect(gate, who, docker_host)) as s:
            s.settimeout(10)
            s.sendall(reqs)
            got[who] = _pipelined_responses(s, 3)
    assert [st for st, _ in got[via]] == [200, 200, 200]
    assert got[via][0] == got["direct"][0]  # the held list, byte for byte
    assert got[via][1][1].startswith(b'{"Processes":[["root"')  # top (its %CPU varies)
    assert got[via][2] == (200, b"OK")


@pytest.mark.parametrize("via", ["unix", "tls"])
def test_works_exec_stdin_closed_late_and_early(cli, via, sleeper):
    env = cli.env(via)
    r = subprocess.run(
        [
            "sh",
            "-c",
            f"(echo a; sleep 1; echo b) | {cli.docker} exec -i {sleeper.id} "
            "sh -c 'cat; sleep .5; echo done'",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (r.returncode, r.stdout) == (0, "a\nb\ndone\n"), r.stderr
    r = subprocess.run(
        [cli.docker, "exec", "-i", sleeper.id, "sh", "-c", "sleep .5; echo late"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (r.returncode, r.stdout) == (0, "late\n"), r.stderr


@pytest.mark.parametrize("via", ["unix", "tls"])
def test_works_cp_50mb_both_ways(cli, via, sleeper, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(50 << 20))
    env = cli.env(via)
    r = subprocess.run(
        [cli.docker, "cp", str(src), f"{sleeper.id}:/tmp/big.bin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.bin"
    r = subprocess.run(
        [cli.docker, "cp", f"{sleeper.id}:/tmp/big.bin", str(back)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_works_big_list_byte_identical(gate, docker_host, direct_client):
    made = [
        direct_client.api.create_container(
            "busybox", "true", labels={"r12b": "x" * 8000}, name=f"r12b-l{i}-{uuid.uuid4().hex[:4]}"
        )["Id"]
        for i in range(150)
    ]
    try:
        got = {}
        for via in ("direct", "unix", "tls"):
            with contextlib.closing(_connect(gate, via, docker_host)) as s:
                s.sendall(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\n\r\n")
                r = read_response(s, 20)
            assert r.status == 200
            got[via] = r.body
        assert len(got["direct"]) > 1 << 20  # more than one held write
        assert got["unix"] == got["direct"] == got["tls"]
    finally:
        for cid in made:
            direct_client.api.remove_container(cid, force=True)
