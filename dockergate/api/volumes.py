"""Volumes: stamped at create, listed and pruned through the owner filter."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.dispatch import handles, inspect_object, own_filters, remember_pruned, who
from dockergate.api.exchange import Exchange
from dockergate.api.labels import stamp
from dockergate.api.ownership import OWNER_LABEL, Resolved, resolve
from dockergate.listen.identity import Refusal
from dockergate.policy.hostpaths import check_own_volume, check_volume_driver
from dockergate.proxy.daemon import Daemon
from dockergate.proxy.upstream import UpstreamError
from dockergate.store.errors import StoreError
from dockergate.store.repository import Store

log = logging.getLogger(__name__)
NAME_MAX = 255  # the store's column; dockerd sets no limit, no real name comes near


@handles("volume.list", "volume.prune")
async def volume_list(ex: Exchange) -> None:
    own_filters(ex)
    if ex.route_name == "volume.prune" and not ex.admin:
        await remember_pruned(ex, "volume")


@handles("volume.inspect")
async def volume_inspect(ex: Exchange) -> None:
    """One's own volumes, and the shared volumes of one's profile: those are mounted
    by name, and docker-compose inspects an ``external`` volume before it starts."""
    if not ex.admin:
        await inspect_object(ex, "volume", shared_volume)


async def shared_volume(ex: Exchange, found: Resolved) -> dict[str, Any] | None:
    """A shared volume as its users may see it: that it exists, its driver and scope;
    not the admin's driver options (a file server's account and password), its
    host path or its driver's status."""
    if any(v.name == found.id for v in ex.profile.shared_volumes):
        return {k: v for k, v in found.obj.items() if k not in SHARED_HIDDEN}
    return None


SHARED_HIDDEN = frozenset({"Options", "Mountpoint", "Status"})


@handles("volume.create")
async def volume_create(ex: Exchange) -> None:
    body = await ex.read_json_object("volume.create")
    body["Labels"] = stamp(body.get("Labels"), ex.identity.name)
    if not ex.profile.admin:
        name = str(body.get("Name") or "")
        if name in ex.shared_volume_names:
            raise Refusal(
                403,
                f"{who(ex)} may not create volume {name!r}: it is a shared volume of a "
                "profile, created by an admin",
            )
        check_own_volume(ex.profile, name, "Name")
        driver = str(body.get("Driver") or "")
        check_volume_driver(ex.profile, driver, body.get("DriverOpts"), "DriverOpts")
        if name:
            # dockerd answers a create of an existing name with that volume (labels,
            # mountpoint): someone else's must not come back.
            existing = await resolve(ex.daemon, "volume", name)
            if existing is not None and existing.owner != ex.identity.name:
                raise Refusal(409, f"a volume named {name!r} already exists; choose another name")
            await claim_name(ex, name, "Name", mine=existing is not None)
    elif body.get("Name"):
        await claim_name(ex, str(body["Name"]), "Name")
    ex.set_json(body)


async def claim_names(ex: Exchange) -> None:
    """Claim the names ``ex.volume_claims`` gathered (``containers.volume_usable``),
    at the end of a handler, when the request has passed every other check. All or
    none: every name is checked first, so a request refused for its second name does
    not keep its first."""
    claims, ex.volume_claims = ex.volume_claims, []
    store = ex.gate.store if ex.gate is not None else None
    if not claims or store is None or ex.admin:
        for name, field, mine in claims:
            await claim_name(ex, name, field, mine=mine)
        return
    try:
        holders = await asyncio.to_thread(
            store.volume_name_holders, [name[:NAME_MAX] for name, _, _ in claims]
        )
    except StoreError as exc:
        raise _store_down(claims[0][0], claims[0][1], exc) from None
    for name, field, mine in claims:
        holder = holders.get(name[:NAME_MAX])
        if holder is not None and holder != ex.identity.name and not mine:
            raise _held(ex, name, field)
    for name, field, mine in claims:
        await claim_name(ex, name, field, mine=mine)


async def claim_name(ex: Exchange, name: str, field: str, *, mine: bool = False) -> None:
    """A named volume's name must be free on the whole cluster, or the caller's
    (``store.models.VolumeName``): a service placed on another node mounts that node's
    volume of the name, which this gate cannot see. The first user to use a name
    through a gate of the store holds it. ``mine``: the caller's own volume is here
    (a name held before the store kept names stays usable by its owner). Admins'
    names are held too, but never refused, and a store outage does not stop them."""
    store = ex.gate.store if ex.gate is not None else None
    if store is None:
        return
    if len(name) > NAME_MAX and not ex.admin:
        raise Refusal(400, f"volume name {name[:40]!r}... ({field}) is over {NAME_MAX} characters")
    try:
        holder = await asyncio.to_thread(store.claim_volume_name, name[:NAME_MAX], ex.identity.name)
    except StoreError as exc:
        if ex.admin:
            log.warning("volume name %r not recorded for %s: %s", name, ex.identity.name, exc)
            return
        raise _store_down(name, field, exc) from None
    if holder != ex.identity.name and not ex.admin and not mine:
        raise _held(ex, name, field)


def _held(ex: Exchange, name: str, field: str) -> Refusal:
    return Refusal(
        403,
        f"{who(ex)} may not use volume {name!r} ({field}): another user holds that "
        "name on this cluster (volumes of a name on other nodes are theirs); choose "
        "another name, or ask an admin to release it (dockergate volume-names release)",
        rule="volume name held by another user",
    )


def _store_down(name: str, field: str, exc: StoreError) -> Refusal:
    """The client is told what is down, not where it is (the store's address and
    error are for the operator's log)."""
    log.warning("volume name %r (%s) not checked: the store is unavailable: %s", name, field, exc)
    return Refusal(
        503,
        f"volume {name!r} ({field}): the user store, which keeps who holds each volume "
        "name on the cluster, cannot be reached; try again, or ask an admin (the gate's "
        "log says why)",
        rule="store unavailable",
    )


async def seed_volume_claims(daemon: Daemon, store: Store) -> int:
    """At start-up: the volumes on this engine that carry an owner label, made before
    the store kept names (or by another store), are claimed for their owners, so
    that no one else can take their names on the other nodes. Best effort: a name
    already held stays with its holder; a failure is logged, never fatal."""
    flt = q.encode_filters({"label": {OWNER_LABEL: True}})
    try:
        reply = await daemon.get(f"/volumes?filters={quote(flt, safe='')}")
        volumes = ((reply.json() or {}).get("Volumes") or []) if reply.ok else []
        claimed = 0
        for volume in volumes:
            name, owner = (
                str(volume.get("Name") or ""),
                (volume.get("Labels") or {}).get(OWNER_LABEL),
            )
            if owner and name and len(name) <= NAME_MAX:
                await asyncio.to_thread(store.claim_volume_name, name, str(owner))
                claimed += 1
    except (UpstreamError, StoreError, ValueError) as exc:
        log.warning("volume names of this engine not recorded in the store: %s", exc)
        return 0
    return claimed
