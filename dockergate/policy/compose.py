"""``dockergate check``: compose and stack files checked offline against a profile.

Each service is translated into the API bodies the docker CLI would send (a
container's ``HostConfig`` and a service's ``TaskTemplate``) and run through the
same checks as the gate, one field at a time, so that *every* violation is listed
with its service and rule, not only the first.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dockergate.policy.container import check_host_config, check_image
from dockergate.policy.durations import parse_duration
from dockergate.policy.hostpaths import OFFLINE, check_volume_driver
from dockergate.policy.model import Profile, human, parse_size
from dockergate.policy.network import check_network
from dockergate.policy.resources import (
    apply_cpus,
    apply_memory,
    apply_pids,
    capped_log_options,
    check_healthcheck,
    check_stop_wait,
)
from dockergate.policy.rules import NANO, Denied, NodeFacts
from dockergate.policy.service import check_service


@dataclass(frozen=True)
class Violation:
    file: str
    service: str
    message: str
    rule: str


def _ports(service: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = str(port.get("published") or "")
            target = f"{port.get('target')}/{port.get('protocol') or 'tcp'}"
        else:
            parts = str(port).split(":")
            if len(parts) < 2:
                continue
            published, target = parts[-2], parts[-1]
        out.setdefault(target, []).append({"HostPort": published})
    return out


def _volumes(service: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    binds: list[str] = []
    mounts: list[dict[str, Any]] = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            kind = volume.get("type") or "volume"
            mounts.append(
                {
                    "Type": kind,
                    "Source": volume.get("source") or "",
                    "Target": volume.get("target") or "",
                    "ReadOnly": bool(volume.get("read_only")),
                }
            )
        else:
            text = str(volume)
            if text.startswith((".", "~")):
                text = str(Path(text.split(":", 1)[0]).expanduser().resolve()) + (
                    ":" + text.split(":", 1)[1] if ":" in text else ""
                )
            binds.append(text)
    return binds, mounts


def _ulimits(spec: Any) -> list[dict[str, Any]]:
    """compose's ``ulimits: {nofile: {soft: 1, hard: 2}, nproc: 65535}`` as Docker's list."""
    out = []
    for name, value in (spec or {}).items() if isinstance(spec, dict) else []:
        if isinstance(value, dict):
            out.append({"Name": name, "Soft": value.get("soft"), "Hard": value.get("hard")})
        else:
            out.append({"Name": name, "Soft": value, "Hard": value})
    return out


def _mapping(node: dict[str, Any], key: str) -> dict[str, Any]:
    """``node[key]`` of a compose file, a mapping or absent (ValueError otherwise:
    reported as the service's violation, as ``docker stack deploy`` refuses it)."""
    value = node.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping, not {value!r}")
    return value


def replicas(deploy: dict[str, Any]) -> int:
    """``deploy.replicas`` as docker's loader reads it (after ``${VAR}``): a whole
    number, written as one or as digits in a string (ValueError otherwise)."""
    value = deploy.get("replicas", 1)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"deploy.replicas must be a whole number, not {value!r}")
    return value


def host_config(service: dict[str, Any]) -> dict[str, Any]:
    """The ``HostConfig`` ``docker compose up`` would send for a service."""
    binds, mounts = _volumes(service)
    deploy_limits = _mapping(_mapping(_mapping(service, "deploy"), "resources"), "limits")
    memory = service.get("mem_limit") or deploy_limits.get("memory")
    cpus = service.get("cpus") or deploy_limits.get("cpus")
    pids = service.get("pids_limit") or deploy_limits.get("pids")
    host: dict[str, Any] = {
        "Privileged": bool(service.get("privileged")),
        "NetworkMode": service.get("network_mode") or "",
        "PidMode": service.get("pid") or "",
        "IpcMode": service.get("ipc") or "",
        "UsernsMode": service.get("userns_mode") or "",
        "CapAdd": service.get("cap_add") or [],
        "SecurityOpt": service.get("security_opt") or [],
        "Devices": service.get("devices") or [],
        "DeviceCgroupRules": service.get("device_cgroup_rules") or [],
        "Sysctls": service.get("sysctls") or {},
        "CgroupParent": service.get("cgroup_parent") or "",
        "Runtime": service.get("runtime") or "",
        "OomKillDisable": bool(service.get("oom_kill_disable")),
        "OomScoreAdj": service.get("oom_score_adj"),
        "Ulimits": _ulimits(service.get("ulimits")),
        "LogConfig": {
            "Type": (service.get("logging") or {}).get("driver") or "",
            "Config": (service.get("logging") or {}).get("options") or {},
        },
        "Binds": binds,
        "Mounts": mounts,
        "PortBindings": _ports(service),
        "Memory": parse_size(memory) if memory else 0,
        "NanoCpus": int(float(cpus) * 1e9) if cpus else 0,
        "PidsLimit": int(pids) if pids else 0,
    }
    if isinstance(host["Sysctls"], list):
        host["Sysctls"] = dict(str(s).split("=", 1) for s in host["Sysctls"])
    return host


def network_body(network: dict[str, Any]) -> dict[str, Any]:
    """The ``networks/create`` body a compose/stack network becomes."""
    ipam = network.get("ipam") or {}
    configs = [
        {
            "Subnet": c.get("subnet"),
            "IPRange": c.get("ip_range"),
            "Gateway": c.get("gateway"),
            "AuxiliaryAddresses": c.get("aux_addresses"),
        }
        for c in ipam.get("config") or []
        if isinstance(c, dict)
    ]
    return {
        "Driver": str(network.get("driver") or "overlay"),
        "Options": network.get("driver_opts") or {},
        "IPAM": {
            "Driver": ipam.get("driver") or "default",
            "Config": configs,
            "Options": ipam.get("options") or {},
        },
    }


VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR:+alt}`` and ``$$`` in every string, as ``docker stack deploy`` substitutes
    them from the environment before it sends anything (an unset variable is empty):
    the check must see the values the gate will."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str) or "$" not in node:
        return node

    def value(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("plain") or m.group("name")
        op, arg = m.group("op") or "", m.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if unset else str(current)
        if op.endswith("?"):
            if unset:
                raise ValueError(f"required variable {name} is not set: {arg}")
            return str(current)
        if op.endswith("+"):
            return "" if unset else arg
        return current or ""

    return VARIABLE.sub(value, node)


def duration_ns(value: Any) -> int:
    """A compose duration in nanoseconds, as Go reads it (``1m30s``, ``500ms``); a
    YAML number, which compose refuses there, is taken as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"not a duration: {value!r}")
        return int(value * 10**9)
    try:
        return parse_duration(str(value))
    except ValueError:
        raise ValueError(f"not a duration: {value!r}") from None


def healthcheck(block: Any) -> dict[str, Any] | None:
    """A service's ``healthcheck:`` as the engine's ``Healthcheck`` (the fields the
    profile bounds)."""
    if not isinstance(block, dict) or block.get("disable"):
        return None
    test = block.get("test")
    out: dict[str, Any] = {"Test": test if isinstance(test, list) else ["CMD-SHELL", test]}
    for key, field in (("interval", "Interval"), ("start_interval", "StartInterval")):
        if block.get(key) is not None:
            out[field] = duration_ns(block[key])
    return out


def quota_violations(
    profile: Profile, path: Path, services: int, tasks: int, memory: int
) -> list[Violation]:
    """What the file alone would take past the user's quotas (what they already run
    counts too, at deploy time: the gate knows it, the file does not): its services,
    their tasks in ``quota.containers`` (replicas; a global service as one) and their
    memory."""
    out = []
    for used, limit, rule, what in (
        (services, profile.quota_services, "quota.services", f"{services} services"),
        (tasks, profile.quota_containers, "quota.containers", f"{tasks} tasks"),
        (memory, profile.quota_memory, "quota.memory", f"{human(memory)} of memory limits"),
    ):
        if limit is not None and used > limit:
            shown = human(limit) if rule == "quota.memory" else str(limit)
            out.append(
                Violation(
                    str(path),
                    "(the file)",
                    f"profile {profile.name!r}: the file's services need {what}, more than "
                    f"{rule} ({shown}) allows, before anything the user runs already",
                    rule,
                )
            )
    return out


def check_host_network(profile: Profile) -> None:
    if not profile.host_namespaces:
        raise Denied(profile, "the host network", "networks", "host", "use a network of the stack")


def check_file(profile: Profile, path: Path, facts: NodeFacts | None = None) -> list[Violation]:
    """Every violation in one file; ``facts`` sizes shares like "25%" (unknown: no cap)."""
    if profile.admin:
        return []
    try:
        data = interpolate(yaml.safe_load(path.read_text()) or {}, os.environ)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        return [Violation(str(path), "-", f"cannot read: {exc}", "file")]
    found: list[Violation] = []
    facts = facts or NodeFacts()
    networks = {
        key: str((net or {}).get("name") or key) if (net or {}).get("external") else ""
        for key, net in (data.get("networks") or {}).items()
    }

    def run(where: str, check: Callable[..., object], *args: Any) -> None:
        offline = OFFLINE.set(True)  # the team's bind paths need not exist here
        try:
            check(*args)
        except Denied as exc:
            found.append(Violation(str(path), where, exc.message, exc.rule))
        finally:
            OFFLINE.reset(offline)

    services = tasks = memory = 0
    for name, service in (data.get("services") or {}).items():
        if not isinstance(service, dict):
            continue
        services += 1
        try:
            host = host_config(service)
            deploy = _mapping(service, "deploy")
            count = 1 if deploy.get("mode") == "global" else replicas(deploy)
            placement = _mapping(deploy, "placement").get("constraints")
        except ValueError as exc:
            found.append(Violation(str(path), name, str(exc), "value"))
            continue
        tasks += count
        memory += count * int(host["Memory"] or profile.memory.default or 0)
        run(name, check_image, profile, str(service.get("image") or ""), "image")
        for key in service.get("networks") or []:
            if networks.get(key) == "host":
                run(name, check_host_network, profile)
        for key, value in host.items():
            if key not in ("Memory", "NanoCpus", "PidsLimit"):
                run(name, check_host_config, profile, {key: value}, "service")
        run(name, apply_memory, profile, dict(host), facts, "memory")
        run(name, apply_cpus, profile, dict(host), facts, "cpus")
        run(name, apply_pids, profile, dict(host), "pids_limit", facts)
        log = host["LogConfig"]
        driver = log["Type"] or facts.log_driver
        run(name, capped_log_options, profile, driver, log["Config"], "logging.options")
        try:
            health = healthcheck(service.get("healthcheck"))
            grace = service.get("stop_grace_period")
            grace_ns = None if grace is None else duration_ns(grace)
        except ValueError as exc:
            found.append(Violation(str(path), name, str(exc), "value"))
        else:
            run(name, check_healthcheck, profile, health, "healthcheck")
            run(name, check_stop_wait, profile, grace_ns, NANO, "stop_grace_period")
        template = {"ContainerSpec": {}, "Placement": {"Constraints": placement or []}}
        if profile.avoid_managers:
            run(name, check_service, profile, {"TaskTemplate": template}, facts)
    found += quota_violations(profile, path, services, tasks, memory)
    for name, volume in (data.get("volumes") or {}).items():
        if isinstance(volume, dict) and not volume.get("external"):
            driver = str(volume.get("driver") or "")
            options = volume.get("driver_opts")
            run(f"volume {name}", check_volume_driver, profile, driver, options, "driver_opts")
    for name, network in (data.get("networks") or {}).items():
        if isinstance(network, dict) and not network.get("external"):
            run(f"network {name}", check_network, profile, network_body(network))
    return found
