"""A bug in a route handler answers 500 with a dockergate message (nothing is
forwarded) instead of dropping the client's connection without a word."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from dockergate.api import dispatch as d
from dockergate.api.routes import Route
from dockergate.listen.identity import Refusal


def admin_exchange(route: str) -> Any:
    """Just what dispatch reads of an admin's request to ``route``."""
    return SimpleNamespace(
        admin=True,
        route=Route("GET", "/test", route, None, "read"),
        path="/test",
        identity=SimpleNamespace(name="root", profile="admin"),
    )


@pytest.mark.parametrize("error", [ValueError("bad"), KeyError("k"), TypeError("t")])
def test_handler_bug_is_a_500_refusal(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    async def broken(ex: Any) -> None:
        raise error

    monkeypatch.setitem(d.HANDLERS, "test.broken", broken)
    ex = admin_exchange("test.broken")
    with pytest.raises(Refusal) as caught:
        asyncio.run(d.dispatch(ex))
    assert caught.value.status == 500
    assert "internal error" in str(caught.value) and "nothing was forwarded" in str(caught.value)


def test_io_errors_still_end_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async def gone(ex: Any) -> None:
        raise ConnectionResetError("client left")

    monkeypatch.setitem(d.HANDLERS, "test.gone", gone)
    ex = admin_exchange("test.gone")
    with pytest.raises(ConnectionResetError):
        asyncio.run(d.dispatch(ex))
