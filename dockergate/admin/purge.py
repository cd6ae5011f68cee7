"""Purge: remove (or stop) everything one user owns on an engine.

One implementation, on the gate's async :class:`~dockergate.proxy.daemon.Daemon`
client, used by ``dockergate purge`` (which opens its own connection to the
daemon) and by the gate's admin API ``POST /_dockergate/purge`` (which uses the
gate's pool), so a local and a remote purge cannot drift apart.

Objects are found by the owner label on the daemon itself (never from the gate's
memory or the user store), so a purge works for disabled and removed users, after
a gate restart, and for objects made on another node of the swarm.

The order keeps Swarm from undoing the work: services first (on a manager that is
swarm-wide, and their tasks stop being rescheduled), then containers (forced, with
their anonymous volumes), then, when asked, named volumes, networks, secrets and
configs, which are only free once nothing uses them. Removing something already
gone counts as done, so a purge can be repeated until it reports no failure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from dockergate.api import query as q
from dockergate.api.ownership import OWNER_LABEL, Resolved, remember_removal
from dockergate.proxy.daemon import Daemon, DaemonReply, ref
from dockergate.store.repository import NAME_RE

KINDS = ("service", "container", "volume", "network", "secret", "config")
SWARM_KINDS = frozenset({"service", "secret", "config"})  # one set per swarm, not per node
CONCURRENCY = 8  # removals in flight per kind
IN_USE_WAIT = 20.0  # seconds to wait for an object Swarm is still releasing
IN_USE_POLL = 0.5

# Results (the RESULT column). ``ok`` rows are done or nothing to do.
WOULD_REMOVE = "would remove"
WOULD_KILL = "would kill"
WOULD_SCALE = "would scale to 0"
REMOVED = "removed"
KILLED = "killed"
ALREADY_GONE = "already gone"
ALREADY_STOPPED = "not running"


class PurgeError(Exception):
    """The purge could not start (daemon unreachable, bad request); nothing was done
    for the kinds not yet reached."""


@dataclass(frozen=True)
class PurgeOptions:
    user: str
    dry_run: bool = False
    stop_only: bool = False
    volumes: bool = False
    networks: bool = False
    everything: bool = False  # --all: volumes, networks, secrets and configs too
    node_only: bool = False  # only this engine's objects: no services, secrets, configs

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.user):
            raise ValueError(f"invalid user name {self.user!r}")
        if self.stop_only and (self.volumes or self.networks or self.everything):
            raise ValueError(
                "--stop-only removes nothing; drop --volumes, --networks and --all "
                "(or drop --stop-only to remove)"
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        wanted = {"service", "container"}
        if self.volumes or self.everything:
            wanted.add("volume")
        if self.networks or self.everything:
            wanted.add("network")
        if self.everything:
            wanted |= {"secret", "config"}
        if self.node_only:
            wanted -= SWARM_KINDS
        return tuple(k for k in KINDS if k in wanted)

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "dry_run": self.dry_run,
            "stop_only": self.stop_only,
            "volumes": self.volumes,
            "networks": self.networks,
            "all": self.everything,
            "node_only": self.node_only,
        }

    @classmethod
    def from_json(cls, obj: Any) -> PurgeOptions:
        """Strict: the admin API refuses unknown keys and wrong types instead of
        guessing (a typo in ``dry_run`` must not turn a dry run into a purge)."""
        if not isinstance(obj, dict):
            raise ValueError("the body must be a JSON object")
        known = {"user", "dry_run", "stop_only", "volumes", "networks", "all", "node_only"}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
        user = obj.get("user")
        if not isinstance(user, str):
            raise ValueError('"user" (a string) is required')
        flags: dict[str, bool] = {}
        for key in known - {"user"}:
            value = obj.get(key, False)
            if not isinstance(value, bool):
                raise ValueError(f'"{key}" must be true or false')
            flags[key] = value
        return cls(
            user,
            dry_run=flags["dry_run"],
            stop_only=flags["stop_only"],
            volumes=flags["volumes"],
            networks=flags["networks"],
            everything=flags["all"],
            node_only=flags["node_only"],
        )

    def command_line(self) -> str:
        """The equivalent ``dockergate purge`` command, for the audit log."""
        parts = ["purge", "--user", self.user]
        for flag, on in (
            ("--dry-run", self.dry_run),
            ("--stop-only", self.stop_only),
            ("--volumes", self.volumes),
            ("--networks", self.networks),
            ("--all", self.everything),
            ("--node-only", self.node_only),
        ):
            if on:
                parts.append(flag)
        return " ".join(parts)


@dataclass
class PurgeRow:
    kind: str
    name: str
    id: str
    result: str
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "id": self.id,
            "result": self.result,
            "ok": self.ok,
        }


@dataclass
class PurgeReport:
    options: PurgeOptions
    rows: list[PurgeRow] = field(default_factory=list)
    manager: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if not r.ok)

    def counts(self) -> dict[str, dict[str, int]]:
        """{kind: {outcome: n}}: the result without its details ("scaled to 0 (was
        2)" counts as "scaled to 0"), every failure as "failed"."""
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            key = _outcome(row)
            out.setdefault(row.kind, {}).setdefault(key, 0)
            out[row.kind][key] += 1
        return out

    def summary(self) -> str:
        """One line for humans and the audit log, e.g. "removed: 1 service, 3
        containers, 1 volume; 0 failed"."""
        if not self.rows:
            return f"nothing owned by {self.options.user!r} on this engine"
        by_outcome: dict[str, list[str]] = {}
        counts = self.counts()
        for kind in KINDS:
            for outcome, n in counts.get(kind, {}).items():
                if outcome != "failed":
                    by_outcome.setdefault(outcome, []).append(f"{n} {kind}{'s' if n != 1 else ''}")
        parts = [f"{outcome}: {', '.join(what)}" for outcome, what in by_outcome.items()]
        return "; ".join([*parts, f"{self.failed} failed"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.options.user,
            "options": self.options.as_json(),
            "manager": self.manager,
            "rows": [r.as_dict() for r in self.rows],
            "counts": self.counts(),
            "failed": self.failed,
            "summary": self.summary(),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PurgeReport:
        """Rebuild a report answered by a remote gate (``purge --host``)."""
        rows = [
            PurgeRow(
                str(r.get("kind", "")),
                str(r.get("name", "")),
                str(r.get("id", "")),
                str(r.get("result", "")),
                bool(r.get("ok", False)),
            )
            for r in data.get("rows") or []
            if isinstance(r, dict)
        ]
        return cls(
            PurgeOptions.from_json(data.get("options")),
            rows,
            bool(data.get("manager")),
            [str(n) for n in data.get("notes") or []],
        )


def _outcome(row: PurgeRow) -> str:
    return row.result.split(" (", 1)[0] if row.ok else "failed"


def owner_filter(user: str) -> str:
    """``filters`` for the daemon's list calls: exactly this owner label value."""
    return quote(q.encode_filters({"label": {f"{OWNER_LABEL}={user}": True}}), safe="")


def _message(reply: DaemonReply) -> str:
    try:
        data = json.loads(reply.body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    text = reply.body.decode("utf-8", "replace").strip()
    return text or f"HTTP {reply.status}"


@dataclass
class _Found:
    kind: str
    id: str
    name: str
    obj: dict[str, Any]


async def _list(
    daemon: Daemon, kind: str, user: str, node_only: bool = False
) -> list[_Found] | None:
    """Objects of ``kind`` owned by ``user``; None when the engine has no such list
    (services, secrets and configs exist only on a swarm manager). With ``node_only``,
    swarm-scoped networks are left to the purge on a manager: a worker cannot remove
    them, and a manager's purge removes them for the whole swarm."""
    flt = owner_filter(user)
    path = {
        "service": f"/services?filters={flt}",
        "container": f"/containers/json?all=1&filters={flt}",
        "volume": f"/volumes?filters={flt}",
        "network": f"/networks?filters={flt}",
        "secret": f"/secrets?filters={flt}",
        "config": f"/configs?filters={flt}",
    }[kind]
    reply = await daemon.get(path)
    if not reply.ok:
        if kind in ("service", "secret", "config") and reply.status == 503:
            return None
        raise PurgeError(f"listing {kind}s of {user!r} failed: {_message(reply)}")
    data = reply.json()
    if kind == "volume":
        data = (data or {}).get("Volumes")
    items = [o for o in data or [] if isinstance(o, dict)]
    found = []
    for obj in items:
        if kind == "container":
            names = obj.get("Names") or []
            name = str(names[0]).lstrip("/") if names else ""
            found.append(_Found(kind, str(obj.get("Id", "")), name, obj))
        elif kind == "volume":
            found.append(_Found(kind, str(obj.get("Name", "")), str(obj.get("Name", "")), obj))
        elif kind == "network":
            if node_only and obj.get("Scope") == "swarm":
                continue
            found.append(_Found(kind, str(obj.get("Id", "")), str(obj.get("Name", "")), obj))
        else:
            spec = obj.get("Spec") or {}
            found.append(_Found(kind, str(obj.get("ID", "")), str(spec.get("Name", "")), obj))
    # The daemon filtered by label; check again, so that a daemon ignoring the
    # filter (or a proxy in between) can never widen a purge to someone else.
    return [f for f in found if _owner(kind, f.obj) == user]


def _owner(kind: str, obj: dict[str, Any]) -> str | None:
    if kind in ("container", "volume", "network"):
        labels = obj.get("Labels")
    else:
        labels = (obj.get("Spec") or {}).get("Labels")
    return labels.get(OWNER_LABEL) if isinstance(labels, dict) else None


def _running(container: dict[str, Any]) -> bool:
    return str(container.get("State")) in ("running", "paused", "restarting")


async def _gone(daemon: Daemon, kind: str, oid: str) -> bool:
    inspect = {
        "service": "/services/{}",
        "container": "/containers/{}/json",
        "volume": "/volumes/{}",
        "network": "/networks/{}",
        "secret": "/secrets/{}",
        "config": "/configs/{}",
    }[kind]
    return (await daemon.get(inspect.format(ref(oid)))).status == 404


async def _remove(daemon: Daemon, f: _Found) -> PurgeRow:
    """Remove one object. Swarm releases volumes, networks, secrets and configs a
    little after their services and containers go, and removes a service's task
    containers itself ("removal already in progress"): both are waited for a while."""
    path = {
        "service": "/services/{}",
        "container": "/containers/{}?force=1&v=1",
        "volume": "/volumes/{}",
        "network": "/networks/{}",
        "secret": "/secrets/{}",
        "config": "/configs/{}",
    }[f.kind].format(ref(f.id))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IN_USE_WAIT
    busy = False  # the daemon said someone else is at it: a later 404 means removed
    while True:
        reply = await daemon.call("DELETE", path)
        if (
            reply.ok
            or (reply.status == 404 and busy)
            or (
                reply.status != 404 and await _gone(daemon, f.kind, f.id)  # by Swarm, by someone
            )
        ):
            # Kept like a user's removal through the gate: its events, replayed later,
            # are still its owner's.
            remember_removal(Resolved(f.kind, f.id, _owner(f.kind, f.obj), f.obj))
            return PurgeRow(f.kind, f.name, f.id, REMOVED)
        if reply.status == 404:
            return PurgeRow(f.kind, f.name, f.id, ALREADY_GONE)
        if f.kind == "container":
            busy = reply.status == 409
        else:
            busy = reply.status in (400, 403, 409, 500)
        if not busy or loop.time() >= deadline:
            return PurgeRow(f.kind, f.name, f.id, f"failed: {_message(reply)}", ok=False)
        await asyncio.sleep(IN_USE_POLL)


async def _disarm(daemon: Daemon, f: _Found) -> PurgeRow | None:
    """A container stopped by a purge stays stopped: its restart policy becomes ``no``
    (dockerd starts ``always`` containers again when it restarts, killed or not).
    A failure is the container's row (the purge then exits 1)."""
    body = json.dumps({"RestartPolicy": {"Name": "no"}}).encode()
    reply = await daemon.call("POST", f"/containers/{ref(f.id)}/update", body)
    if reply.ok or reply.status == 404:
        return None
    why = f"failed: its restart policy could not be set to no: {_message(reply)}"
    return PurgeRow(f.kind, f.name, f.id, why, ok=False)


async def _stop_for_good(daemon: Daemon, f: _Found) -> PurgeRow:
    failed = await _disarm(daemon, f)
    if failed is not None:
        if _running(f.obj):
            await _kill(daemon, f)
        return failed
    if not _running(f.obj):
        return PurgeRow(f.kind, f.name, f.id, ALREADY_STOPPED)
    return await _kill(daemon, f)


async def _kill(daemon: Daemon, f: _Found) -> PurgeRow:
    reply = await daemon.call("POST", f"/containers/{ref(f.id)}/kill")
    if reply.ok:
        return PurgeRow(f.kind, f.name, f.id, KILLED)
    if reply.status == 404:
        return PurgeRow(f.kind, f.name, f.id, ALREADY_GONE)
    if reply.status == 409:  # "is not running": stopped meanwhile
        return PurgeRow(f.kind, f.name, f.id, ALREADY_STOPPED)
    return PurgeRow(f.kind, f.name, f.id, f"failed: {_message(reply)}", ok=False)


def _replicas(service: dict[str, Any]) -> int | None:
    """Desired replicas of a replicated service; None for modes without a count."""
    mode = (service.get("Spec") or {}).get("Mode") or {}
    if "Replicated" in mode:
        return int((mode.get("Replicated") or {}).get("Replicas") or 0)
    return None


async def _scale_to_zero(daemon: Daemon, f: _Found) -> PurgeRow:
    for _attempt in range(3):  # the version moves if Swarm or someone updates meanwhile
        reply = await daemon.get(f"/services/{ref(f.id)}")
        if reply.status == 404:
            return PurgeRow(f.kind, f.name, f.id, ALREADY_GONE)
        if not reply.ok:
            return PurgeRow(f.kind, f.name, f.id, f"failed: {_message(reply)}", ok=False)
        service = reply.json() or {}
        replicas = _replicas(service)
        if replicas is None:
            return PurgeRow(
                f.kind,
                f.name,
                f.id,
                "failed: not a replicated service, it has no replica count to set to 0; "
                "purge without --stop-only to remove it",
                ok=False,
            )
        if replicas == 0:
            return PurgeRow(f.kind, f.name, f.id, "already at 0 replicas")
        spec = service.get("Spec") or {}
        spec["Mode"] = {"Replicated": {"Replicas": 0}}
        version = int((service.get("Version") or {}).get("Index") or 0)
        update = await daemon.call(
            "POST",
            f"/services/{ref(f.id)}/update?version={version}",
            json.dumps(spec).encode(),
        )
        if update.ok:
            return PurgeRow(f.kind, f.name, f.id, f"scaled to 0 (was {replicas})")
        if "out of sequence" not in _message(update):
            return PurgeRow(f.kind, f.name, f.id, f"failed: {_message(update)}", ok=False)
    return PurgeRow(f.kind, f.name, f.id, "failed: the service kept changing", ok=False)


def _planned(opts: PurgeOptions, f: _Found) -> PurgeRow:
    """The dry-run row: what a real run would do to this object."""
    if not opts.stop_only:
        return PurgeRow(f.kind, f.name, f.id, WOULD_REMOVE)
    if f.kind == "container":
        return PurgeRow(f.kind, f.name, f.id, WOULD_KILL if _running(f.obj) else ALREADY_STOPPED)
    replicas = _replicas(f.obj)
    if replicas is None:
        return PurgeRow(
            f.kind, f.name, f.id, "would fail: not a replicated service (cannot scale to 0)", False
        )
    return PurgeRow(f.kind, f.name, f.id, WOULD_SCALE if replicas else "already at 0 replicas")


async def _each(
    found: list[_Found], action: Callable[[_Found], Awaitable[PurgeRow]]
) -> list[PurgeRow]:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(f: _Found) -> PurgeRow:
        async with limit:
            return await action(f)

    return list(await asyncio.gather(*(one(f) for f in found)))


async def purge(daemon: Daemon, opts: PurgeOptions) -> PurgeReport:
    """Do (or with ``dry_run`` plan) the purge; see the module docstring.

    Raises :class:`PurgeError` (or ``UpstreamError``) only when the daemon cannot be
    listed; failures on single objects are rows with ``ok=False``."""
    report = PurgeReport(opts)
    for kind in opts.kinds:
        found = await _list(daemon, kind, opts.user, opts.node_only)
        if found is None:
            if kind == "service":
                report.notes.append(
                    "this engine is not a swarm manager: services were not listed; "
                    "containers of services here may be started again by Swarm "
                    "(purge through a manager, or on every node)"
                )
            continue
        if kind == "service":
            report.manager = True
        found.sort(key=lambda f: (f.name, f.id))
        if opts.dry_run:
            report.rows.extend(_planned(opts, f) for f in found)
        elif opts.stop_only and kind == "service":
            report.rows.extend(await _each(found, lambda f: _scale_to_zero(daemon, f)))
        elif opts.stop_only:
            report.rows.extend(await _each(found, lambda f: _stop_for_good(daemon, f)))
        else:
            report.rows.extend(await _each(found, lambda f: _remove(daemon, f)))
    return report
