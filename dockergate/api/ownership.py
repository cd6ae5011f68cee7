"""Who owns a Docker object: the ``dockergate.owner`` label, read where each kind keeps it.

Ownership lives in Docker itself, so a restarted gate (or a second one on another
node) knows it at once. References are resolved by asking the daemon, which
applies its own rules (full ID, exact name, ID prefix, in its order); the gate
then forwards by the full ID it was told, so a rename in between changes nothing.
Another user's object answers exactly like a missing one: names and IDs of other
users do not leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dockergate.api import dockerfile
from dockergate.listen.identity import Identity, Refusal
from dockergate.proxy.daemon import API_PREFIX, Daemon, DaemonReply, ref
from dockergate.store.errors import StoreError
from dockergate.store.repository import RemovedRow, Store

log = logging.getLogger(__name__)

OWNER_LABEL = "dockergate.owner"
BUILT_BY_LABEL = "dockergate.built-by"  # on images: who built or committed it (no ownership)
RESERVED_PREFIX = "dockergate."

# Kinds a non-admin can own; the inspect call that resolves a reference to each.
INSPECT: dict[str, str] = {
    "container": "/containers/{}/json",
    "exec": "/exec/{}/json",
    "service": "/services/{}",
    "task": "/tasks/{}",
    "volume": "/volumes/{}",
    "network": "/networks/{}",
    "secret": "/secrets/{}",
    "config": "/configs/{}",
}

# What the daemon says for a missing object, per kind (API 1.41 wording).
NOT_FOUND: dict[str, str] = {
    "container": "No such container: {}",
    "exec": "No such exec instance: {}",
    "service": "service {} not found",
    "task": "task {} not found",
    "volume": "get {}: no such volume",
    "network": "network {} not found",
    "secret": "secret {} not found",
    "config": "config {} not found",
    "plugin": 'plugin "{}" not found',
}


class NotFound(Refusal):
    """A 404 worded like the daemon's, without the ``dockergate:`` prefix."""

    def __init__(self, kind: str, reference: str) -> None:
        super().__init__(
            404, NOT_FOUND[kind].format(reference), raw=True, rule=f"{kind} not found or not owned"
        )


@dataclass(frozen=True, slots=True)
class Resolved:
    kind: str
    id: str
    owner: str | None
    obj: dict[str, Any]
    reply: DaemonReply | None = None  # the daemon's inspect answer, reusable as is


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def labels_of(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    if kind == "container":
        found = _get(obj, "Config", "Labels")
    elif kind in ("volume", "network"):
        found = obj.get("Labels")
    elif kind == "task":
        found = _get(obj, "Spec", "ContainerSpec", "Labels")
    else:
        found = _get(obj, "Spec", "Labels")
    return found if isinstance(found, dict) else {}


def id_of(kind: str, obj: dict[str, Any]) -> str:
    key = {"container": "Id", "network": "Id", "volume": "Name"}.get(kind, "ID")
    return str(obj.get(key, ""))


def owner_of(kind: str, obj: dict[str, Any]) -> str | None:
    return labels_of(kind, obj).get(OWNER_LABEL)


def may_touch(identity: Identity, owner: str | None) -> bool:
    """Admins touch everything; others only what carries their name. Unlabelled
    objects (made on the daemon directly, or before the gate) are admins' only."""
    return identity.admin or (owner is not None and owner == identity.name)


# -- owner labels that came from an image -------------------------------------------
# A container inherits its image's labels, and the classic builder makes its RUN
# containers from whatever the base image or one of its ONBUILD triggers
# (``ONBUILD LABEL dockergate.owner=me``) labelled: such a label does not make an
# owner. Images built or committed through the gate carry an empty owner label, but
# registry images and ONBUILD triggers are written by anyone. What an image can
# imprint is its "claim": its own non-empty owner label, or "*" (anyone) when an
# ONBUILD trigger could write the label. An image never changes: claims are cached
# by image ID.
ANYONE = "*"
IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{64}")
_claims: dict[str, str] = {}


def claim_of(image: dict[str, Any]) -> str:
    """The image's owner label; ANYONE when one of its triggers could write one (each
    trigger read as the build that runs it reads it: see dockerfile.trigger_instructions)."""
    config = image.get("Config") or {}
    owner = str((config.get("Labels") or {}).get(OWNER_LABEL) or "")
    for trigger in config.get("OnBuild") or []:
        try:
            parsed = dockerfile.trigger_instructions(str(trigger))
        except dockerfile.DockerfileError:
            return ANYONE
        if any(dockerfile.writes_gate_labels(ins, depth=1) for ins in parsed):
            return ANYONE
    return owner


async def image_claim(daemon: Daemon, image: str) -> str:
    """The owner name an image imprints on containers made from it ("" for none).

    Cached by image ID only (an image never changes); a name is looked up each time,
    since a tag can move to another image."""
    claim = _claims.get(image)
    if claim is not None:
        return claim
    reply = await daemon.get(f"/images/{ref(image)}/json")
    obj = reply.json() if reply.ok else None
    if not isinstance(obj, dict):
        return ""  # not cached: the image may appear (a build in progress)
    claim = claim_of(obj)
    if IMAGE_ID.fullmatch(image):
        if len(_claims) > 20_000:
            _claims.clear()
        _claims[image] = claim
    return claim


def imprinted(claim: str, owner: str) -> bool:
    """Whether an owner label could have come from an image with this claim."""
    return bool(claim) and claim in (owner, ANYONE)


# -- objects removed through the gate ------------------------------------------------
# An event replayed (``events --since``) after its object is gone can no longer be
# resolved to an owner: the gate remembers who owned what its users removed, with
# when it existed (a volume's ID is its name, which someone else may take later).
# (kind, ID) -> (owner, created, removed), Unix seconds; the newest REMOVED_MAX.
REMOVED_MAX = 20_000
NEVER = 1 << 62
_removed: OrderedDict[tuple[str, str], tuple[str, int, int]] = OrderedDict()


def created_at(obj: dict[str, Any]) -> int:
    """An object's ``CreatedAt`` (``Created`` for networks; RFC 3339) as a Unix time;
    0 if absent."""
    try:
        text = str(obj.get("CreatedAt") or obj.get("Created") or "")
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


REMOVAL_KINDS = frozenset({"service", "network", "volume", "secret", "config"})  # events by ID


# Where removals are also kept (the gate's store, set at start): a restarted gate, or
# another gate of the store, must still tell whose a removed object's events were.
RemovalSink = Callable[[RemovedRow], None]
removal_sink: RemovalSink | None = None


def remember_removal(found: Resolved) -> None:
    if found.owner and found.kind in REMOVAL_KINDS:
        entry = (found.owner, created_at(found.obj), int(time.time()))
        _remember(found.kind, found.id, entry)
        if removal_sink is not None:
            removal_sink((found.kind, found.id, *entry))


def _remember(kind: str, object_id: str, entry: tuple[str, int, int]) -> None:
    key = (kind, object_id)
    _removed[key] = entry
    _removed.move_to_end(key)
    while len(_removed) > REMOVED_MAX:
        _removed.popitem(last=False)


async def keep_removals(store: Store, retention_days: int) -> Callable[[], Awaitable[None]]:
    """At start-up: the removals kept in the store (by any gate of it) are read back,
    and from now on each one is written there too, in the background. Returns what
    shutdown awaits so that none is lost. Best effort: a failure is logged."""
    try:
        load_removals(await asyncio.to_thread(store.removed_objects, REMOVED_MAX))
    except StoreError as exc:
        log.warning("removed objects not read from the store: %s", exc)
    writer = _RemovalWriter(store, retention_days)
    global removal_sink
    removal_sink = writer.add
    return writer.flush


class _RemovalWriter:
    """One background writer: removals wait in memory (the newest ``REMOVED_MAX``)
    and go to the store in batches, one transaction each. One task per removal put
    thousands of store jobs in the thread pool for a few prunes (round 32a)."""

    def __init__(self, store: Store, retention_days: int) -> None:
        self.store = store
        self.retention_days = retention_days
        self.queue: deque[RemovedRow] = deque(maxlen=REMOVED_MAX)
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def add(self, row: RemovedRow) -> None:
        self.queue.append(row)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self._write()

    async def _write(self) -> None:
        while self.queue:
            rows = list(self.queue)
            self.queue.clear()
            days = self.retention_days
            forget = int(time.time()) - days * 86400 if days > 0 else 0
            try:
                await asyncio.to_thread(self.store.remember_removed, rows, forget)
            except StoreError as exc:
                log.warning("%d removals not kept in the store: %s", len(rows), exc)
            except Exception:  # the writer must outlive a bug in one batch
                log.exception("%d removals not kept in the store", len(rows))

    async def flush(self) -> None:
        """At shutdown: what is still queued is written (5 s at most)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._write(), 5)


def load_removals(rows: Iterable[RemovedRow]) -> None:
    """Removals kept in the store (oldest first), under those made since start."""
    newer = list(_removed.items())
    for kind, object_id, owner, created, removed in rows:
        if kind in REMOVAL_KINDS:
            _remember(kind, object_id, (owner, created, removed))
    for key, entry in newer:
        _remember(*key, entry)


def removed_owner(kind: str, object_id: str, at: int) -> str | None:
    """Who owned ``object_id`` at time ``at``, if a user removed it through the gate."""
    entry = _removed.get((kind, object_id))
    if entry is None:
        return None
    owner, created, removed = entry
    return owner if created <= at <= removed + 1 else None


async def resolve(
    daemon: Daemon, kind: str, reference: str, *, api: str = API_PREFIX, query: str = ""
) -> Resolved | None:
    """The object the daemon would act on for ``reference``, or None if it has none.

    ``api`` and ``query`` let an inspect request be resolved with the very call the
    client made, so its answer can be returned without asking the daemon twice."""
    path = INSPECT[kind].format(ref(reference)) + (f"?{query}" if query else "")
    reply = await daemon.get(path, api=api)
    if not reply.ok:
        return None
    obj = reply.json()
    if not isinstance(obj, dict):
        return None
    if kind == "exec":
        container = await resolve(daemon, "container", str(obj.get("ContainerID", "")))
        owner = container.owner if container else None
        return Resolved(kind, id_of(kind, obj), owner, obj)
    owner = owner_of(kind, obj)
    image = str(obj.get("Image") or "")
    if kind == "container" and owner and imprinted(await image_claim(daemon, image), owner):
        owner = None  # the label may have come with the image: nobody's (admins')
    return Resolved(kind, id_of(kind, obj), owner, obj, reply)


async def resolve_owned(
    daemon: Daemon,
    identity: Identity,
    kind: str,
    reference: str,
    *,
    api: str = API_PREFIX,
    query: str = "",
) -> Resolved:
    """Resolve and check ownership; NotFound for missing *and* for someone else's."""
    found = await resolve(daemon, kind, reference, api=api, query=query)
    if found is None or not may_touch(identity, found.owner):
        raise NotFound(kind, reference)
    return found
