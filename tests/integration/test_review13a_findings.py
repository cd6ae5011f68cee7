"""Findings of review round 13a (container-create and service-spec checks against the
whole Engine API: every field of ContainerConfig, HostConfig, NetworkingConfig,
Mount, the service TaskTemplate and exec, and the fields added in API 1.42-1.52).

The gate's schema unites dockerd 20.10, 28.x and the current API, so a field a newer
engine knows is *accepted* as spelled; it is then forwarded unchecked unless a rule
reads it. The local daemon (20.10, API 1.41) ignores the newer fields, so these
tests show the gate forwarding them (no refusal) rather than their effect.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts a ``dockergate:``
refusal. The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate, profile (512m memory quota, 256m per container,
64m default, 2 CPUs, no sysctls, default confinement only), users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration import test_review10a_findings as tenth
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw, Reply

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand = first_round._rand

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
NANO = 1_000_000_000


def _refused(r: Reply) -> bool:
    if r.status not in (400, 403):
        return False
    try:
        return str(json.loads(r.body).get("message", "")).startswith("dockergate:")
    except ValueError:
        return False


def _create(raw: Raw, body: dict[str, Any], cleanup) -> Reply:
    r = first_round.create(raw, body)
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    return r


def _service(raw: Raw, cleanup, template: dict[str, Any], **extra: Any) -> Reply:
    spec = {
        "Name": f"rv13-{_rand()}",
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "60"]},
            **template,
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        **extra,
    }
    r = raw.request("POST", "/v1.41/services/create", spec)
    if r.status == 201:
        cleanup.append(("service", json.loads(r.body)["ID"]))
    return r


def _busybox(**host: Any) -> dict[str, Any]:
    return {"Image": "busybox", "Cmd": ["true"], "HostConfig": host}


# ------------------------------------------------------------- OCI annotations


def test_finding_host_config_annotations_reach_the_runtime(users, cleanup):
    """``HostConfig.Annotations`` (API 1.43, dockerd 24+) is copied into the OCI spec's
    ``annotations`` (daemon/oci_linux.go ``WithAnnotations``) and the runtime acts on
    it: runc turns ``org.systemd.property.*`` into properties of the container's
    systemd scope (systemd cgroup driver: ``MemoryMax``, ``TasksMax``, ``CPUQuota``,
    ``DeviceAllow``, re-applied by systemd over runc's values), nvidia-container-runtime
    injects the devices named by ``cdi.k8s.io/*``, crun reads ``run.oci.*``. No rule
    reads the field: it is forwarded as sent.

    ``POST /containers/create`` with ``HostConfig.Annotations:
    {"org.systemd.property.TasksMax": "uint64 18446744073709551615",
    "cdi.k8s.io/gpu": "nvidia.com/gpu=all"}``."""
    r = _create(
        users["mallory"],
        _busybox(
            Annotations={
                "org.systemd.property.TasksMax": "uint64 18446744073709551615",
                "org.systemd.property.MemoryMax": "uint64 18446744073709551615",
                "cdi.k8s.io/gpu": "nvidia.com/gpu=all",
            }
        ),
        cleanup,
    )
    assert _refused(r), (r.status, r.body)


def test_works_container_without_annotations(users, cleanup):
    """The neighbour: the same container without annotations is created and runs."""
    m = users["mallory"]
    r = _create(m, _busybox(), cleanup)
    assert r.status == 201, (r.status, r.body)
    started = first_round.start(m, json.loads(r.body)["Id"])
    assert started.status == 204, (started.status, started.body)


# ------------------------------------------------------------- swap for services


def test_finding_service_swap_bytes_unchecked(users, cleanup):
    """``resources.swap: false`` pins a container's ``MemorySwap`` to its memory. API
    1.52 gave services ``TaskTemplate.Resources.SwapBytes`` (executor: ``-1`` is
    ``MemorySwap=-1``, unlimited swap; ``n`` is memory + n). The gate forwards it
    unchecked: on a current engine a member's service runs with unlimited swap.
    (With the field the gate could also close the known 1.41 limit by sending
    ``SwapBytes: 0`` itself.)

    ``POST /services/create`` with ``TaskTemplate.Resources: {Limits: {MemoryBytes:
    64m}, SwapBytes: -1}``."""
    r = _service(
        users["mallory"],
        cleanup,
        {"Resources": {"Limits": {"MemoryBytes": 64 * MIB}, "SwapBytes": -1}},
    )
    assert _refused(r), (r.status, r.body)


def test_works_service_with_a_memory_limit(users, cleanup):
    """The neighbour: a service with a memory limit and no swap setting."""
    r = _service(users["mallory"], cleanup, {"Resources": {"Limits": {"MemoryBytes": 64 * MIB}}})
    assert r.status == 201, (r.status, r.body)


# ------------------------------------------------------------- SELinux spc_t


def test_finding_selinux_type_spc_t_is_label_disable(users, cleanup):
    """``label=disable`` is refused, and so are ``label=user:``/``role:``; any
    ``label=type:...`` passes. But ``label=disable`` *is* running as ``spc_t``
    (container-selinux's "super privileged container", unconfined): on an SELinux
    host ``label=type:spc_t`` (or ``unconfined_t``) switches the separation off just
    the same. Services likewise: ``Privileges.SELinuxContext`` refuses
    ``Disable``/``User``/``Role`` and lets ``Type: spc_t`` through.

    ``POST /containers/create`` with ``HostConfig.SecurityOpt: ["label=type:spc_t"]``;
    ``POST /services/create`` with ``ContainerSpec.Privileges.SELinuxContext:
    {Type: spc_t}``."""
    m = users["mallory"]
    container = _create(m, _busybox(SecurityOpt=["label=type:spc_t"]), cleanup)
    service = _service(
        m,
        cleanup,
        {
            "ContainerSpec": {
                "Image": "busybox",
                "Command": ["sleep", "60"],
                "Privileges": {"SELinuxContext": {"Type": "spc_t"}},
            }
        },
    )
    assert _refused(container) and _refused(service), (
        f"container: {container.status} {container.body[:200]!r}; "
        f"service: {service.status} {service.body[:200]!r}"
    )


def test_works_selinux_confined_type(users, cleanup):
    """The neighbour: a confined type (``container_t``, the default domain) passes,
    as does the control that ``label=disable`` is refused."""
    m = users["mallory"]
    r = _create(m, _busybox(SecurityOpt=["label=type:container_t"]), cleanup)
    assert r.status == 201, (r.status, r.body)
    r = _create(m, _busybox(SecurityOpt=["label=disable"]), cleanup)
    assert _refused(r), (r.status, r.body)


# ------------------------------------------------------------- AppArmor profiles


def test_finding_apparmor_any_loaded_profile(users, cleanup):
    """``apparmor=unconfined`` is refused, any other profile name passes. The host's
    loaded profiles are not Docker's: Ubuntu 24.04 loads some hundred profiles with
    ``flags=(unconfined)`` (``chrome``, ``vscode``, ... for its user-namespace
    restriction) and others in complain mode; naming one of them runs the container
    as unconfined as ``apparmor=unconfined`` would.

    ``POST /containers/create`` with ``HostConfig.SecurityOpt: ["apparmor=chrome"]``."""
    r = _create(users["mallory"], _busybox(SecurityOpt=["apparmor=chrome"]), cleanup)
    assert _refused(r), (r.status, r.body)


def test_works_apparmor_docker_default(users, cleanup):
    """The neighbour: Docker's own profile, named, passes."""
    r = _create(users["mallory"], _busybox(SecurityOpt=["apparmor=docker-default"]), cleanup)
    assert r.status == 201, (r.status, r.body)


# ------------------------------------------------------------- per-interface sysctls


def test_finding_endpoint_sysctls_skip_the_sysctl_allowlist(users, cleanup):
    """``HostConfig.Sysctls`` is held to the profile's allowlist (none here), so
    ``net.ipv4.conf.eth0.route_localnet`` is refused there. API 1.46 (dockerd 27)
    added per-interface sysctls as an endpoint driver option,
    ``com.docker.network.endpoint.sysctls`` (``net.{ipv4,ipv6,mpls}.conf.IFNAME.*``),
    applied by libnetwork when the interface is made; for API <= 1.47 dockerd even
    moves ``HostConfig.Sysctls`` of ``eth0`` there itself. ``EndpointsConfig.*.
    DriverOpts`` (and a service's ``Networks[].DriverOpts``) are forwarded unchecked.

    ``POST /containers/create`` with ``NetworkingConfig.EndpointsConfig.bridge.
    DriverOpts: {"com.docker.network.endpoint.sysctls":
    "net.ipv4.conf.IFNAME.route_localnet=1,net.ipv4.conf.IFNAME.accept_local=1"}``."""
    m = users["mallory"]
    direct = _create(m, _busybox(Sysctls={"net.ipv4.conf.eth0.route_localnet": "1"}), cleanup)
    assert _refused(direct), ("control", direct.status, direct.body)
    body = _busybox()
    body["NetworkingConfig"] = {
        "EndpointsConfig": {
            "bridge": {
                "DriverOpts": {
                    "com.docker.network.endpoint.sysctls": (
                        "net.ipv4.conf.IFNAME.route_localnet=1,net.ipv4.conf.IFNAME.accept_local=1"
                    )
                }
            }
        }
    }
    r = _create(m, body, cleanup)
    assert _refused(r), (r.status, r.body)


def test_works_endpoint_aliases_on_own_network(users, cleanup):
    """The neighbour: an endpoint of one's own network with aliases."""
    m = users["mallory"]
    nid = first_round.network(m, f"rv13-net-{_rand()}", cleanup)
    body = _busybox()
    body["NetworkingConfig"] = {"EndpointsConfig": {nid: {"Aliases": ["web"]}}}
    r = _create(m, body, cleanup)
    assert r.status == 201, (r.status, r.body)


# ------------------------------------------------------------- CPU reservations


def test_finding_service_cpu_reservation_uncapped(users, cleanup):
    """Memory reservations are capped at the profile's memory max (a reservation
    takes the node's capacity from everyone else's scheduling); CPU reservations are
    not capped at all. A member's 1-replica service reserving 64 CPUs (the profile
    allows 2) is accepted; with one replica per node sized to a node's CPUs, no other
    user's service with a CPU reservation can be scheduled anywhere.

    ``POST /services/create`` with ``TaskTemplate.Resources.Reservations:
    {NanoCPUs: 64e9}``."""
    r = _service(
        users["mallory"],
        cleanup,
        {"Resources": {"Reservations": {"NanoCPUs": 64 * NANO}}},
    )
    assert _refused(r), (r.status, r.body)


def test_works_service_cpu_reservation_within_the_cap(users, cleanup):
    """The neighbour: reserving half a CPU (the cap is 2) is accepted and runs."""
    m = users["mallory"]
    r = _service(m, cleanup, {"Resources": {"Reservations": {"NanoCPUs": NANO // 2}}})
    assert r.status == 201, (r.status, r.body)
    assert tenth._task_containers(m, json.loads(r.body)["ID"], 1), "the task did not start"
