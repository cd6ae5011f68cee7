"""Review round 25a: every refusal rule has a test that it refuses, and a test that its
legitimate neighbour still works.

The rules were enumerated from the code (``Denied``/``Refusal`` sites in
dockergate/policy/ and dockergate/api/*, and the profile schema in
dockergate/policy/model.py) and matched against the ~70 test modules; the table is
tests/README.md. This module fills the gaps: rules whose refusal, or whose neighbour,
no integration test went through the gate for. Each ``test_refuses_*``/``test_allows_*``
pair passes on the reviewed code.

One finding (Low): ``mounts.own_volumes: false`` keeps a user from mounting named
volumes of their own, but ``POST /volumes/create`` does not look at it: such a user
still creates (and owns) named volumes that no container of theirs may then use.

Set-up: one module gate with its own profiles (a member with small caps and one-item
quotas; an intern that extends it with ``own_volumes: false``), raw API requests over
the unix socket as each user's uid; services are placed on a node label no node has,
so nothing runs. Only the local ``busybox`` image; loopback only.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Gate, new_gate, remove_owned
from tests.integration.test_hostile import Raw, Reply

pytestmark = pytest.mark.timeout(120)

OWNER = "dockergate.owner"
MEMBER = "r25a-m"
INTERN = "r25a-i"
API = "/v1.41"
NOWHERE = "node.labels.r25a-nowhere==1"  # tasks stay pending: nothing runs


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g25(session_dir: Path, docker_host: str, tmp_path_factory) -> Iterator[Gate]:
    policies = tmp_path_factory.mktemp("r25a-policies")
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            """
            description: r25a member
            containers:
              published_ports: ["8000-8999"]
              registries: [docker.io]
            resources:
              memory: {default: 64m, max: 256m}
              cpus: {max: 2}
              shm_size: {max: 64m}
            quota:
              memory: 1g
              services: 1
              networks: 1
              secrets: 1
              configs: 1
            """
        )
    )
    (policies / "intern.yaml").write_text(
        textwrap.dedent(
            """
            description: r25a intern
            extends: member
            mounts:
              own_volumes: false
            """
        )
    )
    g = new_gate(session_dir, docker_host, tls=False, extra_args=["--policies-dir", str(policies)])
    g.init()
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def who(g25: Gate, unix_user, direct_client) -> Iterator[dict[str, Raw]]:
    m, i = unix_user("r25am"), unix_user("r25ai")
    g25.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    g25.dockergate("user", "add", INTERN, "--profile", "intern", "--uid", str(i.uid))
    yield {"member": Raw(str(g25.socket), m.uid), "intern": Raw(str(g25.socket), i.uid)}
    remove_owned(direct_client, MEMBER, INTERN)


def refused(r: Reply, *words: str, status: int = 403) -> str:
    text = r.body.decode(errors="replace")
    assert r.status == status, (r.status, text)
    assert "dockergate:" in text, text
    for w in words:
        assert w in text, (w, text)
    return text


def passed(r: Reply, status: int = 201) -> dict:
    text = r.body.decode(errors="replace")
    assert r.status == status, (r.status, text)
    return json.loads(r.body) if r.body.strip() else {}


def create(raw: Raw, body: dict, name: str | None = None) -> Reply:
    query = f"?name={name}" if name else ""
    return raw.request("POST", f"{API}/containers/create{query}", {"Image": "busybox", **body})


def host(**fields) -> dict:
    return {"Cmd": ["true"], "HostConfig": fields}


def service(name: str, **template) -> dict:
    task = {
        "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "60"]},
        "Placement": {"Constraints": [NOWHERE]},
    }
    for key, value in template.items():
        if key == "ContainerSpec":
            task["ContainerSpec"].update(value)
        else:
            task[key] = value
    return {"Name": name, "TaskTemplate": task}


# -------------------------------------------------------------- containers: create


def test_refuses_and_allows_shm_size(who):
    refused(create(who["member"], host(ShmSize=128 << 20)), "/dev/shm", "at most 64m")
    passed(create(who["member"], host(ShmSize=32 << 20)))


def test_refuses_and_allows_container_cpus(who, direct_client):
    refused(create(who["member"], host(NanoCpus=3 * 10**9)), "this many CPUs", "at most 2")
    refused(
        create(who["member"], host(CpuQuota=-1)), "an unlimited CPU quota", "HostConfig.NanoCpus"
    )
    cid = passed(create(who["member"], host(CpuQuota=150_000, CpuPeriod=100_000)))["Id"]
    assert direct_client.api.inspect_container(cid)["HostConfig"]["CpuQuota"] == 150_000


def test_refuses_and_allows_image_registry(who):
    refused(
        create(who["member"], {"Image": "registry.example:5000/tool", "Cmd": ["true"]}),
        "images from this registry",
        "allowed: docker.io",
    )
    passed(create(who["member"], {"Image": "docker.io/library/busybox", "Cmd": ["true"]}))


def test_refuses_and_allows_container_volume_driver(who):
    refused(create(who["member"], host(VolumeDriver="nfs-x")), "this volume driver")
    passed(create(who["member"], host(VolumeDriver="local")))


def test_refuses_and_allows_named_volumes_of_ones_own(who, direct_client):
    """own_volumes: false (the intern) refuses mounting a named volume of one's own;
    the member (own_volumes: true) mounts theirs."""
    name = f"r25a-v-{_rand()}"
    refused(
        create(who["intern"], host(Binds=[f"{name}:/v"])),
        "named volumes of your own",
        "shared volumes: none",
    )
    passed(create(who["member"], host(Binds=[f"{name}:/v"])))
    assert direct_client.volumes.get(name).attrs["Labels"][OWNER] == MEMBER


# -------------------------------------------------------------- containers: update


@pytest.fixture(scope="module")
def box(who) -> str:
    return passed(create(who["member"], {"Cmd": ["true"]}))["Id"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Devices": [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem"}]}, ["device"]),
        ({"DeviceCgroupRules": ["c 1:1 rwm"]}, ["host devices"]),
        ({"CgroupParent": "/"}, ["cgroup parent"]),
        ({"MemorySwap": -1}, ["swap", "memory and swap stay equal"]),
        ({"CpuPeriod": -5}, ["a negative CPU period"]),
        ({"Memory": 512 << 20}, ["this much memory", "at most 256m"]),
        ({"Ulimits": [{"Name": "rtprio", "Soft": 1, "Hard": 1}]}, ["rtprio ulimit"]),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else None,
)
def test_refuses_update(who, box, body, words):
    refused(who["member"].request("POST", f"{API}/containers/{box}/update", body), *words)


def test_allows_update_within_the_profile(who, box, direct_client):
    body = {"Memory": 128 << 20, "MemorySwap": 128 << 20, "PidsLimit": 100}
    passed(who["member"].request("POST", f"{API}/containers/{box}/update", body), 200)
    hc = direct_client.api.inspect_container(box)["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["PidsLimit"]) == (128 << 20, 128 << 20, 100)


# ------------------------------------------------------------------- volumes, quotas


def test_refuses_and_allows_volume_create_driver(who):
    refused(
        who["member"].request("POST", f"{API}/volumes/create", {"Driver": "nfs-x"}),
        "this volume driver",
        "allowed: local",
    )
    body = {"Name": f"r25a-lv-{_rand()}", "Driver": "local"}
    passed(who["member"].request("POST", f"{API}/volumes/create", body))


def test_finding_own_volumes_false_still_creates_named_volumes(who, direct_client):
    """The intern may not have named volumes of their own (``own_volumes: false``:
    the container create above says so), yet ``docker volume create`` makes one, owned
    by them, that no container of theirs can mount. The create should be refused
    with the same rule."""
    name = f"r25a-iv-{_rand()}"
    r = who["intern"].request("POST", f"{API}/volumes/create", {"Name": name})
    made = [v.name for v in direct_client.volumes.list(filters={"label": f"{OWNER}={INTERN}"})]
    assert name not in made, f"the intern owns volume {name} ({r.status})"
    refused(r, "named volumes of your own")


@pytest.mark.parametrize("kind", ["networks", "secrets", "configs"])
def test_refuses_past_and_allows_up_to_the_quota(who, kind):
    """quota.networks/secrets/configs = 1: the first passes, the second is refused."""

    def body() -> dict:
        name = f"r25a-{kind[:3]}-{_rand()}"
        if kind == "networks":
            return {"Name": name, "CheckDuplicate": True}
        return {"Name": name, "Data": "aGVsbG8="}

    passed(who["member"].request("POST", f"{API}/{kind}/create", body()))
    refused(
        who["member"].request("POST", f"{API}/{kind}/create", body()),
        f"more {kind}",
        f"quota.{kind}",
    )


# ----------------------------------------------------------------------- services


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ({"Networks": [{"Target": "host"}]}, ["host"]),
        ({"Runtime": "plugin"}, ["this runtime"]),
        (
            {
                "Resources": {
                    "Reservations": {
                        "GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}]
                    }
                }
            },
            ["generic resources"],
        ),
        (
            {"ContainerSpec": {"Mounts": [{"Type": "BIND", "Source": "/", "Target": "/h"}]}},
            ["this mount type"],
        ),
        ({"ContainerSpec": {"StopGracePeriod": -1}}, ["this stop timeout"]),
        ({"ContainerSpec": {"StopGracePeriod": 301 * 10**9}}, ["this stop timeout"]),
        ({"LogDriver": {"Name": "syslog"}}, ["this log driver"]),
        ({"ContainerSpec": {"CapabilityAdd": ["CAP_SYS_ADMIN"]}}, ["capabilities"]),
        ({"ContainerSpec": {"Sysctls": {"kernel.shm_rmid_forced": "1"}}}, ["sysctl"]),
        ({"ContainerSpec": {"Privileges": {"Seccomp": {"Mode": "unconfined"}}}}, ["confinement"]),
        ({"ContainerSpec": {"Privileges": {"AppArmor": {"Mode": "disabled"}}}}, ["confinement"]),
        ({"Resources": {"Limits": {"MemoryBytes": 512 << 20}}}, ["this much memory"]),
        ({"Resources": {"Reservations": {"MemoryBytes": 512 << 20}}}, ["reserving"]),
        ({"Resources": {"Limits": {"NanoCPUs": 3 * 10**9}}}, ["this many CPUs"]),
        ({"PluginSpec": {"Name": "x"}}, ["plugin or attachment services"]),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else None,
)
def test_refuses_service(who, template, words):
    spec = service(f"r25a-s-{_rand()}", **template)
    refused(who["member"].request("POST", f"{API}/services/create", spec), *words)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 80}]}}, ["port"]),
        ({"UpdateConfig": {"Order": "start-first"}}, ["start-first", "memory quota"]),
        ({"RollbackConfig": {"Order": "start-first"}}, ["start-first"]),
    ],
    ids=["port-80", "update-start-first", "rollback-start-first"],
)
def test_refuses_service_spec(who, extra, words):
    spec = {**service(f"r25a-s-{_rand()}"), **extra}
    refused(who["member"].request("POST", f"{API}/services/create", spec), *words)


def test_allows_service_neighbours_then_refuses_past_the_service_quota(who, direct_client):
    """The neighbours of every refusal above in one spec (quota.services = 1): the
    default runtime, an allowed port, stop-first, a grace period of 300 s, json-file
    logs, a default capability, an allowed mount, memory/CPUs within the caps; then
    a second service is past the quota."""
    name = f"r25a-s-{_rand()}"
    spec = service(
        name,
        ContainerSpec={
            "StopGracePeriod": 300 * 10**9,
            "CapabilityAdd": ["CAP_CHOWN"],
            "Mounts": [{"Type": "tmpfs", "Target": "/t"}],
        },
        LogDriver={"Name": "json-file"},
        Resources={
            "Limits": {"MemoryBytes": 128 << 20, "NanoCPUs": 10**9},
            "Reservations": {"MemoryBytes": 64 << 20},
        },
    )
    spec["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "PublishedPort": 8080}]}
    spec["UpdateConfig"] = {"Order": "stop-first"}
    passed(who["member"].request("POST", f"{API}/services/create", spec))
    tt = direct_client.services.get(name).attrs["Spec"]["TaskTemplate"]
    assert tt["Resources"]["Limits"]["MemoryBytes"] == 128 << 20
    refused(
        who["member"].request("POST", f"{API}/services/create", service(f"r25a-s-{_rand()}")),
        "more services",
    )
