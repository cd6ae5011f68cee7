"""Profiles: what a user may do, read from ``policies/<name>.yaml``.

A profile is data, reviewed like code. Loading is strict: an unknown key, a wrong
type or a bad size is an error that names the file, the line and the key, so a
typo never silently turns a rule off. ``extends:`` starts from another profile and
overrides key by key (mappings merge, everything else replaces).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CAPS = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

UNLIMITED = -1  # a ulimit without a cap (Docker's -1 is RLIM_INFINITY)
# The ulimits Docker knows (go-units), each with the highest hard value a profile
# allows by default. Left out, so refused unless a profile lists them: rtprio and
# rttime (realtime scheduling without CAP_SYS_NICE: a busy SCHED_FIFO loop starves
# the node) and nice (raised CPU priority over everyone else's work).
ULIMIT_NAMES = frozenset(
    [
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)
DEFAULT_ULIMITS: dict[str, int] = {
    **{name: UNLIMITED for name in ULIMIT_NAMES - {"rtprio", "rttime", "nice", "nofile"}},
    "nofile": 1 << 20,  # the kernel's default fs.nr_open
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class PolicyError(Exception):
    """A profile file is wrong; the message names file, line and key."""


def human(n: float) -> str:
    for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{int(n // size)}{unit}"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}g"
    return str(int(n))


def parse_size(value: Any) -> int:
    """``512m``, ``2g``, ``1.5GiB`` or a byte count, as Docker's CLI reads sizes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m, 2g)")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class Limit:
    """A default applied when the request sets none, and a cap it may not exceed.

    ``max_share`` caps at a share of the node's resource (e.g. 0.25 of its RAM)."""

    default: float | None = None
    max: float | None = None
    max_share: float | None = None


@dataclass(frozen=True)
class BindRule:
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class SharedVolume:
    name: str
    read_only: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    admin: bool = False
    # host access
    privileged: bool = False
    host_namespaces: bool = False
    cap_add: frozenset[str] = frozenset()  # beyond Docker's default set
    unconfined: bool = False  # seccomp/apparmor unconfined, label=disable, systempaths
    devices: bool = False  # true: any device, device requests and cgroup rules
    device_paths: tuple[str, ...] = ()  # otherwise: these host devices only (no directories)
    sysctls: tuple[str, ...] = ()  # allowlist; "net.ipv4.*" style prefixes
    cgroup_parent: bool = False
    runtimes: tuple[str, ...] = ("runc",)
    oom_kill_disable: bool = False
    oom_score_adj_min: int = 0  # below 0 shields a container from the OOM killer
    ulimits: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_ULIMITS))
    log_drivers: tuple[str, ...] = ("json-file", "local", "journald", "none")
    published_ports: tuple[tuple[int, int], ...] = ((1024, 65535),)
    registries: tuple[str, ...] = ("*",)
    exec_privileged: bool = False
    exec_root: bool = True
    buildkit: bool = False
    # storage
    binds: tuple[BindRule, ...] = ()
    own_volumes: bool = True
    volume_drivers: tuple[str, ...] = ("local",)
    volume_driver_opts: bool = False
    shared_volumes: tuple[SharedVolume, ...] = ()
    # networks
    network_drivers: tuple[str, ...] = ("bridge", "overlay")
    # Driver options a network may set (others could adopt a host bridge by name or
    # pick another network's VXLAN id), and the ranges a chosen subnet must lie in
    # (a subnet over the LAN's would reroute the node's own traffic into a bridge).
    network_options: tuple[str, ...] = ("encrypted", "com.docker.network.driver.mtu")
    network_subnets: tuple[str, ...] = ()
    # resources
    memory: Limit = Limit()
    swap: bool = False
    cpus: Limit = Limit()
    pids: Limit = Limit()
    shm_max: int | None = None
    # json-file and local logs: each file at most this big (filled in when missing:
    # json-file keeps everything otherwise), at most this many files
    log_max_size: int | None = 100 << 20
    log_max_files: int | None = 5
    # quotas (None: unlimited)
    quota_memory: int | None = None
    quota_containers: int | None = None
    quota_services: int | None = None
    quota_networks: int | None = None
    quota_secrets: int | None = None
    quota_configs: int | None = None
    # swarm
    avoid_managers: bool = False
    containers_on_managers: bool = True
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def allows_sysctl(self, name: str) -> bool:
        for pattern in self.sysctls:
            if pattern.endswith("*") and name.startswith(pattern[:-1]):
                return True
            if pattern == name:
                return True
        return False

    def allows_port(self, port: int) -> bool:
        return self.allows_ports(port, port)

    def allows_ports(self, first: int, last: int) -> bool:
        """Every port of ``first..last`` is in an allowed range: the engine may take any
        of them (``-p 8005-8024:80``), not only the ends."""
        port = first
        while port <= last:
            upper = max((hi for lo, hi in self.published_ports if lo <= port <= hi), default=None)
            if upper is None:
                return False
            port = upper + 1
        return True

    def allows_registry(self, image: str) -> bool:
        if "*" in self.registries:
            return True
        return registry_of(image) in self.registries

    def allows_registry_host(self, address: str) -> bool:
        """A registry server address as ``docker login`` sends it
        (``https://index.docker.io/v1/``, ``registry.local:5000``)."""
        if "*" in self.registries:
            return True
        # As dockerd reads it: https:// is added unless a scheme is there, then the
        # URL's host is used. Anything a URL parser could read another way is refused.
        if any(c in address for c in "@?#\\ ") or any(ord(c) < 0x21 for c in address):
            return False
        rest = address
        for scheme in ("https://", "http://"):
            if address.lower().startswith(scheme):
                rest = address[len(scheme) :]
                break
        host = rest.split("/", 1)[0].lower()
        if "://" in rest:
            return False
        if host in ("", "index.docker.io", "registry-1.docker.io", "docker.io"):
            host = "docker.io"
        return host in self.registries


def registry_of(image: str) -> str:
    """The registry part of an image reference, as Docker resolves it."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


# -- loading -------------------------------------------------------------------------

_SCHEMA: dict[str, Any] = {
    "description": str,
    "extends": str,
    "admin": bool,
    "containers": {
        "privileged": bool,
        "host_namespaces": bool,
        "cap_add": [str],
        "unconfined": bool,
        "devices": bool,
        "device_paths": [str],
        "sysctls": [str],
        "cgroup_parent": bool,
        "runtimes": [str],
        "oom_kill_disable": bool,
        "oom_score_adj_min": int,
        "ulimits": "ulimits",
        "log_drivers": [str],
        "published_ports": [str],
        "registries": [str],
        "on_managers": bool,
    },
    "exec": {"privileged": bool, "root": bool},
    "build": {"buildkit": bool},
    "mounts": {
        "binds": [{"path": str, "read_only": bool}],
        "own_volumes": bool,
        "volume_drivers": [str],
        "volume_driver_opts": bool,
        "shared_volumes": [{"name": str, "read_only": bool}],
    },
    "networks": {"drivers": [str], "options": [str], "subnets": [str]},
    "resources": {
        "memory": {"default": "size", "max": "size_or_share"},
        "swap": bool,
        "cpus": {"default": float, "max": "float_or_share"},
        "pids": {"default": int, "max": "int_or_share"},
        "shm_size": {"max": "size"},
        "logs": {"max_size": "size", "max_files": int},
    },
    "quota": {
        "memory": "size",
        "containers": int,
        "services": int,
        "networks": int,
        "secrets": int,
        "configs": int,
    },
    "swarm": {"avoid_managers": bool},
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps each node's line, for error messages."""


def _compose(path: Path) -> yaml.Node | None:
    try:
        with path.open() as fh:
            return yaml.compose(fh, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None


def _where(path: Path, node: yaml.Node, key: str) -> str:
    return f"{path}:{node.start_mark.line + 1}: {key}"


def _check(path: Path, node: yaml.Node, schema: Any, key: str) -> Any:
    """Validate a YAML node against the schema and return its Python value."""
    where = _where(path, node, key)
    if isinstance(schema, dict):
        if not isinstance(node, yaml.MappingNode):
            raise PolicyError(f"{where}: expected a mapping")
        out: dict[str, Any] = {}
        for k_node, v_node in node.value:
            name = k_node.value
            if name not in schema:
                raise PolicyError(
                    f"{_where(path, k_node, f'{key}.{name}'.lstrip('.'))}: unknown key; "
                    f"known: {', '.join(schema)}"
                )
            if name in out:
                raise PolicyError(f"{_where(path, k_node, name)}: duplicate key")
            out[name] = _check(path, v_node, schema[name], f"{key}.{name}".lstrip("."))
        return out
    if isinstance(schema, list):
        if not isinstance(node, yaml.SequenceNode):
            raise PolicyError(f"{where}: expected a list")
        return [_check(path, item, schema[0], f"{key}[{i}]") for i, item in enumerate(node.value)]
    if schema == "ulimits":
        return _ulimits(path, node, key)
    if schema == "int_or_share" and isinstance(node, yaml.SequenceNode):
        # As ``policy show`` prints it: [number, share], both apply.
        parts = [_check(path, item, schema, key) for item in node.value]
        numbers = [p for p in parts if isinstance(p, int)]
        shares = [p[1] for p in parts if isinstance(p, tuple)]
        if len(numbers) > 1 or len(shares) > 1 or not parts:
            raise PolicyError(f"{where}: give a number, a share such as 50%, or [number, share]")
        return ("both", numbers[0] if numbers else None, shares[0] if shares else None)
    if not isinstance(node, yaml.ScalarNode):
        raise PolicyError(f"{where}: expected a single value")
    value = yaml.load(yaml.serialize(node), Loader=yaml.SafeLoader)
    try:
        if schema is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if schema is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("expected a whole number")
            return value
        if schema is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("expected a number")
            return float(value)
        if schema is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if schema == "size":
            return parse_size(value)
        if schema in ("size_or_share", "float_or_share", "int_or_share"):
            if isinstance(value, str) and value.strip().endswith("%"):
                share = float(value.strip()[:-1]) / 100
                if not 0 < share <= 1:
                    raise ValueError("a share must be between 0% and 100%")
                return ("share", share)
            if schema == "int_or_share":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError("expected a whole number or a share such as 50%")
                return value
            return parse_size(value) if schema == "size_or_share" else float(value)
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    raise AssertionError(schema)


def _ulimits(path: Path, node: yaml.Node, key: str) -> dict[str, int] | None:
    """``any`` (no checks), or a mapping of ulimit name to the highest hard value (a
    number or ``unlimited``); names not listed are refused."""
    where = _where(path, node, key)
    if isinstance(node, yaml.ScalarNode) and node.value == "any":
        return None
    if not isinstance(node, yaml.MappingNode):
        raise PolicyError(f"{where}: expected `any` or a mapping of ulimit name to its maximum")
    out: dict[str, int] = {}
    for k_node, v_node in node.value:
        name = str(k_node.value)
        here = _where(path, k_node, f"{key}.{name}")
        if name not in ULIMIT_NAMES:
            raise PolicyError(f"{here}: unknown ulimit; known: {', '.join(sorted(ULIMIT_NAMES))}")
        if name in out:
            raise PolicyError(f"{here}: duplicate key")
        value = yaml.load(yaml.serialize(v_node), Loader=yaml.SafeLoader)
        if value == "unlimited":
            out[name] = UNLIMITED
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[name] = value
        else:
            raise PolicyError(f"{here}: expected a whole number >= 0 or `unlimited`")
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _ports(path: Path, values: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for text in values:
        lo, _, hi = str(text).partition("-")
        try:
            pair = (int(lo), int(hi or lo))
        except ValueError:
            raise PolicyError(f"{path}: containers.published_ports: bad range {text!r}") from None
        out.append(pair)
    return tuple(out)


def _subnets(path: Path, values: list[str]) -> tuple[str, ...]:
    for text in values:
        try:
            ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise PolicyError(f"{path}: networks.subnets: {exc}") from None
    return tuple(values)


RESOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "memory": {"default": 2 << 30, "max": 64 << 30},
    "cpus": {"max": 16},
    # A share of the node's tasks (the lower of kernel.pid_max and threads-max) caps
    # one container as well as the number: with Linux's default pid_max (32768), one
    # container of 32768 would hold every pid of the node (review 17b).
    "pids": {"default": 4096, "max": 32768, "max_share": 0.5},
    "shm_size": {"max": 8 << 30},
    "logs": {"max_size": 100 << 20, "max_files": 5},
}


def _limit(data: dict[str, Any]) -> Limit:
    top = data.get("max")
    if isinstance(top, tuple):
        return Limit(data.get("default"), None, top[1])
    return Limit(data.get("default"), top)


class ProfileSet:
    """All profiles of a policies directory, loaded and validated together."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.raw: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, Profile] = {}
        for path in sorted(directory.glob("*.yaml")):
            node = _compose(path)
            self.raw[path.stem] = _check(path, node, _SCHEMA, "") if node is not None else {}
        for name in self.raw:
            self.profiles[name] = self._build(name, [])

    @property
    def shared_volume_names(self) -> frozenset[str]:
        """Names any profile shares: no user may create or own a volume by them."""
        return frozenset(v.name for p in self.profiles.values() for v in p.shared_volumes)

    def _resolved(self, name: str, chain: list[str]) -> dict[str, Any]:
        if name in chain:
            raise PolicyError(f"{self.directory}/{name}.yaml: extends loop {' -> '.join(chain)}")
        raw = self.raw[name]
        parent = raw.get("extends")
        if parent is None:
            return raw
        if parent not in self.raw:
            raise PolicyError(f"{self.directory}/{name}.yaml: extends unknown profile {parent!r}")
        return _merge(self._resolved(parent, [*chain, name]), raw)

    def _build(self, name: str, chain: list[str]) -> Profile:
        d = self._resolved(name, chain)
        path = self.directory / f"{name}.yaml"
        c = d.get("containers", {})
        m = d.get("mounts", {})
        r = d.get("resources", {})
        qd = d.get("quota", {})
        kwargs: dict[str, Any] = {
            "name": name,
            "description": d.get("description", ""),
            "admin": d.get("admin", False),
            "source": str(path),
        }
        if name == "admin" and not kwargs["admin"]:
            # root's profile (root_is_admin) and the one the gate falls back to: a
            # non-admin "admin" would leave no way in for the operator.
            raise PolicyError(
                f"{path}: the admin profile must keep admin: true (root is given it); "
                "write a profile of another name for limited users"
            )
        simple = {
            "privileged": c.get("privileged"),
            "host_namespaces": c.get("host_namespaces"),
            "unconfined": c.get("unconfined"),
            "devices": c.get("devices"),
            "cgroup_parent": c.get("cgroup_parent"),
            "oom_kill_disable": c.get("oom_kill_disable"),
            "oom_score_adj_min": c.get("oom_score_adj_min"),
            "containers_on_managers": c.get("on_managers"),
            "exec_privileged": d.get("exec", {}).get("privileged"),
            "exec_root": d.get("exec", {}).get("root"),
            "buildkit": d.get("build", {}).get("buildkit"),
            "own_volumes": m.get("own_volumes"),
            "volume_driver_opts": m.get("volume_driver_opts"),
            "swap": r.get("swap"),
            "avoid_managers": d.get("swarm", {}).get("avoid_managers"),
            "quota_memory": qd.get("memory"),
            "quota_containers": qd.get("containers"),
            "quota_services": qd.get("services"),
            "quota_networks": qd.get("networks"),
            "quota_secrets": qd.get("secrets"),
            "quota_configs": qd.get("configs"),
        }
        kwargs.update({k: v for k, v in simple.items() if v is not None})
        if "ulimits" in c:
            kwargs["ulimits"] = c["ulimits"]
        if "device_paths" in c:
            kwargs["device_paths"] = tuple(c["device_paths"])
        if "cap_add" in c:
            kwargs["cap_add"] = frozenset(normalise_cap(x) for x in c["cap_add"])
        for key, target in (
            ("sysctls", "sysctls"),
            ("runtimes", "runtimes"),
            ("log_drivers", "log_drivers"),
            ("registries", "registries"),
        ):
            if key in c:
                kwargs[target] = tuple(c[key])
        if "published_ports" in c:
            kwargs["published_ports"] = _ports(path, c["published_ports"])
        if "binds" in m:
            kwargs["binds"] = tuple(
                BindRule(b["path"].rstrip("/") or "/", b.get("read_only", False))
                for b in m["binds"]
            )
        if "volume_drivers" in m:
            kwargs["volume_drivers"] = tuple(m["volume_drivers"])
        if "shared_volumes" in m:
            kwargs["shared_volumes"] = tuple(
                SharedVolume(v["name"], v.get("read_only", False)) for v in m["shared_volumes"]
            )
        if "drivers" in d.get("networks", {}):
            kwargs["network_drivers"] = tuple(d["networks"]["drivers"])
        if "options" in d.get("networks", {}):
            kwargs["network_options"] = tuple(d["networks"]["options"])
        if "subnets" in d.get("networks", {}):
            kwargs["network_subnets"] = _subnets(path, d["networks"]["subnets"])
        # Missing resource keys take the documented defaults (policies/README.md): every
        # container and service of a non-admin gets a memory limit.
        memory = {**RESOURCE_DEFAULTS["memory"], **r.get("memory", {})}
        cpus = {**RESOURCE_DEFAULTS["cpus"], **r.get("cpus", {})}
        pids = {**RESOURCE_DEFAULTS["pids"], **r.get("pids", {})}
        kwargs["memory"] = _limit(memory)
        kwargs["cpus"] = _limit(cpus)
        top = pids.get("max")
        if isinstance(top, tuple) and top[0] == "both":  # [number, share]
            pids["max"] = top[1] if top[1] is not None else RESOURCE_DEFAULTS["pids"]["max"]
            pids["max_share"] = top[2] if top[2] is not None else pids.get("max_share")
        elif isinstance(top, tuple):  # "25%": the share, below the default number
            pids["max"], pids["max_share"] = RESOURCE_DEFAULTS["pids"]["max"], top[1]
        kwargs["pids"] = Limit(pids.get("default"), pids.get("max"), pids.get("max_share"))
        kwargs["shm_max"] = {**RESOURCE_DEFAULTS["shm_size"], **r.get("shm_size", {})}.get("max")
        logs = {**RESOURCE_DEFAULTS["logs"], **r.get("logs", {})}
        kwargs["log_max_size"], kwargs["log_max_files"] = logs["max_size"], logs["max_files"]
        for key, limit, show in (
            ("memory", kwargs["memory"], human),
            ("cpus", kwargs["cpus"], lambda v: f"{v:g}"),
            ("pids", kwargs["pids"], lambda v: str(int(v))),
        ):
            if limit.default is not None and limit.max is not None and limit.default > limit.max:
                raise PolicyError(
                    f"{path}: resources.{key}.default ({show(limit.default)}) is above "
                    f"resources.{key}.max ({show(limit.max)}), perhaps inherited through "
                    "extends: every request without a value would be refused; set a "
                    "default within the max"
                )
        return Profile(**kwargs)

    def get(self, name: str) -> Profile | None:
        return self.profiles.get(name)

    def effective(self, name: str) -> dict[str, Any]:
        """The rules the gate applies for a profile, in the files' shape, for
        ``dockergate policy show``: read back from the built profile, so the
        defaults of missing keys and what ``extends`` brought are shown too."""
        return rules_of(self.profiles[name])


def rules_of(p: Profile) -> dict[str, Any]:
    def size(limit: float | None) -> str | None:
        return None if limit is None else human(limit)

    def cap(limit: Limit, unit: Callable[[float | None], Any]) -> dict[str, Any]:
        top = f"{limit.max_share * 100:g}%" if limit.max_share else unit(limit.max)
        return {"default": unit(limit.default), "max": top}

    return {
        "description": p.description,
        "admin": p.admin,
        "containers": {
            "privileged": p.privileged,
            "host_namespaces": p.host_namespaces,
            "cap_add": sorted(p.cap_add),
            "unconfined": p.unconfined,
            "devices": p.devices,
            "device_paths": list(p.device_paths),
            "sysctls": list(p.sysctls),
            "cgroup_parent": p.cgroup_parent,
            "runtimes": list(p.runtimes),
            "oom_kill_disable": p.oom_kill_disable,
            "oom_score_adj_min": p.oom_score_adj_min,
            "ulimits": p.ulimits,
            "log_drivers": list(p.log_drivers),
            "published_ports": [f"{lo}-{hi}" for lo, hi in p.published_ports],
            "registries": list(p.registries),
            "on_managers": p.containers_on_managers,
        },
        "exec": {"privileged": p.exec_privileged, "root": p.exec_root},
        "build": {"buildkit": p.buildkit},
        "mounts": {
            "binds": [{"path": b.path, "read_only": b.read_only} for b in p.binds],
            "own_volumes": p.own_volumes,
            "volume_drivers": list(p.volume_drivers),
            "volume_driver_opts": p.volume_driver_opts,
            "shared_volumes": [
                {"name": v.name, "read_only": v.read_only} for v in p.shared_volumes
            ],
        },
        "networks": {
            "drivers": list(p.network_drivers),
            "options": list(p.network_options),
            "subnets": list(p.network_subnets),
        },
        "resources": {
            "memory": cap(p.memory, size),
            "swap": p.swap,
            "cpus": cap(p.cpus, lambda n: n),
            "pids": {
                "default": None if p.pids.default is None else int(p.pids.default),
                # Both apply, the lower wins (a share alone in a file keeps the number).
                "max": [
                    *([int(p.pids.max)] if p.pids.max else []),
                    *([f"{p.pids.max_share * 100:g}%"] if p.pids.max_share else []),
                ],
            },
            "shm_size": {"max": size(p.shm_max)},
            "logs": {"max_size": size(p.log_max_size), "max_files": p.log_max_files},
        },
        "quota": {
            "memory": size(p.quota_memory),
            "containers": p.quota_containers,
            "services": p.quota_services,
            "networks": p.quota_networks,
            "secrets": p.quota_secrets,
            "configs": p.quota_configs,
        },
        "swarm": {"avoid_managers": p.avoid_managers},
    }


def normalise_cap(name: str) -> str:
    """``sys_admin``, ``CAP_SYS_ADMIN`` and ``SYS_ADMIN`` are one capability."""
    upper = str(name).strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def shipped_policies_dir() -> Path:
    """The policies shipped with the package (``dockergate/_policies``, a link to the
    repository's ``policies/`` that setuptools follows when it builds the wheel)."""
    shipped = Path(__file__).resolve().parents[1] / "_policies"
    if shipped.is_dir():
        return shipped.resolve()
    return Path(__file__).resolve().parents[2] / "policies"  # a tree without the link
