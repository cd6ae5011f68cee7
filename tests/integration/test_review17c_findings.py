"""Review round 17c: docker-py's whole API as a member and as an intern (users, not
attackers), over the unix socket with a TLS spot-check, compared with the private
daemon. The shipped member and intern profiles; docker-py runs in a subprocess as
the registered unix user (setpriv), as users run it.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts what the user
should get. The ``test_works_*`` tests pass and pin the calls that behave as against
dockerd, or are refused with a ``dockergate:`` message that names the profile and
the rule (many calls per test, one subprocess each, to keep the module fast).
Nothing leaves loopback; the only image is ``busybox``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

OWNER = "dockergate.owner"
MEMBER = "r17c-m"
INTERN = "r17c-i"

# Each script gets `c` (a docker.DockerClient through the gate as the user), `api`,
# `N(x)` (a name of this test) and `step(name, fn)`, which prints one JSON line per
# call: {"call", "ok", "r"} or {"call", "ok": false, "exc", "status", "msg"}.
PRELUDE = """
import io, json, signal, socket, sys, tarfile, time
import docker
base, pfx = sys.argv[1], sys.argv[2]
kw = {}
if base.startswith("https://"):
    import docker.tls
    d = sys.argv[3]
    kw["tls"] = docker.tls.TLSConfig(
        client_cert=(d + "/cert.pem", d + "/key.pem"), ca_cert=d + "/ca.pem", verify=True)
c = docker.DockerClient(base_url=base, version="auto", timeout=25, **kw)
api = c.api
N = lambda s: pfx + "-" + s

def _alarm(*a):
    raise TimeoutError("no answer in 20 s")

signal.signal(signal.SIGALRM, _alarm)

def step(name, fn):
    signal.alarm(20)
    try:
        r = fn()
        signal.alarm(0)
        print(json.dumps({"call": name, "ok": True, "r": r}, default=repr), flush=True)
        return r
    except BaseException as e:
        signal.alarm(0)
        sc = getattr(getattr(e, "response", None), "status_code", None)
        print(json.dumps({"call": name, "ok": False, "exc": type(e).__name__,
                          "status": sc, "msg": str(e)}), flush=True)
"""


@pytest.fixture(scope="module")
def people(gate, unix_user):
    out = {}
    for name, short, profile in ((MEMBER, "r17cm", "member"), (INTERN, "r17ci", "intern")):
        u = unix_user(short)
        gate.dockergate("user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[profile] = u
    return out


@pytest.fixture(scope="module")
def bundle(gate, people) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r17c-cert-"))
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
    time.sleep(1)
    for who in (MEMBER, INTERN):
        flt = {"label": f"{OWNER}={who}"}
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for kind in ("volumes", "networks", "secrets", "configs"):
            for o in getattr(direct_client, kind).list(filters=flt):
                with contextlib.suppress(Exception):
                    o.remove()
    for img in direct_client.images.list():
        for tag in img.tags:
            if tag.startswith("r17c"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


_PY: dict[int, str] = {}


def _setpriv(u) -> list[str]:
    return ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups"]


def _python(u) -> str:
    """The test venv's python (docker-py 7) when the user can run it, else Debian's."""
    if u.uid not in _PY:
        _PY[u.uid] = "/usr/bin/python3"
        for py in (sys.executable, "/usr/bin/python3"):
            r = subprocess.run(
                [*_setpriv(u), py, "-c", "import docker"],
                capture_output=True,
                check=False,
            )
            if r.returncode == 0:
                _PY[u.uid] = py
                break
    return _PY[u.uid]


def pyrun(u, body: str, *args: str, timeout: int = 150) -> dict[str, dict]:
    """Run PRELUDE + body as unix user ``u``; returns {call: result} (first of a name)."""
    script = PRELUDE + textwrap.dedent(body)
    r = subprocess.run(
        [*_setpriv(u), _python(u), "-c", script, *args],
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


def ok(res: dict[str, dict], *calls: str) -> None:
    bad = {k: res.get(k) for k in calls if not (res.get(k) or {}).get("ok")}
    assert not bad, json.dumps(bad, indent=1)


def refused(res: dict[str, dict], call: str, status: int, *words: str) -> None:
    j = res.get(call) or {}
    assert not j.get("ok") and j.get("status") == status, (call, j)
    msg = j.get("msg", "")
    assert "dockergate:" in msg, (call, msg)
    for w in words:
        assert w in msg, (call, w, msg)


def _names(prefix: str) -> str:
    return f"{prefix}{os.urandom(2).hex()}"


# =========================================================================== works


def test_works_member_containers_docker_py(gate, people):
    """containers.run with many kwargs (limits, volumes dict/list, mounts, tmpfs, env,
    labels, healthcheck, restart policy, ports, network, workdir, user, init...), then
    exec_run in every mode, archives, stats, logs -f, top/diff/export/commit, rename,
    update, pause, kill, port, wait, lists with filters, prune; and the profile's
    refusals, each a 403 naming the profile and the field."""
    res = pyrun(
        people["member"],
        """
        from docker.types import Mount
        step("ping", c.ping)
        step("version", lambda: c.version()["ApiVersion"])
        step("info", lambda: c.info()["Containers"])
        step("df", lambda: sorted(c.df()))
        step("run.fg", lambda: c.containers.run("busybox", "echo hi", remove=True).decode())
        step("run.stream", lambda: b"".join(
            c.containers.run("busybox", "sh -c 'echo a; echo b'", stream=True, remove=True)
        ).decode())
        step("net", lambda: c.networks.create(N("net"), driver="bridge", labels={"a": "b"}).name)
        step("vol", lambda: c.volumes.create(N("vol"), labels={"k": "v"}).name)
        big = step("run.big", lambda: c.containers.run(
            "busybox", "sleep 300", detach=True, name=N("big"),
            mem_limit="128m", nano_cpus=500_000_000, pids_limit=100,
            volumes={N("vol"): {"bind": "/data", "mode": "rw"},
                     N("vol2"): {"bind": "/data2", "mode": "ro"}},
            mounts=[Mount("/m", N("vol3"), type="volume"),
                    Mount("/t", None, type="tmpfs", tmpfs_size=1 << 20)],
            tmpfs={"/tmp2": "size=1m"}, environment={"A": "1"}, labels={"x": "y"},
            healthcheck={"test": ["CMD", "true"], "interval": 1_000_000_000},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
            ports={"8080/tcp": ("127.0.0.1", None)}, network=N("net"), working_dir="/tmp",
            user="1000", init=True, cap_drop=["NET_RAW"], shm_size="64m",
            log_config={"type": "json-file", "config": {"max-size": "1m"}},
            security_opt=["no-new-privileges"], stdin_open=True).id)
        big = c.containers.get(N("big"))
        hc = big.attrs["HostConfig"]
        step("hc", lambda: [hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["PidsLimit"],
                            hc["Init"], hc["RestartPolicy"]["Name"]])
        step("mounts", lambda: sorted(m["Destination"] for m in big.attrs["Mounts"]))
        step("exec", lambda: big.exec_run("sh -c 'echo $Q $PWD'", environment={"Q": "z"},
                                          workdir="/").output.decode())
        step("exec.demux", lambda: [x.decode() for x in
                                    big.exec_run("sh -c 'echo o; echo e >&2'", demux=True).output])
        step("exec.stream", lambda: b"".join(big.exec_run("echo s", stream=True).output).decode())
        step("exec.tty", lambda: big.exec_run("echo t", tty=True).output.decode())
        step("exec.root", lambda: big.exec_run("id -u", user="root").output.decode())
        def sock():
            s = big.exec_run("cat", socket=True, stdin=True).output._sock
            s.sendall(b"ping\\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    return data[8:].decode()
                data += b
        step("exec.socket", sock)
        def low():
            e = api.exec_create(big.id, "echo low")
            return [api.exec_start(e["Id"]).decode(), api.exec_inspect(e["Id"])["ExitCode"]]
        step("exec.inspect", low)
        def archive():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as t:
                ti = tarfile.TarInfo("f.txt")
                ti.size = 5
                t.addfile(ti, io.BytesIO(b"hello"))
            big.put_archive("/tmp", buf.getvalue())
            stream, stat = big.get_archive("/tmp/f.txt")
            b"".join(stream)
            return [stat["name"], stat["size"]]
        step("archive", archive)
        step("stats", lambda: "cpu_stats" in big.stats(stream=False))
        def follow():
            g = big.logs(stream=True, follow=True)
            time.sleep(0.2)
            g.close()
            return True
        step("logs.follow", follow)
        step("top", lambda: big.top()["Titles"][0])
        step("diff", lambda: isinstance(big.diff(), list))
        step("export", lambda: len(next(iter(big.export(chunk_size=1024)))))
        step("commit", lambda: big.commit(repository="r17c-" + pfx, tag="c").id[:7])
        step("rmi.commit", lambda: c.images.remove("r17c-" + pfx + ":c"))
        step("attach_socket", lambda: type(big.attach_socket(params={"stdin": 1, "stream": 1})).__name__)
        step("rename", lambda: big.rename(N("big2")))
        step("update", lambda: big.update(mem_limit="200m", memswap_limit="200m"))
        step("update.restart", lambda: api.update_container(big.id, restart_policy={"Name": "always"}))
        step("x.update", lambda: big.update(mem_limit="100g", memswap_limit="100g"))
        step("x.exec_privileged", lambda: big.exec_run("true", privileged=True))
        step("pause", big.pause)
        step("unpause", big.unpause)
        step("port", lambda: api.port(big.id, 8080)[0]["HostIp"])
        step("kill.sig", lambda: big.kill(signal="SIGUSR1"))
        step("ps.label", lambda: [x.name for x in c.containers.list(all=True, filters={"label": "x=y"})])
        step("ps.net", lambda: [x.name for x in c.containers.list(all=True,
                                                                    filters={"network": N("net")})])
        step("get.missing", lambda: c.containers.get(N("nope")))
        step("stop", lambda: big.stop(timeout=1))
        step("wait", lambda: big.wait(timeout=10)["StatusCode"])
        step("run.auto_remove", lambda: c.containers.run("busybox", "true", detach=True,
                                                          auto_remove=True).id)
        step("hc.api", lambda: api.create_container("busybox", "true", name=N("hc"),
             host_config=api.create_host_config(mem_limit="64m", init=True,
             restart_policy={"Name": "unless-stopped"}, port_bindings={8000: None}))["Id"])
        step("prune", lambda: len(c.containers.prune()["ContainersDeleted"] or []))
        # refusals
        R = lambda **k: lambda: c.containers.run("busybox", "true", detach=True, **k)
        step("x.memory", R(mem_limit="100g"))
        step("x.privileged", R(privileged=True))
        step("x.cap_add", R(cap_add=["SYS_ADMIN"]))
        step("x.bind", R(volumes=["/etc:/x:ro"]))
        step("x.port80", R(ports={"80/tcp": 80}))
        step("x.hostnet", R(network_mode="host"))
        step("x.swap", R(mem_limit="64m", memswap_limit=-1))
        step("x.pids", R(pids_limit=-1))
        step("x.syslog", R(log_config={"type": "syslog"}))
        step("x.shared_rw", R(volumes={"common-data": {"bind": "/c", "mode": "rw"}}))
        step("x.oom", lambda: api.create_container("busybox", "true",
             host_config=api.create_host_config(mem_limit="64m", oom_kill_disable=True)))
        """,
        gate.unix_url,
        _names("r17c"),
    )
    ok(res, "ping", "version", "info", "df", "run.fg", "run.stream", "net", "vol", "run.big")
    assert res["run.fg"]["r"] == "hi\n"
    assert res["run.stream"]["r"] == "a\nb\n"
    assert res["hc"]["r"] == [134217728, 134217728, 500000000, 100, True, "on-failure"]
    assert res["mounts"]["r"] == ["/data", "/data2", "/m", "/t"]
    assert res["exec"]["r"] == "z /\n"
    assert res["exec.demux"]["r"] == ["o\n", "e\n"]
    assert res["exec.stream"]["r"] == "s\n"
    assert res["exec.tty"]["r"] == "t\r\n"
    assert res["exec.root"]["r"] == "0\n"  # the shipped member profile: exec.root true
    assert res["exec.socket"]["r"] == "ping\n"
    assert res["exec.inspect"]["r"] == ["low\n", 0]
    assert res["archive"]["r"] == ["f.txt", 5]
    ok(res, "stats", "logs.follow", "top", "diff", "export", "commit", "rmi.commit")
    ok(res, "attach_socket", "rename", "update", "update.restart", "pause", "unpause")
    ok(res, "kill.sig", "port", "stop", "wait", "run.auto_remove", "hc.api", "prune")
    assert res["port"]["r"] == "127.0.0.1"
    assert res["ps.label"]["r"] == res["ps.net"]["r"] and len(res["ps.label"]["r"]) == 1
    assert res["get.missing"]["status"] == 404
    assert res["prune"]["r"] >= 1
    refused(res, "x.memory", 403, "profile 'member'", "HostConfig.Memory=100g", "at most 64g")
    refused(res, "x.privileged", 403, "HostConfig.Privileged")
    refused(res, "x.cap_add", 403, "HostConfig.CapAdd=SYS_ADMIN")
    refused(res, "x.bind", 403, "HostConfig.Binds=/etc", "/srv/nfs/data")
    refused(res, "x.port80", 403, "1024-65535")
    refused(res, "x.hostnet", 403, "NetworkMode=host")
    refused(res, "x.swap", 403, "MemorySwap=-1")
    refused(res, "x.pids", 403, "PidsLimit=-1")
    refused(res, "x.syslog", 403, "LogConfig.Type=syslog")
    refused(res, "x.shared_rw", 403, "common-data", "read-only")
    refused(res, "x.oom", 403, "OomKillDisable")
    refused(res, "x.update", 403, "at most 64g")
    refused(res, "x.exec_privileged", 403, "privileged exec")


def test_works_member_images_volumes_networks_secrets(gate, people):
    """Classic builds (Dockerfile object and custom context), tag/history/save/remove of
    one's own image; load, rmi -f, removing busybox, prune -a, --pull and host-network
    builds refused with the reason; volumes, networks (connect/disconnect/prune),
    secrets and configs round trips; subnets, macvlan and volume options refused."""
    res = pyrun(
        people["member"],
        """
        def build():
            df = io.BytesIO(b"FROM busybox\\nLABEL foo=bar\\nRUN echo built > /b\\n")
            img, logs = c.images.build(fileobj=df, tag="r17c-" + pfx + ":b1", rm=True,
                                       labels={"l": "v"}, buildargs={"X": "1"})
            return img.tags
        step("build", build)
        def build_ctx():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as t:
                for n, d in (("Dockerfile", b"FROM busybox\\nCOPY a /a\\n"), ("a", b"x")):
                    ti = tarfile.TarInfo(n)
                    ti.size = len(d)
                    t.addfile(ti, io.BytesIO(d))
            buf.seek(0)
            img, _ = c.images.build(fileobj=buf, custom_context=True, tag="r17c-" + pfx + ":b2",
                                    forcerm=True, network_mode="none",
                                    container_limits={"memory": 1 << 27})
            return img.tags
        step("build.ctx", build_ctx)
        step("build.fail", lambda: c.images.build(fileobj=io.BytesIO(b"FROM busybox\\nRUN exit 7\\n")))
        step("build.pull", lambda: c.images.build(fileobj=io.BytesIO(b"FROM busybox\\n"), pull=True))
        step("build.nethost", lambda: c.images.build(fileobj=io.BytesIO(b"FROM busybox\\n"),
                                                      network_mode="host"))
        step("build.memory", lambda: c.images.build(fileobj=io.BytesIO(b"FROM busybox\\n"),
                                                     container_limits={"memory": 100 << 30}))
        step("get", lambda: "busybox:latest" in c.images.get("busybox").tags)
        step("list", lambda: len(c.images.list()) >= 2)
        step("tag", lambda: c.images.get("r17c-" + pfx + ":b1").tag("r17c-" + pfx, "t2"))
        step("history", lambda: len(c.images.get("r17c-" + pfx + ":b1").history()) > 1)
        step("save", lambda: sum(len(x) for x in c.images.get("r17c-" + pfx + ":b1").save()) > 0)
        data = b"".join(c.images.get("r17c-" + pfx + ":b1").save(named=True))
        step("load", lambda: c.images.load(data))
        step("rm.tag", lambda: c.images.remove("r17c-" + pfx + ":t2"))
        step("rm.busybox", lambda: c.images.remove("busybox"))
        step("rm.force", lambda: c.images.remove("r17c-" + pfx + ":b2", force=True))
        step("rm.b2", lambda: c.images.remove("r17c-" + pfx + ":b2"))
        step("prune", lambda: sorted(c.images.prune()))
        step("prune.all", lambda: c.images.prune(filters={"dangling": False}))
        step("registry_data", lambda: c.images.get_registry_data("busybox"))
        step("build_prune", lambda: sorted(api.prune_builds()))
        # volumes
        step("vol", lambda: c.volumes.create(N("vol"), driver="local", labels={"k": "v"}).name)
        step("vol.list", lambda: [v.name for v in c.volumes.list(filters={"label": "k=v"})
                                  if v.name.startswith(pfx)])
        step("vol.get", lambda: c.volumes.get(N("vol")).attrs["Labels"])
        step("vol.opts", lambda: c.volumes.create(N("volo"), driver_opts={"type": "tmpfs",
                                                                         "device": "tmpfs"}))
        step("vol.anon", lambda: len(c.volumes.create().name))
        # networks
        step("net", lambda: c.networks.create(N("net"), driver="bridge", labels={"a": "b"}).name)
        step("net.ov", lambda: c.networks.create(N("ov"), driver="overlay", attachable=True).name)
        step("net.get", lambda: c.networks.get(N("net"), verbose=True).name)
        step("net.none", lambda: c.networks.get("none").name)
        ctr = c.containers.run("busybox", "sleep 60", detach=True, name=N("ctr"))
        step("net.connect", lambda: c.networks.get(N("net")).connect(ctr, aliases=["al"]))
        step("net.aliases", lambda: "al" in c.containers.get(ctr.id).attrs["NetworkSettings"]
             ["Networks"][N("net")]["Aliases"])
        step("net.disconnect", lambda: c.networks.get(N("net")).disconnect(ctr, force=True))
        ctr.remove(force=True)
        step("net.subnet", lambda: c.networks.create(N("n3"), ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet="10.99.0.0/24")])))
        step("net.macvlan", lambda: c.networks.create(N("mv"), driver="macvlan"))
        step("net.prune", lambda: sorted(n for n in c.networks.prune()["NetworksDeleted"]
                                          if n.startswith(pfx)))
        step("vol.prune", lambda: sorted(c.volumes.prune()["VolumesDeleted"])[:1])
        # secrets and configs
        step("secret", lambda: c.secrets.create(name=N("sec"), data=b"s3cret").id)
        step("secret.list", lambda: [s.name for s in c.secrets.list()])
        step("secret.rm", lambda: c.secrets.get(N("sec")).remove())
        step("config", lambda: api.create_config(N("cfg"), b"cfg")["ID"])
        step("config.list", lambda: [s.name for s in c.configs.list()])
        step("config.rm", lambda: c.configs.get(N("cfg")).remove())
        step("rm.b1", lambda: c.images.remove("r17c-" + pfx + ":b1"))
        """,
        gate.unix_url,
        _names("r17c"),
    )
    pfx = res["vol"]["r"].rsplit("-", 1)[0]
    ok(res, "build", "build.ctx", "get", "list", "tag", "history", "save", "rm.tag")
    ok(res, "rm.b2", "prune", "build_prune", "rm.b1")
    assert res["build.fail"]["exc"] == "BuildError"
    refused(res, "build.pull", 403, "--pull")
    refused(res, "build.nethost", 403, "networkmode=host")
    refused(res, "build.memory", 403, "memory=100g", "at most 64g")
    refused(res, "load", 403, "docker load")
    refused(res, "rm.busybox", 403, "only those you built or committed")
    refused(res, "rm.force", 403, "without -f")
    refused(res, "prune.all", 403, "dangling")
    # No registry: dockerd's own 500, relayed as it is (not a gate error).
    assert res["registry_data"]["status"] == 500
    assert "registry-1.docker.io" in res["registry_data"]["msg"]
    ok(res, "vol", "vol.list", "vol.get", "vol.anon", "net", "net.ov", "net.get", "net.none")
    ok(res, "net.connect", "net.aliases", "net.disconnect", "net.prune", "vol.prune")
    assert res["vol.list"]["r"] == [f"{pfx}-vol"]
    assert res["vol.get"]["r"] == {"k": "v"}  # no dockergate.* label shown
    refused(res, "vol.opts", 403, "DriverOpts")
    refused(res, "net.subnet", 403, "IPAM.Config[0].Subnet")
    refused(res, "net.macvlan", 403, "Driver=macvlan", "bridge, overlay")
    assert res["net.prune"]["r"] == [f"{pfx}-net", f"{pfx}-ov"]
    ok(res, "secret", "secret.list", "secret.rm", "config", "config.list", "config.rm")
    assert res["secret.list"]["r"] == [f"{pfx}-sec"]
    assert res["config.list"]["r"] == [f"{pfx}-cfg"]


def test_works_member_services_swarm_and_events(gate, people):
    """services.create with mode/resources/restart/update/rollback configs, endpoint
    spec, secrets, networks, mounts, healthcheck; update, scale, tasks, logs,
    remove; jobs and global mode; refusals (port 80, over the memory quota, CPUs, a
    syslog log driver, CAP_SYS_ADMIN); swarm.attrs without join tokens, nodes.list,
    events filtered by container."""
    res = pyrun(
        people["member"],
        """
        from docker.types import (EndpointSpec, Healthcheck, Resources, RestartPolicy,
                                  RollbackConfig, SecretReference, ServiceMode, UpdateConfig)
        t0 = int(time.time()) - 1
        step("swarm", lambda: c.swarm.attrs["JoinTokens"]["Worker"])
        step("swarm.id", lambda: bool(c.swarm.attrs["ID"]))
        step("nodes", lambda: sorted(n.attrs["Spec"]["Role"] for n in c.nodes.list()))
        c.networks.create(N("ov"), driver="overlay", attachable=True)
        sec = c.secrets.create(name=N("sec"), data=b"s")
        svc = step("create", lambda: c.services.create("busybox", ["sleep", "300"], name=N("svc"),
            mode=ServiceMode("replicated", replicas=1),
            resources=Resources(mem_limit=64 << 20, cpu_limit=500_000_000),
            restart_policy=RestartPolicy(condition="on-failure", max_attempts=2),
            update_config=UpdateConfig(parallelism=1, order="stop-first", failure_action="rollback"),
            rollback_config=RollbackConfig(parallelism=1, order="stop-first"),
            endpoint_spec=EndpointSpec(ports={8082: 80}), labels={"s": "1"},
            container_labels={"cl": "1"}, env=["E=1"],
            secrets=[SecretReference(sec.id, N("sec"))], networks=[N("ov")],
            mounts=[N("svol") + ":/sv:rw"], healthcheck=Healthcheck(test=["CMD", "true"],
            interval=1_000_000_000)).id)
        svc = c.services.get(N("svc"))
        step("limits", lambda: svc.attrs["Spec"]["TaskTemplate"]["Resources"]["Limits"])
        time.sleep(3)
        step("tasks", lambda: [t["Status"]["State"] for t in svc.tasks()])
        step("logs", lambda: type(svc.logs(stdout=True, follow=False)).__name__)
        step("update", lambda: svc.update(env=["E=2"]))
        svc.reload()
        step("env", lambda: svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"])
        def scale(n):
            # Swarm bumps the service's version when the update above completes
            # (UpdateStatus): a scale from an older read is "out of sequence", as
            # for any client: read again and retry.
            for attempt in range(6):
                svc.reload()
                try:
                    return svc.scale(n)
                except docker.errors.APIError as exc:
                    if "out of sequence" not in str(exc) or attempt == 5:
                        raise
                    time.sleep(0.5)
        step("scale", lambda: scale(2))
        svc.reload()
        step("force_update", lambda: svc.force_update())
        step("x.update_memory", lambda: c.services.get(N("svc")).update(
            resources=Resources(mem_limit=10**12)))
        step("list", lambda: [s.name for s in c.services.list(filters={"label": "s=1"})])
        step("tasks.api", lambda: len(api.tasks(filters={"service": N("svc")})) >= 1)
        step("task.containers", lambda: len(c.containers.list(
            filters={"label": "com.docker.swarm.service.name=" + N("svc")})))
        step("global", lambda: c.services.create("busybox", ["sleep", "300"], name=N("g"),
                                                  mode=ServiceMode("global")).name)
        step("dnsrr", lambda: c.services.create("busybox", ["sleep", "300"], name=N("d"),
                                                 endpoint_spec=EndpointSpec(mode="dnsrr")).name)
        S = lambda **k: lambda: c.services.create("busybox", ["sleep", "300"], **k)
        step("x.port80", S(endpoint_spec=EndpointSpec(ports={80: 8080})))
        step("x.quota", S(mode=ServiceMode("replicated", replicas=60),
                          resources=Resources(mem_limit=4 << 30)))
        step("x.cpus", S(resources=Resources(cpu_limit=64_000_000_000)))
        step("x.syslog", S(log_driver="syslog"))
        step("x.cap_add", S(cap_add=["SYS_ADMIN"]))
        ctr = c.containers.run("busybox", "true", detach=True, name=N("ev"))
        ctr.wait(timeout=10)
        step("events", lambda: sorted({e["Action"] for e in c.events(
            decode=True, since=t0, until=int(time.time()) + 1, filters={"container": N("ev")})}))
        ctr.remove()
        for s in c.services.list():
            step("rm " + s.name, s.remove)
        step("info", lambda: c.info()["Containers"] >= 0)
        """,
        gate.unix_url,
        _names("r17c"),
    )
    assert res["swarm"]["r"].startswith("(dockergate:"), res["swarm"]
    ok(res, "swarm.id", "nodes", "create", "limits", "tasks", "logs", "update", "scale")
    ok(res, "list", "tasks.api", "global", "dnsrr", "events", "info")
    assert res["nodes"]["r"] == ["manager", "worker"]
    assert res["limits"]["r"]["MemoryBytes"] == 64 << 20
    assert res["env"]["r"] == ["E=2"]
    assert len(res["list"]["r"]) == 1
    assert {"create", "start", "die"} <= set(res["events"]["r"])
    refused(res, "x.update_memory", 403, "MemoryBytes", "at most 64g")
    refused(res, "x.port80", 403, "PublishedPort=80")
    refused(res, "x.quota", 403, "memory quota")
    refused(res, "x.cpus", 403, "NanoCPUs")
    refused(res, "x.syslog", 403, "LogDriver.Name=syslog")
    refused(res, "x.cap_add", 403, "CapabilityAdd=SYS_ADMIN")
    assert all(v["ok"] for k, v in res.items() if k.startswith("rm ")), res


def test_works_intern_on_a_manager(gate, people):
    """An intern on a manager's gate: containers and builds are refused with a message
    that says to use a service; services are created with their tasks kept on
    workers (also when an update drops the constraint), pids 1024, memory default;
    manager placement, port 80 and more than three services are refused."""
    res = pyrun(
        people["intern"],
        """
        from docker.types import EndpointSpec, ServiceMode
        step("run", lambda: c.containers.run("busybox", "true", remove=True))
        step("build", lambda: c.images.build(fileobj=io.BytesIO(b"FROM busybox\\nRUN true\\n")))
        step("vol", lambda: c.volumes.create(N("vol")).name)
        step("net", lambda: c.networks.create(N("ov"), driver="overlay").name)
        step("svc", lambda: c.services.create("busybox", ["sleep", "300"], name=N("s"),
                                               networks=[N("ov")]).name)
        step("spec", lambda: c.services.get(N("s")).attrs["Spec"]["TaskTemplate"])
        step("update", lambda: c.services.get(N("s")).update(constraints=[]))
        step("spec2", lambda: c.services.get(N("s")).attrs["Spec"]["TaskTemplate"]["Placement"])
        step("x.manager", lambda: c.services.create("busybox", ["sleep", "300"],
                                                     constraints=["node.role==manager"]))
        step("x.port", lambda: c.services.create("busybox", ["sleep", "300"],
                                                  endpoint_spec=EndpointSpec(ports={80: 80})))
        step("job", lambda: c.services.create("busybox", ["true"], name=N("j"),
                                               mode=ServiceMode("global")).name)
        step("s3", lambda: c.services.create("busybox", ["true"], name=N("s3")).name)
        step("x.quota", lambda: c.services.create("busybox", ["true"], name=N("s4")))
        step("list", lambda: sorted(s.name for s in c.services.list()))
        for s in c.services.list():
            s.remove()
        """,
        gate.unix_url,
        _names("r17c"),
    )
    refused(res, "run", 403, "profile 'intern'", "Swarm manager", "service")
    refused(res, "build", 403, "building on a Swarm manager")
    ok(res, "vol", "net", "svc", "spec", "update", "spec2", "job", "s3", "list")
    spec = res["spec"]["r"]
    assert spec["Placement"]["Constraints"] == ["node.role==worker"]
    assert spec["Resources"]["Limits"]["Pids"] == 1024
    assert spec["Resources"]["Limits"]["MemoryBytes"] == 1 << 30
    assert res["spec2"]["r"]["Constraints"] == ["node.role==worker"]
    refused(res, "x.manager", 403, "Swarm managers")
    refused(res, "x.port", 403, "8000-8999")
    refused(res, "x.quota", 403, "quota.services=3")
    assert len(res["list"]["r"]) == 3


def test_works_member_over_tls(gate, people, bundle):
    """A spot-check with the member's bundle over TLS: ping, info, run, exec, logs,
    archive, a refusal, services list."""
    res = pyrun(
        people["member"],
        """
        step("ping", c.ping)
        step("run", lambda: c.containers.run("busybox", "echo tls", remove=True).decode())
        ct = c.containers.run("busybox", "sh -c 'echo l; sleep 60'", detach=True, name=N("t"))
        step("exec", lambda: ct.exec_run("echo e", demux=True).output[0].decode())
        step("logs", lambda: next(ct.logs(stream=True, follow=True)).decode())
        step("archive", lambda: ct.get_archive("/etc/hostname")[1]["name"])
        step("stats", lambda: "memory_stats" in ct.stats(stream=False))
        step("x.priv", lambda: c.containers.run("busybox", "true", privileged=True))
        step("services", lambda: isinstance(c.services.list(), list))
        ct.remove(force=True)
        """,
        gate.https_url,
        _names("r17c"),
        str(bundle),
    )
    ok(res, "ping", "run", "exec", "logs", "archive", "stats", "services")
    assert res["run"]["r"] == "tls\n" and res["exec"]["r"] == "e\n" and res["logs"]["r"] == "l\n"
    refused(res, "x.priv", 403, "Privileged")


# ======================================================================== findings


def test_finding_events_replay_after_network_and_volume_prune(gate, people):
    """Severity Low. As the member: create networks ``na``/``nb`` and volumes
    ``va``/``vb``; remove ``na`` and ``va`` with ``remove()``, the others with
    ``client.networks.prune()`` / ``client.volumes.prune()``; then
    ``client.events(since=..., until=..., filters={"type": ["network", "volume"]})``.
    The removed-with-rm ones show their create/destroy events; the pruned ones show
    nothing at all (dockerd shows both). The README promises network and volume
    events "also replayed with --since after the user removed the object through the
    gate"; a prune is a removal through the gate, and `docker system prune` /
    `docker network prune` are how users clean up, so their history vanishes from
    `docker events --since`. Cause: only ``DELETE /{kind}/{id}`` calls
    ``remember_removal``; the prune handlers (``list_filter`` for network.prune and
    volume.prune) forward and forget."""
    res = pyrun(
        people["member"],
        """
        t0 = int(time.time()) - 1
        for k in ("na", "nb"):
            c.networks.create(N(k))
        for k in ("va", "vb"):
            c.volumes.create(N(k))
        c.networks.get(N("na")).remove()
        c.volumes.get(N("va")).remove()
        step("net.prune", lambda: c.networks.prune()["NetworksDeleted"])
        step("vol.prune", lambda: c.volumes.prune()["VolumesDeleted"])
        time.sleep(1)
        def ev():
            out = set()
            for e in c.events(decode=True, since=t0, until=int(time.time()) + 1,
                              filters={"type": ["network", "volume"]}):
                name = e["Actor"]["Attributes"].get("name") or e["Actor"]["ID"]
                if name.startswith(pfx):
                    out.add(e["Action"] + " " + name[len(pfx) + 1:])
            return sorted(out)
        step("events", ev)
        """,
        gate.unix_url,
        _names("r17c"),
    )
    ok(res, "net.prune", "vol.prune", "events")
    seen = set(res["events"]["r"])
    assert {"create na", "destroy na", "create va", "destroy va"} <= seen, seen  # rm: fine
    assert {"create nb", "destroy nb", "create vb"} <= seen, seen


def test_finding_events_replay_of_volumes_removed_with_their_container(gate, people):
    """Severity Low. As the member: ``c.containers.run("busybox", "true",
    volumes=[N("v") + ":/v"], detach=True)`` (a named volume the run creates) and one
    with an anonymous volume (``api.create_container(..., volumes=["/data"])``), then ``remove(v=True)`` both containers
    and ``c.volumes.prune()``; ``client.events(since=...)`` for volumes shows neither
    volume's create/mount/destroy (dockerd shows them). Same cause as the prune
    finding: volumes dockerd removes for a container removal or a prune are never
    remembered (``remember_removal``), so once gone their events are nobody's."""
    res = pyrun(
        people["member"],
        """
        t0 = int(time.time()) - 1
        a = c.containers.get(api.create_container("busybox", "true", volumes=["/data"])["Id"])
        a.start()
        a.wait(timeout=10)
        anon = [m["Name"] for m in c.containers.get(a.id).attrs["Mounts"]][0]
        a.remove(v=True)
        b = c.containers.run("busybox", "true", detach=True, volumes=[N("v") + ":/v"])
        b.wait(timeout=10)
        b.remove(v=True)
        step("prune", lambda: c.volumes.prune()["VolumesDeleted"])
        time.sleep(1)
        def ev():
            out = set()
            for e in c.events(decode=True, since=t0, until=int(time.time()) + 1,
                              filters={"type": "volume"}):
                name = e["Actor"]["ID"]
                if name == anon:
                    out.add(e["Action"] + " anon")
                elif name == N("v"):
                    out.add(e["Action"] + " named")
            return sorted(out)
        step("events", ev)
        """,
        gate.unix_url,
        _names("r17c"),
    )
    ok(res, "prune", "events")
    seen = set(res["events"]["r"])
    # dockerd 20.10 logs no ``destroy`` for a pruned volume (only a ``prune`` event
    # without an ID): the named volume shows its create, as on the daemon.
    assert {"create anon", "destroy anon", "create named"} <= seen, res


def test_finding_docker_py_volumes_list_with_a_bare_container_path(gate, people, direct_client):
    """Severity Medium. docker-py documents ``volumes`` as a dict *or a list of
    strings*; ``c.containers.run("busybox", "true", volumes=["/data"])`` (the list form
    of ``-v /data``: an anonymous volume) sends ``HostConfig.Binds=["/data"]``, which
    dockerd reads as an anonymous volume at ``/data`` (its mount parser: one field is
    the target). The gate reads it as a bind of the host path ``/data`` and refuses:
    403 "profile 'member' forbids bind-mounting this host path (HostConfig.Binds=/data);
    allowed below: /srv/nfs/data, ...", so a member cannot get a scratch volume the
    documented way and is told something false (no host path is involved).
    ``own_anonymous_volumes`` already turns one-part binds into owned anonymous
    volumes, but ``check_container`` runs before it and refuses them. Expected: the
    run works, with an anonymous volume owned like ``-v /data``, as on dockerd.
    """
    c = direct_client.containers.run("busybox", "true", volumes=["/data"], detach=True)
    try:
        c.wait(timeout=10)
        c.reload()
        assert [m["Type"] for m in c.attrs["Mounts"]] == ["volume"]  # dockerd: anonymous
    finally:
        c.remove(force=True, v=True)
    res = pyrun(
        people["member"],
        """
        step("run", lambda: c.containers.run("busybox", "ls -d /data", remove=True,
                                              volumes=["/data"]).decode())
        """,
        gate.unix_url,
        _names("r17c"),
    )
    assert res["run"].get("ok"), res["run"]
    assert res["run"]["r"] == "/data\n"
