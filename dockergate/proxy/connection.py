"""One client connection: parse each request, authorise it, forward it, relay the answer.

Requests on a keep-alive connection are handled one at a time, each authorised on
its own (identity is re-checked per request, so a revocation reaches open
connections). Streaming responses are relayed chunk by chunk with no idle or total
timeout; upgraded requests (attach, exec, BuildKit) become a two-way byte pump
with half-close propagated in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from dockergate.api.dispatch import dispatch
from dockergate.api.exchange import BodyCheck, EventFilter, Exchange
from dockergate.api.routes import match
from dockergate.audit.record import RequestRecord
from dockergate.listen.identity import IDENTITY_HEADERS, TOKEN_HEADER, Identity, Peer, Refusal
from dockergate.proxy.errors import error_response, reason
from dockergate.proxy.http import (
    HOP_BY_HOP,
    MAX_HEAD,
    READ_SIZE,
    ClientGone,
    HTTPError,
    Request,
    Response,
    Writer,
    body_length,
    iter_body,
    parse_request,
    parse_response,
    read_body,
    read_head,
    read_whole_body,
    relay_chunked_raw,
    render_head,
    unread,
    with_length,
)
from dockergate.proxy.paths import normalise
from dockergate.proxy.splice import splice_streams
from dockergate.proxy.upstream import UpstreamConn, UpstreamError, buffered

if TYPE_CHECKING:
    from dockergate.server import Gate

log = logging.getLogger("dockergate.access")

KEEPALIVE_IDLE = 300.0  # an idle keep-alive connection is closed after this (not streams)
HEAD_TIMEOUT = 60.0  # a started message head must be complete within this
# A TLS client without a certificate must identify (a token) within this, and again
# after each request until one does.
FIRST_REQUEST_TIMEOUT = 10.0
TURN_AWAY_WAIT = 1.0  # a client over its connection limit: how long its request may take
# The head of a connection counted nowhere (on probation, or turned away) is read up to
# this: a request with a token needs a few KiB, and hundreds of such connections from
# one address must not each hold a whole MAX_HEAD (round 32b).
UNCOUNTED_HEAD = 16 << 10
DISCARD_LIMIT = 1 << 16  # refused bodies up to this are read and dropped to keep the connection
HIJACK_BODY_CAP = 1 << 20
HELD_AFTER_END_CAP = 2 << 20  # a checked stream (build context) after its archive's end
UPGRADE_PROTOCOLS = frozenset({"tcp", "h2c", "websocket"})
DROP_REQUEST_HEADERS = HOP_BY_HOP | IDENTITY_HEADERS
DROP_RESPONSE_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEALTH_PATH = "/_dockergate/health"
FINITE_HOLD = 1 << 20  # a finite answer goes out in writes of at least this (or whole)
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 << 20


class Closed(Exception):
    """The exchange cannot go on on this connection; close it."""


class ClientConnection:
    def __init__(
        self, gate: Gate, reader: asyncio.StreamReader, writer: Writer, peer: Peer
    ) -> None:
        self.gate = gate
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.loop = asyncio.get_running_loop()
        # Where the connection is, and since when: the gate's sweeper closes idle
        # keep-alive connections and stalled heads (no per-request timers: they cost
        # more than the rest of a short request). Requests in progress have no limit.
        self.phase = "idle"  # "idle" (between requests), "head" (reading one), "busy"
        self.since = self.loop.time()
        self.timed_out = False
        self.linger = False  # close gently: a refused body may still be arriving
        self.status = 0  # of the request being handled, for the access log
        # Who the request in progress is for, and the token it came with: a stream
        # (exec, attach, logs -f, events) lasts as long as its client likes, so the
        # gate checks these again when its users change (Gate.recheck_streams).
        self.identity: Identity | None = None
        self.token: str | None = None
        # Connections per client (Gate.handle): what this one counts against, the
        # address of a TLS client not identified yet, and the refusal for a client
        # over its limit (its request is answered with it, then the connection closes).
        self.counted_as: str | None = None
        self.unidentified_at: str | None = None
        self.turned_away: str | None = None
        # A TLS client without a certificate from an address with too many connections
        # not identified yet: served only if its first request, sent at once, identifies.
        self.probation = False
        # Its last request was refused for want of an identity: answered, then closed.
        self.not_identified = False
        self.requests = 0  # handled so far (the gate rechecks idle ones' identity)
        self.started = 0.0  # monotonic start of the request in progress
        self.recorded = False  # its audit row is written (a hijack's, when it began)

    # -- connection loop -------------------------------------------------------------
    async def serve(self) -> None:
        if self.turned_away is not None:
            await self._turn_away()
            return
        try:
            while not self.gate.closing:
                self.phase, self.since = "idle", self.loop.time()
                try:
                    if self.probation:
                        # On probation: its request (with a token) must come at once,
                        # and be small.
                        self._set_head_limit(UNCOUNTED_HEAD)
                        async with asyncio.timeout(TURN_AWAY_WAIT):
                            raw = await self._next_head()
                        self._set_head_limit(MAX_HEAD)
                    else:
                        # No timer here: the sweeper (expire) watches idle connections
                        # and stalled heads; a timeout context per request cost about a
                        # tenth of the gate's CPU on short requests (py-spy, _ping).
                        raw = await self._next_head()
                    self.phase = "busy"
                    request = parse_request(raw)
                except (ClientGone, TimeoutError):
                    return
                except HTTPError as exc:
                    if not self.timed_out:
                        await self._send(error_response(exc.status, exc.message, close=True))
                    return
                try:
                    keep = await self.handle(request)
                except Closed:
                    return
                if not keep or self.probation:  # still on probation: it did not identify
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return
        finally:
            self.phase = "idle"
            if self.linger:
                await self._linger()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _turn_away(self) -> None:
        """A client over its connection limit: the request it sends at once gets the
        refusal (the CLI prints it); a connection that sends nothing is closed in a
        second, so held-open idle connections cannot pile up."""
        message = self.turned_away or ""
        self._set_head_limit(UNCOUNTED_HEAD)
        try:
            async with asyncio.timeout(TURN_AWAY_WAIT):
                try:
                    request = parse_request(await read_head(self.reader))
                    self.linger = request.has_body
                except HTTPError:
                    # A head past UNCOUNTED_HEAD (or malformed): the refusal the client
                    # needs is still the connection limit (round 33a).
                    self.linger = True
            await self._send(error_response(403, message, close=True))
        except (TimeoutError, ClientGone, ConnectionError, OSError):
            pass
        finally:
            if self.linger:
                await self._linger()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _linger(self) -> None:
        """Closing with unread request bytes makes the kernel send RST, which can
        destroy the refusal the client has not read yet. Half-close, then swallow
        what the client is still sending for a bounded time."""
        with contextlib.suppress(Exception):
            self.writer.write_eof()
            async with asyncio.timeout(LINGER_SECONDS):
                drained = 0
                while drained < LINGER_BYTES and (data := await self.reader.read(READ_SIZE)):
                    drained += len(data)

    @property
    def busy(self) -> bool:
        return self.phase != "idle"

    def expire(self, now: float) -> None:
        """Called by the gate's sweeper: close a connection idle or stalled too long."""
        # A connection no one has identified yet gets FIRST_REQUEST_TIMEOUT for its
        # head too: 64 per address could otherwise each hold a partial MAX_HEAD for
        # HEAD_TIMEOUT (round 32b).
        unidentified = self.unidentified_at is not None
        idle_limit = FIRST_REQUEST_TIMEOUT if unidentified else KEEPALIVE_IDLE
        head_limit = FIRST_REQUEST_TIMEOUT if unidentified else HEAD_TIMEOUT
        if self.phase == "idle" and now - self.since > idle_limit:
            self.timed_out = True
            self.writer.close()
        elif self.phase == "head" and now - self.since > head_limit:
            self.timed_out = True
            with contextlib.suppress(Exception):
                self.writer.write(error_response(408, "request head timed out", close=True))
            self.writer.close()

    def _set_head_limit(self, limit: int) -> None:
        """How much of a head the reader takes (and buffers) before the gate answers
        431: asyncio has no public setter for a StreamReader's limit."""
        self.reader._limit = limit  # type: ignore[attr-defined]

    async def _next_head(self) -> bytes:
        """The next request's head, once its first byte has arrived."""
        await self._wait_readable()
        self.phase, self.since = "head", self.loop.time()
        return await read_head(self.reader)

    async def _wait_readable(self) -> None:
        """Wait for the first byte of the next request (or EOF) without consuming it."""
        if buffered(self.reader) or self.reader.at_eof():
            return
        await self.reader._wait_for_data("serve")  # type: ignore[attr-defined]

    async def _send_continue(self) -> None:
        await self._send(CONTINUE)

    async def _send(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.write(data)
            await self.writer.drain()

    # -- one request -----------------------------------------------------------------
    async def handle(self, req: Request) -> bool:
        """Handle one request; return whether the connection stays open."""
        self.started = time.monotonic()
        self.recorded = False
        self.requests += 1
        identity: Identity | None = None
        ex: Exchange | None = None
        path = req.path
        self.status = 0
        self.rule: str | None = None
        try:
            path, version = normalise(req.path)
            if path == HEALTH_PATH and self.peer.listener == "unix":
                return await self.reply(req, *await self.gate.health())
            token = req.headers.get(TOKEN_HEADER) if self.peer.listener == "tls" else None
            try:
                identity = self.gate.identify(self.peer, token)
            except Refusal as exc:
                if exc.status != 503:
                    # Not identified (a revoked certificate, an unknown uid): the next
                    # request on this connection would fare no better; it is closed,
                    # and counts against nothing while its owner keeps it open.
                    self.not_identified = True
                raise
            self.identity, self.token = identity, token
            if self.unidentified_at is not None or self.probation:
                self.probation = False
                self.gate.identified(self, identity)
            if self.turned_away is not None:
                self.rule = "max_connections_per_client"
                self.status = 403
                self.linger = req.has_body
                await self._send(error_response(403, self.turned_away, close=True))
                raise Closed()
            found = match(req.method, path)
            ex = Exchange(
                req,
                identity,
                path,
                version,
                found.route if found else None,
                dict(found.params) if found else {},
                self.gate.daemon,
                self.reader,
                profile=self.gate.profile_for(identity),
                gate=self.gate,
                send_continue=self._send_continue,
            )
            try:
                await dispatch(ex)
                if ex.reply is not None:
                    return await self.reply(req, *ex.reply)
                if ex.raw_reply is not None:
                    self.status = int(ex.raw_reply.split(b" ", 2)[1])
                    await self._send(ex.raw_reply)
                    return req.keep_alive
                if (
                    req.upgrade
                    and req.upgrade.lower() in UPGRADE_PROTOCOLS
                    and (ex.route is None or ex.route.hijack)  # unknown routes: admins'
                ):
                    keep = await self.hijack(ex)
                else:
                    keep = await self.forward(ex)
            finally:
                ex.status = self.status
                ex.release()
            return keep and req.keep_alive
        except Refusal as exc:
            self.rule = exc.rule
            return await self.refuse(req, exc.status, exc.message, raw=exc.raw)
        except HTTPError as exc:
            self.status = exc.status
            self.rule = exc.message
            self.linger = req.has_body and not req.body_read
            await self._send(error_response(exc.status, exc.message, close=True))
            raise Closed() from exc
        except UpstreamError as exc:
            self.gate.log_upstream_error(exc)
            self.rule = "upstream unreachable"
            return await self.refuse(req, 502, str(exc))
        finally:
            self.identity = self.token = None
            if not self.recorded:
                self._record(req, identity, ex, path)

    def began_at(self) -> float:
        """Wall-clock time the request in progress began (a purge ends what began
        before it)."""
        return time.time() - (time.monotonic() - self.started)

    def _record(
        self, req: Request, identity: Identity | None, ex: Exchange | None, path: str
    ) -> None:
        """The request's row for the audit log and the metrics: when it ends, or when
        a hijacked stream begins (a shell may stay open for days)."""
        route = ex.route if ex is not None else None
        started = self.started
        self.gate.on_request(
            RequestRecord(
                started=self.began_at(),
                user=identity.name if identity else None,
                identified_by=identity.method if identity else self.peer.describe(),
                listener=self.peer.listener,
                method=req.method,
                path=path,
                route=route.name if route else None,
                kind=route.kind if route else None,
                object_id=ex.object_id if ex is not None else None,
                decision=self._decision(),
                rule=self.rule,
                status=self.status,
                seconds=time.monotonic() - started,
                detail=ex.detail if ex is not None else None,
            )
        )

    def _decision(self) -> str:
        if self.rule is None:
            return "allow"
        return "error" if self.status in (0, 502, 503) or self.status < 400 else "deny"

    async def refuse(self, req: Request, status: int, message: str, raw: bool = False) -> bool:
        """Answer with a Docker-style error; keep the connection only if the body is gone."""
        self.status = status
        # A connection on probation that did not identify is answered and closed, its
        # body not waited for (it is counted nowhere).
        keep = req.keep_alive and not req.headers.get("expect") and not self.probation
        keep = keep and not self.not_identified
        if keep and req.has_body and not req.body_read:
            if req.body_started or req.chunked or (req.content_length or 0) > DISCARD_LIMIT:
                keep = False
            else:
                try:
                    async with asyncio.timeout(HEAD_TIMEOUT):
                        await read_body(self.reader, req.content_length, False, DISCARD_LIMIT)
                except (HTTPError, TimeoutError):
                    keep = False
        await self._send(
            error_response(status, message, close=not keep, head_only=req.method == "HEAD", raw=raw)
        )
        if not keep:
            self.linger = req.has_body and not req.body_read
            raise Closed()
        return True

    async def reply(self, req: Request, status: int, data: Any) -> bool:
        """The gate's own JSON answer (``/_dockergate/...``)."""
        self.status = status
        if isinstance(data, bytes):
            body, ctype = data, "text/plain; version=0.0.4; charset=utf-8"
        else:
            body, ctype = json.dumps(data).encode() + b"\n", "application/json"
        keep = req.keep_alive and not (req.has_body and not req.body_read)
        head = [
            f"HTTP/1.1 {status} {reason(status)}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
        ]
        if not keep:
            head.append("Connection: close")
        out = ("\r\n".join(head) + "\r\n\r\n").encode()
        await self._send(out if req.method == "HEAD" else out + body)
        if not keep:
            raise Closed()
        return True

    def _upstream_head(self, ex: Exchange, extra: list[tuple[str, str]]) -> bytes:
        req = ex.req
        if (
            not extra
            and not req.has_body
            and ex.target == req.target
            and req.version == "HTTP/1.1"
            and not req.headers.has_any(DROP_REQUEST_HEADERS)
        ):
            return req.raw_head  # nothing to drop, add or rewrite: the validated bytes
        headers = req.headers.without(DROP_REQUEST_HEADERS)
        headers.extend(extra)
        if req.version != "HTTP/1.1" and req.headers.get("host") is None:
            # Sent on as HTTP/1.1, which requires a Host (HTTP/1.0 does not).
            headers.append(("Host", "docker"))
        return render_head(f"{ex.req.method} {ex.target} HTTP/1.1", headers)

    async def forward(self, ex: Exchange) -> bool:
        """Send the request on a pooled connection and relay the response."""
        req, body = ex.req, ex.body
        framing: list[tuple[str, str]]
        if body is not None:
            framing = [("Content-Length", str(len(body)))]
            if body and req.headers.get("content-type") is None:
                # The gate wrote a JSON body the client did not send (commit with no
                # config); dockerd reads a body only with this type.
                framing.append(("Content-Type", "application/json"))
        elif req.chunked:
            framing = [("Transfer-Encoding", "chunked")]
        elif req.content_length:
            framing = [("Content-Length", str(req.content_length))]
        else:
            framing = []
            body = b""
        head = self._upstream_head(ex, framing)
        if (req.headers.get("expect") or "").lower() == "100-continue" and body is None:
            await self._send(CONTINUE)
        replayable = body is not None
        for attempt in (0, 1):
            conn = await self.gate.upstream.acquire()
            try:
                if body is not None:
                    conn.writer.write(head + body)
                else:
                    conn.writer.write(head)
                    await self._stream_body(req, conn, ex.body_check)
                await conn.writer.drain()
                raw = await read_head(conn.reader)
            except (HTTPError, Refusal):
                conn.abort()
                raise
            except (ConnectionError, OSError, ClientGone, asyncio.IncompleteReadError) as exc:
                conn.close()
                if conn.reused and replayable and attempt == 0:
                    continue  # a pooled connection the daemon had closed: retry once
                raise UpstreamError(
                    f"Docker daemon at {self.gate.upstream.url} closed the connection: {exc}"
                ) from exc
            except BaseException:
                conn.abort()  # never leave a half-sent request on a live connection
                raise
            break
        response = parse_response(raw)
        while 100 <= response.status < 200 and response.status != 101:
            raw = await read_head(conn.reader)  # interim responses are the gate's business
            response = parse_response(raw)
        self.status = response.status
        return await self.relay_response(ex, response, conn)

    async def _stream_body(self, req: Request, conn: UpstreamConn, check: BodyCheck | None) -> None:
        """Copy a request body to the daemon as it arrives (build contexts, uploads).

        With a ``check``, the last piece received is always held back (so the daemon
        never has the whole body before the check has passed), and so is everything
        from the piece that completes what the daemon reads (a build context's end
        of archive). A refusal from ``check.finish`` leaves the body cut off."""
        writer = conn.writer

        def send(data: bytes) -> None:
            if req.chunked:
                writer.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                writer.write(data)

        held: list[bytes] = []
        held_size = 0
        req.body_started = True
        async for data in iter_body(self.reader, req.content_length, req.chunked):
            if check is None:
                send(data)
                await writer.drain()
                continue
            check.feed(data)
            if not check.complete and held:
                for piece in held:
                    send(piece)
                held.clear()
                held_size = 0
                await writer.drain()
            held.append(data)
            held_size += len(data)
            if check.complete and held_size > HELD_AFTER_END_CAP:
                # What follows the end is held until the body ends: compressed filler
                # that inflates to nothing would otherwise grow without limit.
                raise Refusal(
                    400,
                    f"{req.method} {req.path}: more than {HELD_AFTER_END_CAP >> 20} MiB "
                    "after the end of the archive",
                )
        req.body_read = True
        if check is not None:
            await check.finish()
            for piece in held:
                send(piece)
        if req.chunked:
            writer.write(b"0\r\n\r\n")

    async def relay_response(self, ex: Exchange, resp: Response, conn: UpstreamConn) -> bool:
        """Relay the daemon's answer; return whether the client connection stays open."""
        req = ex.req
        length = body_length(resp, req.method)
        if resp.status in (200, 201) and length != 0 and ex.response_filter is not None:
            return await self._relay_filtered(ex, resp, conn, length)
        client_keep = req.keep_alive and (length is not None)
        http10 = req.version == "HTTP/1.0"
        if http10 and length == -1:
            client_keep = False
        if not client_keep or resp.field("connection") or resp.field("keep-alive"):
            headers = resp.headers.without(DROP_RESPONSE_HEADERS)
            if not client_keep:
                headers.append(("Connection", "close"))
            elif http10:
                headers.append(("Connection", "keep-alive"))
            if http10 and length == -1:
                headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
            head = render_head(resp.raw_head.split(b"\r\n", 1)[0].decode("latin-1"), headers)
        else:
            head = resp.raw_head
        up_keep = resp.keep_alive and length is not None
        w = self.writer
        try:
            if length == 0:
                w.write(head)
            elif length is not None and length > 0:
                if length <= READ_SIZE:
                    w.write(head + await conn.reader.readexactly(length))
                else:
                    w.write(head)
                    async for data in iter_body(conn.reader, length, False):
                        w.write(data)
                        await w.drain()
            elif length == -1:
                if http10:
                    # Unframed for an HTTP/1.0 client (the body ends when the gate
                    # closes), with the same filter and the same watch for a client
                    # gone as a chunked stream.
                    w.write(head)
                    if ex.event_filter is not None and resp.status == 200:
                        relay = relay_events(conn.reader, w, ex.event_filter, chunked=False)
                    else:
                        relay = relay_dechunked(conn.reader, w)
                    await self._watching_client(relay)
                elif ex.event_filter is not None and resp.status == 200:
                    w.write(head)
                    await self._watching_client(relay_events(conn.reader, w, ex.event_filter))
                elif ex.route is not None and ex.route.finite:
                    # Ends by itself: no watcher, and one write for the whole answer.
                    await relay_chunked_raw(conn.reader, w, head, hold=FINITE_HOLD)
                else:
                    await self._watching_client(relay_chunked_raw(conn.reader, w, head))
            else:  # delimited by the daemon closing the connection
                w.write(head)
                await self._watching_client(relay_until_close(conn.reader, w))
            await w.drain()
        except (asyncio.IncompleteReadError, HTTPError) as exc:
            conn.close()
            self.gate.log_upstream_error(exc)
            raise Closed() from exc
        except BaseException:
            conn.close()
            raise
        if up_keep:
            self.gate.upstream.release(conn)
        else:
            conn.close()
        return client_keep

    async def _relay_filtered(
        self, ex: Exchange, resp: Response, conn: UpstreamConn, length: int | None
    ) -> bool:
        """A whole JSON answer, filtered (e.g. ``system/df`` for a non-admin)."""
        assert ex.response_filter is not None
        raw = await read_whole_body(conn.reader, length)
        if resp.keep_alive and length is not None:
            self.gate.upstream.release(conn)
        else:
            conn.close()
        close = [] if ex.req.keep_alive else [("Connection", "close")]
        self.writer.write(with_length(resp, await ex.response_filter(raw), close))
        await self.writer.drain()
        return ex.req.keep_alive

    async def _watching_client(self, relay_coro: Coroutine[Any, Any, None]) -> None:
        """Relay a chunked response while watching for the client going away.

        Streams such as ``events`` can be silent for hours; without the watcher a
        client that left would pin a daemon connection until the next event.
        """
        relay = asyncio.ensure_future(relay_coro)
        watcher = asyncio.ensure_future(self.reader.read(READ_SIZE))
        try:
            done, _ = await asyncio.wait([relay, watcher], return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                data = watcher.result()
                if not data:
                    raise ConnectionResetError("client went away during a stream")
                unread(self.reader, data)  # a pipelined request: keep it for later
            await relay
        finally:
            # Cancelling a pending read consumes nothing; a finished one was handled above.
            for task in (relay, watcher):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                elif not task.cancelled():
                    # Both can end in one turn (the client's EOF, and the relay failing
                    # to write to it): the end reported is the client leaving; the
                    # relay's error is read here, or asyncio logs it as never retrieved.
                    task.exception()

    # -- upgrades --------------------------------------------------------------------
    async def hijack(self, ex: Exchange) -> bool:
        """attach / exec start / BuildKit: dedicated daemon connection, then a byte pump."""
        req = ex.req
        body = b""
        if ex.body is not None:
            body = ex.body  # inspected by the route's handler (exec start)
        elif req.has_body:
            body = await ex.read_held_body(HIJACK_BODY_CAP)
        assert req.upgrade is not None
        extra = [("Connection", "Upgrade"), ("Upgrade", req.upgrade)]
        if body or (req.content_length == 0 and req.headers.get("content-length") is not None):
            extra.append(("Content-Length", str(len(body))))
        conn = await self.gate.upstream.connect()
        try:
            conn.writer.write(self._upstream_head(ex, extra) + body)
            await conn.writer.drain()
            raw = await read_head(conn.reader)
        except (ConnectionError, OSError, ClientGone) as exc:
            conn.close()
            raise UpstreamError(f"Docker daemon at {self.gate.upstream.url} failed: {exc}") from exc
        response = parse_response(raw)
        self.status = response.status
        if response.status != 101:
            return await self.relay_response(ex, response, conn)
        self.writer.write(raw)  # the daemon's 101 head, byte for byte
        await self.writer.drain()
        self._record(req, ex.identity, ex, ex.path)  # on record from now
        self.recorded = True
        with self.gate.track_stream():
            if not await splice_streams(self.reader, self.writer, conn.reader, conn.writer):
                await pump(self.reader, self.writer, conn.reader, conn.writer)  # TLS on a side
        conn.close()
        raise Closed()


async def relay_dechunked(reader: asyncio.StreamReader, writer: Writer) -> None:
    """A chunked body passed on without its framing (to an HTTP/1.0 client)."""
    async for data in iter_body(reader, None, True):
        writer.write(data)
        await writer.drain()


async def relay_until_close(reader: asyncio.StreamReader, writer: Writer) -> None:
    """A body the daemon ends by closing the connection."""
    async for data in iter_body(reader, None, False):
        writer.write(data)
        await writer.drain()


async def relay_events(
    reader: asyncio.StreamReader, writer: Writer, allows: EventFilter, chunked: bool = True
) -> None:
    """Relay a line-delimited JSON stream, keeping only the events ``allows``; each
    kept event goes out as its own chunk, as the daemon sends them (as a plain line
    to an HTTP/1.0 client: ``chunked`` False)."""
    pending = b""
    async for data in iter_body(reader, None, True):
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and await allows(event):
                out = line + b"\n"
                writer.write(b"%x\r\n%b\r\n" % (len(out), out) if chunked else out)
                await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: Writer) -> bool:
    """Copy until EOF, then half-close the other side. False if a side broke."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return False
    try:
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        return False
    return True


async def pump(
    client_reader: asyncio.StreamReader,
    client_writer: Writer,
    up_reader: asyncio.StreamReader,
    up_writer: Writer,
) -> None:
    """Relay both directions with half-close; stop both if either side breaks."""
    up = asyncio.ensure_future(_copy(client_reader, up_writer))
    down = asyncio.ensure_future(_copy(up_reader, client_writer))
    pending = {up, down}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not task.result() for task in done):
                break
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
