"""Authorisation of one request: the route table, the handlers, and the one default deny.

Order, for every request:
1. no route in the table → admins pass, everyone else is refused (default deny);
2. ``admin`` routes → admins only;
3. a handler registered for the route (``api/<kind>.py``) decides and may rewrite;
4. no handler: admins pass; ``public`` routes pass; an object route (``/{kind}/{id}``)
   is resolved and owner-checked, then forwarded by full ID; anything else is
   refused, so a route nobody wrote rules for is never open by accident.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.exchange import Exchange
from dockergate.api.ownership import (
    INSPECT,
    OWNER_LABEL,
    RESERVED_PREFIX,
    NotFound,
    Resolved,
    id_of,
    may_touch,
    remember_removal,
    resolve,
    resolve_owned,
)
from dockergate.audit.record import profile_rule
from dockergate.caching import short_calls_cached
from dockergate.listen.identity import Refusal
from dockergate.policy.rules import Denied

log = logging.getLogger(__name__)
ANONYMOUS_VOLUME = re.compile(r"[0-9a-f]{64}")  # dockerd's names for anonymous volumes
# Exceptions that mean a bug in a handler, not I/O: those end the connection as usual.
BUG_ERRORS = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    LookupError,
    RecursionError,
    TypeError,
    ValueError,
)

Handler = Callable[[Exchange], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for route names (see ``api/routes.py``)."""

    def register(fn: Handler) -> Handler:
        for name in names:
            if name in HANDLERS:
                raise RuntimeError(f"two handlers for route {name}")
            HANDLERS[name] = fn
        return fn

    return register


def who(ex: Exchange) -> str:
    return f"user {ex.identity.name!r} (profile {ex.identity.profile!r})"


def refused(exc: Denied) -> Refusal:
    """A profile rule's refusal, as the client and the audit log get it."""
    return Refusal(403, exc.message, rule=profile_rule(exc.profile, exc.rule))


def route_path(pattern: str, params: dict[str, str]) -> str:
    """Fill a route pattern: the path the gate forwards instead of the one it was sent."""
    out = []
    for part in pattern.split("/"):
        if part.startswith("{"):
            out.append(quote(params[part.strip("{}*")], safe="/:@" if part.endswith("*}") else ""))
        else:
            out.append(part)
    return "/".join(out)


async def owned_object(ex: Exchange, kind: str | None = None) -> Resolved:
    """Resolve ``/{kind}/{id}/...``, check the owner, forward by full ID."""
    assert ex.route is not None
    kind = kind or ex.route.kind
    assert kind is not None
    if ex.route.name in INSPECT_ROUTES and ex.req.method == "GET":
        return await inspect_object(ex, kind)
    found = await resolve_owned(ex.daemon, ex.identity, kind, ex.params["id"])
    ex.object_id = found.id
    if ex.req.method == "DELETE":
        remember_removal(found)  # for its events, replayed once it is gone
        if kind == "container":
            remember_anonymous_volumes(found)
    ex.forward_to(route_path(ex.route.pattern, {**ex.params, "id": found.id}))
    return found


def remember_anonymous_volumes(container: Resolved) -> None:
    """``rm -v`` takes the container's anonymous volumes (random 64-hex names, made
    with its owner's label) with it: remembered like a removal of each, for their
    events replayed later. If they stay, they are found as they are."""
    for mount in container.obj.get("Mounts") or []:
        if not isinstance(mount, dict) or mount.get("Type") != "volume":
            continue
        name = str(mount.get("Name") or "")
        if ANONYMOUS_VOLUME.fullmatch(name):
            obj = {"CreatedAt": container.obj.get("Created")}
            remember_removal(Resolved("volume", name, container.owner, obj))


async def remember_pruned(ex: Exchange, kind: str) -> None:
    """A prune removes some of the caller's unused volumes or networks: those its
    answer lists (``VolumesDeleted``, ``NetworksDeleted``: names) are remembered like
    a removal each, for their events replayed once they are gone. The caller's own
    are listed first, while they still exist (their IDs, when they were made)."""
    from dockergate.policy.quota import owner_filter

    reply = await ex.daemon.get(f"/{kind}s?filters={owner_filter(ex.identity.name)}")
    found = reply.json() if reply.ok else None
    items = found.get("Volumes") if kind == "volume" and isinstance(found, dict) else found
    owned = {
        str(obj.get("Name") or ""): obj
        for obj in (items if isinstance(items, list) else [])
        if isinstance(obj, dict)
    }
    deleted_key = "VolumesDeleted" if kind == "volume" else "NetworksDeleted"
    user = ex.identity.name

    async def remember(body: bytes) -> bytes:
        try:
            answer = json.loads(body)
        except ValueError:
            return body
        names = answer.get(deleted_key) if isinstance(answer, dict) else None
        for name in names if isinstance(names, list) else []:
            obj = owned.get(str(name))
            object_id = id_of(kind, obj) if obj is not None else ""
            if object_id and obj is not None:
                remember_removal(Resolved(kind, object_id, user, obj))
        return body

    ex.response_filter = remember


Readable = Callable[[Exchange, Resolved], Awaitable[dict[str, Any] | None]]


async def inspect_object(ex: Exchange, kind: str, readable: Readable | None = None) -> Resolved:
    """``GET /{kind}/{id}``: the resolving inspect *is* the request, so its answer is
    the reply (one daemon round-trip).

    ``readable`` lets a kind show a non-admin an object that is not theirs but is
    everyone's to read (a profile's shared volume, Docker's built-in networks): it
    returns the object as that user may see it, or None. Non-admins get volumes and
    networks without the gate's labels: docker-compose compares an existing
    object's labels with the compose file's and warned, on every command, that the
    owner label "has changed"."""
    api = f"/v{ex.version}" if ex.version else ""
    found = await resolve(ex.daemon, kind, ex.params["id"], api=api, query=ex.req.query)
    if found is None:
        raise NotFound(kind, ex.params["id"])
    shown = found.obj
    if not may_touch(ex.identity, found.owner):
        public = await readable(ex, found) if readable is not None else None
        if public is None:
            raise NotFound(kind, ex.params["id"])
        shown = public
    ex.object_id = found.id
    if found.reply is None:
        return found
    if not ex.admin and kind in ("volume", "network"):
        labels = shown.get("Labels")
        if isinstance(labels, dict) and any(k.startswith(RESERVED_PREFIX) for k in labels):
            shown = {
                **shown,
                "Labels": {k: v for k, v in labels.items() if not k.startswith(RESERVED_PREFIX)},
            }
    if shown is found.obj:
        ex.raw_reply = found.reply.relay()
    else:
        ex.raw_reply = found.reply.relay(json.dumps(shown).encode() + b"\n")
    return found


async def referenced_owned(ex: Exchange, kind: str, reference: str, field: str) -> Resolved:
    """An object named inside a body (``field``) must be the caller's: 403 otherwise.
    Returns it, so the caller can pin the reference to its full ID."""
    try:
        return await resolve_owned(ex.daemon, ex.identity, kind, reference)
    except NotFound:
        raise Refusal(
            403,
            f"{who(ex)} may not use {kind} {reference!r} ({field}): it does not exist or "
            "belongs to someone else",
        ) from None


def own_filters(ex: Exchange) -> None:
    """Push the caller's owner label into ``filters``: the daemon filters lists and
    prunes for us. One ``filters`` parameter is forwarded, the one checked here."""
    if ex.admin:
        return
    query, encoded = owner_filtered(ex.req.query, ex.identity.name)
    ex.set_query(list(query), encoded)


async def own_filter_references(ex: Exchange, kind: str, keys: tuple[str, ...]) -> None:
    """Filters that name an object (a container list's ``since``/``before``, a task
    list's ``service``) are resolved by dockerd over *everyone's* objects, failing
    when none matches: an oracle for other users' names. They are resolved here, for
    the caller's own objects only (404 otherwise), and forwarded as full IDs."""
    raw = q.first(ex.query, "filters") or ""
    if ex.admin or not any(f'"{key}"' in raw for key in keys):
        return
    filters = q.parse_filters(raw)
    for key in keys:
        if key in filters:
            filters[key] = {
                (await resolve_owned(ex.daemon, ex.identity, kind, reference)).id: on
                for reference, on in filters[key].items()
            }
    ex.set_query(q.replace(ex.query, "filters", q.encode_filters(filters)))


# A label no object is given: with the caller's owner label, an empty answer.
NO_OWNER_MATCH = f"{OWNER_LABEL}.filter-named-another-owner"


@short_calls_cached(maxsize=1024)
def owner_filtered(raw_query: str, owner: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """The query with the owner's label filter merged in, and its encoding.

    A pure function of the client's query string and the owner: a client polling
    ``docker ps`` sends the same string every time, so the parse, merge and both
    encodings are done once (malformed queries raise and are not cached)."""
    query = q.parse_query(raw_query)
    filters = q.parse_filters(q.first(query, "filters"))
    # Swarm's lists (services, tasks, secrets, configs) read label filters into a map
    # by name (ConvertKVStringsToMap), keeping one value per name: a client's entry
    # for the owner label, even the bare name (any owner), would stand in for the
    # gate's instead of narrowing it. Such entries are dropped; one naming another
    # owner is answered as the other lists answer two owners ANDed: nothing.
    labels = {}
    for entry, on in filters.get("label", {}).items():
        key, eq, value = entry.partition("=")
        if key != OWNER_LABEL:
            labels[entry] = on
        elif eq and value != owner:
            labels[NO_OWNER_MATCH] = True
    filters["label"] = labels
    merged = q.with_label(filters, f"{OWNER_LABEL}={owner}")
    query = q.replace(query, "filters", q.encode_filters(merged))
    return tuple(query), q.encode(query)


FORM_METHODS = frozenset({"POST", "PUT", "PATCH"})
INSPECT_ROUTES = frozenset(
    f"{kind}.inspect"
    for kind in ("container", "service", "task", "volume", "network", "secret", "config")
)


def refuse_form_bodies(ex: Exchange) -> None:
    """Go's ``ParseForm`` (which dockerd calls) reads an urlencoded *body* into the
    same form as the query, body first: ``filters`` sent that way would replace the
    owner filter the gate put in the query (a prune of everyone's containers)."""
    if ex.req.method not in FORM_METHODS:
        return
    for value in ex.req.headers.get_all("content-type"):
        if not value.isascii():
            # Go lower-cases with Unicode rules (U+0130 is "i"): refuse what it could
            # read as a form rather than guess.
            raise Refusal(415, f"{who(ex)} may not send a Content-Type that is not ASCII")
        if value.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
            raise Refusal(
                415,
                f"{who(ex)} may not send a form-encoded body: parameters go in the query string",
            )


# Creates whose answer names the new object: its audit row gets the ID (later rows use
# it) and the name the user asked for (what they will recognise after a purge).
CREATES = frozenset(
    {
        "container.create",
        "network.create",
        "volume.create",
        "service.create",
        "secret.create",
        "config.create",
    }
)


def record_created(ex: Exchange) -> None:
    """After the handler: runs on the answer after any filter the handler set."""
    previous = ex.response_filter

    async def capture(body: bytes) -> bytes:
        if previous is not None:
            body = await previous(body)
        try:
            answer = json.loads(body)
        except ValueError:
            return body
        if isinstance(answer, dict):
            # Volumes answer with the volume itself, named rather than numbered.
            new = answer.get("Id") or answer.get("ID") or answer.get("Name")
            if isinstance(new, str):
                ex.object_id = new
        name = q.first(ex.query, "name") if ex.route_name == "container.create" else None
        if name is None and ex.body:  # the checked body the gate wrote: valid JSON
            asked = json.loads(ex.body)
            if isinstance(asked, dict) and isinstance(asked.get("Name"), str):
                name = asked["Name"]
        # The table of `dockergate audit` shows the detail: the ID (short) and name.
        parts = [f"id={ex.object_id[:12]}"] if ex.object_id and ex.object_id != name else []
        if name:
            parts.append(f"name={name}")
        ex.detail = " ".join(parts) or None
        return body

    ex.response_filter = capture


async def dispatch(ex: Exchange) -> None:
    if not ex.admin:
        refuse_form_bodies(ex)
    route = ex.route
    if route is None:
        if ex.admin:
            return
        raise Refusal(
            403,
            f"{who(ex)} may not call {ex.req.method} {ex.path}: not an API route dockergate "
            "knows, so only admins may use it",
        )
    if route.access == "admin" and not ex.admin:
        raise Refusal(403, f"{who(ex)} may not {route.name}: admins only")
    handler = HANDLERS.get(route.name)
    if handler is not None:
        try:
            await handler(ex)
        except Denied as exc:
            raise refused(exc) from None
        except BUG_ERRORS as exc:
            # A handler bug must still answer (the client would otherwise see the
            # connection drop with no word) and must never forward anything.
            log.exception("%s: internal error in %s for %s", route.name, ex.path, who(ex))
            raise Refusal(
                500,
                f"internal error in the gate while handling {route.name} "
                f"({type(exc).__name__}); nothing was forwarded; the gate's log has details",
                rule="internal error",
            ) from None
        if route.name in CREATES:
            record_created(ex)
        return
    if ex.admin or route.access == "public":
        return
    if route.kind in INSPECT and "id" in ex.params:
        await owned_object(ex)
        return
    raise Refusal(403, f"{who(ex)} may not {route.name}: no rule allows it for non-admins")


def load_handlers() -> None:
    """Import the per-kind modules so their handlers register."""
    from dockergate.admin import gate_api as admin_gate_api  # noqa: F401
    from dockergate.api import (  # noqa: F401
        containers,
        gate_api,
        images,
        networks,
        secrets,
        services,
        system,
        volumes,
    )
