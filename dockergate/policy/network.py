"""Networks, published ports and addresses: network create (driver, options,
subnets) and host ports against the profile's ranges (containers' and services'
alike).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from dockergate.policy.model import Profile
from dockergate.policy.rules import Denied

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
            f"give a host port in {port_ranges(profile)} (the engine picks from {lo}-{hi})",
        )


def port_ranges(profile: Profile) -> str:
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
                    f"allowed host ports: {port_ranges(profile)}",
                )


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
