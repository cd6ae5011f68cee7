"""Container, exec and update bodies: host access (privileged, namespaces,
capabilities, devices, security options), the image, then the resources
(:mod:`.resources`) and host paths (:mod:`.hostpaths`) a ``HostConfig`` asks for.

``check_container`` is what ``POST /containers/create`` applies
(:mod:`dockergate.api.containers` calls it); ``check_update`` and ``check_exec``
are ``docker update`` and ``docker exec``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from dockergate.policy.hostpaths import (
    bind_modes,
    bind_options,
    check_bind,
    check_mount,
    check_volume_driver,
    resolve_host_path,
)
from dockergate.policy.model import DEFAULT_CAPS, Profile, human, normalise_cap
from dockergate.policy.network import check_any_port, check_ports, ephemeral_ports
from dockergate.policy.resources import (
    apply_cpus,
    apply_memory,
    apply_pids,
    capped_log_options,
    check_healthcheck,
    check_oom_score_adj,
    check_stop_wait,
    check_ulimits,
)
from dockergate.policy.rules import NANO, Denied, NodeFacts

# The host namespaces a container can join, with the CLI flag that asks for each.
NAMESPACES = {
    "NetworkMode": "--network",
    "PidMode": "--pid",
    "IpcMode": "--ipc",
    "UTSMode": "--uts",
    "UsernsMode": "--userns",
    "CgroupnsMode": "--cgroupns",
}

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


def check_image(profile: Profile, image: str, field: str) -> None:
    if image and not profile.allows_registry(image):
        raise Denied(
            profile,
            "images from this registry",
            field,
            image,
            f"allowed: {', '.join(profile.registries)}",
        )


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
    check_healthcheck(profile, body.get("Healthcheck"), "Healthcheck")
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
