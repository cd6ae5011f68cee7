"""Review round 24a: "never a 500, never a hang, never a traceback" for members' input.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the correct
behaviour. The ``test_works_*`` tests pass and pin the neighbours that held up under
fuzzing (malformed JSON bodies on inspected routes, malformed HTTP, clients that go
away in the middle of a request or a stream).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members; the admin is
uid 0 on the same socket. Only the local ``busybox`` image is used; traffic stays on
loopback. The fuzzers themselves are not here (the CI budget): only the smallest
reproducer of each finding, and a fixed sample of the inputs that held.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import quote

import pytest

from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw, Reply, _read_reply

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created
build = first_round.build

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
QUICK = 5.0  # seconds: every answer of the gate's own comes well within this


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _timed(raw: Raw, method: str, path: str, body=None, **kw) -> tuple[Reply, float]:
    t = time.monotonic()
    r = raw.request(method, path, body, **kw)
    return r, time.monotonic() - t


def _no_traceback(rgate, start: int) -> None:
    log = rgate.log(start)
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]


def _gate_refusal(r: Reply, *statuses: int) -> None:
    """A refusal the gate wrote itself: the expected status, a Docker-style body."""
    assert r.status in statuses, (r.status, r.body[:300])
    assert r.message.startswith("dockergate: "), r.body[:300]


# ------------------------------------------------ whole-number build parameters


def test_finding_a_build_parameter_with_two_minus_signs_is_a_gate_500_and_a_traceback(rgate, users):
    """``query.first_int`` (used for the classic build's ``memory``, ``cpuquota``,
    ``cpuperiod`` and ``shmsize``) accepts ``text.lstrip("-").isdigit()`` and then
    calls ``int(text)``. ``lstrip`` drops *every* leading minus, and ``str.isdigit`` is
    true for digits ``int`` refuses (superscripts, circled digits): ``memory=--1`` or
    ``shmsize=%C2%B2`` ("²") raise ValueError inside the handler. The client gets
    "500 internal error in the gate", and the gate's log a full Python traceback at
    ERROR level for each such request: any member can fill the log with tracebacks
    and trip alerting on gate errors at will (one request each, no quota touched).
    Severity: Low (no bypass: nothing is forwarded; a broken promise and log noise).
    Expected: 400 "query parameter memory='--1' is not a whole number", as for
    ``memory=x``, and no traceback."""
    start = rgate.log_size()
    for query in ("memory=--1", "shmsize=%C2%B2", "cpuquota=--5", "cpuperiod=%C2%B9"):
        r = build(users["mallory"], f"{query}&q=1", "FROM busybox\n")
        _gate_refusal(r, 400)
    _no_traceback(rgate, start)


_QUOTA = (
    "RUN cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null "
    "|| cut -d' ' -f1 /sys/fs/cgroup/cpu.max\n"
)


def _build_quota(raw: Raw, query: str) -> tuple[Reply, str]:
    """A build whose RUN step prints its CPU quota (cgroup v1 or v2): the reply and the
    quota line it printed ("" if none)."""
    r = build(raw, f"nocache=1&{query}", "FROM busybox\n" + _QUOTA)
    lines = []
    for line in r.body.decode(errors="replace").splitlines():
        try:
            stream = json.loads(line).get("stream", "")
        except ValueError:
            continue
        lines += [
            s.strip() for s in stream.splitlines() if re.fullmatch(r"-?[0-9]+|max", s.strip())
        ]
    return r, lines[-1] if lines else ""


def test_finding_a_build_cpu_quota_in_arabic_digits_is_checked_but_never_applied(users):
    """``first_int`` reads ``cpuquota`` with Python's ``int``, which takes any Unicode
    decimal digits: ``cpuquota=%D9%A1%D9%A0...`` (U+0661 then five U+0660) is 100000
    for the gate, one CPU, within the cap, and since it is not 0 the profile's CPU
    default is not applied either (``apply_cpus``). ``_build_cpus`` then forwards the
    client's own string, and dockerd reads it with Go's ``strconv.ParseInt``
    (``Int64ValueOrZero``), which fails and gives 0: no quota at all. Every RUN step
    runs with ``cfs_quota_us -1`` (unlimited), while the gate believes it granted one
    CPU. With the shipped member profile (``cpus: {default: 4, max: 16}``) every
    member can build with all of the node's CPUs, the default and the cap both
    bypassed; ``shmsize=%D9%A1`` likewise passes a check dockerd does not share (it
    reads 0: its 64 MiB default). Severity: Medium (resource caps of the profile
    bypassed by any member; no host access). Expected: 400 (not a whole number as
    dockerd reads one), or the quota forwarded as the gate read it (the RUN step sees
    100000)."""
    arabic = quote("\u0661\u0660\u0660\u0660\u0660\u0660")
    r, quota = _build_quota(users["mallory"], f"cpuquota={arabic}")
    if r.status == 400:
        assert r.message.startswith("dockergate: "), r.body[:300]
        return
    assert r.status == 200, (r.status, r.body[:300])
    assert quota == "100000", (quota, r.body[-600:])


def test_works_a_build_cpu_quota_in_ascii_digits_is_applied(users):
    """The neighbour: ``cpuquota=100000`` (one CPU) is forwarded and applied; a bad
    spelling (``memory=x``) is a 400 of the gate's."""
    r, quota = _build_quota(users["mallory"], "cpuquota=100000")
    assert r.status == 200, (r.status, r.body[:300])
    assert quota == "100000", (quota, r.body[-600:])
    _gate_refusal(build(users["mallory"], "memory=x&q=1", "FROM busybox\n"), 400)


def test_fixed_a_build_pull_spelled_with_a_separator_control_is_refused(users):
    """Found while fixing the above: the gate read ``pull`` with Python's ``strip``,
    which also drops ``\x1c``-``\x1f``; dockerd's ``BoolValue`` trims with Go's
    ``TrimSpace``, which does not, and takes any word but the false ones as true.
    ``pull=%1Cfalse`` was read as false by the gate and as true by dockerd (a pull of
    a base whose ONBUILD triggers the gate never read). Refused now, like ``pull=1``;
    ``pull=%20false%20`` (false to both) is not."""
    for query in ("pull=%1Cfalse", "pull=1", "pull=%1F0"):
        r = build(users["mallory"], f"{query}&q=1", "FROM busybox\n")
        _gate_refusal(r, 403)
    r = build(users["mallory"], "pull=%20false%20&q=1", "FROM busybox\n")
    assert r.status == 200, (r.status, r.body[:300])


# ------------------------------------------------ bodies that held up


def _create_bodies() -> list[bytes]:
    deep = b'{"Image":"busybox","Labels":' + b'{"a":' * 10000 + b"1" + b"}" * 10001
    return [
        b"",
        b"null",
        b"[]",
        b'"x"',
        b'{"Image":"busybox"} trailing',
        b'\xef\xbb\xbf{"Image":"busybox"}',
        b'{"Image":"busy\xffbox"}',
        b'{"Image":"busybox","Cmd":["\\ud800"]}',
        b'{"Image":"busybox","HostConfig":{"Memory":1e400}}',
        b'{"Image":"busybox","HostConfig":{"Memory":NaN}}',
        b'{"Image":"busybox","HostConfig":{"Memory":99999999999999999999}}',
        b'{"Image":"busybox","HostConfig":"x"}',
        b'{"Image":"busybox","HostConfig":{"Binds":{"a":1}}}',
        b'{"Image":"busybox","Image":"busybox"}',
        b'{"Image":"busybox","HostConfig":{"Privileged":false,"privileged":true}}',
        b'{"Image":"busybox","HostConfig":{"\\u212aernelMemory":1}}',
        b'{"Image":"busybox","Labels":{"a":"\\u0000"},"HostConfig":{"Mounts":[null]}}',
        deep,
        b"[" * 10000,
    ]


def test_works_malformed_create_bodies_are_the_gates_400s(rgate, users):
    """A fixed sample of what fuzzing ``/containers/create`` (and the other inspected
    bodies: services, exec, update, networks, volumes, secrets, configs, commit) found
    answered well: each a 400 of the gate's within a second, no traceback."""
    start = rgate.log_size()
    for raw in (users["mallory"], users["pintern"]):
        for body in _create_bodies():
            r, took = _timed(raw, "POST", f"{V}/containers/create", body)
            _gate_refusal(r, 400)
            assert took < QUICK, (body[:60], took)
    _no_traceback(rgate, start)


def test_works_malformed_filters_and_queries_are_the_gates_400s(rgate, users):
    """Invalid ``filters`` JSON and shapes on list routes, bad percent-escapes,
    semicolons and invalid UTF-8 in queries: 400s of the gate's, no traceback."""
    start = rgate.log_size()
    cases = [
        ("GET", "/containers/json?filters=%7B"),
        ("GET", "/containers/json?filters=%5B%5D"),
        ("POST", "/containers/prune?filters=%7B%22label%22%3A%22x%22%7D"),
        ("POST", "/images/prune?filters=%7B%22until%22%3A%5B%221e400h%22%5D%7D"),
        ("GET", "/networks?filters=%7B%22id%22%3A%5B%22%5Cud800%22%5D%7D"),
        ("GET", "/volumes?filters=%ff"),
        ("GET", "/services?filters=%zz"),
        ("GET", "/tasks?filters=a;b"),
        ("GET", "/secrets?filters=%7B%22name%22%3A%7B%22x%22%3A1%7D%7D"),
    ]
    for method, path in cases:
        r, took = _timed(users["mallory"], method, V + path)
        _gate_refusal(r, 400)
        assert took < QUICK, (path, took)
    _no_traceback(rgate, start)


# ------------------------------------------------ HTTP and stream endings that held up


def test_works_malformed_http_is_answered_and_closed(rgate, users):
    """Bad request lines, header lines without a colon, obs-fold, both framings,
    an oversized chunk size, a negative length, HTTP/1.0 chunked, absolute-form and
    %00/overlong paths: each a 4xx/5xx of the gate's own (never a drop), quickly."""
    start = rgate.log_size()
    heads = [
        b"GET\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nFoo\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nFoo: a\r\n b\r\n\r\n",
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1.41/containers/create HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET http://docker/_ping HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1.41/containers/%00/json HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1.41/containers/%C0%AF/json HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nFoo: " + b"a" * 300_000 + b"\r\n\r\n",
    ]
    for data in heads:
        t = time.monotonic()
        r = users["mallory"].send(data)
        assert time.monotonic() - t < QUICK, data[:60]
        assert r.status in (400, 431, 501, 505), (data[:60], r.status, r.body)
        assert r.message.startswith("dockergate: "), (data[:60], r.body)
    _no_traceback(rgate, start)


def test_works_clients_gone_mid_body_mid_stream_and_mid_hijack(rgate, users, cleanup):
    """Clients that close after the head, in the middle of an inspected body, of a
    streamed build context, of a ``logs -f`` and of an attach: the gate keeps serving
    (a ping answers at once) and logs no traceback."""
    mallory = users["mallory"]
    cid = created(
        mallory,
        {"Image": "busybox", "Cmd": ["sh", "-c", "while true; do echo hi; sleep 0.2; done"]},
        cleanup,
    )
    assert mallory.request("POST", f"{V}/containers/{cid}/start").status == 204
    start = rgate.log_size()
    json_head = "Content-Type: application/json\r\nContent-Length: 100\r\n"
    sends = [
        (f"POST {V}/containers/create HTTP/1.1\r\nHost: x\r\n{json_head}\r\n".encode(), 0),
        (
            f"POST {V}/containers/create HTTP/1.1\r\nHost: x\r\n{json_head}\r\n".encode()
            + b'{"Image":',
            0,
        ),
        (
            f"POST {V}/build HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\n"
            "Content-Length: 10240\r\n\r\n".encode()
            + first_round.context_tar("FROM busybox\n")[:700],
            0,
        ),
        (
            f"GET {V}/containers/{cid}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            64,
        ),
        (
            f"POST {V}/containers/{cid}/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: x\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode(),
            64,
        ),
    ]
    for data, read in sends:
        sock = mallory.connect()
        try:
            sock.sendall(data)
            if read:
                sock.recv(read)
            time.sleep(0.1)
        finally:
            sock.close()
        r, took = _timed(mallory, "GET", "/_ping")
        assert r.status == 200 and took < QUICK, (data[:60], r.status, took)
    time.sleep(0.3)
    _no_traceback(rgate, start)


def test_works_pipelined_requests_and_expect_continue(users):
    """Two pipelined requests are both answered in order; ``Expect: 100-continue`` on
    an inspected route with no body is a 400 of the gate's, not a wait."""
    sock = users["mallory"].connect()
    try:
        sock.sendall(
            b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1.41/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        first = _read_reply(sock)
        second = _read_reply(sock)
    finally:
        sock.close()
    assert (first.status, first.body) == (200, b"OK")
    assert second.status == 200 and b"ApiVersion" in second.body
    r, took = _timed(
        users["mallory"],
        "POST",
        f"{V}/containers/create",
        headers={"Content-Type": "application/json", "Expect": "100-continue"},
    )
    _gate_refusal(r, 400)
    assert took < QUICK
