"""The processes a benchmark run needs: a private dockerd, the gate, and HAProxy.

Everything started here is stopped by :meth:`Harness.close` (called on normal exit,
errors and Ctrl-C), and each child also gets ``PR_SET_PDEATHSIG`` so that even a
``kill -9`` of the benchmark does not leave a daemon behind. Every socket is a unix
socket under the work directory; the gate's TLS listener is bound to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from httpload import api, remove_labelled

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the benchmark dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SetupError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pairs(options: dict[str, str]) -> list[str]:
    return [item for pair in options.items() for item in pair]


def wait_ping(
    sock_path: str, what: str, proc: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SetupError(f"{what} exited with {proc.returncode} while starting")
        try:
            status, body = api(sock_path, "GET", "/_ping", timeout=2)
            if status == 200:
                return
            last = f"{status} {body[:100]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise SetupError(f"{what} did not answer /_ping on {sock_path} within {timeout}s ({last})")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SetupError(f"no VmRSS for pid {pid}")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (0 for pid 0)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds incl. reaped children) for every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = sum(int(f) for f in fields[11:15]) / _CLK_TCK
        out[int(entry)] = (int(fields[1]), cpu)
    return out


def _tree_cpu(roots: list[int]) -> float:
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def _system_cpu() -> tuple[float, float, float]:
    """(busy, steal, all) CPU seconds of the machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return (total - idle - steal) / _CLK_TCK, steal / _CLK_TCK, total / _CLK_TCK


class MachineLoad:
    """How busy the machine was with *other* work while the benchmark ran: the
    whole machine's busy CPU time minus that of this process tree and of the
    processes the benchmark started (and their children)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.start_system = _system_cpu()
        self.start_ours = self._ours()
        self.start_time = time.monotonic()

    def _ours(self) -> float:
        return _tree_cpu([os.getpid(), *self.roots])

    def result(self) -> dict[str, float]:
        busy0, steal0, all0 = self.start_system
        busy1, steal1, all1 = _system_cpu()
        ours = self._ours() - self.start_ours
        elapsed = time.monotonic() - self.start_time
        cpus = os.cpu_count() or 1
        return {
            "elapsed_s": round(elapsed, 1),
            "busy_cpu_pct": round(100 * (busy1 - busy0) / max(1e-9, all1 - all0), 1),
            "ours_cpu_s": round(ours, 1),
            "others_cpu_s": round(max(0.0, busy1 - busy0 - ours), 1),
            "others_pct_of_machine": round(
                100 * max(0.0, busy1 - busy0 - ours) / (elapsed * cpus), 1
            ),
            "steal_pct": round(100 * (steal1 - steal0) / max(1e-9, all1 - all0), 1),
        }


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def apt_install(*packages: str) -> None:
    log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


@dataclass
class Sides:
    """The three unix sockets every scenario is measured against."""

    direct: str
    gate: str
    haproxy: str
    null: str  # HAProxy answering 200 by itself: the load generator's ceiling

    def as_dict(self) -> dict[str, str]:
        return {"direct": self.direct, "gate": self.gate, "haproxy": self.haproxy}


HAPROXY_CFG = """\
# As Tecnativa's docker-socket-proxy runs it (mode http, http-server-close, its
# timeouts, a separate events backend without server timeout), but allowing every
# request, in front of the benchmark's daemon.
global
    maxconn 4000

defaults
    mode http
    option http-server-close
    option dontlognull
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    timeout tunnel 1h
    maxconn 3000

backend dockerbackend
    server dockerd {upstream}

backend docker-events
    server dockerd {upstream}
    timeout server 0

frontend dockerfrontend
    bind {front} mode 666
    use_backend docker-events if {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?/events }}
    default_backend dockerbackend

# Not a side: a static answer, to measure what the load generator can do at most.
frontend null
    bind {null} mode 666
    http-request return status 200 content-type text/plain string OK
"""


@dataclass
class Harness:
    workdir: Path
    docker_host: str | None = None  # unix:///path of an existing daemon to use instead
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_files: list[Path] = field(default_factory=list)
    own_dockerd: bool = False
    member_uid: int = 64123
    member_name: str = "benchmember"
    member_error: str | None = "not tried"
    gate_src: Path | None = None  # an exported git ref to run instead of the work tree
    gate_loop: str = "auto"  # the gate's event_loop setting: auto (what users get), asyncio, uvloop

    # -- paths -------------------------------------------------------------------------
    @property
    def docker_sock(self) -> str:
        if self.docker_host:
            return self.docker_host.removeprefix("unix://")
        return str(self.workdir / "docker.sock")

    @property
    def gate_sock(self) -> str:
        return str(self.workdir / "gate.sock")

    @property
    def haproxy_sock(self) -> str:
        return str(self.workdir / "haproxy.sock")

    @property
    def null_sock(self) -> str:
        return str(self.workdir / "null.sock")

    @property
    def gate_state(self) -> Path:
        return self.workdir / "gate"

    def sides(self) -> Sides:
        return Sides(self.docker_sock, self.gate_sock, self.haproxy_sock, self.null_sock)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    # -- start -------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # the member's load processes reach gate.sock
        if self.docker_host:
            if not self.docker_host.startswith("unix://"):
                raise SetupError("--docker-host must be unix:///path")
            wait_ping(self.docker_sock, "the daemon at " + self.docker_host, None, 5)
        else:
            self._start_dockerd()
        self._ensure_busybox()
        self._start_gate()
        self._start_haproxy()

    def gate_command(self) -> tuple[list[str], dict[str, str]]:
        """How to run ``dockergate``: the venv's python on the work tree (editable
        install) or on an exported ref, with the event loop asked for."""
        python = VENV_BIN / "python"
        if not python.exists():
            raise SetupError(f"{python} missing: create the venv and `pip install -e .` in {REPO}")
        env = dict(os.environ)
        if self.gate_src is not None:
            env["PYTHONPATH"] = str(self.gate_src)
        env["DOCKERGATE_EVENT_LOOP"] = self.gate_loop
        return [str(python), "-m", "dockergate"], env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        logfile = self.workdir / f"{name}.log"
        self.log_files.append(logfile)
        with open(logfile, "ab") as out:
            self.procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them in order
                preexec_fn=_die_with_parent,
                env=env,
                cwd=self.workdir,  # never the repo: `python -m` puts the cwd on sys.path
            )

    def _start_dockerd(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            apt_install("docker.io")
            dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        pidfile = self.workdir / "docker.pid"
        self._kill_stale(pidfile, "dockerd")
        with contextlib.suppress(FileNotFoundError):
            Path(self.docker_sock).unlink()
        log(f"starting a private dockerd on {self.docker_sock}")
        options = {
            "--data-root": str(self.workdir / "data"),
            "--exec-root": str(self.workdir / "x"),
            "--pidfile": str(pidfile),
            "--host": f"unix://{self.docker_sock}",
            "--log-level": "warn",
        }
        flags = ["--bridge=none", "--iptables=false", "--ip6tables=false"]
        self._spawn("dockerd", [dockerd, *_pairs(options), *flags])
        self.own_dockerd = True
        wait_ping(self.docker_sock, "dockerd", self.procs["dockerd"], 60)

    @staticmethod
    def _kill_stale(pidfile: Path, name: str) -> None:
        """A dockerd left by a killed run of the benchmark on the same work dir."""
        try:
            pid = int(pidfile.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return
        if comm != name:
            return
        log(f"stopping a stale {name} (pid {pid}) from an earlier run")
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def _ensure_busybox(self) -> None:
        status, _ = api(self.docker_sock, "GET", "/images/busybox:latest/json")
        if status == 200:
            return
        busybox = Path("/bin/busybox")
        if not busybox.exists():
            apt_install("busybox-static")
        log("importing busybox:latest from Debian's busybox-static")
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            root = Path(tmp) / "rootfs"
            for sub in ("bin", "etc", "tmp"):
                (root / sub).mkdir(parents=True)
            shutil.copy2(busybox, root / "bin" / "busybox")
            applets = subprocess.run(
                [str(busybox), "--list"], check=True, capture_output=True, text=True
            ).stdout.split()
            for applet in applets:
                if applet != "busybox":
                    (root / "bin" / applet).symlink_to("busybox")
            (root / "etc" / "passwd").write_text(
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
            )
            (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            docker = ["docker", "--host", f"unix://{self.docker_sock}"]
            subprocess.run(
                [*docker, "import", "--change", 'CMD ["sh"]', "-", "busybox:latest"],
                stdin=tar.stdout,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise SetupError("tar of the busybox rootfs failed")

    def _start_gate(self) -> None:
        gate, env = self.gate_command()
        cmd = [*gate, "--state-dir", str(self.gate_state)]
        shutil.rmtree(self.gate_state, ignore_errors=True)  # a fresh CA and store each run
        init = subprocess.run(
            [*cmd, "init"], capture_output=True, text=True, env=env, cwd=self.workdir
        )
        if init.returncode != 0:
            raise SetupError(f"dockergate init failed: {(init.stderr or init.stdout).strip()}")
        self.member_error = self._add_member(cmd, env)
        with contextlib.suppress(FileNotFoundError):
            Path(self.gate_sock).unlink()
        port = free_port()
        where = f"{self.gate_src}" if self.gate_src else "the work tree"
        log(f"starting the gate from {where} on {self.gate_sock} (TLS 127.0.0.1:{port})")
        options = {
            "--upstream": f"unix://{self.docker_sock}",
            "--socket": self.gate_sock,
            "--tls-listen": f"127.0.0.1:{port}",
            "--log-level": "warning",
        }
        self._spawn("gate", [*cmd, "serve", *_pairs(options)], env)
        wait_ping(self.gate_sock, "the gate", self.procs["gate"], 30)

    def _add_member(self, cmd: list[str], env: dict[str, str]) -> str | None:
        """Register the member user; the reason it is n/a, or None when it worked."""
        probe = subprocess.run(
            [*cmd, "user", "--help"], capture_output=True, text=True, env=env, cwd=self.workdir
        )
        if probe.returncode != 0:
            return "no `dockergate user` command"
        options = {"--profile": "member", "--uid": str(self.member_uid)}
        added = subprocess.run(
            [*cmd, "user", "add", self.member_name, *_pairs(options)],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.workdir,
        )
        if added.returncode != 0 and "exist" not in (added.stderr + added.stdout).lower():
            detail = (added.stderr or added.stdout).strip().splitlines()[-1:] or ["?"]
            return f"`dockergate user add` failed: {detail[0]}"
        return None

    def _start_haproxy(self) -> None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            apt_install("haproxy")
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(
            HAPROXY_CFG.format(
                upstream=self.docker_sock, front=self.haproxy_sock, null=self.null_sock
            )
        )
        for sock in (self.haproxy_sock, self.null_sock):
            with contextlib.suppress(FileNotFoundError):
                Path(sock).unlink()
        subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], check=True)
        log(f"starting HAProxy on {self.haproxy_sock}")
        self._spawn("haproxy", [haproxy, "-db", "-f", str(cfg)])
        wait_ping(self.haproxy_sock, "HAProxy", self.procs["haproxy"], 15)

    # -- versions (for the report) -----------------------------------------------------
    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        status, body = api(self.docker_sock, "GET", "/version")
        if status == 200:
            v = json.loads(body)
            out["dockerd"] = f"{v.get('Version')} (API {v.get('ApiVersion')})"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
            out["haproxy"] = hv.splitlines()[0] if hv else "?"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cv = subprocess.run(["docker", "--version"], capture_output=True, text=True).stdout
            out["docker_cli"] = cv.strip()
        return out

    # -- stop --------------------------------------------------------------------------
    def remove_containers(self) -> None:
        try:
            n = remove_labelled(self.docker_sock)
        except Exception as exc:
            log(f"could not remove the benchmark's containers: {exc}")
            return
        if n:
            log(f"removed {n} benchmark containers")

    def close(self) -> None:
        """Stop what was started, newest first: HAProxy, the gate, then dockerd."""
        if "dockerd" in self.procs or self.docker_host:
            self.remove_containers()
        for name in ("haproxy", "gate", "dockerd"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            log(f"stopping {name}")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30 if name == "dockerd" else 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for sock in (self.gate_sock, self.haproxy_sock, self.null_sock):
            with contextlib.suppress(OSError):
                Path(sock).unlink()
