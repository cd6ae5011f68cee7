"""Networks: stamped at create; connect/disconnect need both network and container."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.containers import endpoint_network
from dockergate.api.dispatch import (
    handles,
    inspect_object,
    own_filters,
    owned_object,
    referenced_owned,
    remember_pruned,
)
from dockergate.api.exchange import Exchange, ResponseFilter
from dockergate.api.images import check_not_a_build_network
from dockergate.api.labels import stamp
from dockergate.api.ownership import Resolved
from dockergate.listen.identity import Refusal
from dockergate.policy.container import check_endpoint_opts
from dockergate.policy.network import check_network
from dockergate.policy.quota import check_count_quota, owned_containers, user_lock

# Docker's own networks, by name and driver: nobody's, and everyone's containers use
# them (``--network none``, the default bridge, Swarm's ingress).
DOCKER_NETWORKS = {"bridge": "bridge", "host": "host", "none": "null", "docker_gwbridge": "bridge"}
PREDEFINED = frozenset({"bridge", "host", "none"})  # what dockerd's type=builtin means


def docker_network(obj: dict[str, Any]) -> bool:
    """One of Docker's own networks (Swarm's ingress included), not a user's."""
    name, driver = obj.get("Name"), obj.get("Driver")
    return obj.get("Ingress") is True or (
        isinstance(name, str) and DOCKER_NETWORKS.get(name) == driver
    )


@handles("network.list", "network.prune")
async def network_list(ex: Exchange) -> None:
    asked = q.first(ex.query, "filters") or ""
    own_filters(ex)
    if ex.route_name == "network.prune" and not ex.admin:
        check_not_a_build_network(ex, f"user:{ex.identity.name}")
        await remember_pruned(ex, "network")
    elif not ex.admin:
        ex.response_filter = _with_builtins(ex, _builtin_query(asked))


def _builtin_query(asked: str) -> tuple[str, frozenset[str] | None]:
    """The caller's ``filters`` without ``type``, for Docker's own networks, and the
    types asked for (dockerd's: ``builtin`` is bridge, host and none; Swarm's
    ``ingress`` and ``docker_gwbridge`` are ``custom``), None for any."""
    filters = q.parse_filters(asked)
    types = filters.pop("type", None)
    wanted = frozenset(t for t, on in types.items() if on) if types is not None else None
    return quote(q.encode_filters(filters), safe=""), wanted


def _with_builtins(ex: Exchange, query: tuple[str, frozenset[str] | None]) -> ResponseFilter:
    """A member's list holds their own networks (the owner label filter) and Docker's
    own (bridge, host, none, ingress, docker_gwbridge: nobody's, everyone's
    containers use them, and inspect shows them), as ``docker network ls`` does for
    anyone, with their ``Containers`` left out."""
    filters, types = query

    async def add(body: bytes) -> bytes:
        own = json.loads(body)
        reply = await ex.daemon.get(f"/networks?filters={filters}")
        found = reply.json() if reply.ok else None
        if not isinstance(own, list) or not isinstance(found, list) or not found:
            return body
        seen = {n.get("Id") for n in own if isinstance(n, dict)}
        extra = [
            {**n, "Containers": {}, **({"Services": {}} if "Services" in n else {})}
            for n in found
            if isinstance(n, dict)
            and n.get("Id") not in seen
            and n.get("Labels") in ({}, None)
            and docker_network(n)
            and (types is None or _network_type(n) in types)
        ]
        return json.dumps(own + extra).encode()

    return add


def _network_type(obj: dict[str, Any]) -> str:
    return "builtin" if obj.get("Name") in PREDEFINED else "custom"


@handles("network.inspect")
async def network_inspect(ex: Exchange) -> None:
    if not ex.admin:
        await inspect_object(ex, "network", builtin_network)


async def builtin_network(ex: Exchange, found: Resolved) -> dict[str, Any] | None:
    """A built-in network, as a non-admin may see it: with only their own containers
    among its ``Containers``, and no ``Services`` (``?verbose=true`` on Swarm's ingress
    lists every service publishing a port, with its tasks' addresses): the others'
    names and addresses are theirs."""
    obj = found.obj
    if found.owner is not None or not docker_network(obj):
        return None
    mine = {c.get("Id") for c in await owned_containers(ex.daemon, ex.identity.name)}
    members = obj.get("Containers")
    members = members if isinstance(members, dict) else {}
    shown = {**obj, "Containers": {k: v for k, v in members.items() if k in mine}}
    if "Services" in shown:
        shown["Services"] = {}
    return shown


@handles("network.delete")
async def network_delete(ex: Exchange) -> None:
    """Not while a build of the owner's runs on it (``images.pin_build_network``)."""
    if not ex.admin:
        check_not_a_build_network(ex, (await owned_object(ex)).id)


@handles("network.create")
async def network_create(ex: Exchange) -> None:
    body = await ex.read_json_object("network.create")
    body["Labels"] = stamp(body.get("Labels"), ex.identity.name)
    check_network(ex.profile, body)
    if not ex.admin:
        await check_unique_name(ex, body)
    if ex.profile.quota_networks is not None and not ex.admin:
        await ex.hold(user_lock(ex.identity.name))  # the count holds until the create
        await check_count_quota(ex.daemon, ex.profile, ex.identity.name, "network")
    ex.set_json(body)


async def check_unique_name(ex: Exchange, body: dict[str, Any]) -> None:
    """A member's network takes a name nobody's network has.

    Before API 1.44 dockerd makes a second network of an existing name unless the
    body asks ``CheckDuplicate`` (old clients, docker-py and compose v1 do not), only
    warning with the first one's ID; from then on the name is ambiguous, and the
    first network's owner can no longer use it by name (compose's
    ``<project>_default`` names are easy to guess). The gate refuses such a create
    itself when the body did not ask for the check, and asks dockerd for it in any
    case (the check then also covers a create racing this one); a body that asked
    gets dockerd's own 409, as the CLI expects."""
    name = body.get("Name")
    asked = body.get("CheckDuplicate") is True
    body["CheckDuplicate"] = True
    if not isinstance(name, str) or not name:
        return  # dockerd refuses a network without a name
    # One create of a name at a time through this gate, until dockerd has answered:
    # two at once both passed the checks, and dockerd's own is no lock.
    await ex.hold(_name_lock(ex, name))
    if _ID_LIKE.fullmatch(name):
        raise Refusal(
            403,
            f"network create: the name {name!r} looks like a network ID (12 or more "
            "hex digits): dockerd would find it where a network's short ID is meant, "
            "taking that reference from its owner; choose a name with other letters",
            rule="network name looks like an ID",
        )
    if not asked:
        flt = quote(q.encode_filters({"name": {name: True}}), safe="")
        reply = await ex.daemon.get(f"/networks?filters={flt}")
        found = reply.json() if reply.ok else None  # else dockerd's own check decides
        if isinstance(found, list) and any(
            isinstance(n, dict) and n.get("Name") == name for n in found
        ):
            raise Refusal(
                403,
                f"network create: a network named {name!r} already exists (names are "
                "unique through the gate: a second one would take the name from the "
                "first one's owner); choose another name",
                rule="network names are unique",
            )


# dockerd finds a network by full ID, then by name, then by ID prefix: a name like a
# short ID would win over the network whose ID starts so. The rule does not look at
# which IDs exist (that would tell members other users' network IDs).
_ID_LIKE = re.compile(r"[0-9a-f]{12,64}")
_name_locks: dict[str, tuple[asyncio.Lock, int]] = {}


def _name_lock(ex: Exchange, name: str) -> asyncio.Lock:
    """The lock of creates of ``name``, kept while a request holds or waits for it."""
    lock, users = _name_locks.get(name) or (asyncio.Lock(), 0)
    _name_locks[name] = (lock, users + 1)

    def done() -> None:
        held, left = _name_locks[name]
        if left <= 1:
            del _name_locks[name]
        else:
            _name_locks[name] = (held, left - 1)

    ex.on_release.append(done)
    return lock


@handles("network.connect", "network.disconnect")
async def network_connect(ex: Exchange) -> None:
    assert ex.route is not None
    found = await owned_object(ex)
    body = await ex.read_json_object(ex.route.name)
    container = str(body.get("Container") or "")
    if not ex.admin and container:
        owned = await referenced_owned(ex, "container", container, f"Container={container}")
        body["Container"] = owned.id  # what was checked, not a name dockerd finds again
    if not ex.admin:
        check_endpoint_opts(ex.profile, body.get("EndpointConfig"), "EndpointConfig")
    if ex.route.name == "network.connect":
        await endpoint_network(ex, found.id, body)
    ex.set_json(body)
