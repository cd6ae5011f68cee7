"""Profile loading and the container/service rules, as pure logic (the gate tests use
the real CLI; these pin the edge cases of each rule and its legitimate neighbour)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dockergate.policy.compose import check_file
from dockergate.policy.container import check_container, check_exec, check_update, is_root_user
from dockergate.policy.hostpaths import OFFLINE, check_volume_driver
from dockergate.policy.model import (
    PolicyError,
    Profile,
    ProfileSet,
    parse_size,
    shipped_policies_dir,
)
from dockergate.policy.network import check_network
from dockergate.policy.rules import Denied, NodeFacts
from dockergate.policy.service import check_service, service_memory
from tests.helpers import nosymfollow

FACTS = NodeFacts(mem_total=16 << 30, ncpu=8, manager=False)


@pytest.fixture(scope="module")
def shipped() -> ProfileSet:
    return ProfileSet(shipped_policies_dir())


@pytest.fixture()
def member(tmp_path: Path) -> Iterator[Profile]:
    data = tmp_path / "data"
    data.mkdir()
    with nosymfollow(data):
        yield _member(tmp_path, data)


def _member(tmp_path: Path, data: Path) -> Profile:
    (tmp_path / "common").mkdir()
    (tmp_path / "m.yaml").write_text(
        f"""
containers:
  sysctls: ["net.ipv4.ping_group_range"]
  published_ports: ["8000-8999"]
  registries: ["docker.io", "registry.team:5000"]
mounts:
  binds:
    - path: {data}
    - path: {tmp_path / "common"}
      read_only: true
  shared_volumes:
    - name: common-data
      read_only: true
resources:
  memory: {{default: 512m, max: "50%"}}
  cpus: {{default: 1, max: 4}}
  pids: {{default: 256, max: 1024}}
  shm_size: {{max: 64m}}
swarm:
  avoid_managers: true
"""
    )
    profile = ProfileSet(tmp_path).get("m")
    assert profile is not None
    return profile


def create(**host: object) -> dict[str, object]:
    return {"Image": "busybox", "HostConfig": dict(host)}


def test_shipped_profiles_load(shipped: ProfileSet) -> None:
    assert {"admin", "member", "intern"} <= set(shipped.profiles)
    assert shipped.profiles["admin"].admin
    intern = shipped.profiles["intern"]
    assert intern.binds == () and intern.avoid_managers
    assert intern.memory.max is not None and shipped.profiles["member"].memory.max is not None
    assert intern.memory.max < shipped.profiles["member"].memory.max  # stricter via extends


def test_sizes() -> None:
    assert parse_size("512m") == 512 << 20
    assert parse_size("2g") == 2 << 30
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("lots")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("containers:\n  privilegd: false\n", ":2: containers.privilegd"),
        ("resources:\n  memory:\n    max: huge\n", ":3: resources.memory.max"),
        ("admin: maybe\n", ":1: admin"),
        ("extends: nobody\n", "extends unknown profile"),
        ("mounts:\n  binds: /srv\n", "expected a list"),
    ],
)
def test_load_errors_name_file_line_key(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PolicyError) as info:
        ProfileSet(tmp_path)
    assert "bad.yaml" in str(info.value) and where in str(info.value)


def test_extends_loop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(PolicyError, match="loop"):
        ProfileSet(tmp_path)


@pytest.mark.parametrize(
    "host",
    [
        {"Privileged": True},
        {"NetworkMode": "host"},
        {"PidMode": "host"},
        {"IpcMode": "host"},
        {"UTSMode": "host"},
        {"UsernsMode": "host"},
        {"CgroupnsMode": "host"},
        {"CapAdd": ["sys_admin"]},
        {"CapAdd": ["CAP_SYS_ADMIN"]},
        {"CapAdd": ["ALL"]},
        {"CapAdd": ["Net_Admin"]},
        {"SecurityOpt": ["seccomp=unconfined"]},
        {"SecurityOpt": ["seccomp:unconfined"]},
        {"SecurityOpt": ["apparmor=unconfined"]},
        {"SecurityOpt": ["apparmor:unconfined"]},
        {"SecurityOpt": ["label=disable"]},
        {"SecurityOpt": ["label:disable"]},
        {"SecurityOpt": ["label=user:system_u"]},
        {"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']},
        {"SecurityOpt": ["systempaths=unconfined"]},
        {"SecurityOpt": ["label=type:spc_t"]},
        {"SecurityOpt": ["label=level:s0-s0:c0.c1023"]},
        {"SecurityOpt": ["label=filetype:container_file_t"]},
        {"SecurityOpt": ["apparmor=chrome"]},
        {"SecurityOpt": ["seccomp=builtin"]},
        {"SecurityOpt": ["no-new-privileges=false"]},
        {"SecurityOpt": ["no-new-privileges:0"]},
        {"Annotations": {"org.systemd.property.TasksMax": "uint64 18446744073709551615"}},
        {"MaskedPaths": []},
        {"ReadonlyPaths": []},
        {"Devices": [{"PathOnHost": "/dev", "PathInContainer": "/dev"}]},
        {"DeviceCgroupRules": ["c *:* rmw"]},
        {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]},
        {"Sysctls": {"kernel.shm_rmid_forced": "1"}},
        {"CgroupParent": "/"},
        {"Runtime": "runsc-unknown"},
        {"OomKillDisable": True},
        {"LogConfig": {"Type": "syslog"}},
        {"Binds": ["/etc:/x"]},
        {"Binds": ["/:/host"]},
        {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]},
        {
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": "v",
                    "Target": "/v",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/"},
                        }
                    },
                }
            ]
        },
        {"VolumeDriver": "nfs-plugin"},
        {"PortBindings": {"80/tcp": [{"HostPort": "80"}]}},
        {"PortBindings": {"80/tcp": [{"HostPort": "8990-9010"}]}},
        {"Memory": 9 << 30},
        {"NanoCpus": 5_000_000_000},
        {"CpuQuota": 500_000, "CpuPeriod": 100_000},
        {"PidsLimit": 5000},
        {"ShmSize": 1 << 30},
    ],
)
def test_container_refusals(member: Profile, host: dict[str, object]) -> None:
    with pytest.raises(Denied) as info:
        check_container(member, create(**host), FACTS)
    assert info.value.message.startswith("profile 'm' forbids")


def test_container_neighbours_pass(member: Profile, tmp_path: Path) -> None:
    host = {
        "CapAdd": ["CHOWN", "cap_kill"],  # Docker's default set may be named again
        "SecurityOpt": [
            "no-new-privileges",
            "no-new-privileges:true",
            "apparmor=docker-default",
            "label=type:container_t",
        ],
        "Sysctls": {"net.ipv4.ping_group_range": "0 0"},
        "Binds": [f"{tmp_path / 'data'}/sub:/d", f"{tmp_path / 'common'}:/c:ro", "myvol:/v"],
        "Mounts": [
            {"Type": "tmpfs", "Target": "/t"},
            {"Type": "volume", "Source": "v2", "Target": "/v2"},
        ],
        "PortBindings": {"80/tcp": [{"HostPort": "8080"}], "81/tcp": [{"HostPort": "8081"}]},
        "LogConfig": {"Type": "json-file"},
        "Memory": 1 << 30,
    }
    body = create(**host)
    check_container(member, body, FACTS)
    applied = body["HostConfig"]
    assert isinstance(applied, dict)
    assert applied["MemorySwap"] == 1 << 30  # swap pinned to memory
    assert applied["NanoCpus"] == 1_000_000_000 and applied["PidsLimit"] == 256


def test_host_files_are_not_relabelled(member: Profile, tmp_path: Path) -> None:
    """``:z``/``:Z`` make dockerd relabel the host directory (on SELinux hosts)."""
    for mode in ("Z", "z", "ro,z"):
        with pytest.raises(Denied, match="relabelling host files"):
            check_container(member, create(Binds=[f"{tmp_path / 'data'}/sub:/d:{mode}"]), FACTS)
    check_container(member, create(Binds=[f"{tmp_path / 'data'}/sub:/d:ro"]), FACTS)
    check_container(member, create(Binds=["myvol:/v:Z"]), FACTS)  # one's own volume


def test_endpoint_sysctls_follow_the_sysctl_allowlist(member: Profile) -> None:
    """Per-interface sysctls in an endpoint's driver options (API 1.46+)."""
    opts = "com.docker.network.endpoint.sysctls"

    def with_endpoint(sysctls: str) -> dict[str, object]:
        body = create()
        body["NetworkingConfig"] = {"EndpointsConfig": {"n": {"DriverOpts": {opts: sysctls}}}}
        return body

    with pytest.raises(Denied, match="sysctl"):
        check_container(member, with_endpoint("net.ipv4.conf.IFNAME.route_localnet=1"), FACTS)
    check_container(member, with_endpoint("net.ipv4.ping_group_range=0 0"), FACTS)


def test_defaults_applied_when_absent(member: Profile) -> None:
    body = create()
    check_container(member, body, FACTS)
    host = body["HostConfig"]
    assert isinstance(host, dict)
    assert host["Memory"] == 512 << 20 and host["MemorySwap"] == 512 << 20


def test_unlimited_pids_and_soft_memory_limits(member: Profile) -> None:
    """-1 is dockerd's "unlimited": refused under a maximum, not replaced by the default;
    0 on create is an older client's "not set". A reservation alone raises the default
    hard limit to it (dockerd refuses a reservation above the limit)."""
    for value in (-1, 0):
        with pytest.raises(Denied, match="unlimited number of processes"):
            check_update(member, {"PidsLimit": value}, FACTS, {})
    with pytest.raises(Denied, match="unlimited number of processes"):
        check_container(member, create(PidsLimit=-1), FACTS)
    body = create(PidsLimit=0)
    check_container(member, body, FACTS)
    assert body["HostConfig"]["PidsLimit"] == 256  # type: ignore[index]
    update = {"PidsLimit": None}
    check_update(member, update, FACTS, {})
    assert update["PidsLimit"] is None
    body = create(MemoryReservation=3 << 30)
    check_container(member, body, FACTS)
    assert body["HostConfig"]["Memory"] == 3 << 30  # type: ignore[index]
    with pytest.raises(Denied, match="MemoryReservation"):
        check_container(member, create(MemoryReservation=9 << 30), FACTS)


def test_memory_share_of_node(member: Profile) -> None:
    check_container(member, create(Memory=8 << 30), FACTS)  # 50% of 16g
    with pytest.raises(Denied, match="at most 8g"):
        check_container(member, create(Memory=(8 << 30) + 1), FACTS)


def test_symlink_escape_refused(member: Profile, tmp_path: Path) -> None:
    link = tmp_path / "data" / "root"
    os.symlink("/", link)
    with pytest.raises(Denied):
        check_container(member, create(Binds=[f"{link}/etc:/x"]), FACTS)
    with pytest.raises(Denied):
        check_container(member, create(Binds=[f"{tmp_path / 'data'}/../../../etc:/x"]), FACTS)


def test_registry_allowlist(member: Profile) -> None:
    check_container(member, {"Image": "registry.team:5000/spark:3", "HostConfig": {}}, FACTS)
    check_container(member, {"Image": "library/busybox", "HostConfig": {}}, FACTS)
    with pytest.raises(Denied):
        check_container(member, {"Image": "evil.example.com/x", "HostConfig": {}}, FACTS)


def test_manager_rule(tmp_path: Path) -> None:
    (tmp_path / "i.yaml").write_text("containers:\n  on_managers: false\n")
    profile = ProfileSet(tmp_path).get("i")
    assert profile is not None
    check_container(profile, create(), FACTS)
    with pytest.raises(Denied, match="Swarm manager"):
        check_container(profile, create(), NodeFacts(manager=True))


def test_admin_unrestricted(shipped: ProfileSet) -> None:
    admin = shipped.profiles["admin"]
    check_container(admin, create(Privileged=True, Binds=["/:/host"]), FACTS)


def test_update_caps(member: Profile) -> None:
    check_update(member, {"Memory": 1 << 30}, FACTS, {})
    with pytest.raises(Denied):
        check_update(member, {"Memory": 20 << 30}, FACTS, {})
    with pytest.raises(Denied):
        check_update(member, {"PidsLimit": 100000}, FACTS, {})
    with pytest.raises(Denied):
        check_update(member, {"MemorySwap": -1}, FACTS, {})


def test_exec(member: Profile, shipped: ProfileSet) -> None:
    check_exec(member, {"Cmd": ["sh"]})
    with pytest.raises(Denied):
        check_exec(member, {"Privileged": True})
    intern = shipped.profiles["intern"]
    check_exec(intern, {"User": "1000"})
    check_exec(intern, {"User": "1000:1000"})
    # runc's Atoi takes ASCII digits only: anything else is a name from the image's
    # /etc/passwd, which its author wrote
    for user in ("root", "5 ", " 5", "\u00b2", "\u0665", "1000:wheel", "toor"):
        with pytest.raises(Denied):
            check_exec(intern, {"User": user})
    check_exec(intern, {"User": "toor"}, "toor")  # the container's own user


def test_bare_disable_security_opt(member: Profile) -> None:
    with pytest.raises(Denied):
        check_container(member, create(SecurityOpt=["disable"]), FACTS)
    check_container(member, create(SecurityOpt=["no-new-privileges"]), FACTS)


def service(**container: object) -> dict[str, object]:
    return {"Name": "s", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", **container}}}


def test_service_defaults_and_worker_constraint(member: Profile) -> None:
    spec = service(Privileges={"SELinuxContext": {"Type": "container_t"}})
    check_service(member, spec, FACTS)
    template = spec["TaskTemplate"]
    assert isinstance(template, dict)
    assert template["Resources"]["Limits"]["MemoryBytes"] == 512 << 20
    assert "node.role==worker" in template["Placement"]["Constraints"]


@pytest.mark.parametrize(
    "spec",
    [
        service(CapabilityAdd=["SYS_ADMIN"]),
        service(Privileges={"Seccomp": {"Mode": "unconfined"}}),
        service(Privileges={"AppArmor": {"Mode": "disabled"}}),
        service(Privileges={"SELinuxContext": {"Type": "spc_t"}}),
        service(Privileges={"SELinuxContext": {"Level": "s0-s0:c0.c1023"}}),
        {"TaskTemplate": {"ContainerSpec": {}, "Resources": {"SwapBytes": -1}}},
        {"TaskTemplate": {"ContainerSpec": {}, "Resources": {"Reservations": {"NanoCPUs": 64e9}}}},
        {
            "TaskTemplate": {
                "ContainerSpec": {},
                "Networks": [
                    {
                        "Target": "n",
                        "DriverOpts": {
                            "com.docker.network.endpoint.sysctls": "net.ipv4.conf.IFNAME.forwarding=1"
                        },
                    }
                ],
            }
        },
        service(Mounts=[{"Type": "bind", "Source": "/", "Target": "/h"}]),
        service(Sysctls={"kernel.msgmax": "1"}),
        {"TaskTemplate": {"ContainerSpec": {}, "Networks": [{"Target": "host"}]}},
        {"TaskTemplate": {"ContainerSpec": {}, "Resources": {"Limits": {"MemoryBytes": 20 << 30}}}},
        {
            "TaskTemplate": {
                "ContainerSpec": {},
                "Resources": {"Reservations": {"MemoryBytes": 20 << 30}},
            }
        },
        {
            "TaskTemplate": {
                "ContainerSpec": {},
                "Placement": {"Constraints": ["node.role==manager"]},
            }
        },
        {"TaskTemplate": {"ContainerSpec": {}}, "EndpointSpec": {"Ports": [{"PublishedPort": 80}]}},
    ],
)
def test_service_refusals(member: Profile, spec: dict[str, object]) -> None:
    with pytest.raises(Denied):
        check_service(member, spec, FACTS)


def test_volume_driver_rules(member: Profile) -> None:
    check_volume_driver(member, "local", None, "Driver")
    with pytest.raises(Denied):
        check_volume_driver(
            member, "local", {"type": "none", "o": "bind", "device": "/"}, "DriverOpts"
        )
    with pytest.raises(Denied):
        check_volume_driver(member, "sshfs", None, "Driver")


def test_check_compose_file(member: Profile, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        """
services:
  web:
    image: busybox
    privileged: true
    network_mode: host
    volumes: ["/etc:/etc"]
    ports: ["80:80"]
    deploy: {resources: {limits: {memory: 64g}}}
volumes:
  escape: {driver: local, driver_opts: {type: none, o: bind, device: /}}
networks:
  lan: {driver: macvlan}
"""
    )
    found = check_file(member, bad, FACTS)
    text = "\n".join(v.message for v in found)
    for word in (
        "privileged",
        "namespaces",
        "bind-mounting",
        "host port",
        "memory",
        "driver options",
        "network driver",
    ):
        assert word in text, word
    good = tmp_path / "good.yml"
    good.write_text("services:\n  web:\n    image: busybox\n    ports: ['8080:80']\n")
    assert check_file(member, good) == []


def test_check_compose_health_checks_and_grace_periods(member: Profile, tmp_path: Path) -> None:
    """``dockergate check`` applies the gate's floor on health-check intervals and its
    0-300 s stop grace period; ordinary values and a disabled check pass."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        """
services:
  fast: {image: busybox, healthcheck: {test: [CMD, "true"], interval: 500ms}}
  warmup: {image: busybox, healthcheck: {test: "true", start_interval: 1ms}}
  forever: {image: busybox, stop_grace_period: 1h}
  typo: {image: busybox, healthcheck: {test: "true", interval: 10}}
"""
    )
    found = {v.service: v.message for v in check_file(member, bad, FACTS)}
    assert "Interval" in found["fast"] and "StartInterval" in found["warmup"], found
    assert "stop timeout" in found["forever"], found
    assert "typo" not in found, found  # a bare number is seconds, as compose reads it
    good = tmp_path / "good.yml"
    good.write_text(
        """
services:
  db:
    image: busybox
    healthcheck: {test: [CMD, "true"], interval: 10s, start_period: 30s}
    stop_grace_period: 1m30s
  off: {image: busybox, healthcheck: {disable: true, interval: 1ms}}
"""
    )
    assert check_file(member, good, FACTS) == []


def test_device_allowlist(tmp_path: Path) -> None:
    """Listed devices only; a directory such as /dev counts as every device below it."""
    (tmp_path / "d.yaml").write_text("containers:\n  device_paths: [/dev/null]\n")
    profile = ProfileSet(tmp_path).get("d")
    assert profile is not None

    def dev(path: str) -> dict[str, object]:
        return create(
            Devices=[{"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"}]
        )

    check_container(profile, dev("/dev/null"), FACTS)
    for bad in ("/dev", "/dev/", "/dev/zero", "/dev/../dev", "/"):
        with pytest.raises(Denied, match="allowed: /dev/null"):
            check_container(profile, dev(bad), FACTS)
    with pytest.raises(Denied):
        check_container(profile, create(DeviceCgroupRules=["c 1:3 rwm"]), FACTS)


def test_ulimits_default_allowlist(member: Profile, shipped: ProfileSet) -> None:
    def ul(name: str, soft: int, hard: int) -> list[dict[str, object]]:
        return [{"Name": name, "Soft": soft, "Hard": hard}]

    check_container(member, create(Ulimits=ul("nofile", 1024, 1 << 20)), FACTS)
    check_container(member, create(Ulimits=ul("core", -1, -1)), FACTS)  # unlimited allowed
    for name in ("rtprio", "rttime", "nice"):
        with pytest.raises(Denied, match=f"the {name} ulimit"):
            check_container(member, create(Ulimits=ul(name, 1, 1)), FACTS)
    with pytest.raises(Denied, match=r"nofile ulimit.*unlimited.*at most 1048576"):
        check_container(member, create(Ulimits=ul("nofile", 1024, -1)), FACTS)
    with pytest.raises(Denied, match="nofile ulimit"):
        check_container(member, create(Ulimits=ul("nofile", (1 << 20) + 1, 1 << 20)), FACTS)
    with pytest.raises(Denied, match="rtprio ulimit"):
        check_update(member, {"Ulimits": ul("rtprio", 99, 99)}, FACTS, {})
    with pytest.raises(Denied, match="rtprio ulimit"):
        check_service(member, service(Ulimits=ul("rtprio", 99, 99)), FACTS)
    check_container(shipped.profiles["admin"], create(Ulimits=ul("rtprio", 99, 99)), FACTS)


def test_ulimits_and_oom_score_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "containers:\n  oom_score_adj_min: -100\n  ulimits: {nofile: 4096, rtprio: unlimited}\n"
    )
    (tmp_path / "any.yaml").write_text("containers:\n  ulimits: any\n")
    profiles = ProfileSet(tmp_path)
    p, anything = profiles.profiles["p"], profiles.profiles["any"]
    assert p.ulimits == {"nofile": 4096, "rtprio": -1} and anything.ulimits is None
    check_container(p, create(Ulimits=[{"Name": "rtprio", "Soft": 99, "Hard": 99}]), FACTS)
    with pytest.raises(Denied, match="allowed: nofile, rtprio"):
        check_container(p, create(Ulimits=[{"Name": "core", "Soft": 0, "Hard": 0}]), FACTS)
    check_container(anything, create(Ulimits=[{"Name": "nice", "Soft": 1, "Hard": 1}]), FACTS)
    check_container(p, create(OomScoreAdj=-100), FACTS)
    with pytest.raises(Denied, match="at least -100"):
        check_container(p, create(OomScoreAdj=-101), FACTS)
    with pytest.raises(Denied, match="OOM killer"):
        check_service(profiles.profiles["any"], service(OomScoreAdj=-1), FACTS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("containers:\n  ulimits: {nofiles: 1}\n", "unknown ulimit"),
        ("containers:\n  ulimits: {nofile: -5}\n", "whole number >= 0 or `unlimited`"),
        ("containers:\n  ulimits: {nofile: lots}\n", "whole number >= 0 or `unlimited`"),
        ("containers:\n  ulimits: all\n", "expected `any` or a mapping"),
    ],
)
def test_ulimits_load_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PolicyError, match=message):
        ProfileSet(tmp_path)


def test_network_rules(tmp_path: Path, shipped: ProfileSet) -> None:
    (tmp_path / "n.yaml").write_text("networks:\n  subnets: [10.213.0.0/16, 'fd00:213::/32']\n")
    p = ProfileSet(tmp_path).profiles["n"]

    def net(**body: object) -> dict[str, object]:
        return {"Driver": "bridge", **body}

    check_network(p, net(Options={"com.docker.network.driver.mtu": "1400"}))
    check_network(p, net(IPAM={"Config": [{"Subnet": "10.213.1.0/24", "Gateway": "10.213.1.1"}]}))
    check_network(p, net(IPAM={"Config": [{"Subnet": "fd00:213:1::/48"}]}))
    for body, words in [
        (net(Options={"com.docker.network.bridge.name": "docker0"}), "driver option"),
        (net(IPAM={"Config": [{"Subnet": "10.213.1.0/24", "Gateway": "10.9.0.1"}]}), "subnet"),
        (net(IPAM={"Config": [{"Subnet": "10.213.1.0/24", "IPRange": "10.0.0.0/24"}]}), "subnet"),
        (net(IPAM={"Config": [{"AuxiliaryAddresses": {"h": "192.168.1.1"}}]}), "subnet"),
        (net(IPAM={"Config": [{"Subnet": "not-a-net"}]}), "valid address"),
        (net(IPAM={"Driver": "foo"}), "IPAM"),
        (net(IPAM={"Options": {"x": "y"}}), "IPAM"),
        (net(Ingress=True), "ingress"),
    ]:
        with pytest.raises(Denied, match=words):
            check_network(p, body)
    member = shipped.profiles["member"]
    with pytest.raises(Denied, match="let Docker choose"):
        check_network(member, net(IPAM={"Config": [{"Subnet": "10.213.1.0/24"}]}))
    check_network(shipped.profiles["admin"], net(Options={"anything": "goes"}))
    (tmp_path / "bad.yaml").write_text("networks:\n  subnets: [10.213.0.1/16]\n")
    with pytest.raises(PolicyError, match=r"networks\.subnets"):
        ProfileSet(tmp_path)


def test_bind_root_the_gate_cannot_see(tmp_path: Path) -> None:
    """A gate that cannot see an allowed bind root cannot check the symlinks below it
    (a containerised gate without the host's tree): refused, except offline."""
    missing = tmp_path / "not-mounted-here"
    (tmp_path / "m.yaml").write_text(f"mounts:\n  binds:\n    - path: {missing}\n")
    profile = ProfileSet(tmp_path).profiles["m"]
    with pytest.raises(Denied, match="cannot see"):
        check_container(profile, create(Binds=[f"{missing}/x:/x"]), FACTS)
    token = OFFLINE.set(True)
    try:
        check_container(profile, create(Binds=[f"{missing}/x:/x"]), FACTS)
    finally:
        OFFLINE.reset(token)
    missing.mkdir()
    with nosymfollow(missing):
        check_container(profile, create(Binds=[f"{missing}/x:/x"]), FACTS)


def test_bind_below_a_root_that_follows_symlinks(tmp_path: Path) -> None:
    """Below an allowed root, a directory can be swapped for a symlink between the
    check and the start: only a nosymfollow mount makes that fail. The root itself
    (whose parent only an admin can change) is fine on any mount."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    profile = _member(tmp_path, data)
    check_container(profile, create(Binds=[f"{data}:/d"]), FACTS)
    with pytest.raises(Denied, match="nosymfollow"):
        check_container(profile, create(Binds=[f"{data}/sub:/d"]), FACTS)
    with nosymfollow(data):
        check_container(profile, create(Binds=[f"{data}/sub:/d"]), FACTS)
        check_container(profile, create(Binds=[f"{data}/not/yet:/d"]), FACTS)


def test_read_only_root_inside_a_writable_one(tmp_path: Path) -> None:
    """A read-only root listed inside a writable one stays read-only whichever comes
    first; a writable bind of the outer root (which holds it) is refused, a read-only
    one is fine while the inner root is no read-write mount of its own (dockerd's
    ``:ro`` reaches only the top mount), and refused once it is, unless non-recursive."""
    outer, inner = tmp_path / "nfs", tmp_path / "nfs" / "common"
    (outer / "data").mkdir(parents=True)
    inner.mkdir()
    (tmp_path / "m.yaml").write_text(
        f"mounts:\n  binds:\n    - path: {outer}\n    - path: {inner}\n      read_only: true\n"
    )
    profile = ProfileSet(tmp_path).profiles["m"]
    with nosymfollow(outer):
        with pytest.raises(Denied, match="writable bind mount of a read-only path"):
            check_container(profile, create(Binds=[f"{inner}/x:/x"]), FACTS)
        with pytest.raises(Denied, match=f"over a read-only path.*{inner}"):
            check_container(profile, create(Binds=[f"{outer}:/x"]), FACTS)
        check_container(profile, create(Binds=[f"{outer}:/x:ro", f"{outer}/data:/d"]), FACTS)
        with nosymfollow(inner):  # a read-write mount of its own
            with pytest.raises(Denied, match=f"{inner}, in a read-only path"):
                check_container(profile, create(Binds=[f"{outer}:/x:ro"]), FACTS)
            flat = {"Type": "bind", "Source": str(outer), "Target": "/x", "ReadOnly": True}
            flat["BindOptions"] = {"NonRecursive": True}
            check_container(profile, create(Mounts=[flat]), FACTS)
            check_container(profile, create(Binds=[f"{inner}/x:/x:ro"]), FACTS)


def test_read_only_bind_with_writable_mounts_below(tmp_path: Path, monkeypatch) -> None:
    """The mount table decides (dockerd 20.10's ``:ro`` leaves mounts below the source
    writable): a read-write mount below a read-only bind is refused and named, a
    read-only one or one elsewhere is not; mount points are unescaped (``\\040``)."""
    data = tmp_path / "data"
    data.mkdir()
    profile = _member(tmp_path, data)
    common = tmp_path / "common"
    table = tmp_path / "mountinfo"
    monkeypatch.setattr("dockergate.policy.hostpaths.MOUNTINFO", str(table))
    line = "90 29 0:50 / {} {} shared:1 - tmpfs tmpfs rw\n"
    table.write_text(
        line.format(f"{common}/ro\\040part", "ro,relatime") + line.format("/srv/x", "rw")
    )
    check_container(profile, create(Binds=[f"{common}:/c:ro"]), FACTS)
    table.write_text(table.read_text() + line.format(f"{common}/an\\040export", "rw,nosuid"))
    with pytest.raises(Denied, match=f"{common}/an export, in a read-only path, is mounted"):
        check_container(profile, create(Binds=[f"{common}:/c:ro"]), FACTS)
    # Only the top-most mount counts: an admin's read-only bind over the export, or
    # a later mount over the whole root, covers it.
    base = table.read_text()
    table.write_text(base + line.format(f"{common}/an\\040export", "ro"))
    check_container(profile, create(Binds=[f"{common}:/c:ro"]), FACTS)
    table.write_text(base + line.format(str(common), "ro"))
    check_container(profile, create(Binds=[f"{common}:/c:ro"]), FACTS)
    # A read-write mount of a read-only file system (its super options say ro).
    ro_fs = line.format(f"{common}/an\\040export", "rw").replace("tmpfs rw", "tmpfs ro")
    table.write_text(base.rsplit("\n", 2)[0] + "\n" + ro_fs)
    check_container(profile, create(Binds=[f"{common}:/c:ro"]), FACTS)


def test_ports_the_engine_picks(member: Profile, tmp_path: Path) -> None:
    """An empty HostPort or PublishAllPorts gets a port from the engine's dynamic range:
    refused unless the profile allows all of it (the default 1024-65535 does)."""
    for host in (
        {"PortBindings": {"81/tcp": [{"HostPort": ""}]}},
        {"PublishAllPorts": True},
    ):
        with pytest.raises(Denied, match="engine picks"):
            check_container(member, create(**host), FACTS)
    (tmp_path / "open.yaml").write_text("description: default ports\n")
    open_profile = ProfileSet(tmp_path).get("open")
    assert open_profile is not None
    check_container(open_profile, create(PublishAllPorts=True), FACTS)
    with pytest.raises(Denied, match="engine picks"):
        check_service(
            member,
            {
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                "EndpointSpec": {"Ports": [{"TargetPort": 80}]},
            },
            FACTS,
        )
    check_service(
        member,
        {
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
            "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 8080}]},
        },
        FACTS,
    )


def test_update_cpu_quota_counts_against_the_containers_period(member: Profile) -> None:
    with pytest.raises(Denied, match="CPUs"):
        check_update(member, {"CpuQuota": 200_000}, FACTS, {"CpuPeriod": 1000, "CpuQuota": 2000})
    check_update(member, {"CpuQuota": 4000}, FACTS, {"CpuPeriod": 1000, "CpuQuota": 2000})


@pytest.mark.parametrize("user", ["0", "00", "+0", "-0", "0000:0", "root", "root:root"])
def test_exec_as_root_in_every_spelling(user: str) -> None:
    assert is_root_user(user)


@pytest.mark.parametrize("user", ["", "1000", "1000:0", "postgres", "nobody:0", "10"])
def test_exec_as_others(user: str) -> None:
    assert not is_root_user(user)


def test_service_memory_counts_tasks_at_once() -> None:
    limits = {"TaskTemplate": {"Resources": {"Limits": {"MemoryBytes": 1 << 30}}}}
    job = {"ReplicatedJob": {"MaxConcurrent": 10, "TotalCompletions": 50}}
    assert service_memory({**limits, "Mode": job}) == 10 << 30
    assert service_memory({**limits, "Mode": {"Global": {}}}, nodes=3) == 3 << 30
    assert service_memory({**limits, "Mode": {"Replicated": {"Replicas": 0}}}) == 0
    assert service_memory(limits) == 1 << 30


def test_a_job_holds_memory_for_what_is_left_of_its_run() -> None:
    limits = {"TaskTemplate": {"Resources": {"Limits": {"MemoryBytes": 1 << 30}}}}
    job = {"Mode": {"ReplicatedJob": {"MaxConcurrent": 10, "TotalCompletions": 50}}, **limits}
    assert service_memory(job, done=45) == 5 << 30
    assert service_memory(job, done=50) == 0
    assert service_memory(job, done=20) == 10 << 30
    two = {"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 2}}, **limits}
    assert service_memory(two, done=2) == 0
    every = {"Mode": {"GlobalJob": {}}, **limits}
    assert service_memory(every, nodes=3, done=1) == 2 << 30
    assert service_memory(every, nodes=3, done=3) == 0


def test_what_an_image_imprints_on_its_containers() -> None:
    """An owner label a container may have got from its image (or, under the classic
    builder, from an ONBUILD LABEL trigger) makes no owner."""
    from dockergate.api.ownership import ANYONE, claim_of, imprinted

    def image(labels: dict[str, str] | None = None, onbuild: list[str] | None = None) -> dict:
        return {"Config": {"Labels": labels, "OnBuild": onbuild}}

    assert claim_of(image()) == ""
    assert claim_of(image({"dockergate.owner": ""})) == ""  # built through the gate
    assert claim_of(image({"dockergate.owner": "mallory"})) == "mallory"
    assert claim_of(image(onbuild=["LABEL dockergate.owner=mallory"])) == ANYONE
    assert claim_of(image(onbuild=["label a.b=${X}"])) == ANYONE
    assert claim_of(image(onbuild=["RUN echo $HOME", "COPY . /app"])) == ""
    assert imprinted("mallory", "mallory") and imprinted(ANYONE, "victim")
    assert not imprinted("", "victim") and not imprinted("mallory", "victim")


def test_explicit_swap_refused_not_pinned(member: Profile) -> None:
    """Without ``swap: true`` an explicit --memory-swap other than --memory is refused
    (it used to be pinned to the memory without a word); equal, 0 or absent pass."""
    for swap in (2 << 30, -1):
        with pytest.raises(Denied, match=r"forbids swap \(HostConfig.MemorySwap="):
            check_container(member, create(Memory=1 << 30, MemorySwap=swap), FACTS)
        with pytest.raises(Denied, match="forbids swap"):
            check_update(member, {"Memory": 1 << 30, "MemorySwap": swap}, FACTS, {})
    for swap in (1 << 30, 0, None):
        body = create(Memory=1 << 30, **({} if swap is None else {"MemorySwap": swap}))
        check_container(member, body, FACTS)
        assert body["HostConfig"]["MemorySwap"] == 1 << 30  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "flag"), [("PidMode", "--pid"), ("IpcMode", "--ipc"), ("NetworkMode", "--network")]
)
def test_namespace_refusal_names_its_flag(member: Profile, field: str, flag: str) -> None:
    with pytest.raises(Denied) as info:
        check_container(member, create(**{field: "host"}), FACTS)
    assert f"drop {flag} host" in info.value.message
    assert ("network of your own" in info.value.message) == (field == "NetworkMode")


def test_device_requests_shown_in_the_clis_words(member: Profile) -> None:
    gpus = [{"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}]
    with pytest.raises(Denied) as info:
        check_container(member, create(DeviceRequests=gpus), FACTS)
    assert "DeviceRequests=gpu count=all)" in info.value.message, info.value.message
    one = [{"Driver": "nvidia", "DeviceIDs": ["0", "1"], "Capabilities": [["gpu", "utility"]]}]
    with pytest.raises(Denied) as info:
        check_container(member, create(DeviceRequests=one), FACTS)
    assert "gpu,utility device=0,1" in info.value.message, info.value.message


def test_host_port_range_must_fit_the_allowed_ranges(member: Profile) -> None:
    """dockerd may bind any port of ``-p 8005-8024:80``: all of them must be allowed,
    not only the ends (a gap between two allowed ranges is refused); ranges that
    touch count as one."""
    gappy = replace(member, published_ports=((8000, 8009), (8020, 8029)))
    with pytest.raises(Denied, match="publishing this host port"):
        check_container(gappy, create(PortBindings={"80/tcp": [{"HostPort": "8005-8024"}]}), FACTS)
    check_container(gappy, create(PortBindings={"80/tcp": [{"HostPort": "8021-8024"}]}), FACTS)
    touching = replace(member, published_ports=((8000, 8009), (8010, 8019)))
    check_container(touching, create(PortBindings={"80/tcp": [{"HostPort": "8005-8015"}]}), FACTS)


def test_a_service_port_the_engine_picks_is_checked_against_its_range() -> None:
    """Without PublishedPort, Swarm picks an ingress port from 30000-32767, but a
    host-mode port is the node's pick from the kernel's ephemeral range."""
    from dockergate.policy.network import ephemeral_ports

    swarm_only = Profile("p", published_ports=((30000, 32767),))
    ingress = {"EndpointSpec": {"Ports": [{"TargetPort": 80}]}, **service()}
    check_service(swarm_only, ingress, FACTS)
    host = {"EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishMode": "host"}]}, **service()}
    lo, hi = ephemeral_ports()
    if not (lo >= 30000 and hi <= 32767):
        with pytest.raises(Denied, match="publishing"):
            check_service(swarm_only, host, FACTS)
