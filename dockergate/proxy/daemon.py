"""The gate's own calls to the daemon (resolve a reference, read labels, count usage).

They share the keep-alive pool with forwarded traffic: an ownership check costs one
round-trip on an open connection, not a new connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from dockergate.policy.rules import NodeFacts
from dockergate.proxy.http import (
    ClientGone,
    HTTPError,
    Response,
    body_length,
    parse_response,
    read_head,
    read_whole_body,
    with_length,
)
from dockergate.proxy.upstream import Upstream, UpstreamError

FACTS_TTL = 30.0

API_PREFIX = "/v1.41"  # the oldest API the gate supports; fields it reads exist there


class DaemonReply:
    def __init__(self, status: int, body: bytes, response: Response | None = None) -> None:
        self.status = status
        self.body = body
        self.response = response

    def relay(self, body: bytes | None = None) -> bytes:
        """The daemon's answer as the client would have had it (headers kept, framed by
        length): lets the gate answer an inspect with the inspect it just made (or
        with ``body``, what the gate lets the caller see of it)."""
        assert self.response is not None
        return with_length(self.response, self.body if body is None else body)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Daemon:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._facts: NodeFacts | None = None
        self._facts_at = 0.0

    async def call(
        self, method: str, path: str, body: bytes | None = None, api: str = API_PREFIX
    ) -> DaemonReply:
        head = f"{method} {api}{path} HTTP/1.1\r\nHost: docker\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = head.encode() + b"\r\n" + (body or b"")
        for attempt in (0, 1):
            conn = await self.upstream.acquire()
            try:
                conn.writer.write(data)
                await conn.writer.drain()
                resp = parse_response(await read_head(conn.reader))
                length = body_length(resp, method)
                body = await read_whole_body(conn.reader, length)
            except (ConnectionError, OSError, ClientGone, asyncio.IncompleteReadError) as exc:
                conn.close()
                if conn.reused and attempt == 0:
                    continue
                raise UpstreamError(
                    f"Docker daemon unreachable at {self.upstream.url}: {exc}"
                ) from exc
            except HTTPError as exc:
                conn.close()
                raise UpstreamError(f"bad answer from the daemon: {exc.message}") from exc
            if resp.keep_alive and length is not None:
                self.upstream.release(conn)
            else:
                conn.close()
            return DaemonReply(resp.status, body, resp)
        raise AssertionError("unreachable")

    async def get(self, path: str, api: str = API_PREFIX) -> DaemonReply:
        return await self.call("GET", path, api=api)

    async def facts(self) -> NodeFacts:
        """RAM, CPUs and Swarm role of the engine, from ``/info`` (cached 30 s)."""
        now = time.monotonic()
        if self._facts is None or now - self._facts_at > FACTS_TTL:
            reply = await self.get("/info")
            info = reply.json() if reply.ok else {}
            swarm = (info or {}).get("Swarm") or {}
            self._facts = NodeFacts(
                mem_total=int((info or {}).get("MemTotal") or 0),
                ncpu=int((info or {}).get("NCPU") or 0),
                manager=bool(swarm.get("ControlAvailable")),
                worker=swarm.get("LocalNodeState") == "active"
                and not swarm.get("ControlAvailable"),
                log_driver=str((info or {}).get("LoggingDriver") or "json-file"),
                tasks_max=node_tasks_max(),
            )
            self._facts_at = now
        return self._facts


def node_tasks_max(proc: str = "/proc/sys/kernel") -> int:
    """Processes and threads this node may run: the lower of ``pid_max`` and
    ``threads-max`` (0 if unknown). Read where the gate runs: one gate per node."""
    values = []
    for name in ("pid_max", "threads-max"):
        try:
            with open(f"{proc}/{name}") as f:
                values.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    return min(values) if values else 0


def ref(value: str) -> str:
    """A path segment for a user-supplied reference (names may hold any character)."""
    return quote(value, safe="")
