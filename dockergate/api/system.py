"""System routes: events (a per-user stream), df (own objects only), info, nodes, swarm.

Events cannot be pushed down as a label filter: only container events (exec ones
included) carry the container's labels; service, network, volume, secret and config
events carry an ID. So the gate filters the stream itself, looking owners up by ID
and remembering them for the life of the stream (a ``remove`` event arrives after
the object is gone).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from dockergate.api.dispatch import handles
from dockergate.api.exchange import Exchange
from dockergate.api.ownership import (
    NEVER,
    OWNER_LABEL,
    NotFound,
    created_at,
    id_of,
    image_claim,
    imprinted,
    removed_owner,
    resolve,
)
from dockergate.policy.quota import owned_containers, owner_filter
from dockergate.policy.rules import Denied
from dockergate.proxy.daemon import Daemon

SHARED_EVENT_TYPES = frozenset({"image", "builder"})
LOOKUP_TYPES = {
    "service": "service",
    "network": "network",
    "volume": "volume",
    "secret": "secret",
    "config": "config",
}
LIST_PATHS = {
    "service": "/services",
    "network": "/networks",
    "volume": "/volumes",
    "secret": "/secrets",
    "config": "/configs",
}


class EventOwnership:
    """Decides, event by event, whether a user may see it."""

    def __init__(self, daemon: Daemon, user: str) -> None:
        self.daemon = daemon
        self.user = user
        self.known: dict[tuple[str, str], bool] = {}
        self.volume_born: dict[str, int] = {}  # name -> CreatedAt (s) of the cached volume
        self.gone: set[str] = set()  # containers of mount events the daemon has no more

    async def seed(self) -> None:
        """Remember the user's existing objects, so their removal events show."""
        for kind, path in LIST_PATHS.items():
            reply = await self.daemon.get(f"{path}?filters={owner_filter(self.user)}")
            if not reply.ok:
                continue
            items = reply.json()
            if isinstance(items, dict):  # volumes answer {"Volumes": [...]}
                items = items.get("Volumes") or []
            for obj in items or []:
                if isinstance(obj, dict):
                    self.known[(kind, id_of(kind, obj))] = True
                    if kind == "volume":
                        self.volume_born[id_of(kind, obj)] = created_at(obj)

    async def allows(self, event: dict[str, Any]) -> bool:
        kind = str(event.get("Type") or "")
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        if kind == "container":
            # As for container lists: an owner label the image could have put there
            # (a build's RUN containers) is no owner.
            if attributes.get(OWNER_LABEL) != self.user:
                return False
            image = str(attributes.get("image") or "")
            return not (image and imprinted(await image_claim(self.daemon, image), self.user))
        if kind in SHARED_EVENT_TYPES:
            return True
        lookup = LOOKUP_TYPES.get(kind)
        if lookup is None:
            return False  # daemon, plugin, node events: admins only
        object_id = str(actor.get("ID") or "")
        if lookup == "volume":
            return await self.allows_volume(
                event, object_id, str(attributes.get("container") or "")
            )
        key = (lookup, object_id)
        if key not in self.known:
            found = await resolve(self.daemon, lookup, object_id)
            # dockerd's inspect falls back to names: a network named after another
            # one's ID is not the object the event is about.
            owner = (
                found.owner
                if found is not None and found.id == object_id
                else removed_owner(lookup, object_id, int(event.get("time") or 0))
            )
            self.known[key] = owner == self.user
        return self.known[key]

    async def allows_volume(self, event: dict[str, Any], name: str, container: str) -> bool:
        """A volume's event ID is its *name*, which another user may take once the
        volume is removed. So an event shows only if the volume holding the name now
        is the user's and was created no later than the event, or if it is older than
        that volume and the name was the user's then (a volume they removed through
        the gate: ``removed_owner``); what is remembered of a name is forgotten at its
        ``create`` and ``destroy`` events; and a ``mount`` or ``unmount`` shows only for
        the user's own container (its full ID is in the event), or for a container
        gone since (a ``--rm`` job's, replayed later) of the user's own volume that was
        there then, which only its owner's containers (and an admin's) can mount.
        Creation times are
        whole seconds: in the second a name changes hands, the earlier holder's
        ``destroy`` may still show, never a container of theirs."""
        action = str(event.get("Action") or "")
        key = ("volume", name)
        at = int(event.get("time") or 0)
        if action == "create":
            self.known.pop(key, None)
        if key not in self.known:
            found = await resolve(self.daemon, "volume", name)
            self.known[key] = found is not None and found.owner == self.user
            self.volume_born[name] = created_at(found.obj) if found is not None else NEVER
        born = self.volume_born.get(name, 0)
        current = self.known[key] and at >= born  # the user's volume, there since
        allowed = current or (at < born and removed_owner("volume", name, at) == self.user)
        if action == "destroy":
            self.known.pop(key, None)
        if allowed and container:
            owned = self.known.get(("container", container))
            if owned is None and container not in self.gone:
                found = await resolve(self.daemon, "container", container)
                if found is None:
                    self.gone.add(container)  # asked once per stream
                else:
                    owned = self.known[("container", container)] = found.owner == self.user
            # A container gone since: only of the user's volume as it is now (a name
            # that changed hands may have been mounted by the next holder).
            allowed = current if owned is None else owned
        return allowed


@handles("system.events")
async def events(ex: Exchange) -> None:
    if ex.admin:
        return
    ownership = EventOwnership(ex.daemon, ex.identity.name)
    await ownership.seed()
    ex.event_filter = ownership.allows


@handles("system.df")
async def disk_usage(ex: Exchange) -> None:
    if ex.admin:
        return
    user = ex.identity.name

    async def only_own(body: bytes) -> bytes:
        data = json.loads(body)
        data["Containers"] = [
            c
            for c in data.get("Containers") or []
            if (c.get("Labels") or {}).get(OWNER_LABEL) == user
            and not imprinted(await image_claim(ex.daemon, str(c.get("ImageID") or "")), user)
        ]
        data["Volumes"] = [
            v for v in data.get("Volumes") or [] if (v.get("Labels") or {}).get(OWNER_LABEL) == user
        ]
        # Images are everyone's to list, but how many containers use each is counted
        # over the caller's containers only (as ``docker info`` counts them).
        using = Counter(str(c.get("ImageID") or "") for c in data["Containers"])
        for image in data.get("Images") or []:
            count = image.get("Containers") if isinstance(image, dict) else None
            if isinstance(count, int) and count >= 0:  # -1: not counted
                image["Containers"] = using[str(image.get("Id") or "")]
        return json.dumps(data).encode()

    ex.response_filter = only_own


@handles("system.auth")
async def auth(ex: Exchange) -> None:
    """``docker login``: the daemon contacts the server the body names, so that server
    is held to the profile's registries; the body is read strictly and re-encoded."""
    body = await ex.read_json_object("system.auth")
    address = str(body.get("serveraddress") or "")
    if not ex.admin and not ex.profile.allows_registry_host(address):
        raise Denied(
            ex.profile,
            "logging in to this registry",
            "serveraddress",
            address,
            f"allowed: {', '.join(ex.profile.registries)}",
        )
    ex.set_json(body)


@handles("node.list", "node.inspect")
async def shared_reads(ex: Exchange) -> None:
    """Cluster facts every user's CLI needs (``service ps``, placement)."""


NO_TOKEN = "(dockergate: swarm join tokens are for admins only)"


@handles("swarm.inspect")
async def swarm_inspect(ex: Exchange) -> None:
    """The swarm's ID, spec, CA and version, which docker-py reads as soon as a script
    touches ``client.swarm``; the join tokens (whoever holds one can add a node, even
    a manager) are admins' only. They are replaced by a note rather than dropped:
    ``docker swarm join-token`` reads this same answer and would print an empty
    token without a word."""
    if ex.admin:
        return

    async def without_tokens(body: bytes) -> bytes:
        data = json.loads(body)
        if not isinstance(data, dict):
            return b"{}"
        if "JoinTokens" in data:
            data["JoinTokens"] = {"Worker": NO_TOKEN, "Manager": NO_TOKEN}
        return json.dumps(data).encode()

    ex.response_filter = without_tokens


@handles("system.info")
async def info(ex: Exchange) -> None:
    """``docker info``: the engine's facts are everyone's, but its container counts
    are the caller's own, as ``ps -a`` and ``system df`` show them (everyone's would
    tell how busy other users are)."""
    if ex.admin:
        return
    user = ex.identity.name

    async def own_counts(body: bytes) -> bytes:
        data = json.loads(body)
        if not isinstance(data, dict):
            return body
        states = [
            str(c.get("State") or "")
            for c in await owned_containers(ex.daemon, user)
            if not imprinted(await image_claim(ex.daemon, str(c.get("ImageID") or "")), user)
        ]
        data["Containers"] = len(states)
        data["ContainersRunning"] = states.count("running")
        data["ContainersPaused"] = states.count("paused")
        data["ContainersStopped"] = len(states) - states.count("running") - states.count("paused")
        return json.dumps(data).encode()

    ex.response_filter = own_counts


@handles("plugin.inspect")
async def plugin_inspect(ex: Exchange) -> None:
    """Plugins are admins' business; to others they do not exist. ``docker inspect X``
    tries every kind in turn and must see a plain 404 here to go on."""
    if not ex.admin:
        raise NotFound("plugin", ex.params["name"])
