"""Review round 16b: the connection accounting written today, end to end
(max_connections_per_client by token user, unidentified and probation TLS
connections, pending TLS handshakes per address, body slots).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (a connection is counted or closed at once, a token user behind a busy
address gets through, the gate keeps answering). The ``test_works_*`` tests pass and
pin what holds up.

Each TLS test starts a gate of its own (``gate_factory``), some with the file limit
of a plain service (1024) or a lower ``max_connections_per_client``; the
100-continue tests use the first round's shared gate and members. Only the local
``busybox`` image is used; all traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import dockergate_argv
from tests.integration import test_review_findings as first_round
from tests.integration.test_review15a_findings import (
    _anonymous_tls,
    _ping,
    _tls_context,
    _token_get,
    small_tls_gate,
    token_gate,
)

rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created
small_tls_gate = small_tls_gate
token_gate = token_gate

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def _tls(g, ctx: ssl.SSLContext, timeout: float = 5) -> ssl.SSLSocket:
    s = socket.create_connection(("127.0.0.1", g.tls_port), timeout=timeout)
    return ctx.wrap_socket(s)


def _exchange(
    s: ssl.SSLSocket, token: str, path: str = "/v1.41/containers/json"
) -> tuple[int, bytes]:
    """One keep-alive request on ``s``; (0, why) if the gate closed the connection."""
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: d\r\nX-Dockergate-Token: {token}\r\n\r\n".encode())
        resp = http.client.HTTPResponse(s)  # type: ignore[arg-type]
        resp.begin()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, repr(exc).encode()


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the gate ends ``s`` (EOF or reset, after any answer) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            return False
        s.settimeout(max(left, 0.01))
        try:
            if not s.recv(4096):
                return True
        except (ssl.SSLWantReadError, TimeoutError):
            continue  # a TLS 1.3 session ticket, no application data
        except OSError:
            return True
    return False


# ----------------------------------------- probation connections that are never counted

# A token-less request with a small body the gate reads and drops before it answers
# (refused bodies up to DISCARD_LIMIT are discarded to keep the connection).
HELD_HEAD = (
    b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\n"
    b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
)


def _probation_with_head(g, ctx: ssl.SSLContext, n: int, head: bytes) -> list[ssl.SSLSocket]:
    out = []
    for _ in range(n):
        try:
            s = _tls(g, ctx, timeout=2)
            s.sendall(head)
        except OSError:
            break
        out.append(s)
    return out


def test_finding_probation_connections_held_uncounted_by_a_refused_body(small_tls_gate):
    # Past UNIDENTIFIED_PER_ADDRESS (64) a TLS connection without a certificate is
    # on probation: counted nowhere (Gate._admit_at_connect), "served only if its
    # first request, sent within 1 s, identifies". TURN_AWAY_WAIT bounds the head
    # only: a token-less head announcing a body of up to DISCARD_LIMIT (64 KiB) is
    # refused by ClientConnection.refuse, which first waits up to HEAD_TIMEOUT (60 s)
    # for the body to discard it (phase "busy": the sweeper does not look). Anyone
    # who can reach the TLS port, without any credential, holds any number of
    # uncounted connections for 60 s each: every descriptor, unix users dropped.
    g, v = small_tls_gate
    ctx = _tls_context(g)
    held = _probation_with_head(g, ctx, 1100, HELD_HEAD)
    try:
        time.sleep(1.5)  # past TURN_AWAY_WAIT: probation is over for all of them
        status = _ping(v)
    finally:
        for s in held:
            s.close()
    assert len(held) >= 1000, f"only {len(held)} connections opened"
    assert status == 200, f"a unix member's /_ping got {status} beside held probation connections"


def test_works_probation_connections_without_a_body_are_closed_at_once(small_tls_gate):
    g, v = small_tls_gate
    ctx = _tls_context(g)
    idle = _anonymous_tls(g, ctx, 64)  # the address's unidentified connections, counted
    try:
        late = _probation_with_head(
            g, ctx, 5, b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n\r\n"
        )
        assert len(late) == 5
        for s in late:
            assert _closed_within(s, 3), "a probation connection with a refused request stayed open"
            s.close()
        quiet = _tls(g, ctx)  # sends nothing: closed after TURN_AWAY_WAIT
        assert _closed_within(quiet, 3)
        quiet.close()
        assert _ping(v) == 200
    finally:
        for s in idle:
            s.close()


def test_works_probation_token_user_is_served(token_gate):
    g, ctx, token = token_gate
    idle = _anonymous_tls(g, ctx, 64)
    try:
        s = _tls(g, ctx)
        with contextlib.closing(s):
            assert _exchange(s, token)[0] == 200
            time.sleep(1.5)  # identified: off probation, keep-alive as usual
            assert _exchange(s, token)[0] == 200
    finally:
        for s in idle:
            s.close()


# ------------------------------------------- pending handshakes: a lock-out per address


def test_finding_pending_handshakes_lock_out_every_tls_user_at_the_address(token_gate):
    # listen/listeners.py start_tls on_made: past PENDING_HANDSHAKES_PER_ADDRESS (64)
    # handshakes in progress from one address, a new connection is aborted before
    # its handshake, whoever it is. 64 TCP connections that never start TLS (free
    # to hold, renewed every HANDSHAKE_TIMEOUT, 15 s) from a shared address (NAT,
    # CI runner, jump host) lock out every token and certificate user there. The
    # unidentified cap of the same fix has a probation for exactly this case (a token
    # user behind the same address as a flood gets through); handshakes have none.
    g, ctx, token = token_gate
    held = []
    for _ in range(64):
        held.append(socket.create_connection(("127.0.0.1", g.tls_port), timeout=5))
    try:
        time.sleep(0.3)
        status, body = _token_get(g, ctx, token)
    finally:
        for s in held:
            s.close()
    assert status == 200, (status, body[:200])


def test_works_token_user_beside_some_pending_handshakes(token_gate):
    g, ctx, token = token_gate
    held = [socket.create_connection(("127.0.0.1", g.tls_port), timeout=5) for _ in range(40)]
    try:
        time.sleep(0.3)
        assert _token_get(g, ctx, token)[0] == 200
    finally:
        for s in held:
            s.close()


# --------------------------------------- a user whose profile has no file: never counted

LIMIT = 4


@pytest.fixture
def limit_gate(gate_factory, tmp_path) -> Iterator[tuple[object, ssl.SSLContext, str, str]]:
    """A TLS gate with max_connections_per_client 4 (shipped profiles), a member's
    token and the token of "ghost", a user whose profile file the gate does not have
    (registered with a policies directory that has it; as after a profile file is
    removed and the gate reloaded)."""
    g = gate_factory(env={"DOCKERGATE_MAX_CONNECTIONS_PER_CLIENT": str(LIMIT)})
    member = f"r16b-m-{uuid.uuid4().hex[:6]}"
    g.dockergate("user", "add", member, "--profile", "member")
    member_token = g.dockergate("user", "token", member).stdout.strip()
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "ghost.yaml").write_text((policies / "member.yaml").read_text())
    ghost = f"r16b-g-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "DOCKERGATE_POLICIES_DIR": str(policies)}
    argv = [*dockergate_argv(), "--state-dir", str(g.state_dir), "user", "add", ghost]
    r = subprocess.run([*argv, "--profile", "ghost"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ghost_token = g.dockergate("user", "token", ghost).stdout.strip()
    time.sleep(1)
    yield g, _tls_context(g), member_token, ghost_token


def _served_after_first(g, ctx: ssl.SSLContext, token: str, n: int) -> tuple[list[int], list[int]]:
    """n connections; each sends a request with ``token``, then another: statuses."""
    socks = [_tls(g, ctx) for _ in range(n)]
    try:
        first = [_exchange(s, token)[0] for s in socks]
        second = [_exchange(s, token)[0] for s in socks]
    finally:
        for s in socks:
            s.close()
    return first, second


def test_finding_token_user_without_profile_file_holds_uncounted_connections(limit_gate):
    # Gate.identified (server.py) takes the connection off the address's
    # unidentified count, then calls profile_for, which raises Refusal for a profile
    # with no file before _count: the connection is counted nowhere, no longer
    # "unidentified" (so idle for KEEPALIVE_IDLE, 300 s, not 10 s), and never
    # identified again (ClientConnection.handle calls identified only while
    # unidentified), so every later request on it, with any token, is uncounted too.
    # With max_connections_per_client 4, the ghost user keeps 8 connections.
    g, ctx, _member, ghost = limit_gate
    first, second = _served_after_first(g, ctx, ghost, 2 * LIMIT)
    assert all(s == 403 for s in first), first
    still_open = sum(1 for s in second if s != 0)
    assert still_open <= LIMIT, (
        f"{still_open} connections of one token user stayed open (limit {LIMIT}): {second}"
    )


def test_works_token_user_over_the_limit_is_turned_away(limit_gate):
    g, ctx, member, _ghost = limit_gate
    socks = [_tls(g, ctx) for _ in range(LIMIT + 1)]
    try:
        answers = [_exchange(s, member) for s in socks]
        assert [a[0] for a in answers] == [200] * LIMIT + [403], [a[0] for a in answers]
        assert b"max_connections_per_client" in answers[-1][1]
        assert _closed_within(socks[-1], 3)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)  # released: the member gets in again
    assert _token_get(g, ctx, member)[0] == 200


# ------------------------------------------------- 100-continue and held hijack bodies


def _first_answer(s: socket.socket, seconds: float) -> bytes:
    s.settimeout(seconds)
    try:
        return s.recv(200)
    except TimeoutError:
        return b""


def test_finding_attach_body_gets_no_100_continue(users, cleanup):
    # ClientConnection.hijack reads an attach body with Exchange.read_held_body and
    # never sends "100 Continue" (read_json does, for inspected bodies; forward does
    # for streamed ones): a client that waits for it, as the HTTP spec lets it, sends
    # nothing and gets a 408 after BODY_TIMEOUT (60 s), holding a body slot meanwhile.
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["true"], "OpenStdin": True}, cleanup)
    s = m.connect()
    with contextlib.closing(s):
        s.sendall(
            (
                f"POST /v1.41/containers/{cid}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nExpect: 100-continue\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n"
            ).encode()
        )
        answer = _first_answer(s, 3)
    assert answer.startswith(b"HTTP/1.1 100"), f"no 100 Continue within 3 s: {answer!r}"


def test_works_inspected_body_gets_100_continue(users):
    m = users["mallory"]
    s = m.connect()
    with contextlib.closing(s):
        s.sendall(
            b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
        )
        assert _first_answer(s, 3).startswith(b"HTTP/1.1 100")
