"""Raw HTTP/1.1 over unix sockets for the benchmark: no HTTP library on the hot path.

- :class:`ResponseReader` frames one response at a time (Content-Length, chunked,
  or no body) without buffering bodies, so the same code counts a 2-byte ``_ping``
  answer and a 64 MiB archive.
- :func:`throughput` drives N keep-alive connections from P forked processes, each
  an epoll loop over raw non-blocking sockets (about as cheap as a Python client
  gets; see ``loadgen ceiling`` in the report for what it can do at all).
- :func:`latencies` times requests one after another on one connection.
- :func:`archive_get` and :func:`exec_echo` are the bulk-stream scenarios.
- :func:`run_as` runs any of these in a forked child under another uid, which is
  how the gate, reading SO_PEERCRED, sees a non-admin caller.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

T = TypeVar("T")

RECV_SIZE = 1 << 16
BULK_RECV_SIZE = 1 << 20

_HEAD, _BODY, _SIZE, _DATA, _TRAILER, _EOF = range(6)


class BenchError(Exception):
    """A request in a measurement failed: the number would be meaningless."""


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def unix_socket(path: str, timeout: float | None = 30.0) -> socket.socket:
    """A connected unix socket. A listener whose accept backlog is full makes
    ``connect`` fail at once with EAGAIN on AF_UNIX (no waiting as on TCP): retry."""
    deadline = time.monotonic() + (timeout or 30.0)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
        except BaseException:
            sock.close()
            raise


class ResponseReader:
    """Incremental framing of one HTTP/1.1 response; bodies are counted, not kept."""

    __slots__ = ("body_bytes", "chunks", "head", "head_only", "pending", "remaining", "state")

    def __init__(self, head_only: bool = False) -> None:
        self.head_only = head_only
        self.reset()

    def reset(self) -> None:
        self.state = _HEAD
        self.pending = b""
        self.head = b""
        self.remaining = 0
        self.body_bytes = 0
        self.chunks = 0

    @property
    def status(self) -> int:
        return int(self.head[9:12])

    def feed(self, data: bytes) -> bool:
        """Consume bytes; True once the response is complete (then call :meth:`reset`)."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        pos, end = 0, len(data)
        while True:
            state = self.state
            if state in (_BODY, _DATA):
                take = min(self.remaining, end - pos)
                self.remaining -= take
                pos += take
                if self.remaining:
                    return False
                if state == _BODY:
                    return self._done(pos, end)
                self.state = _SIZE
            elif state == _HEAD:
                i = data.find(b"\r\n\r\n", pos)
                if i < 0:
                    self.pending = data[pos:]
                    return False
                self.head = data[pos : i + 4]
                pos = i + 4
                self._start_body()
                if self.state == _HEAD:
                    return self._done(pos, end)
            elif state == _SIZE:
                i = data.find(b"\r\n", pos)
                if i < 0:
                    self.pending = data[pos:]
                    return False
                size = int(data[pos:i].split(b";", 1)[0], 16)
                pos = i + 2
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.body_bytes += size
                    self.chunks += 1
                    self.remaining = size + 2  # data and its CRLF
                    self.state = _DATA
            elif state == _TRAILER:
                i = data.find(b"\r\n", pos)
                if i < 0:
                    self.pending = data[pos:]
                    return False
                blank = i == pos
                pos = i + 2
                if blank:
                    return self._done(pos, end)
            else:  # _EOF: body runs until the server closes
                self.body_bytes += end - pos
                return False

    def eof(self) -> bool:
        """The server closed; True if that completes a close-delimited response."""
        return self.state == _EOF

    def _start_body(self) -> None:
        status = self.status
        if self.head_only or status in (101, 204, 304) or 100 <= status < 200:
            self.state = _HEAD
            return
        lower = self.head.lower()
        if b"\r\ntransfer-encoding: chunked" in lower:
            self.state = _SIZE
            return
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.index(b"\r\n", i + 2)
            self.remaining = self.body_bytes = int(lower[i + 17 : j])
            self.state = _BODY if self.remaining else _HEAD
            return
        self.state = _EOF

    def _done(self, pos: int, end: int) -> bool:
        if pos != end:
            raise BenchError(f"{end - pos} unexpected bytes after a response")
        self.state = _HEAD
        return True


def exchange(sock: socket.socket, request: bytes, reader: ResponseReader) -> None:
    """Send one request and read its whole response (blocking socket)."""
    reader.reset()
    sock.sendall(request)
    while True:
        data = sock.recv(RECV_SIZE)
        if not data:
            if reader.eof():
                return
            raise BenchError("connection closed in the middle of a response")
        if reader.feed(data):
            return


# -- throughput ------------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    completed: int  # 2xx answers inside the measured window
    errors: int
    seconds: float
    statuses: dict[int, int]
    total: int  # every answer, warm-up included (for CPU per request)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds


def _load_worker(
    path: str,
    request: bytes,
    conns: int,
    start_at: float,
    warmup: float,
    duration: float,
    out: multiprocessing.connection.Connection,
) -> None:
    socks: dict[int, socket.socket] = {}
    readers: dict[int, ResponseReader] = {}
    ep = select.epoll()
    try:
        for _ in range(conns):
            sock = unix_socket(path)
            sock.setblocking(False)
            socks[sock.fileno()] = sock
            readers[sock.fileno()] = ResponseReader()
            ep.register(sock.fileno(), select.EPOLLIN)
        while time.time() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.time())))
        t0 = time.monotonic()
        count_from = t0 + warmup
        stop_at = count_from + duration
        completed = errors = total = 0
        statuses: dict[int, int] = {}
        for sock in socks.values():
            sock.send(request)
        now = t0
        while now < stop_at:
            for fd, _ev in ep.poll(0.5):
                sock = socks[fd]
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise BenchError("the server closed a keep-alive connection")
                reader = readers[fd]
                if reader.feed(data):
                    total += 1
                    if now >= count_from:
                        status = reader.status
                        statuses[status] = statuses.get(status, 0) + 1
                        if 200 <= status < 300:
                            completed += 1
                        else:
                            errors += 1
                    reader.reset()
                    if sock.send(request) != len(request):
                        raise BenchError("short send of a small request")
            now = time.monotonic()
        out.send(("ok", completed, errors, now - count_from, statuses, total))
    except Exception as exc:
        out.send(("error", repr(exc)))
    finally:
        for sock in socks.values():
            sock.close()
        ep.close()
        out.close()


def throughput(
    path: str,
    request: bytes,
    conns: int,
    duration: float,
    procs: int = 2,
    warmup: float = 0.3,
    uid: int | None = None,
) -> Load:
    """Requests/s with ``conns`` keep-alive connections split over ``procs`` processes."""
    ctx = multiprocessing.get_context("fork")
    procs = max(1, min(procs, conns))
    start_at = time.time() + 0.2 + 0.02 * conns
    workers = []
    for i in range(procs):
        share = conns // procs + (1 if i < conns % procs else 0)
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_as_uid,
            args=(uid, _load_worker, path, request, share, start_at, warmup, duration, send),
            daemon=True,
        )
        proc.start()
        send.close()
        workers.append((proc, recv))
    completed = errors = total = 0
    seconds = 0.0
    statuses: dict[int, int] = {}
    failures = []
    for proc, recv in workers:
        msg: Any = ("error", "no result (the worker died or timed out)")
        with contextlib.suppress(EOFError):
            msg = recv.recv() if recv.poll(duration + warmup + 30) else msg
        proc.join(5)
        if msg[0] != "ok":
            failures.append(str(msg[1]))
            continue
        completed += msg[1]
        total += msg[5]
        errors += msg[2]
        seconds = max(seconds, msg[3])
        for status, n in msg[4].items():
            statuses[status] = statuses.get(status, 0) + n
    if failures:
        raise BenchError("load worker failed: " + "; ".join(failures))
    return Load(completed, errors, seconds, statuses, total)


def _as_uid(uid: int | None, fn: Callable[..., None], *args: Any) -> None:
    if uid is not None:
        drop_privileges(uid)
    fn(*args)


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _child(
    uid: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    out: multiprocessing.connection.Connection,
) -> None:
    try:
        drop_privileges(uid)
        out.send(("ok", fn(*args)))
    except BaseException as exc:
        out.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        out.close()


def run_as(uid: int | None, fn: Callable[..., T], *args: Any, timeout: float = 600) -> T:
    """Call ``fn(*args)`` here, or in a forked child running as ``uid``."""
    if uid is None:
        return fn(*args)
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(uid, fn, args, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise BenchError(f"child as uid {uid} timed out")
        status, value = recv.recv()
    except EOFError:
        raise BenchError(f"child as uid {uid} died") from None
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise BenchError(value)
    return value  # type: ignore[no-any-return]


# -- latency ---------------------------------------------------------------------------


def latencies(path: str, request: bytes, count: int, warmup: int = 50) -> list[float]:
    """Seconds per request, one after another on one keep-alive connection."""
    out: list[float] = []
    reader = ResponseReader()
    clock = time.perf_counter
    with unix_socket(path) as sock:
        for i in range(warmup + count):
            t0 = clock()
            exchange(sock, request, reader)
            t1 = clock()
            if not 200 <= reader.status < 300:
                raise BenchError(f"status {reader.status}: {reader.head[:200]!r}")
            if i >= warmup:
                out.append(t1 - t0)
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- bulk streams ----------------------------------------------------------------------


def archive_get(path: str, container: str, inner: str) -> tuple[int, float]:
    """GET /containers/{id}/archive: (body bytes, seconds from request to last byte)."""
    request = request_bytes("GET", f"/containers/{container}/archive?path={inner}")
    reader = ResponseReader()
    with unix_socket(path, timeout=120) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        t0 = time.perf_counter()
        sock.sendall(request)
        while True:
            data = sock.recv(BULK_RECV_SIZE)
            if not data:
                raise BenchError("archive stream cut short")
            if reader.feed(data):
                break
        seconds = time.perf_counter() - t0
    if reader.status != 200:
        raise BenchError(f"archive: status {reader.status}")
    return reader.body_bytes, seconds


def exec_echo(path: str, container: str, size: int) -> tuple[int, int, float]:
    """Exec ``cat`` over a hijacked connection, write ``size`` bytes, half-close, read
    the echo until EOF: (stdout payload bytes, raw bytes incl. frame headers, seconds
    from the 101 to EOF)."""
    status, body = api(
        path,
        "POST",
        f"/containers/{container}/exec",
        {"AttachStdin": True, "AttachStdout": True, "AttachStderr": False, "Cmd": ["cat"]},
    )
    if status != 201:
        raise BenchError(f"exec create: {status} {body[:200]!r}")
    exec_id = json.loads(body)["Id"]
    start = json.dumps({"Detach": False, "Tty": False}).encode()
    head = request_bytes(
        "POST",
        f"/exec/{exec_id}/start",
        {
            "Content-Type": "application/json",
            "Content-Length": str(len(start)),
            "Connection": "Upgrade",
            "Upgrade": "tcp",
        },
    )
    with unix_socket(path, timeout=120) as sock:
        rest = _upgrade(sock, head + start)
        return _echo(sock, rest, size)


def attach_echo(path: str, direct: str, container: str, size: int) -> tuple[int, int, float]:
    """Attach to a created ``cat`` container (stdin once) through ``path``, start it
    through ``direct``, then echo ``size`` bytes like :func:`exec_echo`. The attach
    request has no body, unlike exec start."""
    head = request_bytes(
        "POST",
        f"/containers/{container}/attach?stream=1&stdin=1&stdout=1&stderr=1",
        {"Connection": "Upgrade", "Upgrade": "tcp"},
    )
    with unix_socket(path, timeout=120) as sock:
        rest = _upgrade(sock, head)
        status, body = api(direct, "POST", f"/containers/{container}/start")
        if status not in (204, 304):
            raise BenchError(f"start: {status} {body[:200]!r}")
        return _echo(sock, rest, size)


def _read_head(sock: socket.socket, what: str) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise BenchError(f"{what}: closed before the response head ({buf[:200]!r})")
        buf += data
    if buf[9:12] != b"200":
        raise BenchError(f"{what}: {buf[:200]!r}")
    return buf


def _upgrade(sock: socket.socket, request: bytes) -> bytes:
    """Send an upgrade request; return what followed the 101 head."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise BenchError(f"closed before the 101 ({buf[:200]!r})")
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    if buf[9:12] != b"101":
        status = buf[9:12].decode(errors="replace")
        raise BenchError(f"upgrade refused: got {status} instead of 101 ({buf[:i]!r})")
    return buf[i:]


def _echo(sock: socket.socket, rest: bytes, size: int) -> tuple[int, int, float]:
    payload = memoryview(bytes(range(256)) * (size // 256))
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            step = 1 << 20
            for off in range(0, len(payload), step):
                sock.sendall(payload[off : off + step])
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:
            errors.append(exc)

    t0 = time.perf_counter()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    raw = len(rest)
    frames = _FrameCounter()
    frames.feed(rest)
    while data := sock.recv(BULK_RECV_SIZE):
        raw += len(data)
        frames.feed(data)
    seconds = time.perf_counter() - t0
    thread.join(10)
    if errors:
        raise BenchError(f"stdin writer: {errors[0]!r}")
    return frames.payload, raw, seconds


class _FrameCounter:
    """Counts the payload of Docker's multiplexed stream (8-byte header + data frames)."""

    def __init__(self) -> None:
        self.payload = 0
        self.header = b""
        self.left = 0

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self.left:
                take = min(self.left, end - pos)
                self.left -= take
                self.payload += take
                pos += take
                continue
            need = 8 - len(self.header)
            self.header += data[pos : pos + need]
            pos += need
            if len(self.header) == 8:
                self.left = int.from_bytes(self.header[4:8], "big")
                self.header = b""


# -- control requests ------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = unix_socket(self.unix_path, self.timeout)


def api(
    path: str, method: str, target: str, body: Any = None, *, timeout: float = 60
) -> tuple[int, bytes]:
    """One control request (setup and teardown, never timed)."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, target, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class IdleStreams:
    """Many open ``GET /events`` streams, each with its response head read."""

    socks: list[socket.socket]

    @classmethod
    def open(cls, path: str, count: int, batch: int = 50) -> IdleStreams:
        """Open ``count`` streams, ``batch`` at a time (each batch answered first)."""
        request = request_bytes("GET", "/events")
        socks: list[socket.socket] = []
        try:
            while len(socks) < count:
                fresh = []
                for _ in range(min(batch, count - len(socks))):
                    sock = unix_socket(path, timeout=30)
                    socks.append(sock)
                    sock.sendall(request)
                    fresh.append(sock)
                for sock in fresh:
                    _read_head(sock, "events")
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        return cls(socks)

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.socks = []


# -- containers ------------------------------------------------------------------------

LABEL = "dgbench"


def create_containers(path: str, names: list[str], cmd: list[str], workers: int = 8) -> None:
    """``docker create --label dgbench=1 --name NAME busybox CMD`` for each name."""

    def one(name: str) -> None:
        status, body = api(
            path,
            "POST",
            f"/containers/create?name={name}",
            {"Image": "busybox:latest", "Cmd": cmd, "Labels": {LABEL: "1"}},
        )
        if status != 201:
            raise BenchError(f"create {name}: {status} {body[:200]!r}")

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, names):
            pass


def labelled(path: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"{LABEL}=1"]})
    status, body = api(path, "GET", f"/containers/json?all=1&filters={_quote(filters)}")
    if status != 200:
        raise BenchError(f"list: {status} {body[:200]!r}")
    return list(json.loads(body))


def remove_labelled(path: str, workers: int = 8) -> int:
    """Force-remove every container carrying the benchmark's label; how many."""
    ids = [c["Id"] for c in labelled(path)]

    def one(cid: str) -> None:
        status, body = api(path, "DELETE", f"/containers/{cid}?force=1&v=1")
        if status not in (204, 404):
            raise BenchError(f"remove {cid[:12]}: {status} {body[:200]!r}")

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, ids):
            pass
    return len(ids)


def _quote(text: str) -> str:
    return quote(text, safe="")


def peer_pid(path: str) -> int:
    """The pid of the process serving a unix socket (SO_PEERCRED)."""
    with unix_socket(path) as sock:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[0])
