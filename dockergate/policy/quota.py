"""Per-user quotas, counted from the daemon's real state (the owner labels).

Counting what the engine holds (not what the gate remembers) keeps quotas true
after a gate restart and across changes made directly on the daemon. A per-user
lock spans the count *and* the forwarded create, so two parallel creates cannot
both take the last slot.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.labels import is_task
from dockergate.api.ownership import OWNER_LABEL
from dockergate.policy.checks import Denied, service_memory
from dockergate.policy.model import Profile, human
from dockergate.proxy.daemon import Daemon

_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


def user_lock(user: str) -> asyncio.Lock:
    return _locks[user]


def owner_filter(user: str) -> str:
    """``filters=`` (encoded) for the objects carrying ``user``'s owner label."""
    return quote(q.encode_filters({"label": {f"{OWNER_LABEL}={user}": True}}), safe="")


async def owned_containers(daemon: Daemon, user: str) -> list[dict[str, Any]]:
    reply = await daemon.get(f"/containers/json?all=1&filters={owner_filter(user)}")
    items = reply.json() if reply.ok else []
    return [c for c in items or [] if isinstance(c, dict)]


async def _services(daemon: Daemon, user: str) -> list[dict[str, Any]]:
    reply = await daemon.get(f"/services?filters={owner_filter(user)}")
    if not reply.ok:  # not a swarm manager: no services here
        return []
    return [s for s in reply.json() or [] if isinstance(s, dict)]


async def _nodes(daemon: Daemon) -> int:
    """Swarm nodes a global service runs a task on (1 when not a manager)."""
    reply = await daemon.get("/nodes")
    nodes = reply.json() if reply.ok else None
    return len(nodes) if isinstance(nodes, list) and nodes else 1


async def _container_memory(
    daemon: Daemon, containers: list[dict[str, Any]], exclude: str | None = None
) -> int:
    """Memory limits of containers that are not task containers (services count those),
    ``exclude`` left out (a container being started or updated is counted as asked)."""

    async def one(cid: str) -> int:
        reply = await daemon.get(f"/containers/{cid}/json")
        if not reply.ok:
            return 0
        return int(((reply.json() or {}).get("HostConfig") or {}).get("Memory") or 0)

    plain = [
        c["Id"]
        for c in containers
        if not is_task(c.get("Labels"))
        and str(c.get("State")) not in ("exited", "dead")
        and c["Id"] != exclude
    ]
    return sum(await asyncio.gather(*(one(cid) for cid in plain)))


async def usage(daemon: Daemon, user: str, exclude: str | None = None) -> dict[str, Any]:
    containers = await owned_containers(daemon, user)
    services = await _services(daemon, user)
    nodes = await _nodes(daemon) if services else 1
    return {
        "containers": len([c for c in containers if not is_task(c.get("Labels"))]),
        "running": len([c for c in containers if c.get("State") == "running"]),
        "services": len(services),
        "memory": await _container_memory(daemon, containers, exclude)
        + sum(service_memory(s.get("Spec") or {}, nodes) for s in services),
        "service_specs": services,
        "nodes": nodes,
    }


async def check_container_quota(daemon: Daemon, profile: Profile, user: str, memory: int) -> None:
    if profile.admin or (profile.quota_containers is None and profile.quota_memory is None):
        return
    used = await usage(daemon, user)
    if profile.quota_containers is not None and used["containers"] >= profile.quota_containers:
        raise Denied(
            profile,
            "more containers",
            "quota.containers",
            f"{used['containers']} of {profile.quota_containers} used",
            "remove stopped containers (docker container prune) or ask an admin",
        )
    _check_memory(profile, used["memory"], memory)


async def check_service_quota(
    daemon: Daemon, profile: Profile, user: str, spec: dict[str, Any], service_id: str | None
) -> None:
    if profile.admin or (profile.quota_services is None and profile.quota_memory is None):
        return
    used = await usage(daemon, user)
    others = [s for s in used["service_specs"] if s.get("ID") != service_id]
    if (
        service_id is None
        and profile.quota_services is not None
        and len(others) >= profile.quota_services
    ):
        raise Denied(
            profile,
            "more services",
            "quota.services",
            f"{len(others)} of {profile.quota_services} used",
            "remove a service or ask an admin",
        )
    nodes = used["nodes"] if used["service_specs"] else await _nodes(daemon)
    current = sum(service_memory(s.get("Spec") or {}, nodes) for s in others)
    container_mem = used["memory"] - sum(
        service_memory(s.get("Spec") or {}, nodes) for s in used["service_specs"]
    )
    _check_memory(profile, container_mem + current, service_memory(spec, nodes))


async def check_memory_quota(
    daemon: Daemon, profile: Profile, user: str, container_id: str, memory: int
) -> None:
    """A container about to hold ``memory`` (a start, a restart, an update): the rest
    of the user's usage plus that must fit in the memory quota."""
    if profile.admin or profile.quota_memory is None:
        return
    used = await usage(daemon, user, exclude=container_id)
    _check_memory(profile, used["memory"], memory)


def _check_memory(profile: Profile, used: int, wanted: int) -> None:
    if profile.quota_memory is not None and used + wanted > profile.quota_memory:
        raise Denied(
            profile,
            "going over the memory quota",
            "quota.memory",
            f"{human(used)} used + {human(wanted)} asked",
            f"the quota is {human(profile.quota_memory)}; stop something or ask for less",
        )
