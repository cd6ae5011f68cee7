"""The gate on each event loop it can run on.

uvloop is a dependency and the default (``event_loop: auto``), so the rest of the
suite runs the gate on it; ``event_loop: asyncio`` is the fallback where uvloop has
no wheel. Both relay hijacked streams through different transport classes (the TLS
half-close in particular), so the fallback gets the streaming checks here: stdin
half-close, late output after the client's half-close, a chunked stream, over the
unix socket and over TLS.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import describe, wait_until

pytestmark = pytest.mark.timeout(120)


def ok(r: Any) -> Any:
    assert r.returncode == 0, describe(r)
    return r


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_gate(request, gate_factory):
    g = gate_factory(env={"DOCKERGATE_EVENT_LOOP": request.param})
    return request.param, g


def test_auto_is_uvloop(gate):
    """What users get (and what bench/ measures): the session gate, on defaults."""
    wait_until(lambda: "event loop: uvloop" in gate.log(), timeout=5, what="gate's loop line")


def test_streams_on_each_loop(cli, loop_gate, listener, names):
    name, g = loop_gate
    if name == "uvloop":
        wait_until(lambda: "event loop: uvloop" in g.log(), timeout=5, what="uvloop line")
    else:
        assert "event loop: uvloop" not in g.log()
    # stdin to EOF, then the output after the client's half-close
    r = ok(cli(["run", "--rm", "-i", "busybox", "cat"], listener=listener, gate=g, input="foo\n"))
    assert r.stdout == "foo\n"
    c = names("c")
    ok(cli(["run", "-d", "--name", c, "busybox", "sleep", "60"], listener=listener, gate=g))
    try:
        r = ok(cli(["exec", c, "sh", "-c", "sleep .5; echo late"], listener=listener, gate=g))
        assert r.stdout == "late\n"
        r = ok(cli(["exec", "-i", c, "cat"], listener=listener, gate=g, input="bar\n"))
        assert r.stdout == "bar\n"
        # a chunked stream that ends by itself, and an inspect (a finite answer)
        ok(cli(["logs", c], listener=listener, gate=g))
        r = ok(cli(["inspect", "-f", "{{.State.Running}}", c], listener=listener, gate=g))
        assert r.stdout.strip() == "true"
    finally:
        cli(["rm", "-f", c], listener="direct")
