"""The request parser refuses what two HTTP parsers could read differently."""

from __future__ import annotations

import asyncio

import pytest

from dockergate.proxy.http import HTTPError, iter_body, parse_request, parse_response, read_body


def req(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def test_simple_get() -> None:
    r = parse_request(req("GET /v1.41/containers/json?all=1 HTTP/1.1\nHost: docker\n\n"))
    assert (r.method, r.target, r.version) == ("GET", "/v1.41/containers/json?all=1", "HTTP/1.1")
    assert r.path == "/v1.41/containers/json" and r.query == "all=1"
    assert r.keep_alive and not r.has_body and r.upgrade is None


def test_upgrade_with_body() -> None:
    r = parse_request(
        req("POST /exec/x/start HTTP/1.1\nConnection: Upgrade\nUpgrade: tcp\nContent-Length: 2\n\n")
    )
    assert r.upgrade == "tcp" and r.content_length == 2


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GET /x HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n", 400),
        ("GET /x HTTP/1.1\nContent-Length: 1\nContent-Length: 2\n\n", 400),
        ("GET /x HTTP/1.1\nContent-Length: -1\n\n", 400),
        ("GET /x HTTP/1.1\nContent-Length: 0x10\n\n", 400),
        ("GET /x HTTP/1.1\nTransfer-Encoding: gzip, chunked\n\n", 501),
        ("GET /x HTTP/1.1\nHost : docker\n\n", 400),
        ("GET /x HTTP/1.1\nX: a\n b\n\n", 400),
        ("GET /x HTTP/1.1\nX: a\x00b\n\n", 400),
        ("GET http://evil/x HTTP/1.1\n\n", 400),
        ("GET /x y HTTP/1.1\n\n", 400),
        ("GET /x HTTP/2.0\n\n", 505),
        ("PRI * HTTP/2.0\n\n", 505),
        ("GET /x\n\n", 400),
    ],
)
def test_refused(head: str, status: int) -> None:
    with pytest.raises(HTTPError) as info:
        parse_request(req(head))
    assert info.value.status == status


def test_bare_lf_refused() -> None:
    with pytest.raises(HTTPError):
        parse_request(b"GET /x HTTP/1.1\r\nA: b\nC: d\r\n\r\n")


def test_response() -> None:
    r = parse_response(req("HTTP/1.1 101 UPGRADED\nUpgrade: tcp\nConnection: Upgrade\n\n"))
    assert r.status == 101 and r.reason == "UPGRADED"


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_chunked_body_decoded() -> None:
    reader = _reader(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\nNEXT")
    assert await read_body(reader, None, True, 100) == b"abcde"
    assert await reader.read() == b"NEXT"


async def test_chunked_malformed() -> None:
    with pytest.raises(HTTPError):
        await read_body(_reader(b"zz\r\nabc\r\n0\r\n\r\n"), None, True, 100)
    with pytest.raises(HTTPError):
        await read_body(_reader(b"3\r\nabcX\r\n0\r\n\r\n"), None, True, 100)


async def test_body_cap_and_truncation() -> None:
    with pytest.raises(HTTPError) as info:
        await read_body(_reader(b"x" * 10), 10, False, 5)
    assert info.value.status == 413
    with pytest.raises(HTTPError):
        await read_body(_reader(b"abc"), 10, False, 100)


async def test_iter_body_streams_pieces() -> None:
    pieces = [p async for p in iter_body(_reader(b"hello"), 5, False)]
    assert b"".join(pieces) == b"hello"


def _heads() -> list[bytes]:
    """Request heads around every rule of the strict parser: each byte of a small
    alphabet in a name, a value and the request line."""
    base = [
        b"GET /_ping HTTP/1.1\r\n\r\n",
        b"GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST /v1.41/containers/create?name=a HTTP/1.1\r\nHost: d\r\n"
        b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n",
        b"GET /x HTTP/1.1\r\nA:\r\nB: \t v:w \t\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\n",
    ]
    out = list(base)
    for byte in [*range(0, 0x21), 0x3A, 0x7F, 0x80, 0xFF, 0x22, 0x28]:
        c = bytes([byte])
        out.append(b"GET /x HTTP/1.1\r\nNa" + c + b"me: v\r\n\r\n")
        out.append(b"GET /x HTTP/1.1\r\nName: v" + c + b"v\r\n\r\n")
        out.append(b"GET /x HTTP/1.1\r\n" + c + b"Name: v\r\n\r\n")
        out.append(b"G" + c + b"T /x HTTP/1.1\r\n\r\n")
        out.append(b"GET /x" + c + b" HTTP/1.1\r\n\r\n")
        out.append(b"GET /x HTTP/1." + c + b"\r\nA: b\r\n\r\n")
    return out


@pytest.mark.parametrize("raw", _heads())
def test_fast_and_line_by_line_parsers_agree(raw: bytes) -> None:
    """parse_request reads a well-formed head with two regex passes and anything else
    line by line: both must take and refuse the same heads, with the same fields."""
    from dockergate.proxy.http import _parse_request_head

    try:
        method, target, version, headers = _parse_request_head(raw)
    except HTTPError as exc:
        with pytest.raises(HTTPError) as seen:
            parse_request(raw)
        assert (seen.value.status, seen.value.message) == (exc.status, exc.message)
        return
    try:
        req = parse_request(raw)
    except HTTPError as exc:  # the framing rules after the head (Content-Length ...)
        assert exc.status in (400, 501)
        return
    assert (req.method, req.target, req.version) == (
        method.decode(),
        target.decode(),
        version.decode(),
    )
    assert req.headers.items == headers.items
