"""Review round 11b: today's changes (cluster-wide volume names, inspect of shared
volumes and built-in networks, Swarm task containers, refusals) seen by members,
interns and the operator, with the real docker CLI (v28), docker-compose (v1) and
the `dockergate` admin commands.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what a user or
operator would expect. The ``test_works_*`` tests pass and pin workflows that work.
Nothing leaves loopback; the only image is the local ``busybox``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import dockergate_argv

pytestmark = pytest.mark.timeout(240)

OWNER = "dockergate.owner"
ALICE = "r11b-a"  # member
BOB = "r11b-b"  # member
INTERN = "r11b-i"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def people(gate, unix_user):
    out = {}
    for name, short, profile in (
        (ALICE, "r11ba", "member"),
        (BOB, "r11bb", "member"),
        (INTERN, "r11bi", "intern"),
    ):
        u = unix_user(short)
        gate.dockergate("user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[name] = u
    return out


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    for who in (ALICE, BOB, INTERN):
        flt = {"label": f"{OWNER}={who}"}
        for s in direct_client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                s.remove()
        time.sleep(1)
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for kind in ("volumes", "networks", "secrets", "configs"):
            for o in getattr(direct_client, kind).list(filters=flt):
                with contextlib.suppress(Exception):
                    o.remove()


@pytest.fixture
def workdir(people) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r11b-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_(cli, people, who, args, **kw):
    return cli(args, user=people[who], **kw)


def ok(r) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def _stack(workdir: Path, text: str) -> Path:
    d = workdir / f"s{_rand()}"
    d.mkdir()
    d.chmod(0o777)
    (d / "stack.yml").write_text(text)
    return d / "stack.yml"


STACK = (
    "version: '3.8'\n"
    "services:\n"
    "  app:\n"
    "    image: busybox\n"
    "    command: sleep 300\n"
    "    volumes: [hdfs:/data]\n"
    "    stop_grace_period: 1s\n"
    "    deploy:\n"
    "      resources: {limits: {memory: 64M}}\n"
    "      placement: {constraints: [node.role == manager]}\n"
    # `--detach=false` waits this long after convergence (the CLI's default is 5 s)
    "      update_config: {monitor: 1s}\n"
    "volumes: {hdfs: {}}\n"
)


def purge(gate, docker_host: str, user: str) -> subprocess.CompletedProcess[str]:
    """`dockergate purge --user USER --volumes --yes`, as the operator runs it."""
    argv = [*dockergate_argv(), "--state-dir", str(gate.state_dir)]
    argv += ["purge", "--user", user, "--volumes", "--yes"]
    env = {**os.environ, "DOCKERGATE_UPSTREAM": docker_host}
    r = subprocess.run(
        argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


# =========================================================================== findings


def test_finding_purge_releases_the_users_volume_names(cli, people, gate, docker_host):
    """An intern leaves; the operator runs `dockergate purge --user bob --volumes --yes`
    and the volumes are gone. The names stay held by bob forever: alice's `docker
    volume create results` answers "another user holds that name on this cluster ...
    choose another name". Neither purge nor any admin command releases a held name,
    and the message does not say who holds it or that an admin could free it."""
    name = f"r11b-results-{_rand()}"
    ok(as_(cli, people, BOB, ["volume", "create", name]))
    # The test swarm has two nodes: a purge of this one engine keeps the names (bob's
    # volumes of those names may remain on the other), and says how to free them.
    r = purge(gate, docker_host, BOB)
    assert "keeps their volume names" in r.stderr and "volume-names release" in r.stderr, r
    r = as_(cli, people, ALICE, ["volume", "create", name])
    assert r.returncode != 0 and "ask an admin to release it" in r.stderr, r.stderr
    listed = gate.dockergate("volume-names", "ls", "--user", BOB).stdout
    assert name in listed, listed
    r = gate.dockergate("volume-names", "release", "--user", BOB)
    assert "released" in r.stdout, r.stdout
    r = as_(cli, people, ALICE, ["volume", "create", name])
    assert r.returncode == 0, r.stderr
    ok(as_(cli, people, ALICE, ["volume", "rm", name]))


def test_finding_refused_request_does_not_hold_the_name(cli, people):
    """`docker run --privileged -v scratch:/d busybox` is refused (the profile forbids
    --privileged), yet the name `scratch` is now held by that user for good: the
    volume check (which claims the name) runs before the profile's checks, and a
    refused create leaves no volume but a permanent claim. Another member's `docker
    volume create scratch` is then refused."""
    name = f"r11b-scratch-{_rand()}"
    r = as_(cli, people, BOB, ["run", "--rm", "--privileged", "-v", f"{name}:/d", "busybox"])
    assert r.returncode != 0 and "privileged" in r.stderr, r.stderr
    r = as_(cli, people, ALICE, ["volume", "create", name])
    try:
        assert r.returncode == 0, r.stderr
    finally:
        as_(cli, people, ALICE, ["volume", "rm", name])


def test_finding_committed_task_container_image_can_be_run(cli, people, direct_client):
    """Debugging a service: `docker commit <task container> snap` then `docker run snap`.
    The commit carries Swarm's labels (com.docker.swarm.node.id, .service.id, .task.id
    ...), and the run is refused: "may not create a container with the label
    'com.docker.swarm.node.id' (the image snap's labels) ... drop the label (build the
    image without it)". Docker cannot remove an inherited label (`commit --change
    'LABEL com.docker.swarm.node.id='` or a `LABEL` in a Dockerfile only blank it,
    and the key still refuses), so the advice cannot be followed and the image is
    unusable to its owner."""
    svc = f"r11b-c{_rand()}"
    snap = f"r11b-snap-{svc}:1"
    create = ["service", "create", "--detach=false", "--name", svc, "--limit-memory", "64m"]
    create += ["--update-monitor", "1s"]  # the CLI's wait after convergence (default 5 s)
    create += ["--stop-grace-period", "1s"]  # `sleep` (pid 1) ignores SIGTERM
    create += ["--constraint", "node.role==manager", "busybox", "sleep", "300"]
    ok(as_(cli, people, ALICE, create, timeout=90))
    try:
        flt = f"label=com.docker.swarm.service.name={svc}"
        cid = ok(as_(cli, people, ALICE, ["ps", "-q", "-f", flt])).split()[0]
        change = [f"--change=LABEL com.docker.swarm.{k}=" for k in ("node.id", "service.id")]
        ok(as_(cli, people, ALICE, ["commit", *change, cid, snap]))
        r = as_(cli, people, ALICE, ["run", "--rm", snap, "echo", "from-snap"])
        assert r.returncode == 0 and "from-snap" in r.stdout, r.stderr
    finally:
        as_(cli, people, ALICE, ["service", "rm", svc])
        as_(cli, people, ALICE, ["rmi", snap])


# =========================================================================== works


def test_works_second_user_same_stack_name_is_told_why(cli, people, workdir):
    """Alice deploys stack X with volume `hdfs`, removes it and its volume; bob then
    deploys his own stack X: refused on X_hdfs with a gate message naming the rule."""
    f = _stack(workdir, STACK)
    st = f"sp{_rand()}"
    dep = ["stack", "deploy", "-c", str(f), "--detach=false", st]
    try:
        ok(as_(cli, people, ALICE, dep, timeout=90))
        ok(as_(cli, people, ALICE, ["stack", "rm", st]))
        deadline = time.time() + 30
        while as_(cli, people, ALICE, ["volume", "rm", f"{st}_hdfs"]).returncode != 0:
            assert time.time() < deadline
            time.sleep(0.5)
        r = as_(cli, people, BOB, dep, timeout=90)
        assert r.returncode != 0
        assert f"{st}_hdfs" in r.stderr and "another user holds that name" in r.stderr, r.stderr
    finally:
        as_(cli, people, ALICE, ["stack", "rm", st])
        as_(cli, people, BOB, ["stack", "rm", st])


def test_works_stack_redeploy_after_rm_and_volume_rm(cli, people, workdir):
    f = _stack(workdir, STACK)
    st = f"rd{_rand()}"
    dep = ["stack", "deploy", "-c", str(f), "--detach=false", st]
    try:
        ok(as_(cli, people, ALICE, dep, timeout=90))
        ok(as_(cli, people, ALICE, dep, timeout=90))  # an update
        ok(as_(cli, people, ALICE, ["stack", "rm", st]))
        deadline = time.time() + 30
        while as_(cli, people, ALICE, ["volume", "rm", f"{st}_hdfs"]).returncode != 0:
            assert time.time() < deadline
            time.sleep(0.5)
        while as_(cli, people, ALICE, ["network", "inspect", f"{st}_default"]).returncode == 0:
            assert time.time() < deadline
            time.sleep(0.5)
        ok(as_(cli, people, ALICE, dep, timeout=90))
        ok(as_(cli, people, ALICE, ["volume", "create", "--name", f"{st}_hdfs"]))
    finally:
        as_(cli, people, ALICE, ["stack", "rm", st])


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose")
def test_works_compose_up_down_v_up(cli, people, workdir):
    proj = workdir / f"p{_rand()}"
    proj.mkdir()
    proj.chmod(0o777)
    (proj / "docker-compose.yml").write_text(
        "version: '3.8'\nservices:\n  app:\n    image: busybox\n    command: sleep 120\n"
        "    stop_grace_period: 1s\n"  # sleep as pid 1 ignores SIGTERM: down waits this
        "    volumes: [pdata:/data]\nvolumes:\n  pdata: {}\n"
    )

    def compose(args: str):
        cmd = f"cd {proj} && docker-compose {args}"
        return as_(cli, people, ALICE, cmd, shell=True, timeout=120)

    try:
        for args in ("up -d", "down -v", "up -d"):
            r = compose(args)
            ok(r)
            assert "has changed" not in r.stderr, r.stderr
    finally:
        compose("down -v")


def test_works_volume_rm_then_create_again_and_names_stay_separate(cli, people, direct_client):
    name = f"r11b-v{_rand()}"
    ok(as_(cli, people, BOB, ["volume", "create", name]))
    ok(as_(cli, people, BOB, ["volume", "rm", name]))
    ok(as_(cli, people, BOB, ["volume", "create", name]))
    assert ok(as_(cli, people, BOB, ["volume", "inspect", "-f", "{{.Labels}}", name])) == "map[]\n"
    out = ok(as_(cli, people, BOB, ["volume", "ls", "-q", "-f", f"label={OWNER}={BOB}"]))
    assert name in out.split()
    ok(as_(cli, people, BOB, ["volume", "rm", name]))
    r = as_(cli, people, ALICE, ["volume", "create", name])
    assert r.returncode != 0 and "another user holds that name" in r.stderr, r.stderr


def test_works_admin_creates_shared_volume_after_member_tried(cli, people, direct_client):
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        direct_client.volumes.get("common-data")
        pytest.skip("common-data exists already")
    r = as_(cli, people, ALICE, ["run", "--rm", "-v", "common-data:/d:ro", "busybox", "true"])
    assert r.returncode != 0 and "an admin creates it" in r.stderr, r.stderr
    try:
        ok(cli(["volume", "create", "common-data"]))  # root on the gate: an admin
        ok(as_(cli, people, ALICE, ["run", "--rm", "-v", "common-data:/d:ro", "busybox", "true"]))
        out = as_(cli, people, INTERN, ["volume", "inspect", "-f", "{{.Name}}", "common-data"])
        assert ok(out).strip() == "common-data"
    finally:
        with contextlib.suppress(Exception):
            direct_client.volumes.get("common-data").remove()


def test_works_task_containers_restart_exec_force_update(cli, people):
    svc = f"r11b-t{_rand()}"
    create = ["service", "create", "--detach=false", "--name", svc, "--limit-memory", "64m"]
    create += ["--update-monitor", "1s"]  # the CLI's wait after convergence (default 5 s)
    create += ["--stop-grace-period", "1s"]  # `sleep` (pid 1) ignores SIGTERM
    create += ["--constraint", "node.role==manager", "busybox", "sleep", "300"]
    ok(as_(cli, people, ALICE, create, timeout=90))
    try:
        flt = f"label=com.docker.swarm.service.name={svc}"
        cid = ok(as_(cli, people, ALICE, ["ps", "-q", "-f", flt])).split()[0]
        # A restart would leave two containers for one task (round 11a): refused.
        r = as_(cli, people, ALICE, ["restart", "-t", "1", cid])
        assert r.returncode != 0 and "docker service update" in r.stderr, r.stderr
        assert ok(as_(cli, people, ALICE, ["exec", cid, "echo", "hi"])).strip() == "hi"
        r = as_(cli, people, ALICE, ["update", "--memory", "100m", cid])
        assert r.returncode != 0 and "docker service update" in r.stderr, r.stderr
        ok(
            as_(
                cli,
                people,
                ALICE,
                ["service", "update", "--force", "--detach=false", svc],
                timeout=90,
            )
        )
    finally:
        as_(cli, people, ALICE, ["service", "rm", svc])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--memory", "64m", "--memory-swap", "128m"], "leave --memory-swap out"),
        (["--pid", "host"], "drop --pid host"),
        (["--network", "host"], "drop --network host"),
        (["--gpus", "all"], "gpu count=all"),
    ],
)
def test_works_refusals_are_readable(cli, people, args, words):
    r = as_(cli, people, ALICE, ["run", "--rm", *args, "busybox", "true"])
    assert r.returncode != 0 and "dockergate:" in r.stderr and words in r.stderr, r.stderr


def test_works_member_memory_swap_equal_and_update(cli, people, direct_client):
    name = f"r11b-sw{_rand()}"
    try:
        ok(
            as_(
                cli,
                people,
                ALICE,
                ["create", "--name", name, "-m", "64m", "--memory-swap", "64m", "busybox"],
            )
        )
        ok(as_(cli, people, ALICE, ["update", "-m", "128m", name]))
        host = direct_client.containers.get(name).attrs["HostConfig"]
        assert host["Memory"] == host["MemorySwap"] == 128 * 1024**2
    finally:
        as_(cli, people, ALICE, ["rm", "-f", name])


def test_works_builtin_and_ingress_networks_inspect(cli, people):
    out = ok(
        as_(
            cli,
            people,
            INTERN,
            ["network", "inspect", "-f", "{{.Name}}", "none", "host", "ingress"],
        )
    )
    assert out.split() == ["none", "host", "ingress"]


def test_works_swarm_join_token_as_member_shows_no_token(cli, people):
    r = as_(cli, people, ALICE, ["swarm", "join-token", "-q", "worker"])
    assert "SWMTKN" not in r.stdout and "admins only" in r.stdout, r.stdout + r.stderr
