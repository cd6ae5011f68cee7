"""Record the JSON request bodies a real client sends, for the schema tests.

Not a test.  Run a relay on a unix socket in front of a dockerd, point the client
at it, and every request with a JSON body is written to OUT_DIR as
``NNN-METHOD-path.json`` (the body exactly as sent) so it can be reviewed, renamed
and kept under tests/unit/bodies/::

    python tests/unit/bodies/capture.py /tmp/cap.sock /tmp/dt/docker.sock /tmp/cap-out &
    DOCKER_HOST=unix:///tmp/cap.sock docker run --rm busybox true

The relay copies bytes both ways untouched; it only parses the client's side to
find request bodies (Content-Length or chunked) and stops parsing a connection
after a request that asks to upgrade (attach, exec start), since what follows is
a raw stream.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys

COUNTER = itertools.count(1)


class RequestSniffer:
    """Incremental HTTP/1.1 request parser over the client-to-daemon bytes."""

    def __init__(self, out_dir: str) -> None:
        self.buf = b""
        self.out_dir = out_dir
        self.dead = False

    def feed(self, data: bytes) -> None:
        if self.dead:
            return
        self.buf += data
        while not self.dead:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])
            }
            rest = self.buf[end + 4 :]
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body, used = self._chunked(rest)
                if body is None:
                    return
            else:
                n = int(headers.get("content-length", "0"))
                if len(rest) < n:
                    return
                body, used = rest[:n], n
            self.buf = rest[used:]
            if body and "json" in headers.get("content-type", ""):
                self._save(method, target, body)
            if "upgrade" in headers.get("connection", "").lower():
                self.dead = True

    @staticmethod
    def _chunked(data: bytes) -> tuple[bytes | None, int]:
        body = b""
        pos = 0
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None, 0
            size = int(data[pos:eol].split(b";")[0], 16)
            start = eol + 2
            if size == 0:
                trailer_end = data.find(b"\r\n", start)
                if trailer_end < 0:
                    return None, 0
                return body, trailer_end + 2
            if len(data) < start + size + 2:
                return None, 0
            body += data[start : start + size]
            pos = start + size + 2

    def _save(self, method: str, target: str, body: bytes) -> None:
        path = re.sub(r"^/v[0-9.]+", "", target.split("?")[0])
        slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
        name = f"{next(COUNTER):03d}-{method}-{slug}.json"
        with open(os.path.join(self.out_dir, name), "wb") as f:
            f.write(body)
        print(f"{name}: {target}", flush=True)


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sniff: RequestSniffer | None
) -> None:
    try:
        while data := await reader.read(65536):
            if sniff is not None:
                sniff.feed(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def main(listen: str, upstream: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_unix_connection(upstream)
        await asyncio.gather(pipe(cr, uw, RequestSniffer(out_dir)), pipe(ur, cw, None))
        cw.close()
        uw.close()

    server = await asyncio.start_unix_server(handle, path=listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
