"""Review round 7b: a member (permanent staff) and an intern doing ordinary daily work
through the gate with the real docker CLI (v28) and docker-compose.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what plain
Docker does (or a clear gate refusal where the profile must say no). The
``test_works_*`` tests pass and pin down what behaved like plain Docker.
Nothing leaves loopback; the only image is the local ``busybox``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

OWNER = "dockergate.owner"
MEMBER = "r7b-mem"
INTERN = "r7b-int"
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def people(gate, unix_user):
    out = {}
    for name, short, profile in ((MEMBER, "r7bmem", "member"), (INTERN, "r7bint", "intern")):
        u = unix_user(short)
        gate.dockergate("user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[profile] = u
    return out


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
def workdir(people) -> Iterator[Path]:
    """A directory the member and the intern can read and write."""
    d = Path(tempfile.mkdtemp(prefix="dgt-r7b-"))
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


# =========================================================================== findings


def test_finding_system_prune_works_for_a_member(cli, people):
    """`docker system prune -f` as a member exits 1: the CLI's image-prune step is
    refused ("may not image.prune: admins only") after containers and networks were
    already pruned, and the build-cache step never runs. Plain Docker prunes the
    four kinds and exits 0. A member's image/build-cache prune should answer an
    empty result (or prune only dangling images they built), not 403."""
    name = f"r7b-stopped-{_rand()}"
    ok(member(cli, people, ["create", "--name", name, "busybox", "true"]))
    r = member(cli, people, ["system", "prune", "-f"])
    assert r.returncode == 0, r.stderr
    assert "admins only" not in r.stderr
    assert member(cli, people, ["inspect", name]).returncode != 0  # pruned


def test_finding_anonymous_volumes_belong_to_their_creator(cli, people, direct_client):
    """`docker run -v /data ...` (or an image's VOLUME, or a service mount without a
    source) makes an anonymous volume dockerd creates without the owner label. The
    member cannot list it (`volume ls`), inspect or remove it ("no such volume"),
    `volume prune` skips it and `dockergate purge --user --volumes` misses it: it
    leaks on the host for ever. Plain Docker lists it and lets its user remove it.
    Fix: give anonymous volumes a generated name and the owner label at create, as
    the gate already does for `-v name:/path`."""
    name = f"r7b-anon-{_rand()}"
    ok(member(cli, people, ["run", "-d", "--name", name, "-v", "/data", "busybox", "sleep", "60"]))
    vol = ok(
        member(cli, people, ["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", name])
    ).strip()
    assert vol
    try:
        listed = ok(member(cli, people, ["volume", "ls", "-q"])).split()
        ok(member(cli, people, ["rm", "-f", name]))
        rm = member(cli, people, ["volume", "rm", vol])
        assert vol in listed, listed
        assert rm.returncode == 0, rm.stderr
    finally:
        with contextlib.suppress(Exception):
            direct_client.containers.get(name).remove(force=True)
        with contextlib.suppress(Exception):
            direct_client.volumes.get(vol).remove(force=True)


def test_finding_events_since_replays_own_volume_and_network_events(cli, people):
    """A live `docker events` shows the member's `volume create/destroy` and
    `network create/destroy`, but `docker events --since T --until now` replays
    none of them once the objects are gone (the gate looks the ID up at delivery
    time and drops what it can no longer attribute; secrets, configs and services
    likewise). Plain Docker replays them. Fix: remember the owner of IDs seen in
    create events (or read the owner from the event's attributes where present)."""
    tag = _rand()
    vol, net = f"r7b-ev-v-{tag}", f"r7b-ev-n-{tag}"
    since = str(int(time.time()) - 1)
    ok(member(cli, people, ["volume", "create", vol]))
    ok(member(cli, people, ["network", "create", net]))
    ok(member(cli, people, ["volume", "rm", vol]))
    ok(member(cli, people, ["network", "rm", net]))
    time.sleep(1)
    until = str(int(time.time()) + 1)
    out = ok(member(cli, people, ["events", "--since", since, "--until", until]))
    assert f"volume create {vol}" in out, out
    assert f"volume destroy {vol}" in out, out
    assert f"name={net}" in out, out


def test_finding_memory_reservation_without_a_limit(cli, people, direct_client):
    """`docker run --memory-reservation 3g busybox` (a soft limit, no hard one) works
    on plain Docker. Through the gate it fails with the daemon's puzzling "Minimum
    memory limit can not be less than memory reservation limit, see usage": the
    member never set a limit; the gate filled in the profile's 2g default. Fix:
    raise the filled-in default to the reservation (within max), or refuse with a
    dockergate message naming the default."""
    name = f"r7b-resv-{_rand()}"
    try:
        r = member(cli, people, ["create", "--name", name, "--memory-reservation", "3g", "busybox"])
        assert r.returncode == 0 or "dockergate:" in r.stderr, r.stderr
    finally:
        with contextlib.suppress(Exception):
            direct_client.containers.get(name).remove(force=True)


@pytest.mark.parametrize("verb", ["create", "update"])
def test_finding_unlimited_pids_is_not_silently_replaced(cli, people, direct_client, verb):
    """`--pids-limit -1` (unlimited) exits 0 but the container gets the profile's
    default 4096 (on `update` an explicit 200 is even reset to 4096), whereas
    `--pids-limit 100000` is refused with "at most 32768". Plain Docker makes it
    unlimited. Unlimited is above the member's max: it should be refused the same
    way, not silently changed."""
    name = f"r7b-pids-{_rand()}"
    try:
        if verb == "create":
            r = member(cli, people, ["create", "--name", name, "--pids-limit", "-1", "busybox"])
        else:
            ok(member(cli, people, ["create", "--name", name, "--pids-limit", "200", "busybox"]))
            r = member(cli, people, ["update", "--pids-limit", "-1", name])
        if r.returncode == 0:
            got = direct_client.containers.get(name).attrs["HostConfig"]["PidsLimit"]
            assert got in (None, 0, -1), f"asked unlimited, got {got} without a word"
        else:
            assert "dockergate:" in r.stderr, r.stderr
    finally:
        with contextlib.suppress(Exception):
            direct_client.containers.get(name).remove(force=True)


def test_finding_member_can_untag_an_image_they_committed(cli, people, direct_client):
    """A member may commit/build `proj:1`, may even move that tag, but `docker rmi
    proj:1` (and `docker-compose down --rmi local`) is refused "may not
    image.delete: admins only": members cannot clean up their own images at all.
    Removing a tag that names an image the caller built (dockergate.built-by) is as
    safe as moving it; allow it (without force when other tags/containers use it)."""
    name = f"r7b-cm-{_rand()}"
    tag = f"r7b-own-{_rand()}:1"
    try:
        ok(member(cli, people, ["create", "--name", name, "busybox", "true"]))
        ok(member(cli, people, ["commit", name, tag]))
        r = member(cli, people, ["rmi", tag])
        assert r.returncode == 0, r.stderr
    finally:
        with contextlib.suppress(Exception):
            direct_client.containers.get(name).remove(force=True)
        with contextlib.suppress(Exception):
            direct_client.images.remove(tag, force=True)


def test_finding_docker_info_counts_only_own_containers(cli, people, direct_client):
    """`docker info` shows an intern the engine-wide Containers/Running/Stopped
    counts (every user's), while `docker ps -a` and `system df` show only their
    own: a small leak of other users' activity and a number that disagrees with
    everything else the intern sees. Rewrite the counts per user, as `system df`."""
    name = f"r7b-info-{_rand()}"
    try:
        ok(member(cli, people, ["create", "--name", name, "busybox", "true"]))
        counts = ok(
            intern(
                cli,
                people,
                ["info", "-f", "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}"],
            )
        ).split()
        own = len(ok(intern(cli, people, ["ps", "-aq"])).split())
        assert int(counts[0]) == own, (counts, own)
    finally:
        with contextlib.suppress(Exception):
            direct_client.containers.get(name).remove(force=True)


def test_finding_shared_volume_refusal_names_the_field_once(cli, people, direct_client):
    """The refusal for a writable mount of a read-only shared volume reads
    `(ContainerSpec.Mounts.Source=common-data=common-data)`: the value is doubled.
    Other refusals read `field=value`."""
    created = False
    try:
        direct_client.volumes.get("common-data")
    except Exception:
        direct_client.volumes.create("common-data")
        created = True
    try:
        r = intern(
            cli,
            people,
            [
                "service",
                "create",
                "-d",
                "--name",
                f"r7b-sv-{_rand()}",
                "--mount",
                "type=volume,src=common-data,dst=/c",
                "busybox",
                "true",
            ],
        )
        assert r.returncode != 0 and "dockergate:" in r.stderr, r.stderr
        assert "common-data=common-data" not in r.stderr, r.stderr
    finally:
        if created:
            with contextlib.suppress(Exception):
                direct_client.volumes.get("common-data").remove()


# ====================================================================== what works


def test_works_member_container_day(cli, people, workdir):
    """run -d, exec, cp both ways, logs, top, diff, stats, inspect shows the filled
    defaults and the owner label, update within limits, container prune."""
    name = f"r7b-day-{_rand()}"
    ok(member(cli, people, ["run", "-d", "--name", name, "busybox", "sleep", "120"]))
    conf = json.loads(ok(member(cli, people, ["inspect", name])))[0]
    hc = conf["HostConfig"]
    assert hc["Memory"] == 2 << 30 and hc["MemorySwap"] == 2 << 30
    assert hc["PidsLimit"] == 4096
    assert conf["Config"]["Labels"][OWNER] == MEMBER
    (workdir / "in.txt").write_text("payload\n")
    (workdir / "in.txt").chmod(0o644)
    ok(member(cli, people, ["cp", str(workdir / "in.txt"), f"{name}:/tmp/in.txt"]))
    ok(member(cli, people, ["cp", f"{name}:/tmp/in.txt", str(workdir / "out.txt")]))
    assert (workdir / "out.txt").read_text() == "payload\n"
    assert "A /tmp/in.txt" in ok(member(cli, people, ["diff", name]))
    assert "sleep 120" in ok(member(cli, people, ["top", name]))
    assert name in ok(member(cli, people, ["stats", "--no-stream", name]))
    r = member(cli, people, ["exec", "-e", "X=1", "-w", "/tmp", name, "sh", "-c", "echo $X; pwd"])
    assert ok(r).split() == ["1", "/tmp"]
    ok(member(cli, people, ["update", "--memory", "512m", "--cpus", "2", name]))
    r = member(cli, people, ["update", "--memory", "100g", "--memory-swap", "100g", name])
    assert r.returncode != 0 and "at most 64g" in r.stderr, r.stderr
    ok(member(cli, people, ["rm", "-f", name]))


def test_works_tty_exec_keeps_exit_code(cli, people):
    name = f"r7b-tty-{_rand()}"
    ok(member(cli, people, ["run", "-d", "--name", name, "busybox", "sleep", "60"]))
    r = member(
        cli,
        people,
        f"""script -qec "docker exec -it {name} sh -c 'echo tty-ok; exit 3'" /dev/null""",
        shell=True,
    )
    assert r.returncode == 3 and "tty-ok" in r.stdout, (r.returncode, r.stdout, r.stderr)
    ok(member(cli, people, ["rm", "-f", name]))


def test_works_logs_follow_until_exit(cli, people):
    name = f"r7b-logs-{_rand()}"
    script = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    ok(member(cli, people, ["run", "-d", "--name", name, "busybox", "sh", "-c", script]))
    out = ok(member(cli, people, ["logs", "-f", name], timeout=20))
    assert out.split() == ["line1", "line2", "line3"]
    ok(member(cli, people, ["rm", name]))


def test_works_ps_filters(cli, people):
    tag = _rand()
    net, vol, name = f"r7b-fn-{tag}", f"r7b-fv-{tag}", f"r7b-f-{tag}"
    ok(member(cli, people, ["network", "create", net]))
    ok(member(cli, people, ["volume", "create", vol]))
    ok(
        member(
            cli,
            people,
            [
                "create",
                "--name",
                name,
                "--label",
                "team=x",
                "--network",
                net,
                "-v",
                f"{vol}:/v",
                "busybox",
                "true",
            ],
        )
    )
    for flt in (
        f"name={name}",
        "label=team=x",
        f"network={net}",
        f"volume={vol}",
        "status=created",
    ):
        got = ok(member(cli, people, ["ps", "-a", "--filter", flt, "--format", "{{.Names}}"]))
        assert name in got.split(), (flt, got)
    ok(member(cli, people, ["rm", name]))
    ok(member(cli, people, ["network", "rm", net]))
    ok(member(cli, people, ["volume", "rm", vol]))


def test_works_classic_build_with_build_arg_and_stdin(cli, people, workdir, direct_client):
    ctx = workdir / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        'FROM busybox\nARG G=hi\nRUN echo "$G" > /g\nCMD ["cat","/g"]\n'
    )
    tag = f"r7b-app-{_rand()}:1"
    try:
        ok(
            member(
                cli,
                people,
                ["build", "-q", "-t", tag, "--network", "none", "--build-arg", "G=yo", str(ctx)],
                env=BUILD_ENV,
                timeout=120,
            )
        )
        assert ok(member(cli, people, ["run", "--rm", tag])).strip() == "yo"
        r = member(
            cli,
            people,
            "printf 'FROM busybox\\nRUN true\\n' | docker build -q -",
            shell=True,
            env=BUILD_ENV,
            timeout=120,
        )
        ok(r)
    finally:
        with contextlib.suppress(Exception):
            direct_client.images.remove(tag, force=True)


def test_works_compose_up_and_down(cli, people, workdir):
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed")
    proj = workdir / f"p{_rand()}"
    proj.mkdir()
    proj.chmod(0o777)
    (proj / "docker-compose.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  app:\n"
        "    image: busybox\n"
        "    command: sh -c 'echo started; sleep 120'\n"
        "    stop_grace_period: 1s\n"  # sleep as pid 1 ignores SIGTERM: down waits this
        "    volumes: [pdata:/data]\n"
        "    networks: [pnet]\n"
        "volumes:\n  pdata: {}\n"
        "networks:\n  pnet: {}\n"
    )
    ok(member(cli, people, f"cd {proj} && docker-compose up -d", shell=True, timeout=120))
    try:
        r = member(cli, people, f"cd {proj} && docker-compose exec -T app echo inside", shell=True)
        assert "inside" in ok(r)
    finally:
        ok(member(cli, people, f"cd {proj} && docker-compose down -v", shell=True, timeout=120))


def test_works_intern_stack_with_secret_config_network(cli, people, workdir):
    d = workdir / "stack"
    d.mkdir()
    d.chmod(0o777)
    (d / "pw.txt").write_text("pw\n")
    (d / "conf.txt").write_text("c\n")
    (d / "stack.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        "    command: sleep 120\n"
        "    networks: [back]\n"
        "    volumes: [data:/data]\n"
        "    secrets: [pw]\n"
        "    configs: [{source: conf, target: /conf}]\n"
        "    deploy: {resources: {limits: {memory: 256M}}}\n"
        "networks:\n  back: {driver: overlay}\n"
        "volumes:\n  data: {}\n"
        "secrets:\n  pw: {file: ./pw.txt}\n"
        "configs:\n  conf: {file: ./conf.txt}\n"
    )
    st = f"r7b{_rand()}"
    ok(intern(cli, people, ["stack", "deploy", "-c", str(d / "stack.yml"), st], timeout=120))
    try:
        spec = json.loads(ok(intern(cli, people, ["service", "inspect", f"{st}_web"])))[0]["Spec"]
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==worker"]
        assert spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 256 << 20
        assert f"{st}_back" in ok(intern(cli, people, ["network", "ls"]))
        assert f"{st}_pw" in ok(intern(cli, people, ["secret", "ls"]))
    finally:
        ok(intern(cli, people, ["stack", "rm", st], timeout=120))


def test_works_intern_refusals_are_clear(cli, people):
    r = intern(cli, people, ["run", "--rm", "busybox", "true"])
    assert "run it as a service" in r.stderr, r.stderr
    r = intern(
        cli,
        people,
        ["service", "create", "-d", "--replicas", "3", "--limit-memory", "8g", "busybox", "true"],
    )
    assert "memory quota" in r.stderr and "the quota is 16g" in r.stderr, r.stderr
    r = intern(cli, people, ["service", "create", "-d", "--replicas", "20", "busybox", "true"])
    assert "quota.containers" in r.stderr and "service tasks included" in r.stderr, r.stderr


def test_works_anonymous_volumes_are_the_members_and_go_with_rm(
    cli, people, direct_client, workdir
):
    """The neighbour of the anonymous-volume finding: an image's ``VOLUME`` and a
    one-part ``Binds`` entry are labelled too, and ``run --rm`` still removes them."""
    tag = f"r7b-vol-img-{_rand()}:1"
    (workdir / "Dockerfile").write_text("FROM busybox\nVOLUME /cache\n")
    ok(member(cli, people, ["build", "-q", "-t", tag, str(workdir)], env=BUILD_ENV, timeout=120))
    name = f"r7b-anon2-{_rand()}"
    try:
        ok(member(cli, people, ["create", "--name", name, "-v", "/data", tag, "true"]))
        mounts = direct_client.api.inspect_container(name)["Mounts"]
        assert {m["Destination"] for m in mounts} == {"/data", "/cache"}, mounts
        for m in mounts:
            labels = direct_client.volumes.get(m["Name"]).attrs["Labels"] or {}
            assert labels.get(OWNER) == MEMBER, (m, labels)
        ok(member(cli, people, ["rm", "-v", name]))
        left = {v.name for v in direct_client.volumes.list()}
        assert not {m["Name"] for m in mounts} & left, "rm -v left the anonymous volumes"
        before = {v.name for v in direct_client.volumes.list()}
        ok(member(cli, people, ["run", "--rm", "-v", "/scratch", "busybox", "true"]))
        assert {v.name for v in direct_client.volumes.list()} == before
    finally:
        with contextlib.suppress(Exception):
            direct_client.containers.get(name).remove(force=True, v=True)
        with contextlib.suppress(Exception):
            direct_client.images.remove(tag, force=True)
