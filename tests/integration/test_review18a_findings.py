"""Review round 18a: the unix peer in a container (commits 6a84fe8, b7a82c7).

A unix peer whose cgroup names a container of the engine, and whose pid namespace
is that container's init's, is now taken for the container's ``dockergate.owner``
(owner ``root``: the admin) instead of for its uid. This round attacks that change:
processes leaving the container's cgroup or pid namespace, unlabelled or
image-labelled containers a member can cause to exist, and what the new per-peer
work and the new "client" a container is cost the gate's limits.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour. The ``test_works_*`` tests pass and pin the legitimate neighbours.

They reuse the first round's gate (tests/integration/test_review_findings.py) and
round 17a's relay (a static program a member runs in her container on a bind of a
directory she owns; it connects to a descriptor she hands it). Only the local
``busybox`` image is used; all traffic stays on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import platform
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Gate, UnixUser
from tests.integration import test_review17a_findings as r17a
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

area = first_round.area
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created
start = first_round.start
mallory_login = r17a.mallory_login
as_uid = r17a.as_uid

pytestmark = pytest.mark.timeout(120)

WHOAMI = b"GET /_dockergate/whoami HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _answer(raw: bytes) -> dict:
    """whoami's JSON, or the status line and body of a refusal."""
    head, _, body = raw.partition(b"\r\n\r\n")
    first = head.split(b"\r\n")[0].decode("latin-1")
    if " 200 " not in first:
        return {"status": first, "body": body.decode("latin-1")}
    return json.loads(body[body.find(b"{") : body.rfind(b"}") + 1])


@contextlib.contextmanager
def relay_as(raw: Raw, login: UnixUser, area: Path, cleanup, user: str = "") -> Iterator[Path]:
    """Round 17a's relay in a container ``raw`` creates through the gate (running as
    ``user`` inside, if given), on a bind of a new directory ``login`` owns in the
    team data (world-writable, so any uid in the container can listen there)."""
    if platform.machine() != "x86_64":
        pytest.skip("the relay program is x86-64 code")
    d = area / "data" / f"rv18a-{_rand()}"
    d.mkdir()
    os.chown(d, login.uid, login.gid)
    d.chmod(0o777)
    program = gzip.decompress(base64.b64decode(r17a.RELAY))

    def drop() -> bytes:
        (d / "relay").write_bytes(program)
        (d / "relay").chmod(0o755)
        return b"ok"

    assert as_uid(login.uid, login.gid, drop) == b"ok"
    body: dict = {"Image": "busybox", "Cmd": ["/x/relay"], "HostConfig": {"Binds": [f"{d}:/x"]}}
    if user:
        body["User"] = user
    cid = created(raw, body, cleanup)
    r = start(raw, cid)
    assert r.status == 204, (r.status, r.body)
    deadline = time.monotonic() + 10
    while not (d / "s").is_socket():
        assert time.monotonic() < deadline, "the relay did not listen on /x/s"
        time.sleep(0.05)
    try:
        yield d
    finally:
        with contextlib.suppress(OSError):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()


def relayed(d: Path, gate_socket: str, data: bytes, timeout: float = 15.0) -> bytes:
    """(In the calling process, already the member.) Hand an O_PATH descriptor of the
    gate's socket to the relay listening in ``d``, send ``data``, return the answer."""
    fd = os.open(gate_socket, os.O_PATH)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(d / "s"))
        socket.send_fds(s, [b"S"], [fd])
        s.sendall(data)
        out = []
        while chunk := s.recv(65536):
            out.append(chunk)
        return b"".join(out)
    finally:
        s.close()
        os.close(fd)


def ask(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    out = []
    while chunk := sock.recv(65536):
        out.append(chunk)
    return b"".join(out)


# ------------------------------------------- max_connections_per_client, per container


@pytest.fixture
def low_gate(rgate: Gate, area: Path, gate_factory) -> Gate:
    """A second gate on the first round's state and profiles, with
    max_connections_per_client 1."""
    return gate_factory(
        state_dir=rgate.state_dir,
        extra_args=["--policies-dir", str(area / "policies")],
        env={"DOCKERGATE_MAX_CONNECTIONS_PER_CLIENT": "1"},
    )


def test_finding_each_container_is_a_new_client_for_the_connection_limit(
    low_gate, users, area, cleanup, mallory_login
):
    """Medium (denial of service for everyone). ``Gate._admit_at_connect`` counts a
    connection against ``peer.describe()``, which for a container peer is now ``unix
    uid 0 in container <id>``: every container is a client of its own, with its own
    ``max_connections_per_client``, though all of them are identified as the same
    member. rv-mallory (limit 1 on this gate) held one connection from the host (a
    second one from the host was turned away, as it should be); round 17a's relay in
    her container then connected through a descriptor of the same socket and was
    served: ``whoami`` said rv-mallory, with her host connection still open. With
    the shipped limit (256) and quota (100 containers) she holds ~25,600 of the
    gate's connections and descriptors, which the limit exists to prevent; each one
    also costs the gate a daemon inspect before it is counted at all. Expected: a
    container peer's connections count against the user it is identified as (the
    owner), like her host connections: the relay's is turned away with the
    max_connections_per_client message."""
    sock = str(low_gate.socket)
    m = mallory_login
    with relay_as(users["mallory"], m, area, cleanup) as d:

        def work() -> bytes:
            held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.settimeout(15)
            held.connect(sock)
            held.sendall(WHOAMI.replace(b"Connection: close", b"Connection: keep-alive"))
            first = held.recv(65536)
            second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            second.settimeout(15)
            second.connect(sock)
            host_again = ask(second, WHOAMI)
            second.close()
            through = relayed(d, sock, WHOAMI)
            held.close()
            return json.dumps(
                {
                    "first": _answer(first),
                    "host_again": _answer(host_again),
                    "container": _answer(through),
                }
            ).encode()

        out = json.loads(as_uid(m.uid, m.gid, work))
    assert out["first"].get("user") == "rv-mallory", out
    assert "max_connections_per_client" in out["host_again"].get("body", ""), out
    me = out["container"]
    assert me.get("user") != "rv-mallory" and "max_connections_per_client" in me.get("body", ""), (
        f"her container got one more connection than her limit: {me}"
    )


# ----------------------------------------------------------- what holds (neighbours)


def test_works_container_running_as_anothers_uid_is_its_owner(
    rgate, users, area, cleanup, mallory_login, review_users
):
    """rv-mallory's container runs as rv-victim's uid (``User`` at create; any image
    could say so): through the relay it is still rv-mallory, never rv-victim."""
    victim_uid = review_users["victim"]
    m = mallory_login
    with relay_as(users["mallory"], m, area, cleanup, user=f"{victim_uid}:{victim_uid}") as d:
        out = as_uid(m.uid, m.gid, lambda: relayed(d, str(rgate.socket), WHOAMI))
    me = _answer(out)
    assert me.get("user") == "rv-mallory" and not me.get("admin"), me
    assert f"unix uid {victim_uid} in container" in str(me.get("identified_by")), me


def test_works_member_container_cannot_make_a_pid_namespace(users, cleanup, direct_client):
    """A process out of its container's pid namespace (but in its cgroup) would be
    taken as the host sees it (uid 0: the admin). A member's container cannot make
    one: unshare of a user+pid namespace fails (default seccomp, no CAP_SYS_ADMIN,
    no seccomp option for members)."""
    cid = created(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "unshare -U -r -p -f true && echo ESCAPED || echo HELD"],
        },
        cleanup,
    )
    assert start(users["mallory"], cid).status == 204
    c = direct_client.containers.get(cid)
    c.wait(timeout=30)
    logs = c.logs().decode()
    assert "HELD" in logs and "ESCAPED" not in logs, logs


def test_works_member_on_the_host_and_root(rgate, mallory_login):
    """The host's neighbours: rv-mallory on the host is herself by uid; root on the
    host is the admin."""
    m = mallory_login

    def work() -> bytes:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        s.connect(str(rgate.socket))
        return ask(s, WHOAMI)

    me = _answer(as_uid(m.uid, m.gid, work))
    assert me.get("user") == "rv-mallory" and me.get("identified_by") == f"unix uid {m.uid}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(str(rgate.socket))
    root = _answer(ask(s, WHOAMI))
    s.close()
    assert root.get("user") == "root" and root.get("admin"), root
