"""Review round 10b: a member and an intern doing ordinary daily work through the gate
with the real docker CLI (v28), docker-compose (v1, Debian's) and docker-py, over the
unix socket and over TLS.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what plain Docker
does (or a clear gate refusal where the profile must say no). The ``test_works_*``
tests pass and pin down workflows that behaved like plain Docker.
Nothing leaves loopback; the only image is the local ``busybox``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

OWNER = "dockergate.owner"
MEMBER = "r10b-m"
INTERN = "r10b-i"
SHARED = "common-data"  # a shared volume of the shipped member and intern profiles
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}
PY = "/usr/bin/python3"  # the member cannot run the venv's python; docker-compose brings docker-py


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def people(gate, unix_user):
    out = {}
    for name, short, profile in ((MEMBER, "r10bm", "member"), (INTERN, "r10bi", "intern")):
        u = unix_user(short)
        gate.dockergate("user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[profile] = u
    return out


@pytest.fixture(scope="module")
def member_bundle(gate, people) -> Iterator[Path]:
    """The member's TLS bundle (`dockergate user cert`), readable by the member."""
    d = Path(tempfile.mkdtemp(prefix="dgt-r10b-cert-"))
    d.chmod(0o755)
    out = d / "bundle"
    gate.dockergate("user", "cert", MEMBER, "--out", str(out))
    u = people["member"]
    for p in (out, *out.iterdir()):
        os.chown(p, u.uid, u.gid)
    yield out
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    for who in (MEMBER, INTERN):
        flt = {"label": f"{OWNER}={who}"}
        for s in direct_client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                s.remove()
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for kind in ("volumes", "networks", "secrets", "configs"):
            for o in getattr(direct_client, kind).list(filters=flt):
                with contextlib.suppress(Exception):
                    o.remove()


@pytest.fixture
def shared_volume(direct_client) -> Iterator[str]:
    """The profiles' shared volume `common-data`, made by an admin (on the daemon)."""
    import docker

    made = False
    try:
        direct_client.volumes.get(SHARED)
    except docker.errors.NotFound:
        direct_client.volumes.create(SHARED)
        made = True
    yield SHARED
    if made:
        with contextlib.suppress(Exception):
            direct_client.volumes.get(SHARED).remove()


@pytest.fixture
def workdir(people) -> Iterator[Path]:
    """A directory the member and the intern can read and write."""
    d = Path(tempfile.mkdtemp(prefix="dgt-r10b-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def member(cli, people, args, **kw):
    return cli(args, user=people["member"], **kw)


def intern(cli, people, args, **kw):
    return cli(args, user=people["intern"], **kw)


def ok(r) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def compose(cli, people, proj: Path, args: str, **kw):
    kw.setdefault("timeout", 120)
    return member(cli, people, f"cd {proj} && docker-compose {args}", shell=True, **kw)


def _project(workdir: Path, text: str) -> Path:
    proj = workdir / f"p{_rand()}"
    proj.mkdir()
    proj.chmod(0o777)
    (proj / "docker-compose.yml").write_text(text)
    return proj


needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed"
)


# =========================================================================== findings


def test_finding_shared_volume_can_be_inspected(cli, people, shared_volume):
    """The member profile lists `common-data` as a shared volume, and `docker run -v
    common-data:/d:ro` works, but `docker volume inspect common-data` answers "no such
    volume" (it has no owner label, so the gate treats it as admins' only). The user
    is told the volume they just mounted does not exist."""
    ok(member(cli, people, ["run", "--rm", "-v", f"{shared_volume}:/d:ro", "busybox", "true"]))
    r = member(cli, people, ["volume", "inspect", "-f", "{{.Name}}", shared_volume])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == shared_volume


@needs_compose
def test_finding_compose_external_shared_volume(cli, people, workdir, shared_volume):
    """The compose way to use the team's data volume is `external: true`. docker-compose
    inspects an external volume before it starts anything, gets 404 from the gate and
    stops: "Volume common-data declared as external, but could not be found. Please
    create the volume manually". The same service works with `docker run -v
    common-data:/shared:ro` and with `docker stack deploy` (which does not inspect)."""
    proj = _project(
        workdir,
        "version: '3.8'\n"
        "services:\n"
        "  app:\n"
        "    image: busybox\n"
        "    command: ls /shared\n"
        "    volumes: ['shared:/shared:ro']\n"
        "volumes:\n"
        f"  shared:\n    external: true\n    name: {shared_volume}\n",
    )
    try:
        r = compose(cli, people, proj, "up --no-color")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "could not be found" not in r.stderr
    finally:
        compose(cli, people, proj, "down")


@needs_compose
def test_finding_compose_does_not_warn_that_labels_changed(cli, people, workdir):
    """Every `docker-compose up`/`run` after the first prints, for each network and
    volume of the project: `Network p_default: label "dockergate.owner" has changed. It
    may need to be recreated.` (and the same for volumes). Compose v1 compares the
    labels of the existing object with the compose file's and the gate added its owner
    label. Nothing changed and nothing needs recreating; users are told otherwise on
    every command."""
    proj = _project(
        workdir,
        "version: '3.8'\n"
        "services:\n"
        "  app:\n"
        "    image: busybox\n"
        "    command: sleep 120\n"
        "    stop_grace_period: 1s\n"  # sleep as pid 1 ignores SIGTERM: down waits this
        "    volumes: [pdata:/data]\n"
        "volumes:\n  pdata: {}\n",
    )
    try:
        ok(compose(cli, people, proj, "up -d"))
        again = compose(cli, people, proj, "up -d")
        ok(again)
        assert "has changed" not in again.stderr, again.stderr
    finally:
        compose(cli, people, proj, "down -v")


def test_finding_explicit_swap_is_not_silently_dropped(cli, people, direct_client):
    """`docker run --memory 1g --memory-swap 2g` (or `--memory-swap -1`) exits 0 but the
    container gets MemorySwap=1g: no swap, without a word. `docker update --memory-swap
    2g` alone is refused ("memory and swap stay equal"), and an unlimited
    `--pids-limit -1` is refused too; an explicit swap the profile does not allow should
    be refused the same way, not silently changed."""
    for swap in ("2g", "-1"):
        name = f"r10b-swap-{_rand()}"
        try:
            r = member(
                cli,
                people,
                ["create", "--name", name, "--memory", "1g", "--memory-swap", swap, "busybox"],
            )
            if r.returncode == 0:
                got = direct_client.containers.get(name).attrs["HostConfig"]["MemorySwap"]
                want = -1 if swap == "-1" else 2 * 1024**3
                assert got == want, f"asked --memory-swap {swap}, got {got} without a word"
            else:
                assert "dockergate:" in r.stderr and "swap" in r.stderr, r.stderr
        finally:
            with contextlib.suppress(Exception):
                direct_client.containers.get(name).remove(force=True)


@pytest.mark.parametrize("flag", ["--pid", "--ipc", "--uts", "--userns", "--cgroupns"])
def test_finding_namespace_refusal_hint_fits_the_field(cli, people, flag):
    """`docker run --pid host busybox` is refused with "... (HostConfig.PidMode=host);
    use the default (a network of your own for NetworkMode)": the hint is about
    networks whatever the namespace."""
    r = member(cli, people, ["create", flag, "host", "busybox", "true"])
    assert r.returncode != 0
    assert "dockergate:" in r.stderr, r.stderr
    assert "NetworkMode" not in r.stderr, r.stderr


def test_finding_gpu_refusal_is_readable(cli, people):
    """`docker run --gpus all busybox` is refused with the Python repr of the body:
    "(HostConfig.DeviceRequests=[{'Driver': '', 'Count': -1, 'DeviceIDs': None,
    'Capabilities': [['gpu']], 'Options': {}}])". The message should name what was
    asked in Docker's words (e.g. `--gpus all` / gpu), not a Python dict."""
    r = member(cli, people, ["create", "--gpus", "all", "busybox", "true"])
    assert r.returncode != 0
    assert "dockergate:" in r.stderr, r.stderr
    assert "{'" not in r.stderr and "None" not in r.stderr, r.stderr


def test_finding_swarm_inspect_for_members_without_join_tokens(cli, people, gate):
    """`GET /swarm` is admin-only because it holds the join tokens, so for a member
    `docker swarm ca` and, in docker-py, merely touching `client.swarm` (its constructor
    calls reload(): `client.swarm.attrs`, `client.swarm.version`) fail with "may not
    swarm.inspect: admins only". Scripts use it to read the swarm's ID, spec and
    version. Answer members with the JoinTokens removed instead of 403."""
    import subprocess

    if subprocess.run([PY, "-c", "import docker"], check=False).returncode != 0:
        pytest.skip("no docker-py for the system python")
    script = (
        "import docker\n"
        f"c = docker.DockerClient(base_url={gate.unix_url!r}, version='auto')\n"
        "a = c.swarm.attrs\n"
        "assert a.get('ID'), a\n"
        "assert 'SWMTKN' not in repr(a), 'join tokens shown to a member'\n"
        "print('SWARM-OK')\n"
    )
    u = people["member"]
    r = subprocess.run(
        ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", PY, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"},
    )
    assert "SWARM-OK" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("net", ["none", "host"])
def test_finding_builtin_networks_can_be_inspected(cli, people, net):
    """A member's container runs on Docker's built-in networks (`--network none`, the
    default bridge), but `docker network inspect none` (or `bridge`, `host`) answers
    "network none not found" and `docker network ls` shows none of them: they carry
    no owner label, so they count as admins' objects. They belong to nobody and hold
    nothing secret; let every user list and inspect them (still refusing `host` use
    where the profile says so)."""
    ok(member(cli, people, ["run", "--rm", "--network", "none", "busybox", "true"]))
    r = member(cli, people, ["network", "inspect", "-f", "{{.Name}}", net])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == net


# =========================================================================== works


@needs_compose
def test_works_compose_build_healthcheck_depends_on_and_recreate(cli, people, workdir):
    """Build (classic), healthcheck + depends_on service_healthy, exec, run --rm, logs,
    a recreate that keeps the anonymous volume, down -v."""
    tag = f"r10b-cb-{_rand()}:1"
    proj = _project(
        workdir,
        "version: '2.4'\n"
        "services:\n"
        "  db:\n"
        "    build: .\n"
        f"    image: {tag}\n"
        "    volumes: ['/anon', 'dbdata:/data']\n"
        "    environment: ['V=${V:-1}']\n"
        "    healthcheck: {test: ['CMD', 'true'], interval: 1s, timeout: 1s, retries: 3}\n"
        "    stop_grace_period: 1s\n"  # the recreate and down stop `sleep` (pid 1)
        "  web:\n"
        "    image: busybox\n"
        "    command: sh -c 'echo web up; sleep 120'\n"
        "    stop_grace_period: 1s\n"
        "    depends_on: {db: {condition: service_healthy}}\n"
        "volumes:\n  dbdata: {}\n",
    )
    (proj / "Dockerfile").write_text("FROM busybox\nRUN echo hello > /hello\nCMD sleep 120\n")
    env = {**BUILD_ENV, "COMPOSE_DOCKER_CLI_BUILD": "0"}
    try:
        ok(compose(cli, people, proj, "up -d --build", env=env))
        assert "hello" in ok(compose(cli, people, proj, "exec -T db cat /hello"))
        ok(compose(cli, people, proj, "exec -T db sh -c 'echo keep > /anon/f'"))
        assert "ran" in ok(compose(cli, people, proj, "run --rm -T web echo ran"))
        deadline = time.time() + 20
        while "web up" not in ok(compose(cli, people, proj, "logs --no-color web")):
            assert time.time() < deadline
            time.sleep(0.5)
        ok(compose(cli, people, proj, "up -d", env={**env, "V": "2"}))
        assert "keep" in ok(compose(cli, people, proj, "exec -T db cat /anon/f"))
    finally:
        ok(compose(cli, people, proj, "down -v"))
        member(cli, people, ["rmi", tag])
    assert ok(member(cli, people, ["volume", "ls", "-q", "-f", f"name={proj.name}"])) == ""


@needs_compose
def test_works_compose_over_tls(cli, people, workdir, member_bundle):
    proj = _project(
        workdir,
        "version: '3.8'\nservices:\n  app:\n    image: busybox\n    command: sleep 120\n"
        "    stop_grace_period: 1s\n",  # sleep as pid 1 ignores SIGTERM: down waits this
    )
    kw = {"listener": "tls", "cert_dir": member_bundle}
    try:
        ok(compose(cli, people, proj, "up -d", **kw))
        assert "via-tls" in ok(compose(cli, people, proj, "exec -T app echo via-tls", **kw))
        r = compose(cli, people, proj, "exec -T app cat", input="stdin-in\n", **kw)
        assert "stdin-in" in ok(r)
    finally:
        ok(compose(cli, people, proj, "down", **kw))


def test_works_member_stack_update_rollback_scale(cli, people, workdir):
    """A member's stack with a secret, a config, an overlay network, a named volume,
    limits/reservations and placement; updated with a changed env, rolled back,
    scaled, logs; then removed."""
    d = workdir / "stack"
    d.mkdir()
    d.chmod(0o777)
    (d / "pw.txt").write_text("s3cret\n")
    (d / "conf.txt").write_text("k=v\n")
    (d / "stack.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  app:\n"
        "    image: busybox\n"
        "    command: sh -c 'cat /run/secrets/pw /cfg; echo mode $$MODE; exec sleep 300'\n"
        "    environment: {MODE: '${MODE:-one}'}\n"
        "    secrets: [pw]\n"
        "    configs: [{source: cfg, target: /cfg}]\n"
        "    networks: [net]\n"
        "    volumes: [data:/data]\n"
        "    stop_grace_period: 1s\n"
        "    deploy:\n"
        "      replicas: 1\n"
        "      resources: {limits: {memory: 256M, cpus: '0.5'}, reservations: {memory: 64M}}\n"
        "      placement: {constraints: [node.role == manager]}\n"
        # start-first: refused under a quota; monitor: how long `--detach=false` waits
        # after convergence (the CLI's default is 5 s, for each of the four steps)
        "      update_config: {order: stop-first, monitor: 1s}\n"
        "secrets: {pw: {file: ./pw.txt}}\n"
        "configs: {cfg: {file: ./conf.txt}}\n"
        "networks: {net: {driver: overlay, attachable: true}}\n"
        "volumes: {data: {}}\n"
    )
    st = f"r10b{_rand()}"
    dep = ["stack", "deploy", "-c", str(d / "stack.yml"), "--detach=false", st]
    try:
        ok(member(cli, people, dep, timeout=90))
        svc = f"{st}_app"
        ok(member(cli, people, dep, env={"MODE": "two"}, timeout=90))
        fmt = "{{.Spec.TaskTemplate.ContainerSpec.Env}}"
        env_now = ok(member(cli, people, ["service", "inspect", "-f", fmt, svc]))
        assert "MODE=two" in env_now
        ok(member(cli, people, ["service", "rollback", "--detach=false", svc], timeout=90))
        assert "MODE=one" in ok(member(cli, people, ["service", "inspect", "-f", fmt, svc]))
        ok(member(cli, people, ["service", "scale", "--detach=false", f"{svc}=2"], timeout=90))
        logs = ok(member(cli, people, ["service", "logs", "--raw", svc]))
        assert "s3cret" in logs and "k=v" in logs, logs
        assert st in ok(member(cli, people, ["stack", "ls"]))
    finally:
        ok(member(cli, people, ["stack", "rm", st]))


def test_works_service_update_flags(cli, people):
    tag = _rand()
    svc, sec, cfg, net, vol = (f"r10b-{k}-{tag}" for k in ("svc", "sec", "cfg", "net", "vol"))
    ok(member(cli, people, ["secret", "create", sec, "-"], input="pw\n"))
    ok(member(cli, people, ["config", "create", cfg, "-"], input="c\n"))
    ok(member(cli, people, ["network", "create", "-d", "overlay", net]))
    ok(member(cli, people, ["volume", "create", vol]))
    ok(member(cli, people, ["service", "create", "-d", "--name", svc, "busybox", "sleep", "300"]))
    try:
        for args in (
            ["--secret-add", sec],
            ["--config-add", f"source={cfg},target=/c"],
            ["--network-add", net],
            ["--mount-add", f"type=volume,source={vol},target=/v"],
            ["--env-add", "X=1", "--limit-memory", "300m", "--reserve-memory", "100m"],
            ["--constraint-add", "node.role==manager", "--label-add", "a=b"],
            ["--container-label-add", "cl=1", "--health-cmd", "true", "--init"],
            ["--publish-add", "18081:80", "--ulimit-add", "nofile=1024:1024"],
            ["--secret-rm", sec, "--network-rm", net, "--mount-rm", "/v"],
        ):
            ok(member(cli, people, ["service", "update", "-d", "-q", *args, svc]))
        r = member(cli, people, ["service", "update", "-d", "--cap-add", "NET_ADMIN", svc])
        assert r.returncode != 0 and "profile 'member'" in r.stderr, r.stderr
    finally:
        ok(member(cli, people, ["service", "rm", svc]))


def test_works_docker_py_daily_calls(gate, people):
    """docker-py as the member on the unix socket: run detached, logs(stream), exec_run
    (plain, stream, demux), put/get_archive, stats, top, diff, build(fileobj), df,
    prunes, events with filters, commit, wait, remove."""
    import subprocess

    if subprocess.run([PY, "-c", "import docker"], check=False).returncode != 0:
        pytest.skip("no docker-py for the system python")
    script = f"""
import io, tarfile, time, docker
c = docker.DockerClient(base_url={gate.unix_url!r}, version="auto", timeout=60)
ct = c.containers.run("busybox", ["sh", "-c", "echo l1; echo l2; sleep 100"], detach=True,
                      name="r10b-py-{_rand()}")
assert [l for _, l in zip(range(2), ct.logs(stream=True))] == [b"l1\\n", b"l2\\n"]
assert ct.exec_run("echo hi").output == b"hi\\n"
assert b"".join(ct.exec_run(["sh", "-c", "echo a; echo b"], stream=True).output) == b"a\\nb\\n"
assert ct.exec_run(["sh", "-c", "echo a; echo b >&2"], demux=True).output == (b"a\\n", b"b\\n")
buf = io.BytesIO(); t = tarfile.open(fileobj=buf, mode="w")
ti = tarfile.TarInfo("f.txt"); ti.size = 4; t.addfile(ti, io.BytesIO(b"data")); t.close()
assert ct.put_archive("/tmp", buf.getvalue())
assert ct.get_archive("/tmp/f.txt")[1]["size"] == 4
assert "memory_stats" in ct.stats(stream=False)
assert ct.top()["Processes"]
assert ct.diff()
tag = "r10b-pyimg-{_rand()}:1"
c.images.build(fileobj=io.BytesIO(b"FROM busybox\\nRUN echo x > /x\\n"), rm=True, tag=tag)
assert c.df()["Containers"]
c.volumes.create("r10b-pyvol-{_rand()}")
c.volumes.prune(); c.containers.prune(); c.networks.prune(); c.images.prune()
since = int(time.time()) - 30
ev = c.events(since=since, until=int(time.time()) + 1, decode=True,
              filters={{"type": "container", "container": ct.name}})
assert "start" in [e.get("Action") for e in ev]
ct.kill(); assert ct.wait()["StatusCode"] == 137
ct.remove(v=True); c.images.remove(tag)
print("ALL-OK")
"""
    u = people["member"]
    r = subprocess.run(
        ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", PY, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", **BUILD_ENV},
    )
    assert "ALL-OK" in r.stdout, r.stdout + r.stderr


def test_works_container_chores(cli, people, workdir):
    """cp both ways, commit + rmi, wait, container/network/volume prune, rename,
    pause/unpause, restart, update, export, stats, top, diff, port, ps filters."""
    name = f"r10b-ch-{_rand()}"
    net = f"r10b-chn-{_rand()}"
    ok(member(cli, people, ["network", "create", net]))
    src = workdir / "in.txt"
    src.write_text("hello\n")
    src.chmod(0o644)
    ok(
        member(
            cli,
            people,
            [
                "run",
                "-d",
                "--name",
                name,
                "--network",
                net,
                "-p",
                "18090:80",
                "busybox",
                "sleep",
                "300",
            ],
        )
    )
    try:
        ok(member(cli, people, ["cp", str(src), f"{name}:/tmp/"]))
        got = member(cli, people, f"docker cp {name}:/tmp/in.txt - | tar xO", shell=True)
        assert ok(got) == "hello\n"
        img = f"r10b-cm-{_rand()}:1"
        ok(member(cli, people, ["commit", "-c", "ENV X=1", name, img]))
        ok(member(cli, people, ["rmi", img]))
        assert "80/tcp -> 0.0.0.0:18090" in ok(member(cli, people, ["port", name]))
        for args in (["pause"], ["unpause"], ["restart", "-t", "0"], ["update", "--cpus", "1"]):
            ok(member(cli, people, [*args, name]))
        ok(member(cli, people, ["stats", "--no-stream", name]))
        ok(member(cli, people, ["top", name]))
        ok(member(cli, people, ["diff", name]))
        assert name in ok(
            member(cli, people, ["ps", "--filter", "publish=18090", "--format", "{{.Names}}"])
        )
        w = f"r10b-w-{_rand()}"
        ok(member(cli, people, ["run", "-d", "--name", w, "busybox", "sh", "-c", "exit 3"]))
        assert ok(member(cli, people, ["wait", w])).strip() == "3"
        ok(member(cli, people, ["container", "prune", "-f"]))
        ok(member(cli, people, ["network", "create", f"r10b-n-{_rand()}"]))
        assert "Deleted Networks" in ok(member(cli, people, ["network", "prune", "-f"]))
        v = f"r10b-v-{_rand()}"
        ok(member(cli, people, ["volume", "create", v]))
        assert v in ok(member(cli, people, ["volume", "ls", "-q", "-f", "dangling=true"]))
        ok(member(cli, people, ["volume", "rm", v]))
        ok(member(cli, people, ["rename", name, f"{name}-2"]))
        name = f"{name}-2"
    finally:
        member(cli, people, ["rm", "-f", name])
        member(cli, people, ["network", "rm", net])


def test_works_intern_refusals_name_profile_and_limit(cli, people):
    r = intern(cli, people, ["run", "--rm", "-v", "common-data:/x", "busybox", "true"])
    assert r.returncode != 0 and "profile 'intern'" in r.stderr
    r = intern(cli, people, ["run", "--rm", "busybox", "true"])
    assert "run it as a service" in r.stderr, r.stderr


def test_works_docker_context_with_the_tls_bundle(cli, people, member_bundle, gate):
    ctx = f"r10b-{_rand()}"
    b = member_bundle
    spec = f"host={gate.tls_url},ca={b}/ca.pem,cert={b}/cert.pem,key={b}/key.pem"
    ok(member(cli, people, ["context", "create", ctx, "--docker", spec]))
    r = member(
        cli,
        people,
        f"env -u DOCKER_HOST docker --context {ctx} run --rm -i busybox cat",
        input="ctx-in\n",
        shell=True,
    )
    assert ok(r) == "ctx-in\n"
    ok(member(cli, people, ["context", "rm", "-f", ctx]))
