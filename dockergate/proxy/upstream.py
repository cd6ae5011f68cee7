"""Connections to the Docker daemon: a keep-alive pool, and dedicated ones for hijacks.

One pool for the whole gate (no connection per request, no thread per request).
Upgraded connections (attach, exec, BuildKit) are never pooled: once the daemon
answers 101 the socket belongs to that stream until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from dockergate.listen.tls import TLSStream
from dockergate.proxy.http import MAX_HEAD, Writer

IDLE_TTL = 60.0  # close pooled connections idle longer than this
MAX_IDLE = 64


class UpstreamError(Exception):
    """The daemon cannot be reached; the message says where."""


@dataclass(slots=True)
class UpstreamConn:
    reader: asyncio.StreamReader
    writer: Writer
    reused: bool = False
    idle_since: float = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken socket must not raise
            self.writer.close()

    def abort(self) -> None:
        """Reset the connection: a request cut off mid-body must not look complete."""
        target = getattr(self.writer, "transport", self.writer)  # StreamWriter or TLSStream
        with contextlib.suppress(Exception):
            abort = getattr(target, "abort", None)
            if abort is None:
                self.writer.close()
            else:
                abort()


class Upstream:
    """Where the daemon is (``unix:///path`` or ``tcp://host:port``) and a pool to it."""

    def __init__(self, url: str, tls: ssl.SSLContext | None = None) -> None:
        self.url = url
        parts = urlsplit(url)
        self.scheme = parts.scheme
        if parts.scheme == "unix":
            self.path = parts.path or "/var/run/docker.sock"
        elif parts.scheme in ("tcp", "https", "http"):
            if not parts.hostname or not parts.port:
                raise ValueError(f"upstream {url!r} needs a host and a port")
            self.host, self.port = parts.hostname, parts.port
            if parts.scheme == "https" and tls is None:
                tls = ssl.create_default_context()
        else:
            raise ValueError(f"upstream {url!r}: use unix:///path or tcp://host:port")
        self.tls = tls
        self._idle: list[UpstreamConn] = []

    async def connect(self) -> UpstreamConn:
        """A new connection to the daemon (for a hijack, or to fill the pool)."""
        loop = asyncio.get_running_loop()
        try:
            if self.scheme == "unix":
                reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_HEAD)
                return UpstreamConn(reader, writer)
            if self.tls is None:
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
                _keepalive(writer.get_extra_info("socket"))
                return UpstreamConn(reader, writer)
            tls = self.tls
            _, proto = await loop.create_connection(
                lambda: TLSStream(tls, server_side=False, server_hostname=self.host),
                self.host,
                self.port,
            )
            await proto.handshake
            _keepalive(proto.get_extra_info("socket"))
            return UpstreamConn(proto.reader, proto)
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"Docker daemon unreachable at {self.url}: {exc}") from exc

    async def acquire(self) -> UpstreamConn:
        """A pooled connection if one is still good, else a new one."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                now - conn.idle_since < IDLE_TTL
                and not conn.writer.is_closing()
                and not conn.reader.at_eof()
                and not buffered(conn.reader)  # stray bytes: the daemon said something
            ):
                conn.reused = True
                return conn
            conn.close()
        return await self.connect()

    def release(self, conn: UpstreamConn) -> None:
        """Return a connection whose last response was read completely."""
        if len(self._idle) >= MAX_IDLE or conn.writer.is_closing() or conn.reader.at_eof():
            conn.close()
            return
        conn.reused = False
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        self.trim()

    def trim(self) -> None:
        """Close connections idle past ``IDLE_TTL``, oldest first: acquire() takes the
        newest, so after a burst the oldest would stay open to the daemon for good
        (round 31f). Also run by the gate's sweeper, for a gate gone quiet."""
        now = time.monotonic()
        while self._idle and now - self._idle[0].idle_since >= IDLE_TTL:
            self._idle.pop(0).close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def buffered(reader: asyncio.StreamReader) -> int:
    """Bytes a StreamReader holds unread (asyncio has no public accessor)."""
    return len(reader._buffer)  # type: ignore[attr-defined]


def _keepalive(sock: object) -> None:
    """Dead peers on long streams are found by TCP keepalive, not by idle timeouts."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


keepalive = _keepalive
