"""TLS over a plain asyncio transport with ``ssl.MemoryBIO``, able to half-close.

asyncio's own TLS transport cannot half-close: on the peer's ``close_notify`` it
shuts the whole connection, so ``docker exec`` over TLS loses the output that
follows the end of stdin (the CLI half-closes with ``CloseWrite()``, which in Go's
TLS is a ``close_notify`` alert). Here a ``close_notify`` only ends the read side:
the reader sees EOF and writing goes on. ``write_eof()`` sends our ``close_notify``
and keeps reading. The object doubles as the connection's writer, with the
subset of :class:`asyncio.StreamWriter` the proxy uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import cast

READ_SIZE = 1 << 16
HANDSHAKE_TIMEOUT = 15.0
TLS_HANDSHAKE_RECORD = 0x16  # the first byte a TLS client sends
_PLAIN_HTTP_BODY = (
    b'{"message":"dockergate: Client sent an HTTP request to an HTTPS server: this is '
    b"the gate's TLS listener; set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to your "
    b'bundle (dockergate user cert), or use the unix socket"}\n'
)
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY)
)


class TLSStream(asyncio.Protocol):
    """One TLS connection: ``reader`` yields plaintext, ``write()`` encrypts."""

    def __init__(
        self,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        on_ready: Callable[[TLSStream], None] | None = None,
        limit: int = 1 << 20,
        on_made: Callable[[TLSStream], float] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side
        self._on_ready = on_ready
        self._on_made = on_made  # the handshake's deadline for this connection (0: drop)
        self.reader = asyncio.StreamReader(limit=limit)
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        # A failed handshake nobody awaits must not warn "exception never retrieved".
        self.handshake.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._eof_sent = False
        self._lost = False
        self._timeout: asyncio.TimerHandle | None = None
        self._started = False  # the first bytes from the peer have been seen

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        self._transport = cast(asyncio.Transport, transport)
        self.reader.set_transport(self._transport)
        deadline = HANDSHAKE_TIMEOUT if self._on_made is None else self._on_made(self)
        if deadline <= 0:
            self._transport.abort()
            return
        self._timeout = self._loop.call_later(deadline, self._handshake_timeout)
        if not self._server_side:
            self._do_handshake()

    def data_received(self, data: bytes) -> None:
        if self._server_side and not self._started and data:
            self._started = True
            if data[0] != TLS_HANDSHAKE_RECORD and data[:1].isupper():
                self._plain_http()
                return
        self._in.write(data)
        if not self.handshake.done():
            self._do_handshake()
        else:
            self._read_plain()

    def eof_received(self) -> bool:
        # TCP FIN: the peer will send nothing more. Keep the write side open.
        self._in.write_eof()
        if self.handshake.done():
            self._read_plain()
        self._feed_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timeout:
            self._timeout.cancel()
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during handshake"))
        self._feed_eof()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiters.clear()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- TLS machinery -------------------------------------------------------------
    def _plain_http(self) -> None:
        """A client that sent plain HTTP (a ``DOCKER_HOST=tcp://`` without
        ``DOCKER_TLS_VERIFY``) gets a 400 it can print, as dockerd's TLS listener
        answers, instead of a closed connection (which the CLI reports as ``EOF``)."""
        if not self.handshake.done():
            self.handshake.set_exception(ssl.SSLError("plain HTTP on the TLS listener"))
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(PLAIN_HTTP_ANSWER)
            self._transport.close()

    def _handshake_timeout(self) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(TimeoutError("TLS handshake timed out"))
            self.abort()

    def _flush(self) -> None:
        data = self._out.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _do_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            self.abort()
            return
        self._flush()
        if self._timeout:
            self._timeout.cancel()
        self.handshake.set_result(None)
        if self._on_ready is not None:
            self._on_ready(self)
        self._read_plain()

    def _read_plain(self) -> None:
        while True:
            try:
                data = self._ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                # close_notify: the peer's half-close. Only our read side ends.
                self._feed_eof()
                break
            except (ssl.SSLError, OSError) as exc:
                if not self.reader.at_eof():
                    self.reader.set_exception(ConnectionResetError(f"TLS error: {exc}"))
                self.abort()
                return
            if not data:
                self._feed_eof()
                break
            self.reader.feed_data(data)
        self._flush()

    def _feed_eof(self) -> None:
        if not self.reader.at_eof():
            self.reader.feed_eof()

    # -- StreamWriter-like interface -------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_sent or self._lost:
            raise ConnectionResetError("TLS stream is closed for writing")
        view = memoryview(data)
        while view:
            try:
                n = self._ssl.write(view)
            except ssl.SSLWantReadError:
                break  # renegotiation is disabled; nothing sensible to wait for
            view = view[n:]
        self._flush()

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send close_notify (our half-close) and keep reading."""
        if self._eof_sent or self._lost:
            return
        self._eof_sent = True
        # SSLWantReadError just means: close_notify sent, the peer's not yet received.
        with contextlib.suppress(ssl.SSLError, OSError):
            self._ssl.unwrap()
        self._flush()

    def close(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if not self._eof_sent and self.handshake.done() and not self.handshake.exception():
            self.write_eof()
        self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def is_closing(self) -> bool:
        return self._lost or self._transport is None or self._transport.is_closing()

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peercert_der":
            return self._ssl.getpeercert(binary_form=True)
        if name == "ssl_object":
            return self._ssl
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)
