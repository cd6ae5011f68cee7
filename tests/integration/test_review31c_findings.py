"""Review round 31c: the performance commit 2f60506 (the relay's hot path) attacked as
a request-smuggling / parser-differential reviewer, through a running gate on the
real daemon.

Reviewed: the fast request-head path (``_REQUEST_LINE`` / ``_FIELD_LINES`` in
``proxy/http.py parse_request``), the daemon's framing fields read with one regex
(``_FRAMING_FIELD``, ``_STATUS_LINE``), ``ClientConnection.serve`` without the
per-request ``asyncio.timeout`` (probation only), and root's shared frozen
``Identity`` on the unix socket.

Findings: none reproduced. The fast path and the line-by-line parser agreed on every
head tried (the unit module ``tests/unit/test_review31c.py``: every single-byte
insertion, substitution and deletion of three heads, every pair of framing bytes
anywhere in one; plus a 400 000-head random fuzz by hand), and what it accepts is
what dockerd's Go server reads (only bodyless HTTP/1.1 heads without hop-by-hop or
identity fields are forwarded as received; everything else is re-rendered from the
parsed fields).

Held and pinned (``test_works_*``), over one keep-alive connection each time so a
framing error would show on the next request: odd but valid heads (tabs, high bytes,
empty and duplicated fields, no space after the colon) reach dockerd as sent; heads
either parser must refuse (bare CR/LF, obs-fold, NUL/DEL, high bytes in a name,
``\\r\\n\\r\\n`` alone, a leading blank line, odd request lines, CL+TE, two lengths,
unknown codings, chunked HTTP/1.0) are answered by the gate (400/501/505) and close
the connection without running what was pipelined behind them; daemon answers with
Content-Length, chunked (finite), HEAD, 204, 304, an HTTP/1.0 client on a chunked
answer (unframed, closed), a 101 attach (raw stream both ways) and a close-delimited
200 attach; a probation TLS connection that starts a head and stalls is still closed
at once (the timer now wraps ``_next_head``); root on the socket is admin across
requests.

Checked by reading, not pinned: the sweeper keeps the other limits (idle 300 s,
unidentified 10 s, started heads 60 s; before 2f60506 the timer was ``None`` for
these connections too, so nothing was lost); ``Response.field`` is only asked for
the four framing names; the regexes are linear on 256 KiB heads (60 000 fields:
18 ms).

Only ``busybox``; loopback only; one module gate.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, read_response, started_gate, unix_connect

pytestmark = pytest.mark.timeout(60)


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g31(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with started_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def ticker(direct_client) -> Iterator[Any]:
    """A running container that prints a line every 0.2 s (an admin's: the test runs as
    root, the admin on the unix socket)."""
    c = direct_client.containers.run(
        "busybox",
        ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        name=f"r31c-tick-{_rand()}",
        detach=True,
    )
    try:
        deadline = time.monotonic() + 10
        while c.logs(tail=3).count(b"tick") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.remove(force=True)


def _ping_again(s: socket.socket) -> None:
    """The connection is still in step: a second request gets its own answer."""
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    r = read_response(s)
    assert (r.status, r.body) == (200, b"OK"), r


def _closed_within(s: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            return False
        try:
            if not s.recv(65536):
                return True
        except (ssl.SSLWantReadError, TimeoutError):
            continue
        except OSError:
            return True
    return False


# ======================================================================= works


ODD_BUT_VALID = [
    b"GET /_ping HTTP/1.1\r\nHost:d\r\n\r\n",
    b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-A:\t v \t\r\n\r\n",
    b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-High: \xe9\xa0\x85\xff\r\n\r\n",
    b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-E:\r\nX-E: 2\r\nx-e: 3\r\n\r\n",
    b"GET /_ping?a=%00&b=\\&c=`~|^ HTTP/1.1\r\nHost: d\r\n!#$%&'*+-.^_`|~09az: v\r\n\r\n",
]


def test_works_odd_but_valid_heads_reach_dockerd(g31):
    with contextlib.closing(unix_connect(g31.socket)) as s:
        for head in ODD_BUT_VALID:
            s.sendall(head)
            r = read_response(s)
            assert (r.status, r.body) == (200, b"OK"), (head, r)
        _ping_again(s)


REFUSED = [
    (b"\r\n\r\n", 400),
    (b"\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\nHost: d\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost: d\rX: y\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost: d\r\n X: folded\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost: d\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost: d\r\nX\x7f: a\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost: d\r\nX\xe9: a\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost : d\r\n\r\n", 400),
    (b"GET  /_ping HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /_ping\xff HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.2\r\nHost: d\r\n\r\n", 505),
    (b"GET * HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (
        b"POST /_ping HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    (b"POST /_ping HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nContent-Length: 00\r\n\r\n", 400),
    (b"POST /_ping HTTP/1.1\r\nHost: d\r\nContent-Length: +0\r\n\r\n", 400),
    (b"POST /_ping HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (
        b"POST /_ping HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        501,
    ),
    (b"POST /_ping HTTP/1.0\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
]


@pytest.mark.parametrize(("head", "status"), REFUSED)
def test_works_malformed_heads_refused_by_the_gate_and_closed(g31, direct_client, head, status):
    """What would follow (a pipelined create) is never run: the connection closes."""
    name = f"r31c-smuggled-{_rand()}"
    body = b'{"Image":"busybox"}'
    behind = (
        f"POST /containers/create?name={name} HTTP/1.1\r\nHost: d\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with contextlib.closing(unix_connect(g31.socket)) as s:
        s.sendall(head + behind)
        r = read_response(s)
        assert r.status == status, (head, r)
        assert b"dockergate: " in r.body, r.body
        assert r.closed or _closed_within(s, 3)
    assert not direct_client.containers.list(all=True, filters={"name": name})


def test_works_daemon_framings_relayed_in_step(g31, ticker):
    cid = ticker.id
    with contextlib.closing(unix_connect(g31.socket)) as s:
        # Content-Length
        s.sendall(b"GET /version HTTP/1.1\r\nHost: d\r\n\r\n")
        r = read_response(s)
        assert r.status == 200 and r.header("content-length") and b"ApiVersion" in r.body, r
        # an inspect (chunked: more than Go buffers)
        s.sendall(f"GET /containers/{cid}/json HTTP/1.1\r\nHost: d\r\n\r\n".encode())
        r = read_response(s)
        assert r.status == 200 and cid.encode() in r.body, r
        # HEAD: a length, no body
        s.sendall(b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        r = read_response(s, method="HEAD")
        assert r.status == 200, r
        _ping_again(s)
        # chunked, finite (logs without follow)
        s.sendall(
            f"GET /containers/{cid}/logs?stdout=1&tail=3 HTTP/1.1\r\nHost: d\r\n\r\n".encode()
        )
        r = read_response(s)
        assert r.status == 200 and r.header("transfer-encoding") == "chunked", r
        assert b"tick" in r.body
        _ping_again(s)
        # 304: start of a running container
        s.sendall(f"POST /containers/{cid}/start HTTP/1.1\r\nHost: d\r\n\r\n".encode())
        r = read_response(s)
        assert r.status == 304 and r.body == b"", r
        _ping_again(s)
        # 204: a rename
        s.sendall(
            f"POST /containers/{cid}/rename?name=r31c-tick-{_rand()} HTTP/1.1\r\nHost: d\r\n\r\n".encode()
        )
        r = read_response(s)
        assert r.status == 204 and r.body == b"", r
        _ping_again(s)


def test_works_http10_client_gets_a_chunked_answer_unframed(g31, ticker):
    with contextlib.closing(unix_connect(g31.socket)) as s:
        s.sendall(f"GET /containers/{ticker.id}/logs?stdout=1&tail=2 HTTP/1.0\r\n\r\n".encode())
        r = read_response(s)
        assert r.status == 200 and r.closed, r
        assert "transfer-encoding" not in r.headers and r.header("connection") == "close", r
        assert r.body.count(b"tick") == 2, r.body  # no chunk sizes around the frames


def test_works_attach_upgrade_and_close_delimited_attach(g31, ticker):
    target = f"/containers/{ticker.id}/attach?stream=1&stdout=1"
    with contextlib.closing(unix_connect(g31.socket)) as s:
        s.sendall(
            f"POST {target} HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode()
        )
        data = b""
        while b"tick" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 "), data[:200]
    with contextlib.closing(unix_connect(g31.socket)) as s:
        s.sendall(f"POST {target} HTTP/1.1\r\nHost: d\r\n\r\n".encode())
        data = b""
        while b"tick" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]


def test_works_root_on_the_socket_stays_admin(g31):
    with contextlib.closing(unix_connect(g31.socket)) as s:
        for _ in range(3):
            s.sendall(b"GET /_dockergate/whoami HTTP/1.1\r\nHost: d\r\n\r\n")
            r = read_response(s)
            assert r.status == 200 and b'"root"' in r.body and b"admin" in r.body, r


def _tls_anonymous(g: Gate, n: int) -> list[ssl.SSLSocket]:
    ctx = ssl.create_default_context(cafile=str(g.state_dir / "pki" / "ca.pem"))
    out = []
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", g.tls_port), timeout=10)
        out.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
    return out


def test_works_probation_stalled_head_closed_at_once(g31):
    """Past 64 unidentified TLS connections from an address, a new one must send its
    request at once; one that starts a head and stalls is closed within the 1 s
    (TURN_AWAY_WAIT), not left to the 60 s head sweep."""
    held = _tls_anonymous(g31, 64)
    try:
        (late,) = _tls_anonymous(g31, 1)
        with contextlib.closing(late):
            late.sendall(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n")
            t0 = time.monotonic()
            assert _closed_within(late, 4), "a probation connection with a stalled head stayed"
            assert time.monotonic() - t0 < 3
    finally:
        for s in held:
            s.close()
