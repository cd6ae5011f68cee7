"""Profile rules applied to container, exec and service bodies.

Every function takes the parsed body, checks it against the profile and fills in
defaults (memory, CPU, pids) in place, raising :class:`Denied` with the field, the
value and what is allowed. The same rules serve the gate and ``dockergate check``
(offline compose/stack files), so a file that passes ``check`` passes the gate.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from dockergate.policy.model import (
    DEFAULT_CAPS,
    UNLIMITED,
    BindRule,
    Profile,
    human,
    normalise_cap,
    parse_size,
)

# The host namespaces a container can join, with the CLI flag that asks for each.
NAMESPACES = {
    "NetworkMode": "--network",
    "PidMode": "--pid",
    "IpcMode": "--ipc",
    "UTSMode": "--uts",
    "UsernsMode": "--userns",
    "CgroupnsMode": "--cgroupns",
}
NANO = 1_000_000_000


SHOWN_MAX = 200  # characters of a refused value a refusal repeats


class Denied(Exception):
    """A profile rule forbids a field; ``message`` is written for the user."""

    def __init__(self, profile: Profile, what: str, field: str, value: Any, allowed: str) -> None:
        if isinstance(value, str):
            shown = value
        elif isinstance(value, list | dict):
            shown = json.dumps(value, separators=(",", ":"), default=str)  # as it was sent
        else:
            shown = repr(value)
        if len(shown) > SHOWN_MAX:  # an inlined seccomp profile is kilobytes of JSON
            shown = f"{shown[: SHOWN_MAX - 20]}... ({len(shown)} characters)"
        message = f"profile {profile.name!r} forbids {what} ({field}={shown}); {allowed}"
        super().__init__(message)
        self.message = message
        self.rule = what
        self.profile = profile.name


@dataclass(frozen=True)
class NodeFacts:
    """What some rules need to know about the engine: RAM (for shares), Swarm role."""

    mem_total: int = 0
    ncpu: int = 0
    manager: bool = False
    worker: bool = False  # in a swarm, not a manager
    log_driver: str = "json-file"  # the daemon's default (``docker info``'s LoggingDriver)
    tasks_max: int = 0  # processes and threads the node may run (pid_max, threads-max)


def _cap_max(
    profile: Profile, limit_max: float | None, share: float | None, total: float
) -> float | None:
    caps = [c for c in (limit_max, share * total if share and total else None) if c]
    return min(caps) if caps else None


# -- host access -------------------------------------------------------------------------


# SELinux types a container may ask for: Docker's own confined domains (``spc_t``,
# what ``label=disable`` means, and any other type could be unconfined).
CONFINED_SELINUX_TYPES = frozenset({"container_t", "container_init_t", "svirt_lxc_net_t"})
DOCKER_APPARMOR = "docker-default"
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def check_security_opts(profile: Profile, opts: list[Any], field: str) -> None:
    """An allowlist, not a list of the known-bad: any AppArmor profile loaded on the
    host (Ubuntu loads unconfined ones for desktop apps), any SELinux type or level
    (``spc_t``, a category range reaching other containers' files) could unconfine.
    No seccomp option: an inline profile replaces the daemon's filter ("null": none at
    all), and ``builtin`` would override a stricter daemon-wide ``seccomp-profile``."""
    if profile.unconfined:
        return
    for raw in opts:
        opt = str(raw)
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")
        key = key.strip().lower()
        value = value.strip()
        label_key, _, label_value = value.partition(":")
        good = (
            # Bare, or a value Go's strconv.ParseBool reads as true: "=false" would
            # undo a daemon-wide "no-new-privileges": true.
            (key == "no-new-privileges" and (not sep or value in GO_TRUE))
            or (key == "apparmor" and value == DOCKER_APPARMOR)
            or (key == "writable-cgroups" and value.lower() in ("false", "0"))
            or (key == "label" and label_key == "type" and label_value in CONFINED_SELINUX_TYPES)
        )
        if not good:
            raise Denied(
                profile,
                "weakening the container's confinement",
                field,
                opt,
                f"no-new-privileges, apparmor={DOCKER_APPARMOR} and "
                f"label=type:{'|'.join(sorted(CONFINED_SELINUX_TYPES))} are allowed",
            )


def check_endpoint_opts(profile: Profile, endpoint: Any, field: str) -> None:
    """An endpoint's driver options may set per-interface sysctls (API 1.46+:
    ``com.docker.network.endpoint.sysctls``): the profile's sysctl allowlist holds."""
    opts = endpoint.get("DriverOpts") if isinstance(endpoint, dict) else None
    if not isinstance(opts, dict):
        return
    listed = opts.get(ENDPOINT_SYSCTLS)
    if listed is None:
        return
    names = {part.partition("=")[0].strip(): True for part in str(listed).split(",") if part}
    check_sysctls(profile, names, f"{field}.DriverOpts[{ENDPOINT_SYSCTLS}]")


ENDPOINT_SYSCTLS = "com.docker.network.endpoint.sysctls"


def check_caps(profile: Profile, caps: list[Any], field: str) -> None:
    allowed = DEFAULT_CAPS | profile.cap_add
    for cap in caps or []:
        name = normalise_cap(cap)
        if name == "ALL" or name not in allowed:
            extra = ", ".join(sorted(profile.cap_add)) or "none"
            raise Denied(
                profile,
                "adding kernel capabilities",
                field,
                cap,
                f"Docker's default set is allowed, plus: {extra}",
            )


def check_sysctls(profile: Profile, sysctls: dict[str, Any] | None, field: str) -> None:
    for name in sysctls or {}:
        if not profile.allows_sysctl(name):
            allowed = ", ".join(profile.sysctls) or "none"
            raise Denied(profile, "setting this sysctl", field, name, f"allowed: {allowed}")


def resolve_host_path(path: str) -> str:
    """Normalise a host path the way the kernel will see it: ``..``, ``//``, trailing
    slashes and symlinks resolved on this host (``ln -s / ~/root`` does not help).
    A path with a NUL byte names nothing the kernel can open: "" (allowed nowhere)."""
    if "\x00" in path:
        return ""
    return os.path.realpath(posixpath.normpath(path))


# True while ``dockergate check`` reads files on an admin's machine, where the team's
# bind paths need not exist; the gate itself must see them (see check_bind).
OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("offline", default=False)


def _below(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def check_bind(
    profile: Profile, source: str, read_only: bool, field: str, recursive: bool = True
) -> None:
    """``recursive`` False for a ``NonRecursive`` bind (``bind``, not ``rbind``): the
    mounts below its source are not in the container at all."""
    real = resolve_host_path(source)
    rules = [(resolve_host_path(rule.path), rule) for rule in profile.binds]
    found = _deciding_rule(rules, real)
    if found is None:
        allowed = ", ".join(f"{r.path}{' (ro)' if r.read_only else ''}" for r in profile.binds)
        raise Denied(
            profile,
            "bind-mounting this host path",
            field,
            source,
            f"allowed below: {allowed}" if allowed else "use a named volume instead",
        )
    base, rule = found
    if not OFFLINE.get() and not os.path.isdir(base):
        # Symlinks below the allowed path are resolved in the gate's own file
        # system; if it cannot see that tree (a gate in a container without
        # it), a link planted there (data/x -> /) would pass unseen.
        raise Denied(
            profile,
            "bind-mounting a path the gate cannot see",
            field,
            source,
            f"the gate has no {rule.path} to check symlinks in: mount it into the "
            "gate at the same path (read-only) or create it",
        )
    if rule.read_only and not read_only:
        raise Denied(
            profile,
            "a writable bind mount of a read-only path",
            field,
            source,
            f"mount {rule.path} read-only (:ro / readonly)",
        )
    if not read_only:
        inner = [r.path for b, r in rules if r.read_only and b != real and _below(b, real)]
        if inner:
            raise Denied(
                profile,
                "a writable bind mount over a read-only path",
                field,
                source,
                f"{inner[0]} below it is read-only: mount it read-only (:ro / "
                "readonly), or bind a path beside the read-only one",
            )
    elif recursive and not OFFLINE.get():
        # dockerd before 25 makes only the top of a read-only bind read-only:
        # a read-write mount below it stays writable, which matters where the
        # most specific rule for that mount says read-only.
        below = [
            point
            for point in writable_mounts_below(real)
            if (_deciding_rule(rules, point) or found)[1].read_only
        ]
        if below:
            more = f" (and {len(below) - 1} more)" if len(below) > 1 else ""
            raise Denied(
                profile,
                "a read-only bind mount with writable mounts below it",
                field,
                source,
                f"dockerd makes only the top of a read-only bind read-only, and "
                f"{below[0]}{more}, in a read-only path, is mounted read-write below "
                "it on this host: bind that mount read-only by itself, bind "
                "non-recursively (--mount ...,readonly,bind-nonrecursive), or have an "
                "admin remount it read-only",
            )
    follows = None if OFFLINE.get() or real == base else follows_symlinks(base, real)
    if follows is not None:
        raise Denied(
            profile,
            "bind-mounting below an allowed path whose mount follows symlinks",
            field,
            source,
            f"bind {rule.path} itself, or have an admin mount it nosymfollow "
            f"(mount --bind {follows} {follows} && mount -o remount,bind,nosymfollow "
            f"{follows}): a directory below it can be swapped for a symlink "
            "between this check and the container's start",
        )


def _deciding_rule(rules: list[tuple[str, BindRule]], path: str) -> tuple[str, BindRule] | None:
    """The most specific rule holding ``path`` (its resolved path, and the rule): a
    read-only path listed inside a writable one stays read-only whichever comes first
    in the profile."""
    holding = [(base, rule) for base, rule in rules if _below(path, base)]
    return max(holding, key=lambda found: len(found[0])) if holding else None


MOUNTINFO = "/proc/self/mountinfo"
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def writable_mounts_below(path: str) -> list[str]:
    """Mount points strictly below ``path`` that are mounted read-write here.

    dockerd before 25 (API 1.44's ``ReadOnlyForceRecursive``) makes a ``:ro`` bind
    read-only with one remount of its top: file systems mounted below the source (an
    NFS export inside the team's read-only tree) stay writable in the container."""
    prefix = path.rstrip("/") + "/"
    visible: dict[str, bool] = {}  # mount point -> read-write, top-most mount only
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                fields = line.split(" ", 6)
                if len(fields) < 6:
                    continue
                point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
                if not (point.startswith(prefix) or _below(prefix, point)):
                    continue  # neither below the path nor covering it
                # Mounts are listed in the order they were made: a later one at a
                # point, or above it, covers what was mounted there before (an
                # admin's read-only bind over a read-write export).
                inside = point.rstrip("/") + "/"
                for seen in [p for p in visible if p == point or p.startswith(inside)]:
                    del visible[seen]
                # Writable if this mount and its file system (the super options,
                # after the " - " separator) both are.
                super_options = line.partition(" - ")[2].split(" ")[2:3]
                visible[point] = "rw" in fields[5].split(",") and "ro" not in (
                    super_options[0].strip().split(",") if super_options else []
                )
    except OSError:
        return []
    return [point for point, writable in visible.items() if writable and point.startswith(prefix)]


ST_NOSYMFOLLOW = getattr(os, "ST_NOSYMFOLLOW", 0x2000)  # Linux 5.10's MS_NOSYMFOLLOW


def follows_symlinks(base: str, real: str) -> str | None:
    """The first directory from ``base`` down to ``real``'s parent on a mount that
    follows symlinks, or None.

    The gate resolves a bind source when the container is created; dockerd resolves
    it again at every start. Whoever can write below ``base`` (the user, or any of
    their containers with a writable bind there) can swap a directory on the way for
    a symlink to ``/`` in between. On a ``nosymfollow`` mount the kernel refuses to
    follow it, so the mount fails instead."""
    parts = real[len(base) :].strip("/").split("/")[:-1]
    path = base
    for part in ["", *parts]:
        path = os.path.join(path, part) if part else path
        try:
            flags = os.statvfs(path).f_flag
        except OSError:
            break  # not there yet: dockerd creates it, as root, at start
        if not flags & ST_NOSYMFOLLOW:
            return path
    return None


def bind_options(spec: str) -> tuple[str, str, bool]:
    """Split ``src:dst[:opts]`` into (src, dst, read_only)."""
    parts = spec.split(":")
    source = parts[0]
    dest = parts[1] if len(parts) > 1 else ""
    return source, dest, "ro" in bind_modes(spec)


def bind_modes(spec: str) -> set[str]:
    """The options of ``src:dst:opts`` (``ro``, ``z``, ``nocopy``...)."""
    parts = spec.split(":")
    return set(parts[2].split(",")) if len(parts) > 2 else set()


def check_own_volume(profile: Profile, name: str, field: str) -> None:
    """``mounts.own_volumes: false``: the user mounts only the profile's shared volumes,
    so neither a mount of a volume of their own nor a volume create is allowed."""
    if not profile.own_volumes:
        allowed = ", ".join(v.name for v in profile.shared_volumes) or "none"
        raise Denied(
            profile, "named volumes of your own", field, name, f"shared volumes: {allowed}"
        )


def check_volume_driver(
    profile: Profile, driver: str, options: dict[str, Any] | None, field: str
) -> None:
    driver = driver or "local"
    if driver not in profile.volume_drivers:
        raise Denied(
            profile,
            "this volume driver",
            field,
            driver,
            f"allowed: {', '.join(profile.volume_drivers) or 'none'}",
        )
    if options and not profile.volume_driver_opts:
        raise Denied(
            profile,
            "volume driver options (a local volume with type/o=bind/device is a bind mount)",
            field,
            ",".join(f"{k}={v}" for k, v in options.items()),
            "create volumes without --opt",
        )


# Where the engine picks a host port when none is given: the kernel's ephemeral range
# for containers (dockerd's port allocator), 30000-32767 for Swarm's ingress.
SWARM_DYNAMIC_PORTS = (30000, 32767)


def ephemeral_ports() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def check_any_port(profile: Profile, dynamic: tuple[int, int], field: str, value: str) -> None:
    """A port the engine chooses may be any of ``dynamic``: all of them must be allowed."""
    lo, hi = dynamic
    if not any(a <= lo and hi <= b for a, b in profile.published_ports):
        raise Denied(
            profile,
            "publishing on a port the engine picks",
            field,
            value,
            f"give a host port in {_ranges(profile)} (the engine picks from {lo}-{hi})",
        )


def _ranges(profile: Profile) -> str:
    return ", ".join(f"{a}-{b}" for a, b in profile.published_ports) or "none"


def check_ports(profile: Profile, bindings: dict[str, Any] | None, field: str) -> None:
    for container_port, entries in (bindings or {}).items():
        for entry in entries or []:
            host = str((entry or {}).get("HostPort") or "").strip()
            if not host:
                check_any_port(profile, ephemeral_ports(), field, f"(any)->{container_port}")
                continue
            lo, _, hi = host.partition("-")
            try:
                ports = range(int(lo), int(hi or lo) + 1)
            except ValueError:
                raise Denied(
                    profile, "this host port", field, host, "a port number or range"
                ) from None
            if ports and not profile.allows_ports(ports[0], ports[-1]):
                raise Denied(
                    profile,
                    "publishing this host port",
                    field,
                    f"{host}->{container_port}",
                    f"allowed host ports: {_ranges(profile)}",
                )


def check_image(profile: Profile, image: str, field: str) -> None:
    if image and not profile.allows_registry(image):
        raise Denied(
            profile,
            "images from this registry",
            field,
            image,
            f"allowed: {', '.join(profile.registries)}",
        )


# -- resources ---------------------------------------------------------------------------


def apply_memory(
    profile: Profile, res: dict[str, Any], facts: NodeFacts, field: str, *, update: bool = False
) -> None:
    """Default and cap ``Memory``; pin ``MemorySwap`` to it unless swap is allowed."""
    memory = int(res.get("Memory") or 0)
    if memory <= 0 and not update and profile.memory.default:
        # A soft limit alone (--memory-reservation) raises the default hard limit to
        # it: dockerd refuses a reservation above the limit, which the user never set.
        memory = max(int(profile.memory.default), int(res.get("MemoryReservation") or 0))
        if memory > int(profile.memory.default):
            field = field.replace("Memory", "MemoryReservation")
        res["Memory"] = memory
    cap = _cap_max(profile, profile.memory.max, profile.memory.max_share, facts.mem_total)
    if cap and memory > cap:
        raise Denied(profile, "this much memory", field, human(memory), f"at most {human(cap)}")
    if not profile.swap and memory > 0:
        swap = res.get("MemorySwap")
        if swap not in (None, 0) and swap != memory:
            # Pinned silently, an explicit --memory-swap would look granted.
            raise Denied(
                profile,
                "swap",
                field.replace("Memory", "MemorySwap"),
                human(swap) if isinstance(swap, int) and swap > 0 else swap,
                "leave --memory-swap out (or equal to --memory): memory and swap stay equal",
            )
        res["MemorySwap"] = memory


def apply_pids(
    profile: Profile,
    res: dict[str, Any],
    field: str,
    facts: NodeFacts,
    *,
    update: bool = False,
    key: str = "PidsLimit",
) -> None:
    """Default and cap ``PidsLimit`` (``key``). Absent or null: the profile's default
    (on update: no change). Negative, or 0 on update, is dockerd's "unlimited":
    refused where the profile has a maximum. 0 on create is how older clients say
    "not set". The maximum is the profile's number or its share of the node's tasks,
    whichever is lower."""
    top = _cap_max(profile, profile.pids.max, profile.pids.max_share, facts.tasks_max)
    pids = res.get(key)
    if pids is None or (pids == 0 and not update):
        if update:
            return
        if profile.pids.default:
            default = int(profile.pids.default)
            res[key] = min(default, int(top)) if top else default
        pids = res.get(key) or 0
    if not isinstance(pids, int | float):
        return  # the schema check refuses a non-number
    if pids <= 0 and top:
        raise Denied(
            profile, "an unlimited number of processes", field, int(pids), f"at most {int(top)}"
        )
    if top and pids > top:
        share = ""
        if profile.pids.max_share and facts.tasks_max:
            share = (
                f" ({profile.pids.max_share * 100:g}% of the {facts.tasks_max} processes "
                "this node can run, resources.pids.max)"
            )
        raise Denied(profile, "this many processes", field, pids, f"at most {int(top)}{share}")


def container_cpus(res: dict[str, Any]) -> float:
    if res.get("NanoCpus"):
        return int(res["NanoCpus"]) / NANO
    quota = int(res.get("CpuQuota") or 0)
    if quota > 0:
        return quota / int(res.get("CpuPeriod") or 100_000)
    return 0.0


def apply_cpus(
    profile: Profile, res: dict[str, Any], facts: NodeFacts, field: str, *, update: bool = False
) -> None:
    cap = _cap_max(profile, profile.cpus.max, profile.cpus.max_share, facts.ncpu)
    if cap and int(res.get("CpuQuota") or 0) < 0:
        # A negative quota is "no limit" to the kernel (and to docker update).
        raise Denied(profile, "an unlimited CPU quota", field, res["CpuQuota"], f"at most {cap:g}")
    cpus = container_cpus(res)
    if cpus <= 0 and not update and profile.cpus.default:
        # Never more than the node has: dockerd refuses that (and it limits nothing).
        cpus = min(profile.cpus.default, facts.ncpu) if facts.ncpu else profile.cpus.default
        period = int(res.get("CpuPeriod") or 0)
        if period > 0:
            # dockerd takes no NanoCpus beside a period (--cpu-period alone): the same
            # limit as a quota of that period.
            res["CpuQuota"] = int(cpus * period)
        else:
            res["NanoCpus"] = int(cpus * NANO)
    if cap and cpus > cap:
        raise Denied(profile, "this many CPUs", field, f"{cpus:g}", f"at most {cap:g}")


# -- containers ---------------------------------------------------------------------------


def check_container(profile: Profile, body: dict[str, Any], facts: NodeFacts) -> None:
    """``POST /containers/create``: host access rules, then resource defaults and caps."""
    if profile.admin:
        return
    host = body.get("HostConfig")
    if host is None:
        host = body["HostConfig"] = {}
    check_image(profile, str(body.get("Image") or ""), "Image")
    check_host_config(profile, host, "HostConfig")
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for key, endpoint in endpoints.items() if isinstance(endpoints, dict) else ():
        check_endpoint_opts(profile, endpoint, f"NetworkingConfig.EndpointsConfig.{key}")
    if not profile.containers_on_managers and facts.manager:
        raise Denied(
            profile,
            "running containers on a Swarm manager",
            "engine",
            "manager",
            "run it as a service (it is placed on workers) or on a worker node",
        )
    check_stop_wait(profile, body.get("StopTimeout"), 1, "StopTimeout")
    apply_memory(profile, host, facts, "HostConfig.Memory")
    apply_cpus(profile, host, facts, "HostConfig.NanoCpus")
    apply_pids(profile, host, "HostConfig.PidsLimit", facts)
    log = host.get("LogConfig") or {}
    # No Type: the daemon's default driver, which reads these options too.
    driver = str(log.get("Type") or "") or facts.log_driver
    opts = capped_log_options(profile, driver, log.get("Config"), "HostConfig.LogConfig.Config")
    if opts is not None:
        host["LogConfig"] = {**log, "Config": opts}
    shm = int(host.get("ShmSize") or 0)
    if profile.shm_max and shm > profile.shm_max:
        raise Denied(
            profile,
            "this much /dev/shm",
            "HostConfig.ShmSize",
            human(shm),
            f"at most {human(profile.shm_max)}",
        )


STOP_WAIT_MAX = 300  # seconds a container may ask dockerd (or Swarm) to wait at stop


def check_stop_wait(profile: Profile, value: Any, unit: int, field: str) -> None:
    """A container's own stop timeout, or a service's grace period (``unit``: 1 for
    seconds, 10**9 for nanoseconds). Negative is "wait for ever": dockerd's stop, its
    own shutdown (it waits for the longest timeout) and Swarm's task removal, scaling
    and node drain would hang on one user's container until systemd kills dockerd."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise Denied(profile, "this stop timeout", field, value, "a whole number")
    if value < 0:
        why = "a negative one never ends: dockerd and Swarm wait for the container for ever"
    elif value > STOP_WAIT_MAX * unit:
        why = f"not {value / unit:g} s: dockerd's own shutdown waits for the longest"
    else:
        return
    raise Denied(profile, "this stop timeout", field, value, f"0 to {STOP_WAIT_MAX} s ({why})")


# Log drivers that write files on the node's disk, with their own rotation options.
FILE_LOG_DRIVERS = frozenset({"json-file", "local"})
LOCAL_DEFAULT_FILES = 5  # the local driver's max-file when none is given
LOCAL_DEFAULT_SIZE = 20 << 20  # and its max-size


def capped_log_options(
    profile: Profile, driver: str, options: Any, field: str
) -> dict[str, Any] | None:
    """The options of a file log driver within the profile's caps, ``max-size`` filled
    in when missing (json-file's default is to keep everything: a chatty container
    fills the node's disk, outside every cgroup); None when nothing changes.

    Docker reads these sizes in decimal units (``100m`` = 10^8 bytes) and the gate
    in binary ones: a value that passes is never larger than the gate thought."""
    if driver not in FILE_LOG_DRIVERS or profile.admin:
        return None
    opts = dict(options) if isinstance(options, dict) else {}
    changed = False
    cap, files_cap = profile.log_max_size, profile.log_max_files
    if cap is not None:
        size_text = opts.get("max-size")
        if size_text in (None, ""):
            # The local driver keeps 20m files by default: set only to be smaller.
            if driver == "json-file" or cap < LOCAL_DEFAULT_SIZE:
                opts["max-size"] = human(cap)
                changed = True
        else:
            try:
                size = parse_size(size_text)
            except ValueError:
                size = -1
            if not 0 < size <= cap:
                raise Denied(
                    profile, "logs this large", f"{field}.max-size", size_text,
                    f"at most {human(cap)} per file (resources.logs.max_size)",
                )  # fmt: skip
    if files_cap is not None:
        files_text = opts.get("max-file")
        if files_text in (None, ""):
            if driver == "local" and files_cap < LOCAL_DEFAULT_FILES:
                opts["max-file"] = str(files_cap)
                changed = True
        else:
            try:
                files = int(str(files_text))
            except ValueError:
                files = -1
            if not 0 < files <= files_cap:
                raise Denied(
                    profile, "this many log files", f"{field}.max-file", files_text,
                    f"at most {files_cap} (resources.logs.max_files)",
                )  # fmt: skip
    return opts if changed else None


def check_oom_score_adj(profile: Profile, value: Any, field: str) -> None:
    """A negative score makes the kernel kill the node's own processes before the
    container's (the OOM that took a manager down killed the wrong things)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise Denied(profile, "this OOM score", field, value, "a whole number")
    if value < profile.oom_score_adj_min:
        raise Denied(
            profile,
            "shielding the container from the OOM killer",
            field,
            value,
            f"at least {profile.oom_score_adj_min}",
        )


def check_ulimits(profile: Profile, ulimits: Any, field: str) -> None:
    """Each ulimit must be allowed by the profile, soft and hard at most its maximum
    (Docker's -1 is unlimited, so it exceeds every finite maximum)."""
    if profile.ulimits is None or not ulimits:
        return
    if not isinstance(ulimits, list):
        raise Denied(profile, "these ulimits", field, ulimits, "a list of {Name, Soft, Hard}")
    for i, entry in enumerate(ulimits):
        here = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise Denied(profile, "these ulimits", here, entry, "{Name, Soft, Hard}")
        name = str(entry.get("Name") or "")
        if name not in profile.ulimits:
            allowed = ", ".join(sorted(profile.ulimits)) or "none"
            raise Denied(
                profile, f"the {name or 'unnamed'} ulimit", here, name, f"allowed: {allowed}"
            )
        top = profile.ulimits[name]
        if top == UNLIMITED:
            continue
        for part in ("Soft", "Hard"):
            value = entry.get(part)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise Denied(profile, "these ulimits", f"{here}.{part}", value, "a whole number")
            if value < 0 or value > top:
                shown = "unlimited" if value < 0 else value
                raise Denied(
                    profile, f"this {name} ulimit", f"{here}.{part}", shown, f"at most {top}"
                )


def device_requests(value: Any) -> str:
    """``DeviceRequests`` in the CLI's words (``--gpus all`` is a request for the
    ``gpu`` capability with count -1), for a refusal the user recognises."""
    out = []
    for request in value if isinstance(value, list) else [value]:
        if not isinstance(request, dict):
            out.append(str(request))
            continue
        caps = {str(c) for group in request.get("Capabilities") or [] for c in group or []}
        what = ",".join(sorted(caps)) or str(request.get("Driver") or "device")
        ids = request.get("DeviceIDs")
        count = request.get("Count")
        if ids:
            out.append(f"{what} device={','.join(map(str, ids))}")
        else:
            out.append(f"{what} count={'all' if count == -1 else count}")
    return "; ".join(out)


def check_host_config(profile: Profile, host: dict[str, Any], prefix: str) -> None:
    if host.get("Privileged") and not profile.privileged:
        raise Denied(
            profile, "privileged containers", f"{prefix}.Privileged", "true", "drop --privileged"
        )
    if not profile.host_namespaces:
        for field, flag in NAMESPACES.items():
            if str(host.get(field) or "").lower() == "host":
                hint = "a network of your own" if field == "NetworkMode" else "the default"
                raise Denied(
                    profile,
                    "sharing the host's namespaces",
                    f"{prefix}.{field}",
                    "host",
                    f"drop {flag} host and use {hint}",
                )
    check_caps(profile, host.get("CapAdd") or [], f"{prefix}.CapAdd")
    if host.get("Capabilities"):
        check_caps(profile, host["Capabilities"], f"{prefix}.Capabilities")
    check_security_opts(profile, host.get("SecurityOpt") or [], f"{prefix}.SecurityOpt")
    if host.get("Annotations") and not profile.privileged:
        # Passed to the OCI runtime (API 1.43+): runc turns org.systemd.property.* into
        # the unit's MemoryMax/TasksMax/DeviceAllow, CDI runtimes add devices.
        raise Denied(
            profile,
            "OCI runtime annotations",
            f"{prefix}.Annotations",
            host["Annotations"],
            "leave them out (they reach past the memory, pids and device rules)",
        )
    if not profile.unconfined:
        for field in ("MaskedPaths", "ReadonlyPaths"):
            if host.get(field) is not None:
                raise Denied(
                    profile,
                    "changing the masked /proc and /sys paths",
                    f"{prefix}.{field}",
                    host[field],
                    "leave them to Docker",
                )
    if not profile.devices:
        check_devices(profile, host.get("Devices") or [], f"{prefix}.Devices")
        for field in ("DeviceCgroupRules", "DeviceRequests"):
            if host.get(field):
                raise Denied(
                    profile,
                    "host devices",
                    f"{prefix}.{field}",
                    device_requests(host[field]) if field == "DeviceRequests" else host[field],
                    "no devices",
                )
    check_sysctls(profile, host.get("Sysctls"), f"{prefix}.Sysctls")
    if host.get("CgroupParent") and not profile.cgroup_parent:
        raise Denied(
            profile,
            "choosing the cgroup parent",
            f"{prefix}.CgroupParent",
            host["CgroupParent"],
            "leave it empty",
        )
    runtime = str(host.get("Runtime") or "")
    if runtime and runtime not in profile.runtimes:
        raise Denied(
            profile,
            "this runtime",
            f"{prefix}.Runtime",
            runtime,
            f"allowed: {', '.join(profile.runtimes)}",
        )
    if host.get("OomKillDisable") and not profile.oom_kill_disable:
        raise Denied(
            profile, "disabling the OOM killer", f"{prefix}.OomKillDisable", "true", "leave it on"
        )
    check_oom_score_adj(profile, host.get("OomScoreAdj"), f"{prefix}.OomScoreAdj")
    check_ulimits(profile, host.get("Ulimits"), f"{prefix}.Ulimits")
    log_type = str((host.get("LogConfig") or {}).get("Type") or "")
    if log_type and log_type not in profile.log_drivers:
        raise Denied(
            profile,
            "this log driver",
            f"{prefix}.LogConfig.Type",
            log_type,
            f"allowed: {', '.join(profile.log_drivers)}",
        )
    if host.get("VolumeDriver"):
        check_volume_driver(profile, str(host["VolumeDriver"]), None, f"{prefix}.VolumeDriver")
    for bind in host.get("Binds") or []:
        if ":" not in str(bind):
            continue  # a container path alone: dockerd makes an anonymous volume there
        source, _dest, read_only = bind_options(str(bind))
        if source.startswith("/"):
            check_bind(profile, source, read_only, f"{prefix}.Binds")
        shared = source in {v.name for v in profile.shared_volumes}
        relabel = {"z", "Z"} & bind_modes(str(bind))
        if relabel and (source.startswith("/") or shared) and not profile.unconfined:
            # On an SELinux host dockerd relabels the source itself, a host directory or
            # a shared volume's (which may be one): :Z makes the team's data private to
            # this container. A user's own volume is theirs to relabel.
            raise Denied(
                profile,
                "relabelling host files",
                f"{prefix}.Binds",
                bind,
                "leave out :z / :Z",
            )
    for i, mount in enumerate(host.get("Mounts") or []):
        check_mount(profile, mount, f"{prefix}.Mounts[{i}]")
    check_ports(profile, host.get("PortBindings"), f"{prefix}.PortBindings")
    if host.get("PublishAllPorts"):
        check_any_port(profile, ephemeral_ports(), f"{prefix}.PublishAllPorts", "true")


def check_devices(profile: Profile, devices: list[Any], field: str) -> None:
    """Only the profile's listed devices; a directory (``--device /dev``) is every
    device below it and is never allowed by a list."""
    allowed = {resolve_host_path(p) for p in profile.device_paths}
    for device in devices:
        source = str((device or {}).get("PathOnHost") or "") if isinstance(device, dict) else ""
        real = resolve_host_path(source) if source else ""
        if not real or os.path.isdir(real) or real not in allowed:
            listed = ", ".join(profile.device_paths) or "none"
            raise Denied(profile, "this host device", field, source, f"allowed: {listed}")


MOUNT_TYPES = ("bind", "volume", "tmpfs")


def check_mount(profile: Profile, mount: Any, field: str) -> None:
    if not isinstance(mount, dict):
        return
    kind = mount.get("Type")
    if kind not in MOUNT_TYPES:
        # Swarm upper-cases the type and reads an empty or unknown one as a bind:
        # only the exact spellings are let through, each checked as what it is.
        raise Denied(
            profile,
            "this mount type",
            f"{field}.Type",
            kind,
            f"give Type exactly: {', '.join(MOUNT_TYPES)}",
        )
    if kind == "bind":
        check_bind(
            profile,
            str(mount.get("Source") or ""),
            bool(mount.get("ReadOnly")),
            f"{field}.Source",
            recursive=not (mount.get("BindOptions") or {}).get("NonRecursive"),
        )
    elif kind == "volume":
        driver_config = (mount.get("VolumeOptions") or {}).get("DriverConfig") or {}
        check_volume_driver(
            profile,
            str(driver_config.get("Name") or ""),
            driver_config.get("Options"),
            f"{field}.VolumeOptions.DriverConfig",
        )


def check_present_binds(
    profile: Profile,
    container: dict[str, Any],
    field: str,
    read_only: bool = False,
    flat: frozenset[str] = frozenset(),
) -> None:
    """The bind mounts a container has (inspect's ``Mounts``), checked as new ones.

    dockerd binds each source again, recursively, at every start, and ``VolumesFrom``
    copies another container's binds into a new one: a bind that passed at create (no
    read-write mount below a read-only root then, or a profile since tightened) is
    checked again when it is used again. ``read_only``: ``VolumesFrom=<id>:ro``.
    ``flat``: the targets of its ``NonRecursive`` binds (inspect's ``Mounts`` does not
    say; the caller collects them, through ``VolumesFrom`` too)."""
    if profile.admin:
        return
    for mount in container.get("Mounts") or []:
        if not isinstance(mount, dict) or mount.get("Type") != "bind":
            continue
        target = str(mount.get("Destination") or "")
        check_bind(
            profile,
            str(mount.get("Source") or ""),
            read_only or not mount.get("RW"),
            f"{field}[{target}]",
            recursive=posixpath.normpath(target) not in flat,
        )


def flat_bind_targets(container: dict[str, Any]) -> set[str]:
    """The targets of a container's own ``NonRecursive`` binds, normalised as dockerd
    shows them (``/d/`` is ``/d``)."""
    return {
        posixpath.normpath(str(m.get("Target") or ""))
        for m in (container.get("HostConfig") or {}).get("Mounts") or []
        if isinstance(m, dict) and (m.get("BindOptions") or {}).get("NonRecursive")
    }


def check_update(
    profile: Profile, body: dict[str, Any], facts: NodeFacts, current: dict[str, Any]
) -> None:
    """``POST /containers/{id}/update``: no raising limits past the caps. ``current`` is
    the container's HostConfig: a new ``CpuQuota`` counts against its ``CpuPeriod``."""
    if profile.admin:
        return
    if not profile.devices:
        check_devices(profile, body.get("Devices") or [], "Devices")
        for field in ("DeviceCgroupRules", "DeviceRequests"):
            if body.get(field):
                raise Denied(profile, "host devices", field, body[field], "no devices")
    if body.get("CgroupParent") and not profile.cgroup_parent:
        raise Denied(
            profile,
            "choosing the cgroup parent",
            "CgroupParent",
            body["CgroupParent"],
            "leave it empty",
        )
    if body.get("MemorySwap") not in (None, 0) and not profile.swap and not body.get("Memory"):
        raise Denied(
            profile, "swap", "MemorySwap", body["MemorySwap"], "memory and swap stay equal"
        )
    check_ulimits(profile, body.get("Ulimits"), "Ulimits")
    apply_memory(profile, body, facts, "Memory", update=True)
    if int(body.get("CpuPeriod") or 0) < 0:
        raise Denied(profile, "a negative CPU period", "CpuPeriod", body["CpuPeriod"], "> 0")
    nano = int(current.get("NanoCpus") or 0)
    if nano and (body.get("CpuQuota") or body.get("CpuPeriod")) and not body.get("NanoCpus"):
        # The container's CPU limit is NanoCpus (the profile's default when none was
        # given at create), and dockerd refuses a quota or period beside it ("CPU
        # Period cannot be updated as NanoCPUs has already been set"): a quota is
        # the same limit in NanoCpus; a period alone says no limit and is refused.
        quota = int(body.get("CpuQuota") or 0)
        if quota <= 0:
            raise Denied(
                profile,
                "a CPU period on a container limited in CPUs",
                "CpuPeriod",
                body.get("CpuPeriod"),
                f"it has --cpus {nano / NANO:g}: change that with docker update --cpus",
            )
        period = int(body.get("CpuPeriod") or current.get("CpuPeriod") or 100_000)
        body["NanoCpus"] = quota * NANO // period
        body.pop("CpuQuota", None)
        body.pop("CpuPeriod", None)
    # dockerd reads 0 (what the CLI sends for a flag not given) as "unchanged": the
    # pair the container ends up with is the body's non-zero values over its own.
    cpu = {k: body.get(k) or current.get(k) for k in ("CpuQuota", "CpuPeriod")}
    if not body.get("NanoCpus") and (body.get("CpuQuota") or body.get("CpuPeriod")):
        apply_cpus(profile, cpu, facts, "CpuQuota", update=True)
    apply_cpus(profile, body, facts, "NanoCpus", update=True)
    apply_pids(profile, body, "PidsLimit", facts, update=True)


def check_exec(profile: Profile, body: dict[str, Any], container_user: str = "") -> None:
    """``docker exec``: no --privileged, and with ``exec.root: false`` no root. A user
    *name* is looked up in the image's own /etc/passwd, which the image's author
    wrote (``toor:x:0:0``): only the container's own user or a numeric uid passes."""
    if profile.admin:
        return
    if body.get("Privileged") and not profile.exec_privileged:
        raise Denied(profile, "privileged exec", "Privileged", "true", "drop --privileged")
    user = str(body.get("User") or "")
    if profile.exec_root or not user or user == container_user:
        return
    # runc reads the user with strconv.Atoi (ASCII digits, a sign, nothing else, within
    # range): anything else ("5 ", "\u00b2", 2**64) is a name looked up in /etc/passwd,
    # and dockerd then truncates the uid to 32 bits (2**32 is root). Plain digits up
    # to 2**31-1 only.
    numeric = NUMERIC_USER.fullmatch(user)
    if (
        is_root_user(user)
        or numeric is None
        or not all(len(n) <= 10 and int(n) <= MAX_ID for n in numeric.groups() if n is not None)
    ):
        raise Denied(
            profile,
            "exec as root",
            "User",
            user,
            "exec as the container's own user, or as a numeric uid other than 0",
        )


NUMERIC_USER = re.compile(r"([0-9]+)(?::([0-9]+))?", re.ASCII)
MAX_ID = (1 << 31) - 1  # runc's Atoi range that dockerd's uint32() does not wrap


def is_root_user(user: str) -> bool:
    """``root``, or a uid runc reads as 0: Go's Atoi takes signs and leading zeros
    (``+0``, ``00``, ``-0``, ``0000:0``)."""
    name = user.split(":", 1)[0].strip()
    if name == "root":
        return True
    try:
        return int(name, 10) == 0
    except ValueError:
        return False


# -- services ------------------------------------------------------------------------------


def check_service(profile: Profile, spec: dict[str, Any], facts: NodeFacts) -> None:
    """Service specs (create and update): the container rules, mapped to Swarm's fields."""
    if profile.admin:
        return
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    check_image(profile, str(container.get("Image") or ""), "TaskTemplate.ContainerSpec.Image")
    prefix = "TaskTemplate.ContainerSpec"
    check_stop_wait(profile, container.get("StopGracePeriod"), 10**9, f"{prefix}.StopGracePeriod")
    check_caps(profile, container.get("CapabilityAdd") or [], f"{prefix}.CapabilityAdd")
    check_sysctls(profile, container.get("Sysctls"), f"{prefix}.Sysctls")
    privileges = container.get("Privileges") or {}
    if not profile.unconfined:
        seccomp = privileges.get("Seccomp") or {}
        apparmor = privileges.get("AppArmor") or {}
        selinux = privileges.get("SELinuxContext") or {}
        if str(seccomp.get("Mode") or "").lower() in ("unconfined", "custom"):
            raise Denied(
                profile,
                "weakening the container's confinement",
                f"{prefix}.Privileges.Seccomp.Mode",
                seccomp.get("Mode"),
                "use the default profile",
            )
        if str(apparmor.get("Mode") or "").lower() == "disabled":
            raise Denied(
                profile,
                "weakening the container's confinement",
                f"{prefix}.Privileges.AppArmor.Mode",
                "disabled",
                "use the default profile",
            )
        selinux_type = str(selinux.get("Type") or "")
        if (
            selinux.get("Disable")
            or selinux.get("User")
            or selinux.get("Role")
            or selinux.get("Level")
            or (selinux_type and selinux_type not in CONFINED_SELINUX_TYPES)
        ):
            raise Denied(
                profile,
                "weakening the container's confinement",
                f"{prefix}.Privileges.SELinuxContext",
                selinux,
                f"leave SELinux to Docker (or Type {'|'.join(sorted(CONFINED_SELINUX_TYPES))})",
            )
    check_ulimits(profile, container.get("Ulimits"), f"{prefix}.Ulimits")
    check_oom_score_adj(profile, container.get("OomScoreAdj"), f"{prefix}.OomScoreAdj")
    if profile.quota_memory is not None:
        for config in ("UpdateConfig", "RollbackConfig"):
            order = str((spec.get(config) or {}).get("Order") or "")
            if order.lower() == "start-first":
                # A new task starts beside the old one in its slot, which stays until
                # the new one is running: containers the quota (replicas x limit) misses.
                raise Denied(
                    profile,
                    "start-first updates under a memory quota",
                    f"{config}.Order",
                    order,
                    "use stop-first (the default)",
                )
    for i, mount in enumerate(container.get("Mounts") or []):
        check_mount(profile, mount, f"{prefix}.Mounts[{i}]")
    attachments = [*(template.get("Networks") or []), *(spec.get("Networks") or [])]
    for i, attachment in enumerate(attachments):
        check_endpoint_opts(profile, attachment, f"TaskTemplate.Networks[{i}]")
    if not profile.host_namespaces:
        for attachment in attachments:
            if str((attachment or {}).get("Target") or "").lower() == "host":
                raise Denied(
                    profile,
                    "the host network",
                    "TaskTemplate.Networks",
                    "host",
                    "use an overlay network of your own",
                )
    log_driver = str((template.get("LogDriver") or {}).get("Name") or "")
    if log_driver and log_driver not in profile.log_drivers:
        raise Denied(
            profile,
            "this log driver",
            "TaskTemplate.LogDriver.Name",
            log_driver,
            f"allowed: {', '.join(profile.log_drivers)}",
        )
    log_spec = template.get("LogDriver") or {}
    # No driver named: tasks get their engine's default; this engine's stands for it.
    driver = log_driver or facts.log_driver
    opts = capped_log_options(
        profile, driver, log_spec.get("Options"), "TaskTemplate.LogDriver.Options"
    )
    if opts is not None:
        template["LogDriver"] = {**log_spec, "Name": driver, "Options": opts}
    runtime = str(template.get("Runtime") or "")
    if runtime and runtime not in ("container", *profile.runtimes):
        raise Denied(profile, "this runtime", "TaskTemplate.Runtime", runtime, "use the default")
    for port in (spec.get("EndpointSpec") or {}).get("Ports") or []:
        published = int((port or {}).get("PublishedPort") or 0)
        field = "EndpointSpec.Ports.PublishedPort"
        if not published:
            # Swarm picks an ingress port from its own range; a host-mode port is the
            # engine's pick on the node, from the kernel's ephemeral range.
            host_mode = str((port or {}).get("PublishMode") or "").lower() == "host"
            picked_from = ephemeral_ports() if host_mode else SWARM_DYNAMIC_PORTS
            check_any_port(profile, picked_from, field, "(any)")
        elif not profile.allows_port(published):
            raise Denied(
                profile, "publishing this port", field, published, f"allowed: {_ranges(profile)}"
            )
    resources = template.get("Resources")
    if not isinstance(resources, dict):
        resources = template["Resources"] = {}
    limits = resources.get("Limits")
    if not isinstance(limits, dict):
        limits = resources["Limits"] = {}
    reserved = int((resources.get("Reservations") or {}).get("MemoryBytes") or 0)
    mem_cap = _cap_max(profile, profile.memory.max, profile.memory.max_share, facts.mem_total)
    if mem_cap and reserved > mem_cap:
        raise Denied(
            profile,
            "reserving this much memory",
            "TaskTemplate.Resources.Reservations.MemoryBytes",
            human(reserved),
            f"at most {human(mem_cap)}",
        )
    # The reservation goes in as a container's --memory-reservation does: a default
    # limit below it would book memory on a node for a task the kernel kills sooner.
    swap = resources.get("SwapBytes")  # API 1.52+: -1 is unlimited swap
    if not profile.swap and swap not in (None, 0):
        raise Denied(
            profile,
            "swap",
            "TaskTemplate.Resources.SwapBytes",
            human(swap) if isinstance(swap, int) and swap > 0 else swap,
            "leave it out: tasks get no swap of their own",
        )
    cpu_cap = _cap_max(profile, profile.cpus.max, profile.cpus.max_share, facts.ncpu)
    cpu_reserved = int((resources.get("Reservations") or {}).get("NanoCPUs") or 0) / NANO
    if cpu_cap and cpu_reserved > cpu_cap:
        raise Denied(
            profile,
            "reserving this many CPUs",
            "TaskTemplate.Resources.Reservations.NanoCPUs",
            f"{cpu_reserved:g}",
            f"at most {cpu_cap:g}",
        )
    mem = {"Memory": int(limits.get("MemoryBytes") or 0), "MemoryReservation": reserved}
    apply_memory(profile, mem, facts, "TaskTemplate.Resources.Limits.MemoryBytes")
    if mem["Memory"]:
        limits["MemoryBytes"] = mem["Memory"]
    cpu = {"NanoCpus": int(limits.get("NanoCPUs") or 0)}
    apply_cpus(profile, cpu, facts, "TaskTemplate.Resources.Limits.NanoCPUs")
    if cpu["NanoCpus"]:
        limits["NanoCPUs"] = cpu["NanoCpus"]
    pids = {"PidsLimit": int(limits.get("Pids") or 0) or None}  # swarm: 0 is unset
    apply_pids(profile, pids, "TaskTemplate.Resources.Limits.Pids", facts)
    if pids.get("PidsLimit"):
        limits["Pids"] = pids["PidsLimit"]
    if (resources.get("Reservations") or {}).get("GenericResources") and not profile.devices:
        raise Denied(
            profile,
            "generic resources (devices)",
            "TaskTemplate.Resources.Reservations.GenericResources",
            "set",
            "no devices",
        )
    if profile.avoid_managers:
        keep_off_managers(profile, template)


def keep_off_managers(profile: Profile, template: dict[str, Any]) -> None:
    placement = template.get("Placement")
    if not isinstance(placement, dict):
        placement = template["Placement"] = {}
    constraints = list(placement.get("Constraints") or [])
    for constraint in constraints:
        text = str(constraint).replace(" ", "").lower()
        if text in ("node.role==manager", "node.role!=worker"):
            raise Denied(
                profile,
                "placing services on Swarm managers",
                "TaskTemplate.Placement.Constraints",
                constraint,
                "services run on workers",
            )
    if "node.role==worker" not in [str(c).replace(" ", "") for c in constraints]:
        constraints.append("node.role==worker")
    placement["Constraints"] = constraints


def service_tasks(spec: dict[str, Any], nodes: int = 1, done: int = 0) -> int:
    """How many of a service's tasks can run at once: its replicas, one per node for
    global modes; for a job, what is left of its current run (``done`` tasks of it
    have completed), at most ``MaxConcurrent`` (else its completions) at once."""
    mode = spec.get("Mode") or {}
    if "Global" in mode:
        return max(nodes, 1)
    if "GlobalJob" in mode:
        return max(max(nodes, 1) - done, 0)
    if "ReplicatedJob" in mode:
        job = mode.get("ReplicatedJob") or {}
        at_once = int(job.get("MaxConcurrent") or job.get("TotalCompletions") or 1)
        total = int(job.get("TotalCompletions") or at_once)
        return max(min(at_once, total - done), 0)
    replicas = (mode.get("Replicated") or {}).get("Replicas")
    return 1 if replicas is None else int(replicas)


def is_job(spec: dict[str, Any]) -> bool:
    mode = spec.get("Mode") or {}
    return "ReplicatedJob" in mode or "GlobalJob" in mode


def service_memory(spec: dict[str, Any], nodes: int = 1, done: int = 0) -> int:
    """Memory a service reserves for quotas: tasks at once times its memory limit."""
    limits = ((spec.get("TaskTemplate") or {}).get("Resources") or {}).get("Limits") or {}
    return service_tasks(spec, nodes, done) * int(limits.get("MemoryBytes") or 0)


__all__ = ["Denied", "NodeFacts", "parse_size"]


# -- networks ------------------------------------------------------------------------------


def check_network(profile: Profile, body: dict[str, Any]) -> None:
    """``POST /networks/create``: the driver, its options and any subnet the caller
    chooses (Docker's own pools are used otherwise)."""
    if profile.admin:
        return
    driver = str(body.get("Driver") or "bridge")
    if driver not in profile.network_drivers or body.get("Ingress"):
        raise Denied(
            profile,
            "this network driver",
            "Driver",
            "ingress" if body.get("Ingress") else driver,
            f"allowed: {', '.join(profile.network_drivers)}",
        )
    for key in body.get("Options") or {}:
        if key not in profile.network_options:
            raise Denied(
                profile,
                "this network driver option",
                f"Options.{key}",
                body["Options"][key],
                f"allowed: {', '.join(profile.network_options) or 'none'}",
            )
    ipam = body.get("IPAM") or {}
    if str(ipam.get("Driver") or "default") != "default" or ipam.get("Options"):
        raise Denied(
            profile, "a custom IPAM driver or options", "IPAM", ipam, "use Docker's default IPAM"
        )
    for i, config in enumerate(ipam.get("Config") or []):
        for field in ("Subnet", "IPRange", "Gateway"):
            if (config or {}).get(field):
                check_address(profile, str(config[field]), f"IPAM.Config[{i}].{field}")
        for name, addr in ((config or {}).get("AuxiliaryAddresses") or {}).items():
            check_address(profile, str(addr), f"IPAM.Config[{i}].AuxiliaryAddresses.{name}")


def check_address(profile: Profile, text: str, field: str) -> None:
    """A subnet, range or address must lie inside one of the profile's ranges."""
    allowed = ", ".join(profile.network_subnets) or "none: let Docker choose the subnet"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Denied(profile, "this address", field, text, "a valid address or CIDR") from None
    for cidr in profile.network_subnets:
        outer = ipaddress.ip_network(cidr)
        if net.version == outer.version and net.subnet_of(outer):  # type: ignore[arg-type]
            return
    raise Denied(profile, "choosing this subnet", field, text, f"allowed: {allowed}")
