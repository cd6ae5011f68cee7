"""ChunkScanner: where a chunked body ends, however the bytes are split by reads."""

from __future__ import annotations

import pytest

from dockergate.proxy.http import ChunkScanner, HTTPError

BODY = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n"
NEXT = b"HTTP/1.1 200 OK\r\n"


def scan(pieces: list[bytes]) -> tuple[bytes, bytes]:
    """Feed the pieces; return (the body as relayed, the bytes left after it)."""
    scanner = ChunkScanner()
    out = b""
    for k, piece in enumerate(pieces):
        used, done = scanner.feed(piece)
        out += piece[:used]
        if done:
            return out, piece[used:] + b"".join(pieces[k + 1 :])
        assert used == len(piece)
    raise AssertionError("the body never ended")


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_every_split_point(cut: int) -> None:
    data = BODY + NEXT
    assert scan([data[:cut], data[cut:]]) == (BODY, NEXT)


def test_byte_by_byte_and_whole() -> None:
    data = BODY + NEXT
    assert scan([data[i : i + 1] for i in range(len(data))]) == (BODY, NEXT)
    assert scan([data]) == (BODY, NEXT)
    assert scan([b"0\r\n\r\n"]) == (b"0\r\n\r\n", b"")


def test_data_containing_framing_lookalikes() -> None:
    body = b"5\r\n0\r\n\r\n\r\n0\r\n\r\n"  # the chunk's data is "0\r\n\r\n"
    assert scan([body]) == (body, b"")


@pytest.mark.parametrize(
    "data",
    [b"zz\r\nab\r\n", b"4\nWiki\r\n", b"0\r\nX: 1\n\r\n", b"1" * 5000],
)
def test_malformed_framing_is_a_502(data: bytes) -> None:
    with pytest.raises(HTTPError) as caught:
        ChunkScanner().feed(data)
    assert caught.value.status == 502
