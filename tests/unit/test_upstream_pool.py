"""The daemon connection pool closes what stayed idle too long (round 31f)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dockergate.proxy.upstream import IDLE_TTL, Upstream


async def test_connections_idle_past_the_ttl_are_closed_oldest_first(tmp_path: Path) -> None:
    """acquire() takes the newest, so after a burst the oldest were never looked at:
    release() and the gate's sweeper (trim) close them."""
    sock = str(tmp_path / "d.sock")
    server = await asyncio.start_unix_server(lambda r, w: None, path=sock)
    try:
        pool = Upstream(f"unix://{sock}")
        conns = [await pool.acquire() for _ in range(3)]
        for conn in conns:
            pool.release(conn)
        assert len(pool._idle) == 3
        conns[0].idle_since -= IDLE_TTL + 1  # the burst's first, long ago
        conns[1].idle_since -= IDLE_TTL + 1
        pool.trim()
        assert pool._idle == [conns[2]]
        assert conns[0].writer.is_closing() and conns[1].writer.is_closing()
        pool.close()
    finally:
        server.close()
        await server.wait_closed()
