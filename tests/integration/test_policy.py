"""Profiles enforced through the real docker CLI, as members and interns.

Every refusal has its legitimate neighbour; defaults must be visible in `docker
inspect`; N parallel creates against the last quota slot let exactly the allowed
number through; an intern's service is kept off managers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers import Gate, dockergate_argv, new_gate, nosymfollow

pytestmark = pytest.mark.timeout(300)

MIB = 1 << 20


@pytest.fixture(scope="module")
def area() -> Iterator[Path]:
    """Host paths the test profiles allow (world-readable: the daemon mounts them)."""
    d = Path(tempfile.mkdtemp(prefix="dgt-pol-"))
    d.chmod(0o755)
    for sub in ("data/sub", "common", "plain/sub"):
        (d / sub).mkdir(parents=True)
    os.symlink("/", d / "data" / "root-link")
    # Binds below data/ and common/ are allowed only on nosymfollow mounts (a directory
    # swapped for a symlink between create and start must not be followed); plain/
    # is an allowed root an admin did not mount that way.
    with nosymfollow(d / "data"), nosymfollow(d / "common"):
        yield d


@pytest.fixture(scope="module")
def pgate(session_dir: Path, docker_host: str, area: Path) -> Iterator[Gate]:
    policies = area / "policies"
    policies.mkdir()
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            f"""
            description: test member
            containers:
              sysctls: [net.ipv4.ping_group_range]
              device_paths: [/dev/null]
              published_ports: ["8000-8999"]
            mounts:
              binds:
                - path: {area / "data"}
                - path: {area / "common"}
                  read_only: true
                - path: {area / "not-on-this-host"}
                - path: {area / "plain"}
              shared_volumes:
                - name: team-common
                  read_only: true
            networks:
              subnets: ["10.213.0.0/16"]
            resources:
              memory: {{default: 256m, max: 1g}}
              pids: {{default: 512, max: 2048}}
            quota:
              containers: 4
            """
        )
    )
    (policies / "intern.yaml").write_text(
        textwrap.dedent(
            """
            description: test intern
            extends: member
            mounts:
              binds: []
            quota:
              memory: 512m
              containers: 10
            swarm:
              avoid_managers: true
            """
        )
    )
    g = new_gate(session_dir, docker_host, extra_args=["--policies-dir", str(policies)])
    g.init()
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def member(pgate: Gate, unix_user):
    u = unix_user("pmember")
    pgate.dockergate("user", "add", "p-member", "--profile", "member", "--uid", str(u.uid))
    return u


@pytest.fixture(scope="module")
def intern(pgate: Gate, unix_user):
    u = unix_user("pintern")
    pgate.dockergate("user", "add", "p-intern", "--profile", "intern", "--uid", str(u.uid))
    return u


@pytest.fixture
def run(cli, pgate, member, direct_client):
    """run(args, who=member) -> CompletedProcess; containers it names are removed."""
    made: list[str] = []

    def go(args, who=None, **kw):
        args = list(args)
        if args[:1] in (["run"], ["create"]) and "--name" not in args:
            name = f"pol-{uuid.uuid4().hex[:8]}"
            args[1:1] = ["--name", name]
            made.append(name)
        return cli(args, user=who or member, gate=pgate, **kw)

    yield go
    for name in made:
        try:
            direct_client.containers.get(name).remove(force=True)
        except Exception:
            pass


def refused(r, *words: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "dockergate: profile" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def ok(r) -> None:
    assert r.returncode == 0, r.stderr


def test_defaults_visible_in_inspect(run, direct_client):
    r = run(["run", "-d", "busybox", "sleep", "60"])
    ok(r)
    host = direct_client.api.inspect_container(r.stdout.strip())["HostConfig"]
    assert host["Memory"] == 256 * MIB and host["MemorySwap"] == 256 * MIB
    assert host["PidsLimit"] == 512


def test_memory_cap_and_swap_pinned(run, direct_client):
    refused(run(["run", "--rm", "-m", "2g", "busybox", "true"]), "memory", "at most 1g")
    refused(
        run(["run", "--rm", "-m", "1g", "--memory-swap", "4g", "busybox", "true"]),
        "forbids swap",
        "MemorySwap=4g",
    )
    r = run(["run", "-d", "-m", "1g", "busybox", "sleep", "60"])
    ok(r)
    host = direct_client.api.inspect_container(r.stdout.strip())["HostConfig"]
    assert host["Memory"] == 1 << 30 and host["MemorySwap"] == 1 << 30


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--privileged"], ["privileged"]),
        (["--cap-add", "SYS_ADMIN"], ["capabilities"]),
        (["--cap-add", "sys_admin"], ["capabilities"]),
        (["--cap-add", "ALL"], ["capabilities"]),
        (["--security-opt", "seccomp=unconfined"], ["confinement"]),
        (["--security-opt", "apparmor:unconfined"], ["confinement"]),
        (["--security-opt", "label=disable"], ["confinement"]),
        (["--security-opt", "systempaths=unconfined"], ["masked"]),  # the CLI sends MaskedPaths=[]
        (["--device", "/dev/zero"], ["host device", "allowed: /dev/null"]),
        (["--device", "/dev"], ["host device"]),
        (["--device-cgroup-rule", "c 1:3 rwm"], ["devices"]),
        (["--sysctl", "kernel.shm_rmid_forced=1"], ["sysctl"]),
        (["--cgroup-parent", "/"], ["cgroup"]),
        (["--runtime", "nope"], ["runtime"]),
        (["--oom-kill-disable"], ["OOM"]),
        (["--log-driver", "syslog"], ["log driver"]),
        (["--network", "host"], ["namespaces"]),
        (["--pid", "host"], ["namespaces"]),
        (["--ipc", "host"], ["namespaces"]),
        (["--uts", "host"], ["namespaces"]),
        (["--userns", "host"], ["namespaces"]),
        (["-p", "80:80"], ["port"]),
        (["--pids-limit", "5000"], ["processes"]),
        (["--ulimit", "rtprio=99"], ["rtprio ulimit", "allowed: "]),
        (["--ulimit", "nice=-20"], ["nice ulimit"]),
        (["--ulimit", "nofile=1024:-1"], ["nofile ulimit", "unlimited", "at most 1048576"]),
        (["--ulimit", "nofile=2000000"], ["nofile ulimit", "at most 1048576"]),
        (["--oom-score-adj", "-500"], ["OOM killer", "at least 0"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_host_access_refused(run, flags, words):
    refused(run(["run", "--rm", *flags, "busybox", "true"]), *words)


def test_host_access_neighbours_work(run):
    ok(
        run(
            [
                "run",
                "--rm",
                "--cap-add",
                "CHOWN",
                "--cap-drop",
                "NET_RAW",
                "--security-opt",
                "no-new-privileges",
                "--sysctl",
                "net.ipv4.ping_group_range=0 0",
                "-p",
                "8080:80",
                "--pids-limit",
                "1024",
                "--log-driver",
                "json-file",
                "--device",
                "/dev/null",
                "--ulimit",
                "nofile=1024:4096",
                "--ulimit",
                "core=-1",
                "--oom-score-adj",
                "500",
                "busybox",
                "true",
            ]
        )
    )


def test_service_and_build_ulimits(run, area, direct_client):
    """The same ulimit rule on services (ContainerSpec.Ulimits) and legacy builds."""
    name = f"pul-{uuid.uuid4().hex[:6]}"
    refused(
        run(
            ["service", "create", "-d", "--name", name, "--ulimit", "rtprio=50", "busybox", "true"]
        ),
        "rtprio ulimit",
    )
    try:
        ok(
            run(
                [
                    "service",
                    "create",
                    "-d",
                    "--name",
                    name,
                    "--ulimit",
                    "nofile=4096",
                    "busybox",
                    "sleep",
                    "60",
                ]
            )
        )
        spec = direct_client.services.get(name).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert spec["Ulimits"] == [{"Name": "nofile", "Soft": 4096, "Hard": 4096}], spec
    finally:
        with contextlib.suppress(Exception):
            direct_client.services.get(name).remove()
    ctx = build_context(area)
    env = {"DOCKER_BUILDKIT": "0"}
    refused(run(["build", "--ulimit", "rtprio=99", str(ctx)], env=env), "rtprio ulimit")
    ok(run(["build", "-q", "--ulimit", "nofile=4096", str(ctx)], env=env))


def test_bind_mounts(run, area):
    data, common = area / "data", area / "common"
    refused(run(["run", "--rm", "-v", "/etc:/x", "busybox", "true"]), "bind-mounting")
    refused(
        run(["run", "--rm", "-v", f"{data}/root-link/etc:/x", "busybox", "true"]), "bind-mounting"
    )
    refused(
        run(["run", "--rm", "-v", f"{data}/../../../etc:/x", "busybox", "true"]), "bind-mounting"
    )
    refused(
        run(["run", "--rm", "--mount", "type=bind,src=/etc,dst=/x", "busybox", "true"]),
        "bind-mounting",
    )
    refused(run(["run", "--rm", "-v", f"{common}:/c", "busybox", "true"]), "read-only")
    ok(run(["run", "--rm", "-v", f"{data}/sub:/d", "busybox", "true"]))
    ok(run(["run", "--rm", "-v", f"{common}:/c:ro", "busybox", "true"]))
    ok(
        run(
            ["run", "--rm", "--mount", f"type=bind,src={common},dst=/c,readonly", "busybox", "true"]
        )
    )


def test_read_only_bind_over_a_writable_mount_is_refused(run, area, direct_client):
    """dockerd 20.10 makes a ``:ro`` bind read-only with one remount of its top: a file
    system mounted below the source (an NFS export inside the team's read-only tree)
    stays writable in the container, as the direct daemon shows. The gate refuses such
    a bind and names the mount; binding that mount read-only by itself works and is
    read-only (review 24b's note)."""
    common = area / "common"
    inner = common / "export"
    inner.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(inner)], check=True
    )
    try:
        direct = direct_client.containers.run(
            "busybox", ["touch", "/c/export/x"], volumes=[f"{common}:/c:ro"], remove=True
        )
        assert direct == b"" and (inner / "x").exists()  # the hole, directly
        refused(
            run(["run", "--rm", "-v", f"{common}:/c:ro", "busybox", "true"]),
            "writable mounts below it",
            str(inner),
        )
        r = run(["run", "--rm", "-v", f"{inner}:/e:ro", "busybox", "touch", "/e/y"])
        assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr
    finally:
        subprocess.run(["umount", "-l", str(inner)], check=False)


def test_bind_root_the_gate_cannot_see_is_refused(run, area):
    """An allowed root missing from the gate's file system (a gate in a container
    without it) cannot be checked for symlinks: refused with what to mount."""
    refused(
        run(["run", "--rm", "-v", f"{area}/not-on-this-host/x:/x", "busybox", "true"]),
        "cannot see",
        "mount it into the gate",
    )
    ok(run(["run", "--rm", "-v", f"{area}/data/sub:/x", "busybox", "true"]))


def test_bind_below_a_root_that_follows_symlinks_is_refused(run, area):
    """Below an allowed root not mounted nosymfollow, a directory could be swapped for a
    symlink to / between create and start: refused, with the mount that makes it safe;
    the root itself is fine."""
    refused(
        run(["run", "--rm", "-v", f"{area}/plain/sub:/x", "busybox", "true"]),
        "follows symlinks",
        "nosymfollow",
    )
    ok(run(["run", "--rm", "-v", f"{area}/plain:/x", "busybox", "true"]))


def test_volume_options_refused_plain_volume_works(run, direct_client):
    name = f"polv-{uuid.uuid4().hex[:6]}"
    refused(
        run(
            ["volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", "device=/", name]
        ),
        "driver options",
    )
    refused(
        run(
            [
                "run",
                "--rm",
                "--mount",
                f"type=volume,src={name},dst=/v,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/",
                "busybox",
                "true",
            ]
        ),
        "driver options",
    )
    ok(run(["volume", "create", name]))
    ok(run(["run", "--rm", "-v", f"{name}:/v", "busybox", "true"]))
    ok(run(["volume", "rm", name]))


def test_shared_volume_read_only(run, direct_client):
    try:
        direct_client.volumes.create("team-common")
    except Exception:
        pass
    refused(run(["run", "--rm", "-v", "team-common:/c", "busybox", "true"]), "read-only")
    ok(run(["run", "--rm", "-v", "team-common:/c:ro", "busybox", "true"]))


def test_exec_and_update(run):
    r = run(["run", "-d", "busybox", "sleep", "60"])
    ok(r)
    cid = r.stdout.strip()
    refused(run(["exec", "--privileged", cid, "true"]), "privileged exec")
    ok(run(["exec", cid, "true"]))
    refused(run(["update", "-m", "2g", "--memory-swap", "2g", cid]), "memory")
    ok(run(["update", "-m", "512m", "--memory-swap", "512m", cid]))


def test_network_driver(run, direct_client):
    refused(
        run(["network", "create", "-d", "macvlan", f"mv-{uuid.uuid4().hex[:4]}"]), "network driver"
    )
    name = f"pn-{uuid.uuid4().hex[:4]}"
    ok(run(["network", "create", "-d", "overlay", "--attachable", name]))
    ok(run(["network", "rm", name]))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["-o", "com.docker.network.bridge.name=docker0"], ["network driver option"]),
        (
            ["-d", "overlay", "-o", "com.docker.network.driver.overlay.vxlanid_list=4097"],
            ["network driver option"],
        ),
        (["--subnet", "192.168.0.0/16"], ["choosing this subnet", "allowed: 10.213.0.0/16"]),
        (["--subnet", "10.0.0.0/8"], ["choosing this subnet"]),  # wider than the range
        (["--ipam-driver", "other"], ["IPAM"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None,
)
def test_network_options_and_subnets_refused(run, flags, words):
    refused(run(["network", "create", *flags, f"pn-{uuid.uuid4().hex[:4]}"]), *words)


def test_network_options_and_subnets_neighbours(run, direct_client):
    name = f"pn-{uuid.uuid4().hex[:4]}"
    flags = ["-d", "overlay", "-o", "encrypted", "--subnet", "10.213.7.0/24"]
    ok(run(["network", "create", *flags, "--gateway", "10.213.7.1", name]))
    try:
        net = direct_client.networks.get(name).attrs
        assert net["IPAM"]["Config"][0]["Subnet"] == "10.213.7.0/24", net["IPAM"]
        assert "encrypted" in net["Options"], net["Options"]
    finally:
        ok(run(["network", "rm", name]))


def build_context(area: Path) -> Path:
    """A minimal legacy-build context the members' CLI can read."""
    ctx = area / f"ctx-{uuid.uuid4().hex[:4]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    ctx.chmod(0o755)
    return ctx


def test_legacy_build_network_refused(run, area, direct_client):
    ctx = build_context(area)
    env = {"DOCKER_BUILDKIT": "0"}
    refused(run(["build", "--network", "host", str(ctx)], env=env), "build network")
    tag = f"poltest:{uuid.uuid4().hex[:4]}"
    ok(run(["build", "-q", "-t", tag, str(ctx)], env=env))
    labels = direct_client.images.get(tag).labels
    # The author is recorded; the owner label is empty, so the builder's RUN containers
    # made from this image (which inherit its labels) belong to nobody.
    assert labels["dockergate.built-by"] == "p-member" and labels["dockergate.owner"] == ""
    direct_client.images.remove(tag)


def test_service_defaults_and_intern_kept_off_managers(cli, pgate, member, intern, direct_client):
    s1 = f"ps-{uuid.uuid4().hex[:6]}"
    s2 = f"pi-{uuid.uuid4().hex[:6]}"
    try:
        r = cli(
            ["service", "create", "-d", "--name", s1, "busybox", "sleep", "60"],
            user=member,
            gate=pgate,
        )
        ok(r)
        spec = direct_client.services.get(s1).attrs["Spec"]["TaskTemplate"]
        assert spec["Resources"]["Limits"]["MemoryBytes"] == 256 * MIB
        assert "node.role==worker" not in (spec.get("Placement") or {}).get("Constraints", [])
        r = cli(
            ["service", "create", "-d", "--name", s2, "busybox", "sleep", "60"],
            user=intern,
            gate=pgate,
        )
        ok(r)
        spec = direct_client.services.get(s2).attrs["Spec"]["TaskTemplate"]
        assert "node.role==worker" in spec["Placement"]["Constraints"]
        refused(
            cli(
                [
                    "service",
                    "create",
                    "-d",
                    "--constraint",
                    "node.role==manager",
                    "busybox",
                    "true",
                ],
                user=intern,
                gate=pgate,
            ),
            "managers",
        )
        refused(
            cli(
                ["service", "create", "-d", "--mount", "type=bind,src=/,dst=/h", "busybox", "true"],
                user=member,
                gate=pgate,
            ),
            "bind-mounting",
        )
        refused(
            cli(["service", "update", "-d", "--limit-memory", "4g", s1], user=member, gate=pgate),
            "memory",
        )
    finally:
        for s in (s1, s2):
            try:
                direct_client.services.get(s).remove()
            except Exception:
                pass


def test_container_quota_race(cli, pgate, member, direct_client):
    """quota.containers=4: six parallel creates from nothing, exactly four pass."""
    for c in direct_client.containers.list(
        all=True, filters={"label": "dockergate.owner=p-member"}
    ):
        c.remove(force=True)
    names = [f"race-{uuid.uuid4().hex[:6]}" for _ in range(6)]

    def create(name: str):
        return cli(["create", "--name", name, "busybox", "true"], user=member, gate=pgate)

    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(create, names))
        passed = [r for r in results if r.returncode == 0]
        failed = [r for r in results if r.returncode != 0]
        assert len(passed) == 4, [r.stderr for r in results]
        assert all("quota" in r.stderr for r in failed)
    finally:
        for n in names:
            try:
                direct_client.containers.get(n).remove(force=True)
            except Exception:
                pass


def test_memory_quota(cli, pgate, intern, direct_client):
    """intern: 512m quota, 256m default: two running containers, the third is refused."""
    made = []
    try:
        for _ in range(2):
            n = f"mq-{uuid.uuid4().hex[:6]}"
            made.append(n)
            ok(cli(["run", "-d", "--name", n, "busybox", "sleep", "60"], user=intern, gate=pgate))
        n = f"mq-{uuid.uuid4().hex[:6]}"
        made.append(n)
        refused(
            cli(["run", "-d", "--name", n, "busybox", "sleep", "60"], user=intern, gate=pgate),
            "memory quota",
        )
    finally:
        for n in made:
            try:
                direct_client.containers.get(n).remove(force=True)
            except Exception:
                pass


def test_intern_no_bind_mounts(cli, pgate, intern, area):
    refused(
        cli(
            ["run", "--rm", "-v", f"{area / 'data'}:/d", "busybox", "true"], user=intern, gate=pgate
        ),
        "bind-mounting",
    )


def test_check_command(area):
    bad = area / "bad-stack.yml"
    bad.write_text(
        "services:\n  web:\n    image: busybox\n    privileged: true\n    volumes: ['/etc:/etc']\n"
        "    deploy: {resources: {limits: {memory: 4g}}}\n"
    )
    good = area / "good-stack.yml"
    good.write_text("services:\n  web:\n    image: busybox\n    ports: ['8080:80']\n")
    exe = [*dockergate_argv()]
    env = {**os.environ, "DOCKERGATE_POLICIES_DIR": str(area / "policies")}
    r = subprocess.run(
        [*exe, "check", "--profile", "intern", str(bad)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1, r.stdout + r.stderr
    for word in ("web", "privileged", "bind-mounting", "memory"):
        assert word in r.stdout, r.stdout
    r = subprocess.run(
        [*exe, "check", "--profile", "intern", str(good)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_reload_applies_without_dropping_connections(pgate, member, area, cli):
    client = docker.DockerClient(base_url=pgate.unix_url, version="1.41")
    assert client.ping()  # root's keep-alive connection must survive the reload
    path = area / "policies" / "member.yaml"
    before = path.read_text()
    try:
        path.write_text(before.replace("max: 1g", "max: 300m"))
        pgate.dockergate("policy", "reload")
        time.sleep(0.5)
        refused(
            cli(["run", "--rm", "-m", "512m", "busybox", "true"], user=member, gate=pgate),
            "at most 300m",
        )
        assert client.ping()
    finally:
        path.write_text(before)
        pgate.dockergate("policy", "reload")
        client.close()


def test_reload_with_a_stale_pidfile_signals_no_other_program(tmp_path):
    """A gate killed with SIGKILL leaves its pidfile; the pid may since be another
    program's, which SIGHUP would end. ``policy reload`` (and ``init
    --rotate-server-cert``) signal the pid only if it is a gate."""
    state = tmp_path / "state"
    init = subprocess.run(
        [*dockergate_argv(), "--state-dir", str(state), "init"], capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    other = subprocess.Popen(["sleep", "60"])
    try:
        (state / "dockergate.pid").write_text(f"{other.pid}\n")
        r = subprocess.run(
            [*dockergate_argv(), "--state-dir", str(state), "policy", "reload"],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 1 and "stale pidfile" in r.stderr, r.stderr
        r = subprocess.run(
            [*dockergate_argv(), "--state-dir", str(state), "init", "--rotate-server-cert"],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and "no running gate found" in r.stdout + r.stderr, r.stdout
        time.sleep(0.2)
        assert other.poll() is None, "the other program got SIGHUP"
    finally:
        other.kill()
        other.wait()
