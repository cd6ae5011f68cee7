"""The two doors: a unix socket (identity from SO_PEERCRED) and TCP+TLS (client cert).

Identity is fixed here, at accept time, before the first request is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from dockergate.listen.identity import Peer
from dockergate.listen.tls import HANDSHAKE_TIMEOUT, TLSStream
from dockergate.proxy.http import MAX_HEAD, Writer
from dockergate.proxy.upstream import keepalive

log = logging.getLogger("dockergate")

Handler = Callable[[asyncio.StreamReader, Writer, Peer], Coroutine[Any, Any, None]]
_UCRED = struct.Struct("3i")
# asyncio's default backlog (100) makes a burst of parallel `docker` commands fail
# with EAGAIN on a unix socket; dockerd itself listens with 4096.
BACKLOG = 4096
PENDING_HANDSHAKES_PER_ADDRESS = 64
CROWDED_HANDSHAKE_TIMEOUT = 1.0
CROWDED_HANDSHAKES = 128


def peer_credentials(sock: socket.socket) -> Peer:
    """The kernel's record of who connected (pid, uid, gid at connect time), and
    whether that process runs in a container (see :func:`peer_container`)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    container, problem = peer_container(pid, uid)
    pid_ns = mnt_ns = None
    if container is not None:
        try:
            pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
            mnt_ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            problem = f"process {pid} was gone before the gate could see where it runs"
    return Peer(
        "unix",
        uid=uid,
        gid=gid,
        pid=pid,
        container=container,
        pid_ns=pid_ns,
        mnt_ns=mnt_ns,
        problem=problem,
    )


# A container's cgroup: a path part that is its ID, under systemd (docker-<id>.scope)
# or cgroupfs (/docker/<id>, /<cgroup-parent>/<id>). What matches but is no container
# of the engine (another runtime's) is found out by asking the daemon.
_CONTAINER_CGROUP = re.compile(rb"[/-]([0-9a-f]{64})(?:\.scope)?(?:/|$)", re.M)
_EUID = re.compile(rb"^Uid:\s+\d+\s+(\d+)", re.M)


def peer_container(pid: int, uid: int, proc: str = "/proc") -> tuple[str | None, str | None]:
    """The engine container the peer process runs in (None: the host), or why the
    peer cannot be placed.

    A container of a rootful engine runs as the host's root (or as any uid its image
    names), and a descriptor of the gate's socket can reach it (SCM_RIGHTS over a
    socket in a bind mount, then ``connect("/proc/self/fd/N")``): its uid says
    nothing about who is calling. Its cgroup names the container, whose owner label
    does. The process must still be the one that connected: gone, or with another
    effective uid than the kernel recorded (its pid reused), it is refused. A cgroup
    is only a name (a user may make one named like a container in the subtree systemd
    delegates to them): the gate then checks that the process is in the container's
    pid and mount namespaces, which nobody but root can enter (a container with the
    host's pids still has its own mounts). With pid
    0 (the peer is outside the gate's pid namespace: the gate itself runs in a
    container without the host's pids) nothing can be told; the README says so."""
    if pid <= 0:
        return None, None
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as f:
            cgroup = f.read()
        with open(f"{proc}/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        return None, f"process {pid} was gone before the gate could see where it runs"
    euid = _EUID.search(status)
    if euid is None or int(euid.group(1)) != uid:
        return None, f"process {pid} is no longer the uid {uid} that connected"
    found = _CONTAINER_CGROUP.search(cgroup)
    return (found.group(1).decode("ascii") if found else None), None


def remote_host(transport: Any) -> str:
    """The remote address of a TCP connection (a stream or writer), "?" if unknown:
    what per-address limits count by."""
    address = transport.get_extra_info("peername")
    return str(address[0]) if isinstance(address, tuple) and address else "?"


def certificate_peer(der: bytes | None) -> Peer:
    if not der:
        return Peer("tls")
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else None
    return Peer(
        "tls",
        cert_serial=cert.serial_number,
        cert_cn=cn,
        cert_fingerprint=hashlib.sha256(der).hexdigest(),
    )


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead gate; refuse to steal a live one."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)
            return
        raise
    finally:
        probe.close()
    raise RuntimeError(f"another process is listening on {path}")


SUN_PATH_MAX = 108  # sockaddr_un's sun_path, with its terminating NUL


async def start_unix(path: str, mode: int, handler: Handler) -> asyncio.Server:
    sock_path = Path(path)
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(sock_path)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            peer = peer_credentials(sock)
        except OSError:
            writer.close()
            return
        await handler(reader, writer, peer)

    # Bound under a temporary name, given its mode, then renamed into place: the
    # socket never shows at its path with the umask's mode (0755 refused every
    # non-root user for a moment at each start).
    # A short random name (gates in containers all have pid 1); where even that would
    # pass the kernel's limit on socket paths, bound in place and chmod-ed, as before.
    temporary = sock_path.with_name(f".dg-{secrets.token_hex(4)}")
    if len(os.fsencode(temporary)) >= SUN_PATH_MAX:
        temporary = sock_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        sock.listen(BACKLOG)
        if temporary != sock_path:
            os.rename(temporary, sock_path)
    except BaseException:
        sock.close()
        if temporary != sock_path:
            temporary.unlink(missing_ok=True)
        raise
    return await asyncio.start_unix_server(on_connect, sock=sock, limit=MAX_HEAD, backlog=BACKLOG)


def parse_listen(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {address!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_tls(address: str, context: ssl.SSLContext, handler: Handler) -> asyncio.Server:
    host, port = parse_listen(address)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_ready(stream: TLSStream) -> None:
        keepalive(stream.get_extra_info("socket"))
        try:
            der = stream.get_extra_info("peercert_der")
            peer = certificate_peer(der if isinstance(der, bytes) else None)
        except ValueError:
            stream.abort()
            return
        task = loop.create_task(handler(stream.reader, stream, peer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # Handshakes in progress by remote address: each holds a file descriptor for up to
    # HANDSHAKE_TIMEOUT before anyone is identified. Past PENDING_HANDSHAKES_PER_ADDRESS
    # from one address, a handshake must end within a second (a real client there
    # still gets through a flood of silent connections), and at most CROWDED_HANDSHAKES
    # such are open at once; more are dropped.
    pending: Counter[str] = Counter()
    crowded = 0  # handshakes in progress past the per-address count

    def on_made(stream: TLSStream) -> float:
        nonlocal crowded
        host = remote_host(stream)
        if pending[host] >= PENDING_HANDSHAKES_PER_ADDRESS:
            if crowded >= CROWDED_HANDSHAKES:
                return 0.0
            crowded += 1

            def uncrowd(_: object) -> None:
                nonlocal crowded
                crowded -= 1

            stream.handshake.add_done_callback(uncrowd)
            return CROWDED_HANDSHAKE_TIMEOUT
        pending[host] += 1

        def done(_: object) -> None:
            pending[host] -= 1
            if pending[host] <= 0:
                del pending[host]

        stream.handshake.add_done_callback(done)
        return HANDSHAKE_TIMEOUT

    def factory() -> TLSStream:
        return TLSStream(
            context, server_side=True, on_ready=on_ready, limit=MAX_HEAD, on_made=on_made
        )

    server = await loop.create_server(factory, host, port, reuse_address=True, backlog=BACKLOG)
    with contextlib.suppress(Exception):
        for sock in server.sockets:
            log.info("TLS listener on %s", sock.getsockname())
    return server
