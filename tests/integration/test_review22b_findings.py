"""Review round 22b: everything a member types in a week, and what docker-py scripts do
(users, not attackers).

A member of the research team with the docker CLI (v28) over the gate's unix socket:
``ps`` with every filter, ``--format``/``--size``, ``inspect`` of mixed kinds,
``logs`` options, ``top``/``port``/``diff``/``wait``/``export``, ``cp`` both ways
(a 20 MB file, a tar of many files), ``run`` with ``--init``, ``--read-only --tmpfs``,
``--user -w``, ``--env-file``, ``--label-file``, ``--cidfile``, a name reused after
``rm``, ``--restart on-failure:3``, ``exec -d/-u/-e``, prunes with ``until``,
``events --format json``, ``system df -v``; a pty (``run -it`` resized while it
runs, ``attach --detach-keys``, ``--sig-proxy``); docker-py scripts (run detach +
remove, logs follow, attach_socket, exec socket/demux, archives, events, df, stats,
wait with a timeout and a condition, low-level host config, services). Compared
with the private engine where it matters.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what the member
should get. The ``test_works_*`` tests pass and pin what held. The shipped profiles
(the session gate); only the local ``busybox`` image; loopback only.

Timings seen while sweeping (2 vCPU VM, 5-12 load from other sessions; gate vs the
engine directly), none over 2x except the last, which is small in absolute terms:
``ps -a``/``inspect`` of 30 containers 0.02-0.04 s both; ``stats --no-stream -a``
2.0-2.5 s both; ``cp`` 100 MB in 0.41-0.44 s vs 0.41, out 0.38-0.53 vs 0.30-0.40;
``cp`` of 2 000 files in 0.35-0.93 vs 0.33-0.43; ``export`` 0.07 vs 0.06; classic
build with a 100 MB context 5.0-5.6 vs 5.0-6.0 (no cache); 10 parallel ``run -d``
1.5-1.8 vs 0.85-1.2 (creates of one user are serialised for the quota); compose v1
``up -d --scale web=10`` 5.4-5.9 vs 3.6; ``events --since 10m --until 0s`` (256
events) 0.15-0.18 vs 0.02-0.05 (a lookup per event). Over TLS the CLI's ``cp`` out
of 100 MB takes ~2 s against 0.4 s on the socket, but a plain Python TLS proxy in
front of the engine does the same: not the gate's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

OWNER = "dockergate.owner"
MEMBER = "r22b-m"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def member(gate, unix_user):
    u = unix_user("r22bm")
    gate.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(u.uid))
    return u


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    flt = {"label": f"{OWNER}={MEMBER}"}
    for s in direct_client.services.list(filters=flt):
        with contextlib.suppress(Exception):
            s.remove()
    for c in direct_client.containers.list(all=True, filters=flt):
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)
    for kind in ("volumes", "networks"):
        for o in getattr(direct_client, kind).list(filters=flt):
            with contextlib.suppress(Exception):
                o.remove()
    for img in direct_client.images.list():
        for tag in img.tags:
            if tag.startswith("r22b"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


@pytest.fixture
def workdir(member) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r22b-"))
    os.chown(d, member.uid, member.gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ok(r) -> str:
    assert r.returncode == 0, f"{r.args}\nrc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def _own(path: Path, u) -> Path:
    for p in (path, *path.rglob("*")) if path.is_dir() else (path,):
        os.chown(p, u.uid, u.gid)
    return path


def _pty(argv: list[str], env: dict[str, str], steps, timeout: float = 25.0):
    """Run ``argv`` on a pty of 40x132. ``steps``: (seconds, bytes to type or a
    (rows, cols) resize). Returns (output, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    out, t0, todo = b"", time.monotonic(), list(steps)
    while time.monotonic() - t0 < timeout:
        if todo and time.monotonic() - t0 >= todo[0][0]:
            what = todo.pop(0)[1]
            if isinstance(what, tuple):
                fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", *what, 0, 0))
            else:
                os.write(fd, what)
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def _user_argv(u, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", *argv]


_PY: dict[int, str] = {}


def _python(u) -> str:
    """The test venv's python (docker-py 7) when the user can run it, else Debian's."""
    if u.uid not in _PY:
        _PY[u.uid] = "/usr/bin/python3"
        for py in (sys.executable, "/usr/bin/python3"):
            r = subprocess.run(
                _user_argv(u, py, "-c", "import docker"), capture_output=True, check=False
            )
            if r.returncode == 0:
                _PY[u.uid] = py
                break
    return _PY[u.uid]


PRELUDE = """
import io, json, socket, sys, tarfile, time
import docker
c = docker.DockerClient(base_url=sys.argv[1], version="auto", timeout=20)
api = c.api
def step(name, fn):
    try:
        r = fn()
        print(json.dumps({"call": name, "ok": True, "r": r}, default=repr))
        return r
    except Exception as e:
        print(json.dumps({"call": name, "ok": False, "exc": type(e).__name__,
                          "msg": str(e)[:500]}))
"""


def pyrun(u, body: str, base: str, timeout: float = 90) -> dict[str, dict]:
    r = subprocess.run(
        _user_argv(u, _python(u), "-c", PRELUDE + textwrap.dedent(body), base),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"},
        check=False,
    )
    out: dict[str, dict] = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            out.setdefault(j["call"], j)
    assert out, r.stdout + r.stderr
    return out


# =========================================================================== works


def test_works_member_week_cli(cli, member, workdir, direct_client):
    """The CLI sweep, in one container family: ps filters and templates, inspect of
    mixed kinds, logs options, top/diff/wait/export, cp both ways, run flags, exec
    flags, prune until, events as JSON, system df -v."""
    m, t = member, _rand()

    def d(*args: str, timeout: float = 60):
        return cli(list(args), user=m, timeout=timeout)

    net, vol = f"r22b-net-{t}", f"r22b-vol-{t}"
    ok(d("network", "create", net))
    web = f"r22b-web-{t}"
    ok(d("run", "-d", "--name", web, "--label", "app=web", "--network", net, "-v",
         f"{vol}:/data", "--health-cmd", "true", "--health-interval", "1s", "busybox",
         "sh", "-c", "i=0; while true; do i=$((i+1)); echo out$i; echo err$i >&2; "
         "sleep 0.2; done"))  # fmt: skip
    ex = f"r22b-ex-{t}"
    assert (
        d("run", "--name", ex, "--label", "app=job", "busybox", "sh", "-c", "exit 3").returncode
        == 3
    )
    deadline = time.time() + 15
    while "healthy" not in ok(d("ps", "--filter", f"name={web}", "--format", "{{.Status}}")):
        assert time.time() < deadline, "no health status"
        time.sleep(0.5)

    def names(*flt: str) -> set[str]:
        args = ["ps", "-a", "--format", "{{.Names}}"]
        for f in flt:
            args += ["--filter", f]
        return set(ok(d(*args)).split())

    assert names("label=app=web") == {web}
    assert names("label=app") >= {web, ex}
    assert names("status=exited", f"name={t}") == {ex}
    assert names("exited=3") >= {ex}
    assert names(f"volume={vol}") == {web}
    assert names("volume=/data") >= {web}
    assert names(f"network={net}") == {web}
    assert names("health=healthy") >= {web}
    assert ex in names(f"since={web}") and web in names(f"before={ex}")
    row = json.loads(ok(d("ps", "--filter", f"name={web}", "--format", "json")).splitlines()[0])
    assert row["Names"] == web and "app=web" in row["Labels"], row
    table = ok(d("ps", "-a", "--size", "--filter", f"name={t}", "--format",
                 "table {{.Names}}\t{{.Size}}\t{{.Label \"app\"}}"))  # fmt: skip
    assert "virtual" in table and "job" in table, table

    mixed = ok(d("inspect", "--format", "{{.Name}}", web, vol, net)).split()
    assert mixed == [f"/{web}", vol, net], mixed
    assert ok(d("inspect", "--type", "volume", "-f", "{{.Name}}", vol)).strip() == vol

    r = d("logs", "-t", "--tail", "2", web)
    assert "Z out" in r.stdout and "Z err" in r.stderr, (r.stdout, r.stderr)
    r = d("logs", "--since", "1s", web)
    assert "out" in r.stdout and "err" in r.stderr, (r.stdout[-200:], r.stderr[-200:])
    follow = cli(f"timeout 2 docker logs -f --tail 0 {web} 2>/dev/null", shell=True, user=m)
    assert follow.stdout.count("out") >= 3, follow.stdout

    assert "sh -c" in ok(d("top", web))
    ok(d("exec", web, "sh", "-c", "echo x > /newfile"))
    assert "A /newfile" in ok(d("diff", web))
    ok(d("run", "-d", "--name", f"r22b-w-{t}", "busybox", "sh", "-c", "sleep 1; exit 7"))
    assert ok(d("wait", f"r22b-w-{t}")).strip() == "7"
    r = cli(f"docker export {web} | tar tf - | grep -c newfile", shell=True, user=m)
    assert r.stdout.strip() == "1", r.stdout + r.stderr

    big = workdir / "big.bin"
    with big.open("wb") as f:
        f.write(os.urandom(20 << 20))
    many = workdir / "many"
    many.mkdir()
    for i in range(500):
        (many / f"f{i}").write_text(str(i))
    _own(workdir, m)
    ok(d("cp", str(big), f"{web}:/big.bin"))
    ok(d("cp", f"{web}:/big.bin", str(workdir / "back.bin")))
    assert (workdir / "back.bin").read_bytes() == big.read_bytes()
    ok(d("cp", str(many), f"{web}:/many"))
    assert ok(d("exec", web, "sh", "-c", "ls /many | wc -l")).strip() == "500"
    r = cli(f"docker cp {web}:/many - | tar tf - | grep -c '^many/f'", shell=True, user=m)
    assert r.stdout.strip() == "500", r.stdout + r.stderr

    (workdir / "env.list").write_text("A=1\nB=two words\n# comment\n")
    (workdir / "labels.list").write_text("team=ml\n")
    _own(workdir, m)
    out = ok(d("run", "--rm", "--init", "--read-only", "--tmpfs", "/scratch:size=8m",
               "--user", "1000:1000", "-w", "/etc", "--env-file",
               str(workdir / "env.list"), "--label-file", str(workdir / "labels.list"),
               "busybox", "sh", "-c",
               "touch /scratch/a && echo tmpfs-ok; touch /x 2>/dev/null || echo ro-ok; "
               "id -u; pwd; echo $A $B; cat /proc/1/comm"))  # fmt: skip
    assert out.split("\n")[:6] == ["tmpfs-ok", "ro-ok", "1000", "/etc", "1 two words",
                                   "docker-init"], out  # fmt: skip
    cid_file = workdir / "cid"
    reuse = f"r22b-reuse-{t}"
    ok(d("run", "-d", "--cidfile", str(cid_file), "--name", reuse, "busybox", "true"))
    assert len(cid_file.read_text()) == 64
    ok(d("rm", "-f", reuse))
    assert ok(d("run", "--name", reuse, "busybox", "echo", "again")).strip() == "again"
    rs = f"r22b-rs-{t}"
    ok(d("run", "-d", "--name", rs, "--restart", "on-failure:3", "busybox", "false"))

    ok(d("exec", "-d", web, "sh", "-c", "echo d > /tmp/d"))
    out = ok(d("exec", "-u", "1000", "-e", "X=1", "-w", "/tmp", web, "sh", "-c",
               "sleep 0.3; id -u; echo $X; pwd; cat /tmp/d"))  # fmt: skip
    assert out.split() == ["1000", "1", "/tmp", "d"], out
    r = d("exec", "--privileged", web, "true")
    assert r.returncode != 0 and "dockergate: profile 'member'" in r.stderr, r.stderr

    assert direct_client.api.inspect_container(rs)["RestartCount"] >= 1
    r = d("container", "prune", "-f", "--filter", "until=1h")
    assert r.returncode == 0 and ex in ok(d("ps", "-a", "--format", "{{.Names}}")), r.stderr
    assert "Deleted Containers" in ok(d("container", "prune", "-f", "--filter", "until=0s"))
    assert ex not in ok(d("ps", "-a", "--format", "{{.Names}}"))
    t0 = int(time.time()) - 1
    assert d("run", "--rm", "busybox", "sh", "-c", "exit 4").returncode == 4
    ev = ok(d("system", "events", "--since", str(t0), "--until", str(int(time.time()) + 1),
              "--filter", "type=container", "--filter", "event=die", "--format", "json"))  # fmt: skip
    codes = [json.loads(x)["Actor"]["Attributes"]["exitCode"] for x in ev.splitlines()]
    assert "4" in codes, ev
    dfv = ok(d("system", "df", "-v"))
    assert web in dfv and vol in dfv, dfv


def test_works_pty_resize_attach_and_sig_proxy(cli, member):
    """``run --rm -it`` on a pty, resized while it runs (POST /containers/{id}/resize);
    ``exec -it`` likewise; ``attach --detach-keys`` leaves the container running;
    ``attach``'s signal proxy delivers SIGINT."""
    m, t = member, _rand()
    env = cli.env("unix", user=m)
    out, code = _pty(
        _user_argv(m, DOCKER, "run", "--rm", "-it", "busybox", "sh"),
        env,
        [(1.0, (50, 100)), (2.0, b"stty size; exit 5\r")],
    )
    assert code == 5 and "50 100" in out, (code, out)
    c = f"r22b-at-{t}"
    ok(cli(["run", "-dit", "--name", c, "busybox", "sh"], user=m))
    out, code = _pty(
        _user_argv(m, DOCKER, "exec", "-it", c, "sh"),
        env,
        [(1.0, (30, 90)), (2.0, b"stty size; exit 6\r")],
    )
    assert code == 6 and "30 90" in out, (code, out)
    out, code = _pty(
        _user_argv(m, DOCKER, "attach", "--detach-keys", "ctrl-x,x", c), env, [(1.0, b"\x18x")]
    )
    assert "read escape sequence" in out, (code, out)
    assert ok(cli(["inspect", "-f", "{{.State.Status}}", c], user=m)).strip() == "running"
    sp = f"r22b-sp-{t}"
    ok(cli(["run", "-d", "--name", sp, "busybox", "sh", "-c",
            "trap 'echo got-int; exit 9' INT; while true; do sleep 0.2; done"], user=m))  # fmt: skip
    p = cli.popen(["attach", sp], user=m)
    time.sleep(1.5)
    p.send_signal(2)
    stdout, _ = p.communicate(timeout=20)
    assert "got-int" in stdout and p.returncode == 9, (p.returncode, stdout)


def test_works_docker_py_scripts(gate, member):
    """What the team's docker-py scripts do, as the member."""
    res = pyrun(
        member,
        """
        t = str(int(time.time() * 1000))[-6:]
        step("ping", c.ping)
        step("version", lambda: c.version()["ApiVersion"])
        ct = c.containers.run("busybox", "sh -c 'for i in 1 2 3; do echo l$i; sleep 0.2; done'",
                              detach=True, remove=True)
        step("logs.follow", lambda: b"".join(ct.logs(stream=True, follow=True)).decode())
        k = c.containers.run("busybox", "sleep 300", detach=True, name="r22b-py-" + t,
                             labels={"team": "ml"})
        step("list.label", lambda: [x.name for x in c.containers.list(filters={"label": "team=ml"})])
        def ex_sock():
            e = api.exec_create(k.id, "sh -c 'echo out; echo err >&2; cat'", stdin=True)
            s = api.exec_start(e["Id"], socket=True)
            s._sock.sendall(b"hello\\n"); s._sock.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                b = s._sock.recv(4096)
                if not b: break
                data += b
            return data.decode(errors="replace")
        step("exec.socket", ex_sock)
        step("exec.demux", lambda: [[None if p is None else p.decode() for p in x] for x in
            k.exec_run("sh -c 'echo a; echo b >&2'", stream=True, demux=True).output])
        def attach():
            a = c.containers.run("busybox", "sh -c 'read x; echo got-$x'", detach=True,
                                 stdin_open=True, name="r22b-pya-" + t)
            s = a.attach_socket(params={"stdin": 1, "stream": 1, "stdout": 1})
            s._sock.sendall(b"zz\\n"); s._sock.settimeout(10)
            data = b""
            while True:
                b = s._sock.recv(4096)
                if not b: break
                data += b
            a.remove(force=True)
            return data.decode(errors="replace")
        step("attach", attach)
        def arch():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                d = b"x" * (5 << 20); ti = tarfile.TarInfo("f"); ti.size = len(d)
                tf.addfile(ti, io.BytesIO(d))
            k.put_archive("/tmp", buf.getvalue())
            bits, st = k.get_archive("/tmp/f")
            return [st["size"], sum(len(b) for b in bits) > st["size"]]
        step("archive", arch)
        step("df", lambda: sorted(c.df()))
        step("stats", lambda: "memory_stats" in api.stats(k.id, stream=False))
        def ev():
            t0 = int(time.time()) - 1
            x = c.containers.run("busybox", "true", detach=True)
            x.wait(); x.remove()
            return [e["Action"] for e in c.events(decode=True, since=t0, until=int(time.time()) + 1,
                    filters={"type": "container", "event": ["start", "die"]})]
        step("events", ev)
        def wait_timeout():
            w = c.containers.run("busybox", "sleep 30", detach=True)
            try:
                w.wait(timeout=1)
            except Exception as e:
                return type(e).__name__
            finally:
                w.remove(force=True)
        step("wait.timeout", wait_timeout)
        step("wait.cond", lambda: c.containers.run("busybox", "sh -c 'sleep 1; exit 2'",
                                                   detach=True).wait(condition="not-running"))
        def low():
            hc = api.create_host_config(mem_limit="256m", binds=["r22b-pyv-" + t + ":/v"])
            cc = api.create_container("busybox", "true", host_config=hc)
            i = api.inspect_container(cc["Id"])["HostConfig"]
            api.remove_container(cc["Id"], v=True)
            return [i["Memory"], i["Binds"]]
        step("low", low)
        step("swarm.id", lambda: bool(c.swarm.attrs.get("ID")))
        def svc():
            s = c.services.create("busybox", ["sleep", "300"], name="r22b-svc-" + t)
            r = s.attrs["Spec"]["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"]
            s.remove()
            return r
        step("service", svc)
        k.remove(force=True)
        """,
        gate.unix_url,
    )
    bad = {k: v for k, v in res.items() if not v.get("ok")}
    assert not bad, json.dumps(bad, indent=1)
    assert res["logs.follow"]["r"] == "l1\nl2\nl3\n"
    assert res["list.label"]["r"][0].startswith("r22b-py-")
    assert "out" in res["exec.socket"]["r"] and "hello" in res["exec.socket"]["r"]
    assert sorted(res["exec.demux"]["r"], key=str) == [["a\n", None], [None, "b\n"]]
    assert "got-zz" in res["attach"]["r"]
    assert res["archive"]["r"] == [5 << 20, True]
    assert {"start", "die"} <= set(res["events"]["r"])
    assert res["wait.timeout"]["r"] in ("ConnectionError", "ReadTimeout", "ReadTimeoutError")
    assert res["wait.cond"]["r"]["StatusCode"] == 2
    assert res["low"]["r"][0] == 256 << 20
    assert res["service"]["r"] == 2 << 30


# ======================================================================== findings


def test_finding_a_tag_the_member_made_cannot_be_removed_or_reused(
    cli, member, workdir, direct_client
):
    """Severity Medium (a confusing dead end in a normal workflow). As the member:
    ``docker tag busybox r22b-proj:1`` (answered OK: a new name), then ``docker rmi
    r22b-proj:1`` is refused ("images are shared, and only those you built or
    committed are yours to remove"), and ``DOCKER_BUILDKIT=0 docker build -t
    r22b-proj:1 .`` is refused too ("that tag exists on an image you did not build
    ... choose a new tag"). The member made the name and can neither undo it (a typo
    stays in everyone's ``docker images`` until an admin removes it) nor build their
    project under it, which is exactly why people tag a base image with their
    project's name first. Cause: tag ownership is read from the image's
    ``dockergate.built-by`` label, and busybox has none; the gate does not remember
    who created a *name*. Expected: a tag a member created through the gate is theirs
    to remove (untag, without -f) and to move with their own builds, as a tag on an
    image they built is."""
    name = f"r22b-proj-{_rand()}:1"
    ok(cli(["tag", "busybox", name], user=member))
    try:
        (workdir / "Dockerfile").write_text("FROM busybox\nLABEL r22b=1\n")
        _own(workdir, member)
        build = cli(
            ["build", "-q", "-t", name, str(workdir)],
            user=member,
            env={"DOCKER_BUILDKIT": "0"},
            timeout=90,
        )
        rmi = cli(["rmi", name], user=member)
        assert build.returncode == 0, build.stderr
        assert rmi.returncode == 0, rmi.stderr
    finally:
        with contextlib.suppress(Exception):
            direct_client.images.remove(name)


def test_finding_network_ls_omits_the_builtin_networks(cli, member, direct_client):
    """Severity Low (wrong output). ``docker network ls`` as a member lists only the
    networks they created: Docker's built-in ``none`` and ``host`` (``bridge`` on an
    engine that has it, Swarm's ``ingress``) are missing, and ``docker network ls
    --filter type=builtin`` prints an empty table, although ``docker network inspect
    none`` works (review 10b's fix) and the member's containers run on them. Scripts
    that look a network up by listing (``client.networks.list(names=["bridge"])``,
    ``docker network ls -q -f name=host``) find nothing. Review 10b reported both the
    inspect and the list; only inspect was fixed. Expected: the built-in networks
    (no owner label, nothing secret, already inspectable) are listed for everyone,
    as inspect shows them."""
    builtin = {
        n.name
        for n in direct_client.networks.list()
        if n.name in ("none", "host", "bridge", "ingress")
    }
    assert builtin, "the engine has no built-in network"
    listed = set(ok(cli(["network", "ls", "--format", "{{.Name}}"], user=member)).split())
    typed = set(
        ok(
            cli(["network", "ls", "-f", "type=builtin", "--format", "{{.Name}}"], user=member)
        ).split()
    )
    inspected = ok(cli(["network", "inspect", "-f", "{{.Name}}", "none"], user=member)).strip()
    assert inspected == "none"
    assert builtin - {"ingress"} <= listed, (builtin, listed)
    assert builtin - {"ingress"} <= typed, (builtin, typed)


def test_finding_events_replay_drops_volume_mounts_of_removed_containers(cli, member):
    """Severity Low (wrong output). As the member: ``docker volume create v``; ``docker
    run --rm -v v:/d busybox true``; then ``docker events --since <before> --until
    <now> --filter volume=v`` shows ``create create`` through the gate, where the
    engine shows ``create create mount unmount`` (a live ``docker events`` does show
    the mount and unmount). A volume's mount/unmount event carries the container's ID
    only, and the gate shows it if that container resolves to the caller now; a
    ``--rm`` job's container is gone by the time anyone replays, so "which jobs used
    my dataset volume this week" (``docker events --since 168h --filter volume=...``)
    answers none of the ``--rm`` ones, which is how batch jobs run. Expected: the
    member's own containers' mount/unmount events replay like their container events
    (those carry the owner label and do replay), e.g. by remembering the container
    IDs the user removed through the gate or that the same replay showed being
    created by the user."""
    vol = f"r22b-evv-{_rand()}"
    t0 = int(time.time()) - 1
    ok(cli(["volume", "create", vol], user=member))
    ok(cli(["run", "--rm", "-v", f"{vol}:/d", "busybox", "true"], user=member))
    until = str(int(time.time()) + 1)
    args = ["events", "--since", str(t0), "--until", until, "--filter", f"volume={vol}",
            "--format", "{{.Action}}"]  # fmt: skip
    direct = ok(cli(args, listener="direct")).split()
    gated = ok(cli(args, user=member)).split()
    assert "mount" in direct and "unmount" in direct, direct
    assert gated == direct, (gated, direct)
