"""Swarm service specs: the container rules applied to a ``TaskTemplate``, the
service-only fields (placement off managers, resources, restart and update
policies) and what a spec costs the quota (tasks times memory).
"""

from __future__ import annotations

from typing import Any

from dockergate.policy.container import (
    CONFINED_SELINUX_TYPES,
    check_caps,
    check_endpoint_opts,
    check_image,
    check_sysctls,
)
from dockergate.policy.hostpaths import check_mount
from dockergate.policy.model import Profile, human
from dockergate.policy.network import (
    SWARM_DYNAMIC_PORTS,
    check_any_port,
    ephemeral_ports,
    port_ranges,
)
from dockergate.policy.resources import (
    apply_cpus,
    apply_memory,
    apply_pids,
    cap_max,
    capped_log_options,
    check_healthcheck,
    check_oom_score_adj,
    check_stop_wait,
    check_ulimits,
)
from dockergate.policy.rules import NANO, Denied, NodeFacts


def check_service(profile: Profile, spec: dict[str, Any], facts: NodeFacts) -> None:
    """Service specs (create and update): the container rules, mapped to Swarm's fields."""
    if profile.admin:
        return
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    check_image(profile, str(container.get("Image") or ""), "TaskTemplate.ContainerSpec.Image")
    prefix = "TaskTemplate.ContainerSpec"
    check_stop_wait(profile, container.get("StopGracePeriod"), 10**9, f"{prefix}.StopGracePeriod")
    check_healthcheck(profile, container.get("Healthcheck"), f"{prefix}.Healthcheck")
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
                profile,
                "publishing this port",
                field,
                published,
                f"allowed: {port_ranges(profile)}",
            )
    resources = template.get("Resources")
    if not isinstance(resources, dict):
        resources = template["Resources"] = {}
    limits = resources.get("Limits")
    if not isinstance(limits, dict):
        limits = resources["Limits"] = {}
    reserved = int((resources.get("Reservations") or {}).get("MemoryBytes") or 0)
    mem_cap = cap_max(profile, profile.memory.max, profile.memory.max_share, facts.mem_total)
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
    cpu_cap = cap_max(profile, profile.cpus.max, profile.cpus.max_share, facts.ncpu)
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
        # dockerd's defaults (convert.ServiceSpecToGRPC): MaxConcurrent 1 when absent,
        # TotalCompletions that MaxConcurrent when absent.
        job = mode.get("ReplicatedJob") or {}
        at_once = int(job["MaxConcurrent"]) if job.get("MaxConcurrent") is not None else 1
        total = int(job["TotalCompletions"]) if job.get("TotalCompletions") is not None else at_once
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
