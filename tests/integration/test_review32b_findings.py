"""Review round 32b: what someone without a credential can do to the gate.

Attackers: an internet host on the TLS port (no certificate, no token), a local
account on the unix socket that is not registered, and a registered member for
comparison. One gate (``new_gate``, TLS on 127.0.0.1), measured from /proc (RSS, fds,
CPU), its metrics (open connections), its log and its audit table, while a member's
``GET /_ping`` every 20 ms ran on the unix socket (baseline p50 0.7 ms, p99 2.1 ms;
RSS 79 MB, 17 fds). Throwaway measurements (not kept), 5 s each on 2 busy CPUs:

- a refused-request flood from one address (full handshake, ``GET``, 403, 8
  threads): ~1,100 requests/s, gate CPU 57-66%, member ping p50 3.3-3.9 ms, p99
  8.5-27 ms, RSS +1 MB; 334 bytes of log per request (~1.3 GB/hour);
- canned ClientHellos from one address (8 threads): 13% CPU, ping p99 5.4 ms;
  past 64 pending and 128 crowded handshakes the rest are dropped;
- 64 anonymous connections per address each with a 250 KB unfinished head: +24 MB
  per address (127.0.0.1-.4: 80 -> 176 MB), held for HEAD_TIMEOUT (60 s; the 10 s
  first-request limit applies to idle connections only); an unregistered unix
  account's 256 counted connections likewise: +64 MB;
- a wrong secret for a known token id: ~0.9 ms of PBKDF2 on the event loop per
  request (gate CPU 51% against 23% for an unknown id at the same ~300/s; member
  ping p99 8 ms), refused and closed each time;
- a good token on keep-alive connections (4 threads): ~9,000 requests/s, ping p99
  4.5-7 ms.

Findings (each ``test_finding_*`` FAILS on the reviewed code, 3b275dc):

- High: connections over a limit are held, uncounted, while they send a head of up
  to 256 KiB for TURN_AWAY_WAIT (1 s): TLS clients without a certificate past 64
  per address (``probation``, proxy/connection.py ``serve``) and any client over
  ``max_connections_per_client`` (``_turn_away``), e.g. an unregistered unix uid.
  Nothing bounds how many are open at once: the test's 250 threads of one address
  keep 250 open (RSS 79 -> 190 MB in 2 s), 450 of an unregistered uid keep 450
  (256 are its quota). One address with 750 threads that each connect, send
  250 KB of a head and wait: gate RSS 80 -> 411 MB in 5 s
  (ping p99 69 ms, max 103 ms); one local unregistered account (900 threads, no
  TLS): 80 -> 312 MB. The stack limits the gate to 512M: a little more and it is
  OOM-killed, every user's streams cut, and again after each restart.
- Low: the crowded-handshake allowance (16b's fix: past 64 pending handshakes from
  one address a new one has 1 s) is 128 slots for everyone: 64 silent TCP
  connections plus ~150 new silent ones a second from one address (no TLS byte
  sent) fill it, and a token user at that address (NAT, jump host) is reset 5-7
  times in 10.
- Low: every refusal of a caller without a credential writes one access-log line
  at INFO (~330 bytes) with no budget, where its audit rows are capped (120 a
  minute, summed beyond): one anonymous client at ~1,100 refused requests/s writes
  ~1.3 GB of log an hour (the stack's tasks log to the engine's json-file, no
  max-size by default).

Held (``test_works_*``): members' latency under an anonymous refused-request flood;
the anonymous callers' audit rows capped; a refused anonymous client's pipelined
requests are not served (one 403, closed, one log line); plain HTTP (400) and an HTTP/2
preface (505) on the TLS port answered, nothing at WARNING; fds back to the
baseline after the attacks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Gate, connect_as_uid, raw_request, read_response, started_gate

pytestmark = pytest.mark.timeout(120)

HEAD = b"GET /v1.41/" + b"a" * 250_000  # a head of 250 KB, never finished


@pytest.fixture(scope="module")
def g32b(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with started_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def member(g32b: Gate, unix_user):
    u = unix_user("r32b-m")
    g32b.dockergate("user", "add", "r32b-m", "--profile", "member", "--uid", str(u.uid))
    return u


@pytest.fixture(scope="module")
def stranger(unix_user):
    return unix_user("r32b-x")  # a local account, not registered


@pytest.fixture(scope="module")
def token(g32b: Gate) -> str:
    g32b.dockergate("user", "add", "r32b-t", "--profile", "member")
    return g32b.dockergate("user", "token", "r32b-t").stdout.strip()


def _rss_mb(g: Gate) -> int:
    assert g.proc is not None
    for line in Path(f"/proc/{g.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def _fds(g: Gate) -> int:
    assert g.proc is not None
    return len(os.listdir(f"/proc/{g.proc.pid}/fd"))


def _open_connections(g: Gate) -> int:
    """The gate's client connections past the handshake (its metrics gauge), minus the
    scrape itself."""
    reply = raw_request(g.socket, "GET", "/_dockergate/metrics")  # root: an admin
    for line in reply.body.decode().splitlines():
        if line.startswith("dockergate_open_connections "):
            return int(float(line.split()[1])) - 1
    raise AssertionError("no dockergate_open_connections")


def _insecure() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _anonymous(g: Gate, timeout: float = 5) -> ssl.SSLSocket:
    assert g.tls_port is not None
    return _insecure().wrap_socket(
        socket.create_connection(("127.0.0.1", g.tls_port), timeout=timeout)
    )


# Run as a process of its own (as the unregistered uid for the unix socket): THREADS
# threads, each connecting, sending 250 KB of a head and waiting for the gate to
# close, again and again for SECONDS.
HEAD_HOLDER = r"""
import socket, ssl, sys, threading, time
where, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
head = b"GET /v1.41/" + b"a" * 250_000
stop = time.monotonic() + seconds
done = [0]
def work():
    while time.monotonic() < stop:
        try:
            if where.startswith("/"):
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(3)
                s.connect(where)
            else:
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(where)), 3))
            s.sendall(head)
            s.settimeout(max(0.1, min(3, stop - time.monotonic())))
            with __import__("contextlib").suppress(Exception):
                while s.recv(65536):
                    pass
            s.close()
            done[0] += 1
        except Exception:
            time.sleep(0.01)
ts = [threading.Thread(target=work) for _ in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
print(done[0])
"""


def _hold_heads(
    g: Gate, where: str, seconds: float, threads: int, prefix: list[str] | None = None
) -> tuple[int, int, int]:
    """(peak open connections, RSS before, peak RSS in MB) while HEAD_HOLDER runs."""
    base, rss0 = _open_connections(g), _rss_mb(g)
    argv = [*(prefix or []), sys.executable, "-c", HEAD_HOLDER, where, str(seconds), str(threads)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    peak, rss = 0, rss0
    try:
        while proc.poll() is None:
            peak = max(peak, _open_connections(g) - base)
            rss = max(rss, _rss_mb(g))
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    g.check_alive()
    return peak, rss0, rss


# ------------------------------------------------------------------------ findings


def test_finding_uncounted_probation_connections_pin_memory_from_one_address(g32b):
    # Gate._admit_unidentified (server.py): past UNIDENTIFIED_PER_ADDRESS (64) TLS
    # connections without a certificate from one address, a new one is put on
    # probation and counted nowhere; ClientConnection.serve (proxy/connection.py)
    # then reads its head, up to MAX_HEAD (256 KiB), for TURN_AWAY_WAIT (1 s). How
    # many such connections are open at once is bounded by nothing but the
    # attacker's rate: 250 threads of one address (each: handshake, 250 KB of a head,
    # wait) keep ~200+ open (~0.4 MB each in the gate). 750 threads took the gate
    # from 80 to 411 MB in 5 s (the stack's limit: 512M). Expected: the
    # connections of one address that hold a partial head are counted (probation
    # ones among them), or a probation head is read with a small limit (a request
    # with a token needs a few KiB).
    assert g32b.tls_port is not None
    peak, rss0, rss = _hold_heads(g32b, str(g32b.tls_port), 2.0, 250)
    assert peak <= 64 + 16, (
        f"one address without a credential held {peak} connections with unfinished "
        f"250 KB heads at once (64 may be unidentified); gate RSS {rss0} -> {rss} MB"
    )


def test_finding_turned_away_connections_of_an_unregistered_account_pin_memory(g32b, stranger):
    # The same on the unix socket (mode 0666) for a local account that is not
    # registered: Gate._admit_at_connect counts its connections under "unix uid N"
    # up to max_connections_per_client (256: 64 MB of heads for HEAD_TIMEOUT, 60 s);
    # past it _count sets turned_away, and ClientConnection._turn_away reads the
    # head (up to 256 KiB) for a second, counted nowhere. 900 threads of one such
    # account took a fresh gate from 80 to 312 MB in 5 s (no TLS: connecting is
    # cheap). A member can do the same. Expected: a turned-away connection's head is
    # read with a small limit (or not at all), or such connections are counted.
    peak, rss0, rss = _hold_heads(
        g32b,
        str(g32b.socket),
        2.0,
        450,
        prefix=[
            "setpriv",
            f"--reuid={stranger.uid}",
            f"--regid={stranger.gid}",
            "--clear-groups",
        ],
    )
    assert peak <= 256 + 32, (
        f"one unregistered uid held {peak} connections with unfinished 250 KB heads at "
        f"once (max_connections_per_client: 256); gate RSS {rss0} -> {rss} MB"
    )


def test_finding_anonymous_refusals_log_a_line_each_without_budget(g32b):
    # Gate.on_request (server.py) logs every request at INFO; AuditWriter caps a
    # caller's refusal rows (120 a minute, summed beyond: "a client looping on a
    # refused request would otherwise fill the store's disk"), the log has no such
    # cap. 300 refused requests of a client without a credential: 300 lines. At the
    # ~1,100 a second one client drives (334 bytes each) that is ~1.3 GB of log an
    # hour. Expected: refusals of unidentified callers logged within a budget per
    # address (the rest summed in one line), as the audit table does.
    before = g32b.log_size()
    lines_before = g32b.log().count("\n")
    for _ in range(300):
        with contextlib.closing(_anonymous(g32b)) as s:
            s.sendall(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
            assert read_response(s, 5).status == 403
    time.sleep(0.3)
    lines = g32b.log().count("\n") - lines_before
    grown = g32b.log_size() - before
    assert lines <= 150, f"300 anonymous refusals wrote {lines} log lines ({grown} bytes)"


# ----------------------------------------------------------------------- what held

FLOOD = r"""
import socket, ssl, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
stop = time.monotonic() + seconds
def work():
    while time.monotonic() < stop:
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 3))
            s.sendall(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
            while s.recv(65536):
                pass
            s.close()
        except Exception:
            pass
ts = [threading.Thread(target=work) for _ in range(6)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def test_works_members_served_and_audit_capped_under_an_anonymous_flood(g32b, member):
    assert g32b.tls_port is not None
    proc = subprocess.Popen([sys.executable, "-c", FLOOD, str(g32b.tls_port), "2.5"])
    latencies: list[float] = []
    (s,) = connect_as_uid(str(g32b.socket), member.uid)
    with contextlib.closing(s):
        while proc.poll() is None:
            t = time.monotonic()
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            assert read_response(s, 5).status == 200
            latencies.append(time.monotonic() - t)
            time.sleep(0.02)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert p99 < 0.25, f"member _ping p99 {p99 * 1000:.0f} ms under an anonymous flood"
    time.sleep(1.2)  # the audit writer flushes every 0.5 s
    db = g32b.state_dir / "dockergate.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        (n,) = c.execute(
            "SELECT count(*) FROM audit WHERE user_name IS NULL AND listener = 'tls'"
        ).fetchone()
    assert n <= 121 + 1, n  # all anonymous callers share one window (and its summary)


def test_works_pipelined_requests_after_a_refusal_are_not_served(g32b):
    before = g32b.log().count("\n")
    with contextlib.closing(_anonymous(g32b)) as s:
        s.sendall(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n\r\n" * 200)
        reply = read_response(s, 5)
        assert reply.status == 403
        assert reply.closed  # the other 199 are not answered
    time.sleep(0.3)
    # One line at most (none once the unidentified callers' minute budget is spent
    # by the flood above; the summary line comes with the next minute's first).
    assert g32b.log().count("\n") - before <= 1


def test_works_plain_http_and_http2_on_the_tls_port(g32b):
    assert g32b.tls_port is not None
    before = g32b.log_size()
    with socket.create_connection(("127.0.0.1", g32b.tls_port), timeout=5) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        assert read_response(s, 5).status == 400
    with contextlib.closing(_anonymous(g32b)) as t:
        t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := t.recv(65536):
                data += chunk
    assert data == b"" or b"HTTP/2 is not supported" in data, data[:200]
    time.sleep(0.3)
    assert " WARNING " not in g32b.log(before) and " ERROR " not in g32b.log(before)


def test_works_fds_back_to_baseline_after_the_attacks(g32b):
    # After the findings above (their connections are closed by the gate within
    # HEAD_TIMEOUT, 60 s, for the counted ones: here they were closed by the client).
    deadline = time.monotonic() + 10
    while _fds(g32b) > 30 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _fds(g32b) <= 30, _fds(g32b)
    assert _open_connections(g32b) == 0


# Last: the silent connections it leaves stay until HANDSHAKE_TIMEOUT (15 s).


@pytest.mark.xfail(
    strict=False,  # a flood: how many of the token user's attempts are reset varies
    reason="known limit (README): 128 slots for handshakes past the per-address count, "
    "shared by all addresses; when full the newest connection is dropped",
)
def test_finding_silent_connections_fill_the_crowded_handshakes_of_an_address(g32b, token):
    # listen/listeners.py start_tls on_made: past 64 pending handshakes from one
    # address a new one gets CROWDED_HANDSHAKE_TIMEOUT (1 s), at most
    # CROWDED_HANDSHAKES (128) at once for all addresses, and the rest are aborted
    # at once. 64 TCP connections that never send a byte plus ~150 new ones a second
    # keep those 128 taken: a token user at the same address is reset (16b's
    # lock-out again, for the price of a SYN flood of 150/s). Expected: a client that
    # sends its ClientHello at once gets through (e.g. drop the oldest silent
    # handshake rather than the newest connection).
    assert g32b.tls_port is not None
    port = g32b.tls_port
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
    stop = threading.Event()

    def churn() -> None:
        live: list[socket.socket] = []
        while not stop.is_set():
            with contextlib.suppress(OSError):
                live.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            if len(live) > 300:
                for s in live[:150]:
                    s.close()
                del live[:150]
            time.sleep(0.003)
        for s in live:
            s.close()

    worker = threading.Thread(target=churn)
    worker.start()
    results: list[object] = []
    try:
        time.sleep(1.2)
        for _ in range(10):
            try:
                with contextlib.closing(_anonymous(g32b, timeout=3)) as s:
                    s.sendall(
                        f"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Dockergate-Token: {token}\r\n"
                        "\r\n".encode()
                    )
                    results.append(read_response(s, 3).status)
            except (OSError, ssl.SSLError) as exc:
                results.append(type(exc).__name__)
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join()
        for s in held:
            s.close()
    assert results.count(200) >= 8, f"a token user beside silent connections: {results}"
