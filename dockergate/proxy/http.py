"""A strict HTTP/1.1 message reader and writer for both legs of the gate.

The gate authorises what it parses and forwards what it authorised, so it parses
requests itself, strictly: anything two parsers could read differently (bare LF,
obs-fold, space before the colon, both Content-Length and Transfer-Encoding,
several lengths, unknown transfer codings) is refused with 400 instead of being
guessed at. Bodies are streamed; chunked bodies are decoded and re-encoded so the
daemon sees exactly the chunks the gate read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_to_bytes

# A message head at most this long (dockerd's Go server takes 1 MiB; the CLI's largest,
# a build's X-Registry-Config, is a few kB per registry). It is also each connection's
# read buffer: a peer that sends what the gate is not reading yet (a stalled body, a
# client that does not read its answer) pins at most twice this before reads pause.
MAX_HEAD = 256 << 10
READ_SIZE = 1 << 18  # bulk streams: fewer, larger reads and writes
CRLF = b"\r\n"

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The common, well-formed request head, checked in two regex passes: a request line,
# then field lines that are all ``token:value`` without control characters. Anything
# else goes through the line-by-line parser, which says what is wrong.
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[\x21-\x7e]*) (HTTP/1\.[01])\r\n")
_FIELD_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{1,18})(?: ([^\r\n]*))?\r\n")
_HEXDIGITS = re.compile(rb"[0-9a-fA-F]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,18}")

H2_PREFACE = b"PRI * HTTP/2.0"

# The daemon's response fields the gate reads (Response.field): framing and Connection.
FRAMING_FIELDS = ("transfer-encoding", "content-length", "connection", "keep-alive")
_FRAMING_FIELD = re.compile(rb"\r\n(%b):([^\r]*)" % "|".join(FRAMING_FIELDS).encode(), re.I)


class Writer(Protocol):
    """The part of :class:`asyncio.StreamWriter` the gate uses (the TLS layer mimics it)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: object = None) -> object: ...


class HTTPError(Exception):
    """A malformed message: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The peer closed the connection between messages: not an error."""


class Headers:
    """Header fields in arrival order, names as sent, with case-insensitive lookup.

    The lower-cased names are indexed once, when the head is parsed: a request's
    headers are looked up a dozen times on its way through the gate."""

    __slots__ = ("_index", "items")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self.items: list[tuple[str, str]] = items if items is not None else []
        index: dict[str, list[str]] = {}
        for key, value in self.items:
            index.setdefault(key.lower(), []).append(value)
        self._index = index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self.items == other.items

    def __repr__(self) -> str:
        return f"Headers({self.items!r})"

    def __contains__(self, name: str) -> bool:
        """Whether a ``name`` field (lower-case) is present."""
        return name in self._index

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def has_any(self, names: frozenset[str]) -> bool:
        """Whether a field named in ``names`` (lower-case) is present."""
        return not names.isdisjoint(self._index)

    def tokens(self, name: str) -> set[str]:
        """Comma-separated tokens of every ``name`` field, lower-cased (e.g. Connection)."""
        out: set[str] = set()
        for value in self.get_all(name):
            out.update(t.strip().lower() for t in value.split(",") if t.strip())
        return out

    def without(self, names: Iterable[str]) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names}
        return [(k, v) for k, v in self.items if k.lower() not in drop]


@dataclass(slots=True)
class Request:
    method: str
    target: str  # as sent: forwarded unchanged
    version: str
    headers: Headers
    content_length: int | None  # None with chunked
    chunked: bool
    body_read: bool = False  # the body was consumed (inspected) already
    body_started: bool = False  # part of the body was streamed on: the rest cannot be skipped
    raw_head: bytes = b""  # as received (and validated): forwarded as is when nothing changes

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        parts = self.target.split("?", 1)
        return parts[1] if len(parts) > 1 else ""

    @property
    def keep_alive(self) -> bool:
        return _keep_alive(self.version, self.headers)

    @property
    def upgrade(self) -> str | None:
        """The Upgrade protocol when the request asks for one (Connection: Upgrade)."""
        value = self.headers.get("upgrade")
        if value and "upgrade" in self.headers.tokens("connection"):
            return value.strip()
        return None


class Response:
    """The daemon's response head. It is forwarded as is, so only the fields the gate
    acts on (framing, Connection: ``FRAMING_FIELDS``) are read from it, in one regex
    pass over the raw bytes; the full :class:`Headers` are parsed only when a head has
    to be rewritten."""

    __slots__ = ("_framing", "_headers", "raw_head", "reason", "status", "version")

    def __init__(self, version: str, status: int, reason: str, raw_head: bytes) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.raw_head = raw_head
        framing: dict[str, bytes] = {}
        for name, value in _FRAMING_FIELD.findall(raw_head):
            framing.setdefault(name.lower().decode("ascii"), value)  # the first one counts
        self._framing = framing
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = _response_fields(self.raw_head)
        return self._headers

    def field(self, name: str) -> str | None:
        """The first ``name`` field's value (``name`` lower-case, one of
        ``FRAMING_FIELDS``), or None."""
        value = self._framing.get(name)
        return None if value is None else value.strip(b" \t").decode("latin-1")

    @property
    def keep_alive(self) -> bool:
        conn = self.field("connection")
        tokens = {t.strip().lower() for t in conn.split(",")} if conn else set()
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def _keep_alive(version: str, headers: Headers) -> bool:
    """HTTP/1.1 persists unless told to close; HTTP/1.0 only when asked to keep alive."""
    if "connection" not in headers:  # most requests: decided by the version
        return version != "HTTP/1.0"
    conn = headers.tokens("connection")
    if version == "HTTP/1.0":
        return "keep-alive" in conn
    return "close" not in conn


def _split_head(raw: bytes) -> tuple[bytes, list[bytes]]:
    lines = raw[:-4].split(CRLF)
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise HTTPError(400, "bare CR or LF in the message head")
    return lines[0], lines[1:]


def _parse_fields(lines: list[bytes]) -> Headers:
    items: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HTTPError(400, "obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HTTPError(400, f"malformed header line {line[:60]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HTTPError(400, f"control character in header {name.decode()!r}")
        items.append((name.decode("ascii"), value.decode("latin-1")))
    return Headers(items)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read up to and including the blank line; ClientGone on a clean EOF before it."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            raise ClientGone() from None
        if exc.partial.startswith(H2_PREFACE):
            raise HTTPError(505, "HTTP/2 is not supported; use HTTP/1.1") from None
        raise HTTPError(400, "connection closed in the middle of a message head") from None
    except asyncio.LimitOverrunError:
        limit = getattr(reader, "_limit", MAX_HEAD)  # a connection counted nowhere: less
        raise HTTPError(431, f"message head larger than {limit >> 10} KiB") from None


def _parse_request_head(raw: bytes) -> tuple[bytes, bytes, bytes, Headers]:
    """Method, target, version and fields, each line checked on its own so that a
    refusal names what is wrong."""
    start, lines = _split_head(raw)
    if start.startswith(H2_PREFACE):
        raise HTTPError(505, "HTTP/2 is not supported; use HTTP/1.1")
    parts = start.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HTTPError(400, f"malformed request line {start[:80]!r}")
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        raise HTTPError(505, f"unsupported protocol {version[:20]!r}")
    if not _TARGET.fullmatch(target):
        raise HTTPError(400, "request target must be an absolute path without spaces")
    return method, target, version, _parse_fields(lines)


def parse_request(raw: bytes) -> Request:
    first = _REQUEST_LINE.match(raw)
    if first is not None and _FIELD_LINES.fullmatch(raw, first.end(), len(raw) - 2):
        # Every line well-formed (the same rules as _parse_request_head's): split only.
        method, target, version = first.groups()
        items = []
        if len(raw) - first.end() > 2:
            for line in raw[first.end() : -4].split(CRLF):
                name, _, value = line.partition(b":")
                items.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
        headers = Headers(items)
    else:
        method, target, version, headers = _parse_request_head(raw)
    lengths = headers.get_all("content-length")
    codings = headers.get_all("transfer-encoding")
    if lengths and codings:
        raise HTTPError(400, "both Content-Length and Transfer-Encoding: ambiguous body")
    content_length: int | None = 0
    chunked = False
    if codings:
        if len(codings) != 1 or codings[0].strip().lower() != "chunked":
            raise HTTPError(501, f"unsupported Transfer-Encoding {', '.join(codings)!r}")
        if version == b"HTTP/1.0":
            raise HTTPError(400, "chunked body in an HTTP/1.0 request")
        chunked, content_length = True, None
    elif lengths:
        if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0].encode()):
            raise HTTPError(400, f"invalid Content-Length {', '.join(lengths)!r}")
        content_length = int(lengths[0])
    return Request(
        method.decode("ascii"),
        target.decode("ascii"),
        version.decode("ascii"),
        headers,
        content_length,
        chunked,
        raw_head=raw,
    )


def parse_response(raw: bytes) -> Response:
    """The daemon's head. Lighter than the request parser: this side is trusted for
    syntax and the head is forwarded as is; only framing is read from it. A bare CR
    or LF inside the head is still refused: it would let a confused daemon answer
    frame the client's next response."""
    first = _STATUS_LINE.match(raw)
    if first is None:
        raise HTTPError(502, f"malformed response line from the daemon {raw[:80]!r}")
    body = raw[:-4]
    lines = body.count(CRLF)
    if body.count(b"\n") != lines or body.count(b"\r") != lines:
        raise HTTPError(502, "bare CR or LF in the daemon's response head")
    version, status, reason = first.groups(b"")
    return Response(version.decode("ascii"), int(status), reason.decode("latin-1"), raw)


def _response_fields(raw: bytes) -> Headers:
    items = []
    for line in raw[:-4].split(CRLF)[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HTTPError(502, f"malformed header from the daemon {line[:60]!r}")
        items.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return Headers(items)


def render_head(start: str, headers: Iterable[tuple[str, str]]) -> bytes:
    out = [start]
    out.extend(f"{k}: {v}" for k, v in headers)
    out.append("\r\n")
    return "\r\n".join(out).encode("latin-1")


def body_length(resp: Response, request_method: str) -> int | None:
    """Content length of a response body: -1 chunked, None until close, else bytes."""
    if request_method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
        return 0
    te = resp.field("transfer-encoding")
    if te is not None:
        if te.strip().lower() != "chunked":
            raise HTTPError(502, f"unsupported Transfer-Encoding {te!r} from the daemon")
        return -1
    cl = resp.field("content-length")
    if cl is not None:
        if not _DIGITS.fullmatch(cl.encode()):
            raise HTTPError(502, f"invalid Content-Length {cl!r} from the daemon")
        return int(cl)
    return None


async def read_whole_body(reader: asyncio.StreamReader, length: int | None) -> bytes:
    """A response body in full, ``length`` as :func:`body_length` gives it."""
    size = None if length in (None, -1) else length
    return b"".join([c async for c in iter_body(reader, size, length == -1)])


def with_length(resp: Response, body: bytes, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """The response's status and headers re-framed for ``body`` (Content-Length,
    no chunking, no connection headers), then the body: a buffered answer."""
    headers = resp.headers.without(
        {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length"}
    )
    headers.append(("Content-Length", str(len(body))))
    headers.extend(extra)
    start = resp.raw_head.split(CRLF, 1)[0].decode("latin-1")
    return render_head(start, headers) + body


async def _chunk_size(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    try:
        line = await reader.readuntil(CRLF)
    except asyncio.IncompleteReadError:
        raise HTTPError(400, "body ended in the middle of a chunk") from None
    except asyncio.LimitOverrunError:
        raise HTTPError(400, "chunk size line too long") from None
    size = line[:-2].split(b";", 1)[0].strip(b" \t")
    if not _HEXDIGITS.fullmatch(size):
        raise HTTPError(400, f"malformed chunk size {line[:40]!r}")
    return int(size, 16), line


async def _skip_trailers(reader: asyncio.StreamReader) -> bytes:
    raw = bytearray()
    while True:
        try:
            line = await reader.readuntil(CRLF)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise HTTPError(400, "malformed chunked trailer") from None
        raw += line
        if line == CRLF:
            return bytes(raw)
        if len(raw) > MAX_HEAD:
            raise HTTPError(400, "chunked trailer too large")


async def iter_body(
    reader: asyncio.StreamReader, length: int | None, chunked: bool
) -> AsyncIterator[bytes]:
    """Yield the decoded body of a message as it arrives (never buffered whole)."""
    if chunked:
        while True:
            size, _ = await _chunk_size(reader)
            if size == 0:
                await _skip_trailers(reader)
                return
            while size:
                data = await reader.read(min(size, READ_SIZE))
                if not data:
                    raise HTTPError(400, "body ended in the middle of a chunk")
                size -= len(data)
                yield data
            try:
                if await reader.readexactly(2) != CRLF:
                    raise HTTPError(400, "chunk data not followed by CRLF")
            except asyncio.IncompleteReadError:
                raise HTTPError(400, "body ended in the middle of a chunk") from None
    elif length is None:
        while data := await reader.read(READ_SIZE):
            yield data
    else:
        remaining = length
        while remaining:
            data = await reader.read(min(remaining, READ_SIZE))
            if not data:
                raise HTTPError(400, f"body shorter than its Content-Length ({length})")
            remaining -= len(data)
            yield data


async def read_body(
    reader: asyncio.StreamReader, length: int | None, chunked: bool, cap: int
) -> bytes:
    """Read a whole body to inspect it; 413 past ``cap``."""
    if length is not None and length > cap:
        raise HTTPError(413, f"body of {length} bytes is over the {cap}-byte inspection limit")
    buf = bytearray()
    async for data in iter_body(reader, length, chunked):
        buf += data
        if len(buf) > cap:
            raise HTTPError(413, f"body is over the {cap}-byte inspection limit")
    return bytes(buf)


def unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Put bytes read ahead back in front of the reader's buffer (a pipelined request,
    or what follows a response on a kept-alive daemon connection)."""
    if data:
        reader._buffer[:0] = data  # type: ignore[attr-defined]


class ChunkScanner:
    """Finds where a chunked body ends in the bytes as they arrive, without decoding
    it, so a relay can pass through everything a read returned in one write.

    Writing chunk by chunk cost one system call per chunk (Go's server sends a 40 kB
    answer as ten 4 kB chunks); this way a burst goes out in one write and a slow
    stream still goes out the moment each piece arrives."""

    __slots__ = ("_line", "_remaining", "_state", "_trailer")

    def __init__(self) -> None:
        self._state = 0  # 0: size line, 1: chunk data (+CRLF), 2: trailer lines
        self._line = bytearray()
        self._remaining = 0
        self._trailer = 0

    def feed(self, data: bytes) -> tuple[int, bool]:
        """How many bytes of ``data`` belong to the body, and whether it ended there.

        Per chunk this is one ``find`` and a few slices (a 1.3 MB list is ~320 chunks:
        the scan was a third of the gate's CPU for it)."""
        i, n = 0, len(data)
        find = data.find
        while i < n:
            if self._state == 1:
                take = min(self._remaining, n - i)
                i += take
                self._remaining -= take
                if not self._remaining:
                    self._state = 0
                continue
            eol = find(b"\n", i)
            if eol < 0:
                self._line += data[i:]
                if len(self._line) > 4096:
                    raise HTTPError(502, "chunk size line from the daemon too long")
                break
            if self._line:  # the line began in an earlier piece
                self._line += data[i : eol + 1]
                line, self._line = bytes(self._line), bytearray()
            else:
                line = data[i : eol + 1]
            i = eol + 1
            if len(line) > 4096:
                raise HTTPError(502, "chunk size line from the daemon too long")
            if line[-2:] != CRLF:
                raise HTTPError(502, f"malformed chunked framing from the daemon {line[:40]!r}")
            if self._state == 2:
                if line == CRLF:
                    return i, True
                self._trailer += len(line)
                if self._trailer > MAX_HEAD:
                    raise HTTPError(502, "chunked trailer from the daemon too large")
                continue
            text = line[:-2]
            if b";" in text:
                text = text.split(b";", 1)[0]
            text = text.strip(b" \t")
            if not _HEXDIGITS.fullmatch(text):
                raise HTTPError(502, f"malformed chunk size from the daemon {line[:40]!r}")
            size = int(text, 16) + 2  # data, then CRLF
            if size == 2:
                self._state = 2
            elif i + size <= n:
                i += size  # the whole chunk is here: on to the next size line
            else:
                self._state, self._remaining = 1, size - (n - i)
                i = n
        return n, False


async def relay_chunked_raw(
    reader: asyncio.StreamReader, writer: Writer, head: bytes = b"", hold: int = 0
) -> None:
    """Pass a chunked body through byte for byte, writing whatever has arrived at once.

    Used for responses: a stream's chunk boundaries (docker-py yields one item per
    chunk) and its timing survive, and nothing waits for a chunk to complete. Bytes
    after the body's end stay in the reader for the next response.

    ``head`` (the response head) shares the first write with the body bytes that came
    with it: one syscall and one wake-up of the client fewer per answer. If no body
    byte is there yet, the head goes out alone at once: a quiet stream (``logs -f``,
    ``events``) must not hold back its head.

    ``hold`` is for answers that end by themselves (lists, inspects): their bytes are
    kept until the end, or until ``hold`` bytes wait, and go out in one write. Go's
    server sends a 40 kB list as ten 4 kB chunks, often read one by one, and the
    client parses nothing before the end anyway: one wake-up of the client instead of
    ten."""
    if head and not hold and not reader._buffer:  # type: ignore[attr-defined]
        writer.write(head)
        head = b""
    scanner = ChunkScanner()
    held: list[bytes] = [head] if head else []
    size = len(head)
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            raise HTTPError(502, "daemon closed the stream in the middle of a chunked body")
        used, done = scanner.feed(data)
        held.append(data if used == len(data) else data[:used])
        size += used
        if done or size >= hold:
            writer.write(held[0] if len(held) == 1 else b"".join(held))
            held.clear()
            size = 0
            await writer.drain()
        if done:
            unread(reader, data[used:])
            return


def decode_path(path: str) -> str:
    """Percent-decode a path the way Go's url.Parse does for routing."""
    if "%" not in path:
        return path
    try:
        return unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "request path is not valid UTF-8 after percent-decoding") from None
