"""Review round 14b: robustness and denial of service by a member (unix socket).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (a ``400``/``403`` ``dockergate:`` answer, never a gate 500, no hang,
other users unaffected). The ``test_works_*`` tests pass and pin what holds up.

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members; the
file-descriptor test starts a gate of its own. Only the local ``busybox`` image
is used.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_until
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw, Reply

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created, start = first_round.created, first_round.start

pytestmark = pytest.mark.timeout(120)

DEEP = "[" * 100_000 + "]" * 100_000


def _is_gate_refusal(r: Reply, statuses: tuple[int, ...] = (400, 403)) -> bool:
    return r.status in statuses and r.message.startswith("dockergate: ")


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS")


def _ping(raw: Raw) -> int:
    """Status of GET /_ping (0: the connection ended without an answer)."""
    try:
        return raw.request("GET", "/_ping").status
    except OSError:
        return 0


@pytest.fixture
def running(users, cleanup) -> str:
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "120"]}, cleanup)
    assert start(m, cid).status == 204
    return cid


# ----------------------------------------------------- handler crashes: gate 500s


@pytest.mark.parametrize("user", ["1" * 5000, "0" * 5000, "1" * 5000 + ":1"])
def test_finding_exec_user_with_thousands_of_digits_is_a_gate_500(users, running, user):
    # check_exec: int() of a digit string over Python's 4300-digit limit raises
    # ValueError (policy/container.py, check_exec, `int(n) <= MAX_ID`).
    r = users["mallory"].request(
        "POST", f"/v1.41/containers/{running}/exec", {"Cmd": ["true"], "User": user}
    )
    assert _is_gate_refusal(r), (r.status, r.body)


def test_works_exec_as_numeric_uid(users, running):
    r = users["mallory"].request(
        "POST", f"/v1.41/containers/{running}/exec", {"Cmd": ["true"], "User": "1000"}
    )
    assert r.status == 201, (r.status, r.body)


@pytest.mark.parametrize("param", ["labels", "ulimits"])
def test_finding_build_query_json_nested_deep_is_a_gate_500(users, param):
    # images.build / _check_build: json.loads of the query value raises
    # RecursionError, which `except ValueError` does not catch.
    r = users["mallory"].request(
        "POST", f"/v1.41/build?{param}={DEEP}", b"", ctype="application/x-tar"
    )
    assert r.status == 400 and r.message.startswith("dockergate: "), (r.status, r.body[:300])


@pytest.mark.parametrize(
    "query",
    [
        "labels=%5B1%5D",
        "labels=" + "1" * 5000,
        "ulimits=" + "1" * 5000,
        "ulimits=%5B%7B%7D%5D",
    ],
)
def test_works_build_query_json_malformed_is_refused(users, query):
    r = users["mallory"].request("POST", f"/v1.41/build?{query}", b"", ctype="application/x-tar")
    assert _is_gate_refusal(r), (r.status, r.body[:300])


def _nul_bodies(data: str) -> dict[str, dict]:
    return {
        "device": {
            "Image": "busybox",
            "HostConfig": {
                "Devices": [
                    {
                        "PathOnHost": "/dev/null\x00",
                        "PathInContainer": "/x",
                        "CgroupPermissions": "r",
                    }
                ]
            },
        },
        "bind": {"Image": "busybox", "HostConfig": {"Binds": [f"{data}/\x00x:/x"]}},
        "bind-root": {"Image": "busybox", "HostConfig": {"Binds": ["/\x00:/x"]}},
        "mount": {
            "Image": "busybox",
            "HostConfig": {"Mounts": [{"Type": "bind", "Source": f"{data}/\x00", "Target": "/x"}]},
        },
    }


@pytest.mark.parametrize("case", ["device", "bind", "bind-root", "mount"])
def test_finding_nul_in_a_host_path_is_a_gate_500(users, area, cleanup, case):
    # policy/hostpaths.py resolve_host_path: os.path.realpath raises ValueError
    # ("embedded null byte"); also os.statvfs in the bind-root walk.
    r = users["mallory"].request(
        "POST", "/v1.41/containers/create", _nul_bodies(str(area / "data"))[case]
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert _is_gate_refusal(r), (r.status, r.body)


def test_finding_nul_in_a_device_path_on_update_is_a_gate_500(users, running):
    r = users["mallory"].request(
        "POST",
        f"/v1.41/containers/{running}/update",
        {"Devices": [{"PathOnHost": "/dev/null\x00", "PathInContainer": "/x"}]},
    )
    assert _is_gate_refusal(r), (r.status, r.body)


def test_works_forbidden_host_paths_are_refused(users):
    for body in (
        {"Image": "busybox", "HostConfig": {"Binds": ["/etc:/x"]}},
        {"Image": "busybox", "HostConfig": {"Devices": [{"PathOnHost": "/dev/mem"}]}},
    ):
        r = users["mallory"].request("POST", "/v1.41/containers/create", body)
        assert _is_gate_refusal(r, (403,)), (r.status, r.body)


@pytest.mark.parametrize("caps", [[[None]], [["gpu", None]]])
def test_finding_null_device_request_capability_is_a_gate_500(users, caps):
    # The schema lets null items through ([[str]]); policy/container.py device_requests
    # (wording the refusal) sorts and joins them: TypeError.
    r = users["mallory"].request(
        "POST",
        "/v1.41/containers/create",
        {"Image": "busybox", "HostConfig": {"DeviceRequests": [{"Capabilities": caps}]}},
    )
    assert _is_gate_refusal(r), (r.status, r.body)


def test_works_device_request_refused(users):
    r = users["mallory"].request(
        "POST",
        "/v1.41/containers/create",
        {"Image": "busybox", "HostConfig": {"DeviceRequests": [{"Capabilities": [["gpu"]]}]}},
    )
    assert _is_gate_refusal(r, (403,)), (r.status, r.body)


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        '{"Image":"busybox","Labels":{"a":"\\ud800"}}',
        '{"Image":"busybox","HostConfig":{"Memory":' + "9" * 100_000 + "}}",
        '{"Image":"busybox","HostConfig":{"Memory":1e400}}',
        '{"Image":"busybox","HostConfig":{"Memory":NaN}}',
        '{"Image":"busybox","HostConfig":[]}',
        '{"Image":"busybox","HostConfig":{"Memory":"1g"}}',
        '{"Image":"busybox","HostConfig":{"Memory":true}}',
        '{"Image":"busybox","Env":[1]}',
        '{"Image":"busybox","HostConfig":{"PortBindings":{"80/tcp":"x"}}}',
        '{"Image":"busybox","HostConfig":{"Ulimits":[{}]}}',
    ],
    ids=[
        "deep",
        "surrogate",
        "long-int",
        "1e400",
        "nan",
        "hostconfig-list",
        "memory-str",
        "memory-bool",
        "env-int",
        "ports-str",
        "ulimit-empty",
    ],
)
def test_works_hostile_create_bodies_refused(users, body):
    r = users["mallory"].request("POST", "/v1.41/containers/create", body)
    assert _is_gate_refusal(r), (r.status, r.body[:300])


@pytest.mark.parametrize(
    "path",
    [
        "/v1.41/containers/json?filters=" + DEEP,
        "/v1.41/containers/json?filters=" + "1" * 5000,
        "/v1.41/containers/%ff%fe/json",
        "/v1.41/containers/%00/json",
    ],
    ids=["filters-deep", "filters-long-int", "path-not-utf8", "path-nul"],
)
def test_works_hostile_queries_and_paths_refused(users, path):
    r = users["mallory"].request("GET", path)
    assert r.status == 400 and r.message.startswith("dockergate: "), (r.status, r.body[:300])


def test_works_many_headers_and_huge_header(users):
    m = users["mallory"]
    many = "".join(f"X-A{i}: b\r\n" for i in range(20_000))  # ~220 kB: under MAX_HEAD
    t0 = time.monotonic()
    r = m.send(f"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n{many}\r\n".encode())
    assert r.status == 200 and time.monotonic() - t0 < 5
    r = m.send(b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Big: " + b"a" * (256 << 10) + b"\r\n\r\n")
    assert r.status == 431 and r.message.startswith("dockergate: ")


# ------------------------------------------------------------------ Expect: 100-continue


def _waits_for_continue(sock: socket.socket) -> bytes:
    sock.sendall(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\n"
        b"Content-Type: application/json\r\nContent-Length: 40\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    sock.settimeout(3)
    try:
        return sock.recv(200)
    except TimeoutError:
        return b""


def test_finding_expect_100_continue_not_answered_on_inspected_route(users):
    # Exchange.read_json reads the body without sending 100 Continue (forward() only
    # sends it for streamed bodies): a client that waits for it waits forever.
    s = users["mallory"].connect()
    with contextlib.closing(s):
        got = _waits_for_continue(s)
    assert got.startswith(b"HTTP/1.1 100 "), got


def test_works_daemon_answers_100_continue(docker_host):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(docker_host.removeprefix("unix://"))
    with contextlib.closing(s):
        got = _waits_for_continue(s)
    assert got.startswith(b"HTTP/1.1 100 "), got


# ---------------------------------------------------------- one member, everyone's gate


@pytest.fixture
def small_gate(gate_factory, unix_user) -> Iterator[tuple[object, Raw, Raw]]:
    """A gate with the file limit a systemd service gets by default (soft 1024:
    deploy/systemd/dockergate.service sets no LimitNOFILE, Python does not raise it)."""
    g = gate_factory()
    mu, vu = unix_user("r14bm"), unix_user("r14bv")
    g.dockergate("user", "add", "r14b-m", "--profile", "member", "--uid", str(mu.uid))
    g.dockergate("user", "add", "r14b-v", "--profile", "member", "--uid", str(vu.uid))
    subprocess.run(["prlimit", f"--pid={g.proc.pid}", "--nofile=1024:1024"], check=True)
    yield g, Raw(str(g.socket), mu.uid), Raw(str(g.socket), vu.uid)


def _open_idle(raw: Raw, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        try:
            out.append(raw.connect())
        except OSError:
            break
    return out


def _admitted_again(m: Raw) -> None:
    """The member's ping answers 200 again once the gate has counted out the closed
    connections (it does on reading their EOF: a fixed half second was too short on a
    busy machine)."""
    wait_until(lambda: _ping(m) == 200, 15, what="the gate to count out closed connections")


def test_finding_idle_connections_of_one_member_lock_everyone_out(small_gate):
    # No per-user connection limit; an idle connection lives KEEPALIVE_IDLE (300 s)
    # (proxy/connection.py, listen/listeners.py): once one member holds every file
    # descriptor, every other user's connection is dropped unanswered.
    _g, m, v = small_gate
    held = _open_idle(m, 1100)
    try:
        time.sleep(1)
        assert _ping(v) == 200
    finally:
        for s in held:
            s.close()


def test_works_idle_connections_below_the_limit_harm_nobody(small_gate):
    _g, m, v = small_gate
    held = _open_idle(m, 300)
    try:
        assert len(held) == 300
        assert _ping(v) == 200
    finally:
        for s in held:
            s.close()
    _admitted_again(m)


def test_works_a_client_over_its_connection_limit_is_told_why(small_gate):
    """The fix: past ``max_connections_per_client`` (256) a member's request is refused
    with a message the CLI prints, and works again once connections are closed."""
    _g, m, v = small_gate
    held = _open_idle(m, 256)
    try:
        time.sleep(0.5)
        r = m.request("GET", "/_ping")
        assert r.status == 403, (r.status, r.body)
        assert b"max_connections_per_client" in r.body, r.body
        assert _ping(v) == 200
    finally:
        for s in held[:10]:
            s.close()
    try:
        _admitted_again(m)
    finally:
        for s in held[10:]:
            s.close()


def test_finding_stalled_inspected_bodies_pin_gate_memory(users, rgate):
    # read_body (proxy/http.py) buffers up to INSPECT_CAP (4 MiB) per request with
    # no time limit on the body ("busy" connections never expire) and no per-user
    # cap: 20 almost-complete create bodies pin ~80 MiB for as long as the member likes.
    m = users["mallory"]
    pid = rgate.proc.pid
    before = _rss_mib(pid)
    size = (4 << 20) - 16
    head = (
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    body = b'{"Image":"busybox","Labels":{"a":"' + b"x" * (size - 64)
    held = []
    try:
        for _ in range(20):
            s = m.connect()
            s.sendall(head + body)
            held.append(s)
        time.sleep(2)
        grown = _rss_mib(pid) - before
        assert _ping(users["victim"]) == 200
    finally:
        for s in held:
            s.close()
    assert grown < 32, f"the gate's RSS grew by {grown} MiB for one member's stalled bodies"


def test_works_other_users_answer_during_parallel_creates(users, direct_client):
    import threading

    m, v = users["mallory"], users["victim"]
    statuses: list[int] = []

    def one() -> None:
        r = m.request("POST", "/v1.41/containers/create", {"Image": "busybox", "Cmd": ["true"]})
        statuses.append(r.status)

    threads = [threading.Thread(target=one) for _ in range(200)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        r = v.request("GET", "/v1.41/containers/json")
        assert r.status == 200 and time.monotonic() - t0 < 2
        for t in threads:
            t.join(60)
        assert set(statuses) <= {201, 403}, statuses
    finally:
        for c in direct_client.containers.list(
            all=True, filters={"label": "dockergate.owner=rv-mallory"}
        ):
            with contextlib.suppress(Exception):
                c.remove(force=True)
