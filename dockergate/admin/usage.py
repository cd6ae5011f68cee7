"""Usage per user: what each owner label holds on the engine, against their quota.

Counted from the daemon (as quotas are, see :mod:`dockergate.policy.quota`): one
list of all labelled containers, one of services, and an inspect per live plain
container for its limits. Memory is counted exactly as the quota check counts it,
so "memory 100g of 128g" here means the next 30g container is refused there.

Every registered user gets a row, with zeros when they own nothing; an owner label
seen on the engine without a registered user (a removed user, objects labelled on
another gate's store) gets a row too, marked unregistered, because those objects
still use the machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.labels import TASK_LABEL, is_task
from dockergate.api.ownership import OWNER_LABEL
from dockergate.policy.model import ProfileSet
from dockergate.policy.quota import building_users, charged, services_held
from dockergate.proxy.daemon import Daemon, ref

INSPECT_CONCURRENCY = 16


class Registered(Protocol):
    """A registered user as the store (``UserInfo``) or a gate snapshot (``Member``) has it."""

    @property
    def name(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


@dataclass
class UserUsage:
    user: str
    registered: bool
    profile: str | None = None
    enabled: bool | None = None
    containers_running: int = 0
    containers_total: int = 0  # plain containers; service tasks count as replicas
    service_tasks: int = 0  # tasks the services run at once, as quota.containers counts
    services: int = 0
    replicas_running: int = 0
    replicas_desired: int = 0
    memory: int = 0  # bytes reserved, as the quota counts them
    memory_quota: int | None = None
    cpus: float = 0.0  # CPUs reserved by limits (NanoCpus / service NanoCPUs)
    cpus_quota: float | None = None  # profiles have no CPU quota yet: always None
    containers_quota: int | None = None
    services_quota: int | None = None
    last_activity: dt.datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "registered": self.registered,
            "profile": self.profile,
            "enabled": self.enabled,
            "containers": {
                "running": self.containers_running,
                "total": self.containers_total,
                "service_tasks": self.service_tasks,
                # What quota.containers counts: containers and service tasks.
                "counted": self.containers_total + self.service_tasks,
                "quota": self.containers_quota,
            },
            "services": {
                "count": self.services,
                "replicas_running": self.replicas_running,
                "replicas_desired": self.replicas_desired,
                "quota": self.services_quota,
            },
            "memory": {"reserved": self.memory, "quota": self.memory_quota},
            "cpus": {"reserved": round(self.cpus, 3), "quota": self.cpus_quota},
            "last_activity": (
                self.last_activity.isoformat(timespec="seconds") if self.last_activity else None
            ),
        }


def _label_key_filter() -> str:
    return quote(q.encode_filters({"label": {OWNER_LABEL: True}}), safe="")


def _owner(labels: Any) -> str | None:
    if not isinstance(labels, dict):
        return None
    value = labels.get(OWNER_LABEL)
    return str(value) if value else None


async def _limits(daemon: Daemon, cid: str) -> tuple[int, float]:
    """(memory bytes, CPUs) a container is limited to; 0 when it sets none."""
    reply = await daemon.get(f"/containers/{ref(cid)}/json")
    if not reply.ok:
        return 0, 0.0
    host = (reply.json() or {}).get("HostConfig") or {}
    cpus = int(host.get("NanoCpus") or 0) / 1e9
    if not cpus and host.get("CpuQuota") and host.get("CpuPeriod"):
        cpus = int(host["CpuQuota"]) / int(host["CpuPeriod"])
    return int(host.get("Memory") or 0), cpus


def _service_cpus(spec: dict[str, Any], desired: int) -> float:
    limits = ((spec.get("TaskTemplate") or {}).get("Resources") or {}).get("Limits") or {}
    return desired * int(limits.get("NanoCPUs") or 0) / 1e9


async def collect_usage(
    daemon: Daemon,
    users: Iterable[Registered],
    profiles: ProfileSet | None,
    last_activity: Mapping[str, dt.datetime] | None = None,
) -> list[UserUsage]:
    """One :class:`UserUsage` per registered user and per unregistered owner label."""
    rows: dict[str, UserUsage] = {}
    for u in users:
        row = UserUsage(u.name, True, u.profile, u.enabled)
        profile = profiles.get(u.profile) if profiles is not None else None
        if profile is not None:
            row.memory_quota = profile.quota_memory
            row.containers_quota = profile.quota_containers
            row.services_quota = profile.quota_services
        rows[u.name] = row

    def row_for(owner: str) -> UserUsage:
        if owner not in rows:
            rows[owner] = UserUsage(owner, False)
        return rows[owner]

    flt = _label_key_filter()
    reply = await daemon.get(f"/containers/json?all=1&filters={flt}")
    containers = [c for c in (reply.json() if reply.ok else None) or [] if isinstance(c, dict)]
    # Live containers, as the quota counts memory: (owner, ID, service ID of a task).
    live: list[tuple[str, str, str | None]] = []
    for c in containers:
        labels = c.get("Labels")
        owner = _owner(labels)
        if owner is None:
            continue
        row = row_for(owner)
        state = str(c.get("State"))
        if is_task(labels):  # counted through its service (or beyond it: quota.charged)
            if state not in ("exited", "dead"):
                live.append((owner, str(c.get("Id", "")), str((labels or {})[TASK_LABEL])))
            continue
        row.containers_total += 1
        if state == "running":
            row.containers_running += 1
        if state not in ("exited", "dead"):
            live.append((owner, str(c.get("Id", "")), None))

    reply = await daemon.get(f"/services?status=true&filters={flt}")
    services = [s for s in (reply.json() if reply.ok else None) or [] if isinstance(s, dict)]
    held, tasks_held = await services_held(daemon, services)  # as the quota counts them
    service_owner: dict[str, str] = {}
    for s in services:
        spec = s.get("Spec") or {}
        owner = _owner(spec.get("Labels"))
        if owner is None:
            continue
        row = row_for(owner)
        service_owner[str(s.get("ID"))] = owner
        row.services += 1
        row.service_tasks += tasks_held.get(str(s.get("ID")), 0)
        status = s.get("ServiceStatus") or {}
        mode = spec.get("Mode") or {}
        spec_replicas = int((mode.get("Replicated") or {}).get("Replicas") or 0)
        desired = int(status.get("DesiredTasks") or spec_replicas)
        row.replicas_desired += desired
        row.replicas_running += int(status.get("RunningTasks") or 0)
        row.cpus += _service_cpus(spec, desired)

    limit = asyncio.Semaphore(INSPECT_CONCURRENCY)

    async def one(cid: str) -> tuple[int, float]:
        async with limit:
            return await _limits(daemon, cid)

    found = await asyncio.gather(*(one(cid) for _owner_name, cid, _sid in live))
    tasks: defaultdict[str, int] = defaultdict(int)
    for (owner, _cid, sid), (memory, cpus) in zip(live, found, strict=True):
        if sid is None:
            rows[owner].memory += memory
            rows[owner].cpus += cpus
        else:
            tasks[sid] += memory
            service_owner.setdefault(sid, owner)  # a removed service's tasks
    for sid, memory in charged(held, dict(tasks)).items():
        if sid in service_owner:
            rows[service_owner[sid]].memory += memory

    # Builds in progress hold memory in their user's quota (quota.building); only the
    # gate that runs them knows them: in a CLI's own process this adds nothing.
    for name, memory in building_users().items():
        row_for(name).memory += memory
    for name, at in (last_activity or {}).items():
        if name in rows:
            rows[name].last_activity = at
    return sorted(rows.values(), key=lambda r: (not r.registered, r.user))


# -- object counts for the metrics endpoint -------------------------------------------------

OBJECT_LISTS = {
    "container": "/containers/json?all=1&filters={}",
    "service": "/services?filters={}",
    "volume": "/volumes?filters={}",
    "network": "/networks?filters={}",
    "secret": "/secrets?filters={}",
    "config": "/configs?filters={}",
}


@dataclass
class ObjectCounts:
    """What every owner label holds on this engine, by kind; ``running`` counts the
    running containers. Kinds the engine has no list for (services, secrets and
    configs on a non-manager) are absent, not zero."""

    by_user: dict[str, dict[str, int]]
    running: dict[str, int]
    kinds: tuple[str, ...]


def _labels_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = obj.get("Labels") if kind in ("container", "volume", "network") else None
    if labels is None and kind not in ("container", "volume", "network"):
        labels = (obj.get("Spec") or {}).get("Labels")
    return labels if isinstance(labels, Mapping) else {}


async def count_objects(daemon: Daemon) -> ObjectCounts:
    """One filtered list per kind (the daemon filters on the owner label's presence),
    run concurrently. Raises ``UpstreamError`` when the daemon is unreachable."""
    flt = quote(q.encode_filters({"label": {OWNER_LABEL: True}}), safe="")
    kinds = tuple(OBJECT_LISTS)
    replies = await asyncio.gather(*(daemon.get(OBJECT_LISTS[k].format(flt)) for k in kinds))
    by_user: dict[str, dict[str, int]] = {}
    running: dict[str, int] = {}
    listed = []
    for kind, reply in zip(kinds, replies, strict=True):
        if not reply.ok:
            continue  # 503 on a worker for swarm kinds: not known here
        listed.append(kind)
        data = reply.json()
        if kind == "volume":
            data = (data or {}).get("Volumes")
        for obj in data or []:
            if not isinstance(obj, dict):
                continue
            owner = _labels_of(kind, obj).get(OWNER_LABEL)
            if not isinstance(owner, str) or not owner:
                continue
            counts = by_user.setdefault(owner, {})
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "container" and obj.get("State") == "running":
                running[owner] = running.get(owner, 0) + 1
    return ObjectCounts(by_user, running, tuple(listed))
