"""The proxy core against a real dockerd, with the real docker CLI and docker-py.

Everything goes through the gate as the admin: over the unix socket as root and,
parametrised, over TLS with the admin bundle. The assertions are on real output:
a relay that loses the half-close prints nothing (exit 0), one that buffers a
stream delivers it late, one that hijacks the wrong request hangs.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    describe,
    parse_head,
    ping,
    raw_request,
    read_head,
    read_response,
    recv_until_close,
    unix_connect,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


def ok(r: Any) -> Any:
    assert r.returncode == 0, describe(r)
    return r


# ------------------------------------------------------------------ version, ping


def test_version_negotiated(cli, listener, direct_client):
    r = ok(cli(["version", "--format", "{{json .}}"], listener=listener))
    v = json.loads(r.stdout)
    daemon = direct_client.version()
    assert v.get("Server"), f"no server section: {r.stdout}"
    assert v["Server"]["Version"] == daemon["Version"]
    assert v["Server"]["ApiVersion"] == daemon["ApiVersion"]
    # The CLI supports newer API versions; it must have negotiated down to the daemon's.
    assert v["Client"]["ApiVersion"] == daemon["ApiVersion"], v["Client"]


@pytest.fixture
def raw_path(request, listener, docker_host) -> str:
    """Socket for raw-HTTP tests: the gate's, or the daemon's in `direct` mode."""
    if listener == "direct":
        return docker_host.removeprefix("unix://")
    return str(request.getfixturevalue("gate").socket)


def assert_healthy(path: str) -> None:
    """A fresh client is served normally: ping, and a JSON API call."""
    r = ping(path)
    assert (r.status, r.body) == (200, b"OK"), r
    r = raw_request(path, "GET", "/version")
    assert r.status == 200, r
    assert "ApiVersion" in json.loads(r.body)


@pytest.mark.listeners("unix")
def test_ping_headers_passed_through(raw_path, listener, docker_host):
    daemon_sock = docker_host.removeprefix("unix://")
    wanted = ("api-version", "ostype", "docker-experimental", "builder-version", "swarm")
    for method in ("GET", "HEAD"):
        theirs = raw_request(daemon_sock, method, "/_ping")
        r = raw_request(raw_path, method, "/_ping")
        assert r.status == 200, r
        assert r.body == (b"OK" if method == "GET" else b"")
        assert theirs.header("api-version"), theirs.headers
        for name in wanted:
            assert r.header(name) == theirs.header(name), (method, name, r.headers)


# -------------------------------------------------------------- run, attach, exec


def test_run_echo(cli, listener):
    r = ok(cli(["run", "--rm", "busybox", "echo", "hello"], listener=listener))
    assert r.stdout == "hello\n"


def test_run_exit_code(cli, listener):
    r = cli(
        ["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"], listener=listener
    )
    assert r.returncode == 3, describe(r)
    assert r.stdout == "out\n"
    assert "err\n" in r.stderr


def test_run_stdin(cli, listener):
    r = ok(cli(["run", "--rm", "-i", "busybox", "cat"], listener=listener, input="foo\n"))
    assert r.stdout == "foo\n"


def test_exec_without_stdin_half_close(cli, listener, exec_container):
    # Without -i the CLI half-closes at once; the late output must still arrive.
    r = ok(cli(["exec", exec_container, "sh", "-c", "sleep .5; echo late"], listener=listener))
    assert r.stdout == "late\n"


def test_exec_stdin(cli, listener, exec_container):
    r = ok(cli(["exec", "-i", exec_container, "cat"], listener=listener, input="foo\n"))
    assert r.stdout == "foo\n"


def test_exec_exit_code(cli, listener, exec_container):
    r = cli(["exec", exec_container, "sh", "-c", "exit 7"], listener=listener)
    assert r.returncode == 7, describe(r)


def test_run_tty(cli, listener):
    r = ok(
        cli(
            """script -qec "docker run -it --rm busybox sh -c 'echo tty-ok'" /dev/null""",
            shell=True,
            listener=listener,
        )
    )
    assert "tty-ok" in r.stdout, describe(r)


# ------------------------------------------------------------------------ streams


def _read_lines_timed(proc, timeout: float) -> list[tuple[float, str]]:
    """(seconds since start, line) for each stdout line until EOF."""
    t0 = time.monotonic()
    lines = []
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            proc.kill()
            pytest.fail(f"stream did not end within {timeout}s; got {lines!r} + {buf!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return lines
        buf += chunk
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            lines.append((time.monotonic() - t0, line.decode()))


def test_logs_follow(cli, listener, names):
    c = names("c")
    ok(
        cli(
            [
                "run",
                "-d",
                "--name",
                c,
                "busybox",
                "sh",
                "-c",
                "echo first; sleep 2; echo second; sleep 1",
            ],
            listener=listener,
        )
    )
    proc = cli.popen(["logs", "-f", c], listener=listener)
    lines = _read_lines_timed(proc, 30)
    rc = proc.wait(10)
    err = proc.stderr.read()
    assert rc == 0, err
    assert [line for _, line in lines] == ["first", "second"], (lines, err)
    t_first, t_second = lines[0][0], lines[1][0]
    # "first" is already in the log; "second" must arrive while following, not at the end.
    assert t_first < 1.5, lines
    assert t_second - t_first > 0.5, lines


def test_events_since_until(cli, listener, names):
    c = names("c")
    since = int(time.time()) - 1
    ok(cli(["create", "--name", c, "busybox", "true"], listener=listener))
    until = int(time.time()) + 2
    t0 = time.monotonic()
    r = ok(
        cli(
            [
                "events",
                "--since",
                str(since),
                "--until",
                str(until),
                "--filter",
                f"container={c}",
                "--format",
                "{{json .}}",
            ],
            listener=listener,
            timeout=30,
        )
    )
    assert time.monotonic() - t0 < 15
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert any(
        e.get("Type") == "container"
        and e.get("Action") == "create"
        and e.get("Actor", {}).get("Attributes", {}).get("name") == c
        for e in events
    ), r.stdout


def test_build_legacy_then_run(cli, listener, names, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "greeting.txt").write_text("built-through-the-gate\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY greeting.txt /greeting.txt\n"
        "RUN cat /greeting.txt > /built.txt && echo run-step-ok >> /built.txt\n"
        'CMD ["cat", "/built.txt"]\n'
    )
    tag = names("img") + ":v1"
    r = ok(
        cli(
            ["build", "-t", tag, str(ctx)],
            listener=listener,
            env={"DOCKER_BUILDKIT": "0"},
            timeout=120,
        )
    )
    assert "Successfully tagged " + tag in r.stdout, describe(r)
    r = ok(cli(["run", "--rm", tag], listener=listener))
    assert r.stdout == "built-through-the-gate\nrun-step-ok\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cp_both_ways(cli, listener, names, exec_container, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(1 << 20))
    inside = f"/tmp/{names('f')}"
    try:
        ok(cli(["cp", str(src), f"{exec_container}:{inside}"], listener=listener))
        r = ok(cli(["exec", exec_container, "sha256sum", inside], listener=listener))
        assert r.stdout.split()[0] == _sha256(src)
        out = tmp_path / "out.bin"
        ok(cli(["cp", f"{exec_container}:{inside}", str(out)], listener=listener))
        assert out.stat().st_size == 1 << 20
        assert _sha256(out) == _sha256(src)
    finally:
        cli(["exec", exec_container, "rm", "-f", inside], listener="direct")


def test_save_pipe_load(cli, listener, direct_client, tmp_path):
    before = direct_client.images.get("busybox:latest").id
    saved = tmp_path / "busybox.tar"
    r = ok(
        cli(
            f"docker save busybox:latest | tee {saved} | docker load",
            shell=True,
            listener=listener,
            timeout=120,
        )
    )
    assert "Loaded image: busybox:latest" in r.stdout, describe(r)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert direct_client.images.get("busybox:latest").id == before


@pytest.mark.listeners("unix")
def test_stack_deploy_services_rm(cli, listener, names, direct_client, tmp_path):
    stack = names("st")
    compose = tmp_path / "stack.yml"
    compose.write_text(
        'version: "3.8"\n'
        "services:\n"
        "  sleeper:\n"
        "    image: busybox:latest\n"
        '    command: ["sleep", "1000"]\n'
        "    stop_grace_period: 1s\n"
    )
    # --resolve-image never: no registry is reachable (or wanted) from the test daemon.
    ok(
        cli(
            ["stack", "deploy", "--resolve-image", "never", "-c", str(compose), stack],
            listener=listener,
            timeout=60,
        )
    )

    def running() -> bool:
        r = ok(
            cli(
                ["stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}"],
                listener=listener,
            )
        )
        return r.stdout.split() == [f"{stack}_sleeper", "1/1"]

    wait_until(running, 30, 0.5, "the stack's service to run 1/1")
    r = ok(cli(["stack", "ls", "--format", "{{.Name}}"], listener=listener))
    assert stack in r.stdout.split()
    ok(cli(["stack", "rm", stack], listener=listener))

    def gone() -> bool:
        return (
            not direct_client.services.list(filters={"name": stack})
            and not [c for c in direct_client.containers.list(all=True) if c.name.startswith(stack)]
            and not direct_client.networks.list(names=[f"{stack}_default"])
        )

    wait_until(gone, 40, 0.5, "the stack's service, tasks and network to go")
    r = ok(cli(["stack", "ls", "--format", "{{.Name}}"], listener=listener))
    assert stack not in r.stdout.split()


# ----------------------------------------------------------------------- docker-py


def test_dockerpy_run(docker_client, listener, names):
    client = docker_client(listener)
    out = client.containers.run("busybox", "echo hi", remove=True, name=names("c"))
    assert out == b"hi\n"


def test_dockerpy_exec_stream(docker_client, listener, exec_container):
    ctr = docker_client(listener).containers.get(exec_container)
    res = ctr.exec_run(["sh", "-c", "echo a; sleep .2; echo b"], stream=True)
    chunks = list(res.output)
    assert b"".join(chunks) == b"a\nb\n"
    # Two writes 0.2 s apart are two frames: a relay must not hold the first one back.
    assert len(chunks) >= 2, chunks


def test_dockerpy_events(docker_client, listener, names):
    client = docker_client(listener)
    c = names("c")
    since = int(time.time()) - 1
    client.containers.create("busybox", "true", name=c)
    until = int(time.time()) + 2
    events = list(client.events(since=since, until=until, decode=True, filters={"container": c}))
    assert all(isinstance(e, dict) for e in events)
    assert any(
        e.get("Type") == "container"
        and e.get("Action") == "create"
        and e.get("Actor", {}).get("Attributes", {}).get("name") == c
        for e in events
    ), events


# ------------------------------------------------------------------------ identity


@pytest.mark.listeners("unix")
def test_unregistered_uid_is_refused(cli, listener, unix_user):
    if listener == "direct":
        pytest.skip("identity is the gate's business")
    user = unix_user("stranger")
    r = cli(["version"], user=user)
    assert r.returncode != 0, describe(r)
    assert "is not registered" in r.stderr and "dockergate user add" in r.stderr, describe(r)
    r = cli(["ps"], user=user)
    assert r.returncode != 0, describe(r)
    assert "is not registered" in r.stderr and "dockergate user add" in r.stderr, describe(r)


# ------------------------------------------------------------- bad input, raw HTTP


@pytest.mark.listeners("unix")
@pytest.mark.parametrize(
    "line",
    [
        b"NOT-HTTP-AT-ALL",
        b"GET /_ping",
        b"GET /_ping HTTP/1.1 trailing-garbage",
        b"G\x00T /_ping HTTP/1.1",
    ],
    ids=["one-token", "no-version", "extra-token", "nul-in-method"],
)
def test_malformed_request_line(raw_path, listener, line):
    with unix_connect(raw_path) as s:
        s.sendall(line + b"\r\nHost: docker\r\n\r\n")
        data, eof = recv_until_close(s, 10)
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert eof, f"connection left open after the 400: {data!r}"
    assert_healthy(raw_path)


@pytest.mark.listeners("unix")
def test_http2_preface_refused(raw_path, listener):
    if listener == "direct":
        pytest.skip("dockerd 20.10 answers 301 to `PRI *`; the gate must refuse it itself")
    with unix_connect(raw_path) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        data, eof = recv_until_close(s, 10)
    assert eof, f"no answer and no close within 10 s (hang); got {data!r}"
    if data:
        status, _, _ = parse_head(data.partition(b"\r\n\r\n")[0])
        assert data.startswith(b"HTTP/1.1 "), data
        assert 400 <= status < 500 or status == 505, data
    assert_healthy(raw_path)


@pytest.mark.listeners("unix")
def test_unknown_upgrade_not_hijacked(raw_path, listener):
    with unix_connect(raw_path) as s:
        s.sendall(
            b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
        )
        rep = read_response(s)
        assert rep.status != 101, rep
        assert (rep.status, rep.body) == (200, b"OK") or 400 <= rep.status < 500, rep
        if rep.status == 200 and not rep.closed:
            # Still HTTP on this connection, not a raw tunnel.
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            again = read_response(s)
            assert (again.status, again.body) == (200, b"OK"), again
    assert_healthy(raw_path)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.listeners("unix")
def test_client_drops_events_stream(raw_path, listener, request, direct_client, names):
    g = request.getfixturevalue("gate") if listener != "direct" else None
    fds_before = _open_fds(g.proc.pid) if g else 0
    for i in range(6):
        s = unix_connect(raw_path)
        s.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n")
        head, rest = read_head(s)
        status, _, _ = parse_head(head)
        assert status == 200, head
        direct_client.containers.create("busybox", "true", name=names(f"ev{i}"))
        if not rest:
            s.settimeout(10)
            rest = s.recv(65536)
        assert b"create" in rest, rest  # the stream flowed before we dropped it
        s.close()
        # More events after the client went: the relay writes into a closed socket.
        direct_client.containers.get(names(f"ev{i}")).remove()
    assert_healthy(raw_path)
    if g:
        # The upstream /events connections must be closed, not leaked.
        wait_until(
            lambda: _open_fds(g.proc.pid) <= fds_before + 3,
            10,
            0.2,
            f"the gate's open fds to drop back to ~{fds_before} (now {_open_fds(g.proc.pid)})",
        )


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf()


@pytest.mark.listeners("unix")
def test_client_drops_uploads(raw_path, listener, exec_container, direct_client):
    # 1. An archive upload (Content-Length 8 MiB) cut after 1 MiB.
    with unix_connect(raw_path) as s:
        s.sendall(
            f"PUT /v1.41/containers/{exec_container}/archive?path=/tmp HTTP/1.1\r\n"
            "Host: docker\r\nContent-Type: application/x-tar\r\n"
            f"Content-Length: {8 << 20}\r\n\r\n".encode()
        )
        s.sendall(_tar_header("partial.bin", 8 << 20) + os.urandom(1 << 20))
    # 2. A chunked legacy build context cut mid-stream.
    with unix_connect(raw_path) as s:
        s.sendall(
            b"POST /v1.41/build?t=dgt-never:x HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        part = _tar_header("Dockerfile", 1 << 20) + b"FROM busybox\n"
        s.sendall(b"%x\r\n%b\r\n" % (len(part), part))
    # 3. A JSON create body cut short.
    with unix_connect(raw_path) as s:
        s.sendall(
            b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"Image":'
        )
    time.sleep(0.5)
    assert_healthy(raw_path)
    # The container the aborted upload targeted still works (dockerd itself may leave
    # the partial file: that is its business).
    ctr = direct_client.containers.get(exec_container)
    assert ctr.status == "running"
    res = ctr.exec_run(["rm", "-f", "/tmp/partial.bin"])
    assert res.exit_code == 0, res.output
    assert not direct_client.images.list(name="dgt-never")


# ------------------------------------------------------------------------ idle, slow


@pytest.fixture
def all_listeners() -> list[str]:
    raw = os.environ.get("DOCKERGATE_TEST_LISTENERS", "").strip()
    return [x.strip() for x in raw.split(",") if x.strip()] or ["unix", "tls"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_idle_streams_survive_six_minutes(cli, all_listeners, names):
    """`logs -f` and `events` silent for 6+ minutes (past common 5-minute proxy and
    client timeouts), on every listener at once; both must deliver what comes next."""
    idle = int(os.environ.get("DOCKERGATE_IDLE_SECONDS", "370"))
    c = names("idle")
    ok(
        cli(
            [
                "run",
                "-d",
                "--name",
                c,
                "busybox",
                "sh",
                "-c",
                f"echo start; sleep {idle}; echo after-idle",
            ],
            listener="direct",
        )
    )
    since = str(int(time.time()) - 1)
    procs = {}
    for lst in all_listeners:
        procs[lst, "logs"] = cli.popen(["logs", "-f", c], listener=lst)
        procs[lst, "events"] = cli.popen(
            [
                "events",
                "--since",
                since,
                "--filter",
                f"container={c}",
                "--filter",
                "event=die",
                "--format",
                "{{.Action}}",
            ],
            listener=lst,
        )
    try:
        for lst in all_listeners:
            out, err = procs[lst, "logs"].communicate(timeout=idle + 80)
            assert procs[lst, "logs"].returncode == 0, (lst, err)
            assert out == "start\nafter-idle\n", (lst, out, err)
        for lst in all_listeners:
            p = procs[lst, "events"]
            ready, _, _ = select.select([p.stdout], [], [], 30)
            assert ready, f"{lst}: no die event after the idle period"
            assert p.stdout.readline().strip() == "die", lst
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(10)
