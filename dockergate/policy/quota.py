"""Per-user quotas, counted from the daemon's real state (the owner labels).

Counting what the engine holds (not what the gate remembers) keeps quotas true
after a gate restart and across changes made directly on the daemon. A per-user
lock spans the count *and* the forwarded create, so two parallel creates cannot
both take the last slot.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.labels import TASK_LABEL, is_task
from dockergate.api.ownership import OWNER_LABEL
from dockergate.policy.model import Profile, human
from dockergate.policy.rules import Denied
from dockergate.policy.service import is_job, service_memory, service_tasks
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


async def swarm_nodes(daemon: Daemon) -> int:
    """Swarm nodes a global service runs a task on (1 when not a manager). All of
    them, drained or not: a node made active again gets its task without asking."""
    reply = await daemon.get("/nodes")
    nodes = reply.json() if reply.ok else None
    return len(nodes) if isinstance(nodes, list) and nodes else 1


async def jobs_done(daemon: Daemon, services: list[dict[str, Any]]) -> dict[str, int]:
    """Tasks each job service has completed in its current run (``JobIteration``): a
    finished job holds no memory, and ``docker service update`` starts a new run."""
    runs = {
        str(s.get("ID")): ((s.get("JobStatus") or {}).get("JobIteration") or {}).get("Index")
        for s in services
        if is_job(s.get("Spec") or {})
    }
    if not runs:
        return {}
    flt = q.encode_filters({"service": dict.fromkeys(runs, True)})
    reply = await daemon.get(f"/tasks?filters={quote(flt, safe='')}")
    done: dict[str, int] = dict.fromkeys(runs, 0)
    for task in (reply.json() if reply.ok else None) or []:
        if not isinstance(task, dict) or (task.get("Status") or {}).get("State") != "complete":
            continue
        sid = str(task.get("ServiceID"))
        if sid in runs and (task.get("JobIteration") or {}).get("Index") == runs[sid]:
            done[sid] += 1
    return done


async def services_held(
    daemon: Daemon, services: list[dict[str, Any]], nodes: int | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """What each service holds for the quotas, by service ID: memory, and the tasks
    it runs at once (each one a container on some node)."""
    if not services:
        return {}, {}
    if nodes is None:
        nodes = await swarm_nodes(daemon)
    done = await jobs_done(daemon, services)
    memory, tasks = {}, {}
    for s in services:
        sid, spec = str(s.get("ID")), s.get("Spec") or {}
        memory[sid] = service_memory(spec, nodes, done.get(sid, 0))
        tasks[sid] = service_tasks(spec, nodes, done.get(sid, 0))
    return memory, tasks


async def live_memory(
    daemon: Daemon, containers: list[dict[str, Any]], exclude: str | None = None
) -> tuple[int, dict[str, int], int]:
    """Memory limits of the live containers, and of stopped ones dockerd may start
    again by itself (``exclude`` left out: a container being started or updated is
    counted as asked): (plain containers, task containers by service ID, the stopped
    ones among the plain containers). Task containers count as their service's, and
    beyond it: a removed service's tasks, or a job's earlier run, stop only after
    their grace period."""

    async def one(cid: str, stopped: bool) -> int:
        reply = await daemon.get(f"/containers/{cid}/json")
        if not reply.ok:
            return 0
        obj = reply.json() or {}
        if stopped and not restarted_by_dockerd(obj):
            return 0
        return int((obj.get("HostConfig") or {}).get("Memory") or 0)

    live = [c for c in containers if str(c.get("State")) != "dead" and c["Id"] != exclude]
    limits = await asyncio.gather(*(one(c["Id"], c.get("State") == "exited") for c in live))
    plain, parked, tasks = 0, 0, defaultdict[str, int](int)
    for c, memory in zip(live, limits, strict=True):
        if is_task(c.get("Labels")):
            tasks[str(c["Labels"][TASK_LABEL])] += memory
        else:
            plain += memory
            parked += memory if c.get("State") == "exited" else 0
    return plain, dict(tasks), parked


def restarted_by_dockerd(container: dict[str, Any]) -> bool:
    """Whether dockerd may start this stopped container again by itself at its next
    start (``daemon.restore``, the restart manager's rule), so that it holds its memory
    for the quota though stopped: ``always``; ``on-failure`` after a non-zero exit with
    retries left; ``unless-stopped`` unless it was stopped by hand, which inspect does
    not tell (a policy set after the container exited by itself restarts it), so it
    counts: ``docker rm`` or ``docker update --restart no`` frees it."""
    policy = (container.get("HostConfig") or {}).get("RestartPolicy") or {}
    name = policy.get("Name") or ""
    if name in ("always", "unless-stopped"):
        return True
    if name != "on-failure":
        return False
    retries = int(policy.get("MaximumRetryCount") or 0)
    exit_code = int((container.get("State") or {}).get("ExitCode") or 0)
    return exit_code != 0 and (retries == 0 or int(container.get("RestartCount") or 0) < retries)


def charged(held: dict[str, int], tasks: dict[str, int]) -> dict[str, int]:
    """What each service costs the quota: what its spec holds, or what its task
    containers here hold if that is more (tasks of a removed service included)."""
    return {sid: max(held.get(sid, 0), tasks.get(sid, 0)) for sid in held.keys() | tasks.keys()}


async def usage(daemon: Daemon, user: str, exclude: str | None = None) -> dict[str, Any]:
    containers = await owned_containers(daemon, user)
    services = await _services(daemon, user)
    nodes = await swarm_nodes(daemon) if services else 1
    plain, tasks, parked = await live_memory(daemon, containers, exclude)
    held, service_tasks_held = await services_held(daemon, services, nodes)
    costs = charged(held, tasks)
    return {
        "containers": len([c for c in containers if not is_task(c.get("Labels"))]),
        "running": len(
            [c for c in containers if c.get("State") == "running" and not is_task(c.get("Labels"))]
        ),
        "services": len(services),
        # Containers the user's services run at once (the containers quota counts them).
        "service_tasks": service_tasks_held,
        "memory": plain + sum(costs.values()) + building_memory(user),
        "service_specs": services,
        "service_memory": costs,
        "task_memory": tasks,
        # Task containers beyond what their services hold: removed services' tasks, a
        # job's earlier run, stopping (a refusal says so: nothing to stop by hand).
        "stopping": sum(cost - held.get(sid, 0) for sid, cost in costs.items()),
        # Stopped containers dockerd may start again by itself (restart policies).
        "restartable": parked,
        "nodes": nodes,
    }


# Objects counted by number, with where their quota is and how to free some: networks
# take address pools from the engine's few (about 30 with Docker's defaults); secrets
# and configs live in the swarm's raft store, in every manager's memory, WAL and
# snapshots (up to 500 kB / 1000 kB each).
COUNTED = {
    "network": ("quota_networks", "docker network prune"),
    "secret": ("quota_secrets", "docker secret rm"),
    "config": ("quota_configs", "docker config rm"),
}


async def check_count_quota(daemon: Daemon, profile: Profile, user: str, kind: str) -> None:
    """One more ``kind`` (network, secret, config) must fit in the user's quota."""
    field, how = COUNTED[kind]
    limit: int | None = getattr(profile, field)
    if profile.admin or limit is None:
        return
    reply = await daemon.get(f"/{kind}s?filters={owner_filter(user)}")
    owned = len(reply.json() or []) if reply.ok else 0
    if owned >= limit:
        raise Denied(
            profile,
            f"more {kind}s",
            f"quota.{kind}s",
            f"{owned} of {limit} used",
            f"remove {kind}s you no longer use ({how}) or ask an admin",
        )


# Memory of builds in progress, by user: their RUN containers carry no owner label,
# so the engine's state does not show them (images._check_build registers each).
_building: dict[str, dict[int, int]] = {}
_build_ids = itertools.count()


def building(user: str, memory: int) -> Callable[[], None]:
    """Count ``memory`` for ``user``'s build until the returned callable is called."""
    key = next(_build_ids)
    _building.setdefault(user, {})[key] = memory

    def done() -> None:
        builds = _building.get(user, {})
        builds.pop(key, None)
        if not builds:
            _building.pop(user, None)

    return done


def building_memory(user: str) -> int:
    return sum(_building.get(user, {}).values())


def building_users() -> dict[str, int]:
    """Memory held by builds in progress in this process, per user."""
    return {user: sum(builds.values()) for user, builds in _building.items()}


async def check_container_quota(daemon: Daemon, profile: Profile, user: str, memory: int) -> None:
    if profile.admin or (profile.quota_containers is None and profile.quota_memory is None):
        return
    used = await usage(daemon, user)
    tasks = sum(used["service_tasks"].values())
    if (
        profile.quota_containers is not None
        and used["containers"] + tasks >= profile.quota_containers
    ):
        counted = f"{used['containers'] + tasks} of {profile.quota_containers} used" + (
            f" ({used['containers']} containers, {tasks} service tasks)" if tasks else ""
        )
        raise Denied(
            profile,
            "more containers",
            "quota.containers",
            counted,
            "remove stopped containers (docker container prune), scale a service down "
            "or ask an admin",
        )
    _check_memory(profile, used["memory"], memory, used["stopping"], used["restartable"])


async def check_service_quota(
    daemon: Daemon, profile: Profile, user: str, spec: dict[str, Any], service_id: str | None
) -> None:
    if profile.admin or (
        profile.quota_services is None
        and profile.quota_memory is None
        and profile.quota_containers is None
    ):
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
    nodes = used["nodes"] if used["service_specs"] else await swarm_nodes(daemon)
    _check_tasks(profile, used, spec, service_id, nodes)
    costs: dict[str, int] = used["service_memory"]
    current = sum(memory for sid, memory in costs.items() if sid != service_id)
    container_mem = used["memory"] - sum(costs.values())
    wanted = service_memory(spec, nodes)
    if service_id is not None:
        # An update replaces the tasks running here (stop-first) - except a job's:
        # its new run starts at once, beside the old run's tasks still stopping.
        running = used["task_memory"].get(service_id, 0)
        wanted = wanted + running if is_job(spec) else max(wanted, running)
    _check_memory(profile, container_mem + current, wanted, used["stopping"], used["restartable"])


def _check_tasks(
    profile: Profile, used: dict[str, Any], spec: dict[str, Any], service_id: str | None, nodes: int
) -> None:
    """A service's tasks are containers (each with its shim and its share of the
    engine): with the user's containers and other services' tasks, they must fit in
    ``quota.containers``. Fewer tasks than the service runs now always pass."""
    if profile.quota_containers is None:
        return
    held: dict[str, int] = used["service_tasks"]
    wanted = service_tasks(spec, nodes)
    if service_id is not None and wanted <= held.get(service_id, 0):
        return
    others = sum(n for sid, n in held.items() if sid != service_id)
    if used["containers"] + others + wanted > profile.quota_containers:
        raise Denied(
            profile,
            "this many tasks",
            "quota.containers",
            f"{used['containers']} containers + {others} tasks of other services + {wanted} asked",
            f"the quota is {profile.quota_containers} containers, service tasks included; "
            "ask for fewer replicas, remove containers or services, or ask an admin",
        )


async def check_memory_quota(
    daemon: Daemon, profile: Profile, user: str, container_id: str, memory: int
) -> None:
    """A container about to hold ``memory`` (a start, a restart, an update): the rest
    of the user's usage plus that must fit in the memory quota."""
    if profile.admin or profile.quota_memory is None:
        return
    used = await usage(daemon, user, exclude=container_id)
    _check_memory(profile, used["memory"], memory, used["stopping"], used["restartable"])


def _check_memory(
    profile: Profile, used: int, wanted: int, stopping: int = 0, restartable: int = 0
) -> None:
    if profile.quota_memory is not None and used + wanted > profile.quota_memory:
        advice = "stop something or ask for less"
        if restartable:
            advice = (
                f"{human(restartable)} of it is held by stopped containers dockerd may start "
                "again by itself at its next start (restart policy always, unless-stopped "
                "or on-failure): remove them (docker rm), or docker update --restart no "
                "them, or " + advice
            )
        if stopping:
            advice = (
                f"{human(stopping)} of it is held by tasks of removed or updated services "
                "that are still stopping (their stop grace period): retry in a moment, "
                "or " + advice
            )
        raise Denied(
            profile,
            "going over the memory quota",
            "quota.memory",
            f"{human(used)} used + {human(wanted)} asked",
            f"the quota is {human(profile.quota_memory)}; {advice}",
        )
