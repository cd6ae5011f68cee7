"""Review round 19a: did today's changes break ordinary work? (users, not attackers)

Today's commits identify unix peers in containers by the container's owner, count
connections per user, cap json-file/local logs, give members a CPU default of 4,
cap pids at half of the node's processes, cap execs per container, add secret and
config quotas, read docker-py's one-part Binds as anonymous volumes and make
``user cert --out`` refuse links and other people's directories. This round uses
them as people do: an admin's Portainer-like container with the gate's socket
bind-mounted (the host's static docker CLI inside busybox), a member's day with the
docker CLI (v28), Debian's docker-compose (v1) and a stack, an intern's refusals,
and the admin's ``dockergate`` commands.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what the user
should get. The ``test_works_*`` tests pass and pin the flows that held. The shipped
profiles (the session gate); only the local ``busybox`` image; loopback only.
"""

from __future__ import annotations

import concurrent.futures
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

pytestmark = pytest.mark.timeout(180)

OWNER = "dockergate.owner"
MEMBER = "r19a-m"
INTERN = "r19a-i"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def people(gate, unix_user):
    out = {}
    for name, short, profile in ((MEMBER, "r19am", "member"), (INTERN, "r19ai", "intern")):
        u = unix_user(short)
        gate.dockergate("user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[profile] = u
    return out


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    for who in (MEMBER, INTERN, "root"):
        flt = {"label": f"{OWNER}={who}"}
        for s in direct_client.services.list(filters=flt):
            if s.name.startswith("r19a"):
                with contextlib.suppress(Exception):
                    s.remove()
    time.sleep(1)
    for c in direct_client.containers.list(all=True):
        if c.name.startswith("r19a") or (c.labels or {}).get(OWNER) in (MEMBER, INTERN):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
    for kind in ("volumes", "networks"):
        for who in (MEMBER, INTERN):
            for o in getattr(direct_client, kind).list(filters={"label": f"{OWNER}={who}"}):
                with contextlib.suppress(Exception):
                    o.remove()


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r19a-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ok(r) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def _file(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text)
    p.chmod(0o644)
    return p


def _dg(gate, *args: str, user=None, cwd=None) -> subprocess.CompletedProcess[str]:
    argv = [*dockergate_argv(), "--state-dir", str(gate.state_dir), *args]
    env = {**os.environ, "DOCKERGATE_UPSTREAM": gate.upstream}
    if user is not None:
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", *argv]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd, env=env
    )


# ============================================ an admin's container with the socket


@pytest.mark.parametrize("pid_host", [False, True], ids=["own-pid-ns", "pid-host"])
def test_works_admin_tool_container_with_the_gate_socket(cli, gate, people, pid_host):
    """An admin's Portainer-like container (created through the gate as root, the
    gate's socket on /var/run/docker.sock, the host's static docker CLI bound in),
    also with ``--pid host`` as monitoring agents run: inside it, `docker ps -a`
    sees a member's container (it is the admin), `docker exec` into another
    container, `docker logs -f`, `docker events`, `docker run --rm`, and 12 `docker
    ps` at once all work."""
    tag = _rand()
    member_c = ok(
        cli(["run", "-d", "--name", f"r19a-mc-{tag}", "busybox", "sh", "-c",
             "echo hello-from-member; sleep 120"], user=people["member"])
    ).strip()  # fmt: skip
    tool = f"r19a-tool-{tag}"
    args = ["run", "-d", "--name", tool, "-v", f"{gate.socket}:/var/run/docker.sock",
            "-v", f"{DOCKER}:/usr/local/bin/docker:ro", "-e", "HOME=/tmp"]  # fmt: skip
    if pid_host:
        args += ["--pid", "host"]
    ok(cli([*args, "busybox", "sleep", "120"]))
    script = f"""
        set -e
        docker ps -a --format '{{{{.Names}}}}' | grep -c r19a-mc-{tag}
        docker exec r19a-mc-{tag} echo exec-ok
        timeout 3 docker logs -f r19a-mc-{tag} || true
        docker events --since 60s --until 1s --filter container=r19a-mc-{tag} | grep -c start
        docker run --rm busybox echo run-ok
        for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
          (docker ps -q > /tmp/ps$i 2>&1; echo $? >> /tmp/rc) &
        done
        wait
        echo rcs $(sort /tmp/rc | uniq -c | tr '\\n' ' ')
        cat /tmp/ps* | grep -i error || true
    """
    r = cli(["exec", tool, "sh", "-c", script], listener="direct", timeout=90)
    out = ok(r)
    assert "exec-ok" in out and "hello-from-member" in out and "run-ok" in out, out
    assert "rcs 12 0" in out, out
    assert member_c


# ============================================================== a member's day


def test_works_member_day_cli(cli, people, direct_client):
    """As a member with the docker CLI: `docker run -d`, five `docker exec` at once
    into it, `exec -it` and `run -it` under a pty, `logs -f`, `run --log-opt
    max-size=10m --log-opt max-file=3` kept as given, `run --pids-limit 200`,
    `docker update --memory/--cpus/--pids-limit`, and 20 parallel `docker ps`."""
    m = people["member"]
    tag = _rand()
    c = f"r19a-day-{tag}"
    ok(cli(["run", "-d", "--name", c, "busybox", "sh", "-c", "while true; do echo tick; "
            "sleep 1; done"], user=m))  # fmt: skip

    def one_exec(i: int):
        return cli(["exec", c, "sh", "-c", f"echo exec-{i}; sleep 2"], user=m, timeout=40)

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        outs = list(pool.map(one_exec, range(5)))
    for i, r in enumerate(outs):
        assert f"exec-{i}" in ok(r)
    r = cli(f"script -qec \"docker exec -it {c} sh -c 'tty; exit 3'\" /dev/null", shell=True,
            user=m, timeout=30)  # fmt: skip
    assert "/dev/pts" in r.stdout and r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    r = cli("script -qec \"docker run --rm -it busybox sh -c 'tty; echo it-ok'\" /dev/null",
            shell=True, user=m, timeout=30)  # fmt: skip
    assert "it-ok" in r.stdout, (r.returncode, r.stdout, r.stderr)
    r = cli(f"timeout 3 docker logs -f {c}", shell=True, user=m, timeout=20)
    assert "tick" in r.stdout, (r.returncode, r.stdout, r.stderr)

    lc = f"r19a-log-{tag}"
    ok(cli(["run", "-d", "--name", lc, "--log-opt", "max-size=10m", "--log-opt",
            "max-file=3", "--pids-limit", "200", "busybox", "sleep", "60"], user=m))  # fmt: skip
    host = direct_client.api.inspect_container(lc)["HostConfig"]
    assert host["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "3"}, host["LogConfig"]
    assert host["PidsLimit"] == 200
    ok(cli(["update", "--memory", "256m", "--memory-swap", "256m", "--cpus", "1.5",
            "--pids-limit", "300", lc], user=m))  # fmt: skip
    host = direct_client.api.inspect_container(lc)["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (256 << 20, 1500000000, 300)

    def ps(_i: int):
        return cli(["ps", "-q"], user=m, timeout=40)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(ps, range(20)))
    bad = [r.stderr for r in results if r.returncode != 0]
    assert not bad, bad[:2]


def test_finding_docker_update_cpu_quota_fails_on_every_member_container(
    cli, people, direct_client
):
    """`docker run -d busybox ...` then `docker update --cpu-quota 50000 --cpu-period
    100000 C` (or `--cpu-quota` alone), as a member: the gate now fills in the member's
    CPU default as ``NanoCpus`` (4, clamped to the node) on every create, and dockerd
    refuses to set a CFS quota on a container that has NanoCPUs: 409 "Conflicting
    options: CPU Period cannot be updated as NanoCPUs has already been set". The
    member never set ``--cpus``; the error names no dockergate rule, and there is
    no way around it but `--cpus`. Likewise `docker run --cpu-period 50000` (no
    quota) gets "Nano CPUs and CPU Period cannot both be set". Severity: Low
    (usability regression of today's member default; the interns' default had it
    already). Expected: the quota update works (or the gate translates it into
    NanoCpus), and a create with a CpuPeriod gets no NanoCpus added."""
    m = people["member"]
    c = f"r19a-cpu-{_rand()}"
    ok(cli(["run", "-d", "--name", c, "busybox", "sleep", "60"], user=m))
    r = cli(["update", "--cpu-quota", "50000", "--cpu-period", "100000", c], user=m)
    r2 = cli(["run", "--rm", "--cpu-period", "50000", "busybox", "true"], user=m)
    assert (r.returncode, r2.returncode) == (0, 0), (r.stderr, r2.stderr)


def test_works_member_compose_v1_with_logging(cli, people, direct_client, workdir):
    """docker-compose (v1) `up -d` of three services with ``logging:`` options
    (json-file 10m x 3; options only; none), `ps`, `logs --tail`, `down`: the given
    options are kept, the missing max-size filled in (100m)."""
    m = people["member"]
    proj = f"r19a{_rand()}"
    _file(workdir, "docker-compose.yml", """\
version: '2.4'
services:
  web:
    image: busybox
    command: sh -c 'echo web-up; sleep 300'
    logging:
      driver: json-file
      options: {max-size: "10m", max-file: "3"}
  worker:
    image: busybox
    command: sh -c 'echo worker-up; sleep 300'
    pids_limit: 100
    cpus: 0.5
    logging:
      options: {max-file: "2"}
  db:
    image: busybox
    command: sleep 300
""")  # fmt: skip
    try:
        ok(cli(f"docker-compose -p {proj} up -d", shell=True, user=m, cwd=workdir, timeout=90))
        ok(cli(f"docker-compose -p {proj} ps", shell=True, user=m, cwd=workdir))
        out = ok(cli(f"docker-compose -p {proj} logs --tail 5", shell=True, user=m, cwd=workdir))
        assert "web-up" in out and "worker-up" in out, out
        cfg = {
            c.labels["com.docker.compose.service"]: c.attrs["HostConfig"]["LogConfig"]
            for c in direct_client.containers.list(
                filters={"label": f"com.docker.compose.project={proj}"}
            )
        }
        assert cfg["web"]["Config"] == {"max-size": "10m", "max-file": "3"}, cfg
        assert cfg["worker"]["Config"] == {"max-size": "100m", "max-file": "2"}, cfg
        assert cfg["db"]["Config"].get("max-size") == "100m", cfg
    finally:
        cli(f"docker-compose -p {proj} down -t 0", shell=True, user=m, cwd=workdir, timeout=90)


def test_works_member_stack_with_logging_and_resources(cli, gate, people, workdir):
    """`docker stack deploy` of a service with logging options and resources,
    `service logs`, `service update --log-opt max-size=5m`; a 1g log size is refused
    naming resources.logs.max_size; `dockergate check --profile member` agrees with
    the gate on both files. (The CLI drops `--log-opt` without `--log-driver` on
    `service create/update`: it never reaches the gate, hence `--log-driver` here.)"""
    m = people["member"]
    st = f"r19a{_rand()}"
    good = """\
version: '3.8'
services:
  app:
    image: busybox
    command: sh -c 'echo stack-up; sleep 300'
    logging:
      driver: json-file
      options: {max-size: "10m", max-file: "3"}
    deploy:
      resources:
        limits: {cpus: '0.5', memory: 64M}
        reservations: {memory: 32M}
"""
    _file(workdir, "stack.yml", good)
    _file(workdir, "big.yml", good.replace('"10m"', '"1g"'))
    try:
        ok(cli(["stack", "deploy", "--detach=true", "-c", "stack.yml", st], user=m,
               cwd=workdir))  # fmt: skip
        deadline = time.time() + 40
        while True:
            r = cli(["service", "logs", "--raw", f"{st}_app"], user=m, timeout=20)
            if "stack-up" in r.stdout:
                break
            assert time.time() < deadline, (r.stdout, r.stderr)
            time.sleep(1)
        ok(cli(["service", "update", "--detach", "--log-driver", "json-file", "--log-opt", "max-size=5m", f"{st}_app"],
               user=m))  # fmt: skip
        r = cli(["service", "update", "--detach", "--log-driver", "json-file", "--log-opt", "max-size=1g", f"{st}_app"],
                user=m)  # fmt: skip
        assert r.returncode != 0 and "resources.logs.max_size" in r.stderr, r.stderr
        assert "member" in r.stderr, r.stderr
        r = cli(["stack", "deploy", "--detach=true", "-c", "big.yml", st], user=m, cwd=workdir)
        assert r.returncode != 0 and "resources.logs.max_size" in r.stderr, r.stderr
    finally:
        cli(["stack", "rm", st], user=m)
    assert _dg(gate, "check", "--profile", "member", str(workdir / "stack.yml")).returncode == 0
    r = _dg(gate, "check", "--profile", "member", str(workdir / "big.yml"))
    assert r.returncode == 1 and "max_size" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_works_intern_refusals_read_well(cli, people):
    """An intern's refusals say what, why and the rule: `docker run` on a manager,
    `service create` with a 50m log file or 5 log files; an ordinary `service
    create` works (the intern's services are kept off managers)."""
    i = people["intern"]
    r = cli(["run", "--rm", "busybox", "true"], user=i)
    assert r.returncode != 0 and "profile 'intern'" in r.stderr and "worker" in r.stderr
    name = f"r19a-isvc-{_rand()}"
    try:
        ok(cli(["service", "create", "--detach", "--name", name, "busybox", "sleep", "60"],
               user=i))  # fmt: skip
        for opt, rule in (("max-size=50m", "max_size"), ("max-file=5", "max_files")):
            r = cli(["service", "create", "--detach", "--log-driver", "json-file", "--log-opt", opt, "busybox", "true"],
                    user=i)  # fmt: skip
            assert r.returncode != 0, r.stdout
            assert "profile 'intern'" in r.stderr and rule in r.stderr, r.stderr
    finally:
        cli(["service", "rm", name], user=i)


# ======================================================== the connection limit


def test_works_connection_limit_counts_members_not_admin_containers(
    cli, gate, people, gate_factory
):
    """On a gate with max_connections_per_client 3: an admin's tool container (the
    gate's socket bound in) runs 10 `docker ps` at once, all served (admins are not
    counted, from a container either); a member's 10 at once are partly turned away
    with a message naming max_connections_per_client. Under the shipped 256, the
    member day above (20 parallel CLIs, 5 execs, compose) never met the limit."""
    low = gate_factory(state_dir=gate.state_dir,
                       env={"DOCKERGATE_MAX_CONNECTIONS_PER_CLIENT": "3"})  # fmt: skip
    tool = f"r19a-ltool-{_rand()}"
    ok(cli(["run", "-d", "--name", tool, "-v", f"{low.socket}:/var/run/docker.sock",
            "-v", f"{DOCKER}:/usr/local/bin/docker:ro", "-e", "HOME=/tmp", "busybox",
            "sleep", "60"]))  # fmt: skip
    script = """
        for i in 1 2 3 4 5 6 7 8 9 10; do
          (timeout 5 docker logs -f TOOL >/dev/null 2>&1 & docker ps -q >/dev/null 2>&1;
           echo $? >> /tmp/rc) &
        done
        wait; echo rcs $(sort /tmp/rc | uniq -c | tr '\\n' ' ')
    """.replace("TOOL", tool)
    out = ok(cli(["exec", tool, "sh", "-c", script], listener="direct", timeout=60))
    assert "rcs 10 0" in out, out
    m = people["member"]

    def hold(_i: int):
        return cli("timeout 4 docker events", shell=True, user=m, gate=low, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        rs = list(pool.map(hold, range(10)))
    errs = [r.stderr for r in rs if r.returncode not in (0, 124)]
    assert errs and all("max_connections_per_client" in e for e in errs), errs[:3]


# ============================================================ the admin's commands


def test_works_admin_commands(gate, people, workdir):
    """`dockergate user cert NAME --out` into a new dir under /root, an existing dir
    of root's and a new dir in /tmp; `policy show member` (shows the log caps),
    `usage`, `purge --user --dry-run`."""
    tag = _rand()
    root_new = Path(f"/root/r19a-certs-{tag}/alice")
    root_old = Path(tempfile.mkdtemp(prefix="r19a-old-", dir="/root"))
    tmp_new = Path(f"/tmp/r19a-new-{tag}")
    try:
        for out in (root_new, root_old, tmp_new):
            r = _dg(gate, "user", "cert", MEMBER, "--out", str(out))
            assert r.returncode == 0, (out, r.stderr)
            assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
        out = ok(_dg(gate, "policy", "show", "member"))
        assert "max_size" in out or "100m" in out, out
        ok(_dg(gate, "usage"))
        ok(_dg(gate, "purge", "--user", MEMBER, "--dry-run"))
    finally:
        shutil.rmtree(root_new.parent, ignore_errors=True)
        shutil.rmtree(root_old, ignore_errors=True)
        shutil.rmtree(tmp_new, ignore_errors=True)


def test_finding_user_cert_out_refuses_a_root_owned_symlink_on_the_path(gate, people):
    """`dockergate user cert alice --out /root/certs/alice` on a host where /root or
    /home is a symbolic link of root's (Fedora CoreOS / Silverblue: /root ->
    var/roothome, /home -> var/home; Debian's /var/run -> /run) is now refused: "X
    is a symbolic link: give the directory itself". Nobody but root can change a
    root-owned link in a root-owned directory, so following it is as safe as
    following the directory itself; the admin has to work out the real path. Here:
    a root-owned link /tmp/r19a-link-* -> a root-owned directory, --out
    <link>/alice. Severity: Low (admin usability on common container hosts).
    Expected: a link is refused only when someone other than root (or the caller)
    owns it or the directory it is in."""
    tag = _rand()
    real = Path(f"/tmp/r19a-real-{tag}")
    real.mkdir(mode=0o755)
    link = Path(f"/tmp/r19a-link-{tag}")
    link.symlink_to(real)
    try:
        r = _dg(gate, "user", "cert", MEMBER, "--out", str(link / "alice"))
        assert r.returncode == 0, r.stderr
    finally:
        link.unlink()
        shutil.rmtree(real, ignore_errors=True)
