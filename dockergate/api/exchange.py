"""One request on its way through the gate, as the API handlers see and shape it.

A handler may refuse (raise :class:`Refusal`), rewrite the forwarded target (full
IDs, owner filters), replace the body with the checked and re-encoded one, or ask
for the daemon's answer to be filtered before the client sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dockergate.api import query as q
from dockergate.api.body import BodyError, dumps, loads_strict
from dockergate.api.routes import Route
from dockergate.api.schema import parse_body
from dockergate.listen.identity import Identity, Refusal
from dockergate.policy.model import Profile
from dockergate.proxy.http import HTTPError, Request, read_body

if TYPE_CHECKING:
    from dockergate.proxy.daemon import Daemon
    from dockergate.server import Gate

ADMIN_PROFILE = Profile("admin", admin=True)

# Container and service specs are a few kB; the largest inspected bodies are Swarm
# configs (at most 1000 kB of data, base64 in JSON: about 1.4 MB). A larger body on an
# inspected route is refused, never passed. The whole body must arrive within
# BODY_TIMEOUT, and one user's requests hold at most BODY_SLOTS bodies at a time: the
# gate keeps each in memory until then.
INSPECT_CAP = 2 << 20
BODY_TIMEOUT = 60.0

ResponseFilter = Callable[[bytes], Awaitable[bytes]]  # a whole JSON answer -> what goes out
EventFilter = Callable[[dict[str, Any]], Awaitable[bool]]


class BodyCheck(Protocol):
    """A streamed body the gate reads as it passes (a build context): forwarded as it
    arrives, except what would let the daemon act on it, held until :meth:`finish`."""

    @property
    def complete(self) -> bool:
        """The daemon could act on what it has been sent so far plus the last piece
        fed: hold everything from that piece on."""
        ...

    def feed(self, data: bytes) -> None: ...

    async def finish(self) -> None:
        """The whole body has been fed; raise :class:`Refusal` to cut it off."""
        ...


@dataclass(slots=True)
class Exchange:
    req: Request
    identity: Identity
    path: str  # normalised, for matching
    version: str | None
    route: Route | None
    params: dict[str, str]
    daemon: Daemon
    reader: asyncio.StreamReader
    target: str = ""  # what is forwarded; the original unless a handler rewrites it
    body: bytes | None = None  # the checked, re-encoded body when the route is inspected
    # Whole JSON answers of status 200 or 201 (lists; a create's, for its audit row).
    response_filter: ResponseFilter | None = None
    event_filter: EventFilter | None = None  # line-delimited JSON streams (events)
    body_check: BodyCheck | None = None  # a streamed body read on its way (build context)
    profile: Profile = ADMIN_PROFILE
    gate: Gate | None = None
    object_id: str | None = None  # for the audit log
    detail: str | None = None  # for the audit log: e.g. the name a create asked for
    held: list[asyncio.Lock] = field(default_factory=list)  # released after forwarding
    on_release: list[Callable[[], None]] = field(default_factory=list)  # run then too
    status: int = 0  # the answer's status, once it went out (for on_release callbacks)
    # Volume names the request would use: (name, field, the caller's own volume is here).
    # Claimed once every check has passed (volumes.claim_names): a refused request
    # must not keep a name.
    volume_claims: list[tuple[str, str, bool]] = field(default_factory=list)
    # The gate's own answer (``/_dockergate/...``): (status, JSON body); nothing is forwarded.
    reply: tuple[int, Any] | None = None
    raw_reply: bytes | None = None  # a complete daemon answer the gate already holds
    # Sends "100 Continue" to a client waiting for it before sending the body.
    send_continue: Callable[[], Awaitable[None]] | None = None
    _query: q.Query | None = None

    def __post_init__(self) -> None:
        if not self.target:
            self.target = self.req.target

    @property
    def admin(self) -> bool:
        return self.identity.admin

    @property
    def shared_volume_names(self) -> frozenset[str]:
        """Shared volume names of every profile (of the caller's, without a gate)."""
        if self.gate is not None:
            return self.gate.profiles.shared_volume_names
        return frozenset(v.name for v in self.profile.shared_volumes)

    @property
    def query(self) -> q.Query:
        if self._query is None:
            self._query = q.parse_query(self.req.query)
        return self._query

    def set_query(self, query: q.Query, encoded: str | None = None) -> None:
        """Forward ``query`` (``encoded``: its encoding, when the caller has it)."""
        self._query = query
        path = self.target.split("?", 1)[0]
        if encoded is None:
            encoded = q.encode(query)
        self.target = f"{path}?{encoded}" if encoded else path

    def forward_to(self, path: str) -> None:
        """Forward to ``path`` (normalised form, e.g. with a full ID) under the same API
        version, keeping the (possibly rewritten) query."""
        prefix = f"/v{self.version}" if self.version else ""
        query = self.target.split("?", 1)[1] if "?" in self.target else ""
        self.target = prefix + path + (f"?{query}" if query else "")

    async def read_held_body(self, cap: int) -> bytes:
        """Read a body the gate holds whole before acting (an inspected body, an
        attach's): at most ``cap`` bytes, all within BODY_TIMEOUT, and at most
        BODY_SLOTS of one user's at a time, so that stalled bodies pin little memory."""
        req = self.req
        expect = (req.headers.get("expect") or "").lower()
        if self.send_continue is not None and expect == "100-continue":
            await self.send_continue()  # the client waits for it before sending
            self.send_continue = None
        slot = self.gate.body_slot(self.identity.name) if self.gate and not self.admin else None
        try:
            async with asyncio.timeout(BODY_TIMEOUT), slot or contextlib.nullcontext():
                raw = await read_body(self.reader, req.content_length, req.chunked, cap)
        except TimeoutError:
            raise HTTPError(
                408, f"{self.route_name}: the body did not arrive within {BODY_TIMEOUT:.0f} s"
            ) from None
        req.body_read = True
        return raw

    async def read_json(self, schema: str | None) -> Any:
        """Read, strictly parse and (with a schema) validate the JSON body."""
        req = self.req
        ctype = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if not req.has_body:
            raise Refusal(400, f"{self.route_name}: an empty body cannot be inspected")
        if ctype != "application/json":
            raise HTTPError(415, f"{self.route_name}: body must be application/json")
        raw = await self.read_held_body(INSPECT_CAP)
        try:
            if schema is None:
                return loads_strict(raw)
            obj, problems = parse_body(raw, schema, allow_unknown=self.admin)
        except BodyError as exc:
            raise Refusal(400, f"{self.route_name}: {exc.message}") from None
        if problems:
            detail = "; ".join(p.message for p in problems[:5])
            raise Refusal(400, f"{self.route_name}: refused body: {detail}")
        return obj

    async def read_json_object(self, schema: str | None) -> dict[str, Any]:
        """:meth:`read_json` of a body that must be one JSON object (every create,
        update and spec: dockerd would answer anything else with its own 400)."""
        body = await self.read_json(schema)
        if not isinstance(body, dict):
            raise Refusal(400, f"{self.route_name}: body must be a JSON object")
        return body

    async def hold(self, lock: asyncio.Lock) -> None:
        """Take a lock until the request has been forwarded (quota race safety)."""
        await lock.acquire()
        self.held.append(lock)

    def release(self) -> None:
        while self.held:
            self.held.pop().release()
        while self.on_release:
            self.on_release.pop()()

    def set_json(self, obj: Any) -> None:
        """What is forwarded instead of the client's body: the checked object, encoded."""
        self.body = dumps(obj)

    @property
    def route_name(self) -> str:
        return self.route.name if self.route else f"{self.req.method} {self.path}"
