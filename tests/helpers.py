"""Plumbing for the integration tests: the gate as a subprocess, the real docker CLI,
unix users, raw HTTP on a unix socket. No Docker mocks: everything talks to the
private dockerd that scripts/test.sh starts (DOCKERGATE_TEST_DOCKER_HOST).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ENV_DOCKER_HOST = "DOCKERGATE_TEST_DOCKER_HOST"
USER_PREFIX = "dgt-"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


# ---------------------------------------------------------------------------- misc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll until predicate() is truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def pipe_until(proc: subprocess.Popen[Any], needle: str, timeout: float = 30.0) -> str:
    """What `proc` wrote on stdout until `needle` appeared, EOF or `timeout` (raw reads
    of the pipe: do not mix with proc.stdout.readline, whose buffer they bypass)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        got += chunk
    return got.decode(errors="replace")


def unique(prefix: str = "dgt") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def slug(text: str, length: int = 16) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:length].strip("-") or "t"


# ------------------------------------------------------------------- raw HTTP (unix)


@dataclass
class RawReply:
    status: int
    reason: str
    headers: dict[str, str]
    head: bytes
    body: bytes
    closed: bool  # the server closed the connection after the reply

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def unix_connect(path: str | os.PathLike[str], timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(os.fspath(path))
    return s


def recv_until_close(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until EOF or timeout; return (data, got_eof)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


def read_head(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Read one response head; return (head, bytes already read past it)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP status line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def read_response(sock: socket.socket, timeout: float = 10.0, method: str = "GET") -> RawReply:
    """Read one complete HTTP/1.1 response (Content-Length, chunked or close-delimited)."""
    head, rest = read_head(sock, timeout)
    status, reason, headers = parse_head(head)
    body = rest
    closed = False
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        raw = body
        out = b""
        while True:
            while b"\r\n" not in raw:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed inside a chunked body")
                raw += chunk
            size_line, _, raw = raw.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(raw) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed inside a chunk")
                raw += chunk
            if size == 0:
                break
            out += raw[:size]
            raw = raw[size + 2 :]
        body = out
    else:
        more, closed = recv_until_close(sock, timeout)
        body += more
    if headers.get("connection", "").lower() == "close" and not closed:
        _, closed = recv_until_close(sock, 2.0)
    return RawReply(status, reason, headers, head, body, closed)


def raw_request(
    path: str | os.PathLike[str],
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> RawReply:
    """One request on a fresh connection (Connection: close)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
    hdrs = {"Connection": "close", **(headers or {})}
    if body:
        hdrs.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    with contextlib.closing(unix_connect(path, timeout)) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return read_response(s, timeout, method)


def ping(path: str | os.PathLike[str], timeout: float = 5.0) -> RawReply:
    return raw_request(path, "GET", "/_ping", timeout=timeout)


# -------------------------------------------------------------------------- the gate


GRANTS = frozenset({"add", "cert", "token", "enable", "set-profile"})
# How long a grant may take to reach a running gate before a test goes on regardless.
# The gate polls the store every 0.25 s, so this is only reached on a loaded machine
# (or when the gate never applies it); waits return as soon as the gate has it.
GRANT_TIMEOUT = 20.0


def dockergate_argv() -> list[str]:
    exe = Path(sys.executable).with_name("dockergate")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dockergate"]


@dataclass
class Gate:
    """One `dockergate serve` subprocess with its own state dir and listeners."""

    state_dir: Path
    socket: Path
    tls_port: int | None
    upstream: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    tls_host: str = "127.0.0.1"  # any loopback address (127.0.0.2: a second "node")
    env: dict[str, str] = field(default_factory=dict)  # added to the serve process's
    proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = None

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("this gate has no TLS listener")
        return f"tcp://{self.tls_host}:{self.tls_port}"

    @property
    def https_url(self) -> str:
        return f"https://{self.tls_host}:{self.tls_port}"

    @property
    def admin_cert_dir(self) -> Path:
        return self.state_dir / "clients" / "admin"

    def log(self, start: int = 0) -> str:
        """What the gate wrote to stdout/stderr (from byte offset `start`)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def store_revision(self) -> int | None:
        """The store revision the running gate applies (its health answer), or None."""
        try:
            reply = raw_request(self.socket, "GET", "/_dockergate/health", timeout=2.0)
            return int(json.loads(reply.body)["store"]["revision"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store_head(self) -> int | None:
        """The revision the store itself is at (what `dockergate user ...` last
        committed), read as the gate reads it; None when it cannot be read from here."""
        try:
            from dockergate.config import load_settings
            from dockergate.store.repository import Store

            settings = load_settings(
                environ={**os.environ, **self.env}, overrides={"state_dir": self.state_dir}
            )
            with Store.open(settings, check=False) as store:
                return store.revision()
        except Exception:
            return None

    def settle(self, timeout: float = GRANT_TIMEOUT, before: int | None = None) -> None:
        """Wait until this running gate applies every change committed to its store so
        far (its health's `store.revision` reaches the store's own counter): a user or
        credential just added is then in force. Returns at once when it already is;
        goes on after `timeout` (a loaded machine) rather than failing here. `before`
        (the gate's revision before the change) is the fallback when the store cannot
        be read from the test process: then any newer revision will do."""
        if self.proc is None:
            return
        head = self.store_head()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            now = self.store_revision()
            if now is not None:
                if head is not None and now >= head:
                    return
                if head is None and (before is None or now > before):
                    return
            time.sleep(0.02)

    def dockergate(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `dockergate --state-dir <this gate's> ARGS...` (e.g. user add)."""
        argv = [*dockergate_argv(), "--state-dir", str(self.state_dir), *args]
        grant = args[:1] == ("user",) and args[1:2] and args[1] in GRANTS and self.proc is not None
        before = self.store_revision() if grant else None
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if grant and r.returncode == 0:
            # A running gate sees store changes within a second (it polls every 0.25 s);
            # wait for new users and credentials before using them, until the gate
            # applies the store's revision (a fixed delay was too short on a busy
            # machine). A failed command changed nothing. Revocations are not waited
            # for: tests measure how fast those arrive.
            self.settle(before=before)
        if check and r.returncode != 0:
            pytest.fail(
                f"`dockergate {shlex.join(args)}` exited {r.returncode}\n"
                f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
            )
        return r

    def init(self, hostnames: Sequence[str] = ()) -> None:
        args = ["init"]
        for h in hostnames:
            args += ["--hostname", h]
        self.dockergate(*args)

    def start(self, wait: bool = True) -> Gate:
        argv = [
            *dockergate_argv(),
            "--state-dir",
            str(self.state_dir),
            "serve",
            "--upstream",
            self.upstream,
            "--socket",
            str(self.socket),
        ]
        if self.tls_port is not None:
            argv += ["--tls-listen", f"{self.tls_host}:{self.tls_port}"]
        argv += self.extra_args
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env else None,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the unix socket answers HTTP (any status: the upstream may be dead)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"dockergate serve exited with {self.proc.returncode} during start-up; "
                    f"its output:\n{self.log()}"
                )
            try:
                ping(self.socket, timeout=2.0)
                break
            except (OSError, ValueError) as exc:
                last = exc
                time.sleep(0.1)
        else:
            self.kill()
            pytest.fail(
                f"dockergate serve did not answer GET /_ping on {self.socket} within "
                f"{timeout:.0f}s (last error: {last!r}); its output:\n{self.log()}"
            )
        if self.tls_port is not None:
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    socket.create_connection((self.tls_host, self.tls_port), timeout=1).close()
                    return
                time.sleep(0.1)
            self.kill()
            pytest.fail(
                f"TLS listener {self.tls_host}:{self.tls_port} not up; output:\n{self.log()}"
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(
                f"dockergate serve died (exit {self.proc.returncode}); its output:\n{self.log()}"
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """SIGTERM and wait; fail loudly if it had crashed, hung or exited badly."""
        if self.proc is None:
            return
        crashed = self.proc.poll()
        if crashed is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(
                    f"dockergate serve did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM; "
                    f"its output:\n{self.log()}"
                )
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if crashed is not None:
            pytest.fail(f"dockergate serve had died (exit {crashed}); its output:\n{self.log()}")
        if code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            pytest.fail(f"dockergate serve exited {code} on SIGTERM; its output:\n{self.log()}")


def new_gate(
    base: Path,
    upstream: str,
    *,
    tls: bool = True,
    extra_args: Sequence[str] = (),
    state_dir: str | os.PathLike[str] | None = None,
    tls_host: str = "127.0.0.1",
    tls_port: int | None = None,
    env: dict[str, str] | None = None,
) -> Gate:
    """A Gate (not started) in a fresh world-traversable directory under ``base``."""
    d = Path(tempfile.mkdtemp(prefix="g", dir=base))
    d.chmod(0o755)
    return Gate(
        state_dir=Path(state_dir) if state_dir else d / "state",
        socket=d / "gate.sock",
        tls_port=(tls_port or free_port()) if tls else None,
        upstream=upstream,
        log_path=d / "gate.log",
        extra_args=list(extra_args),
        tls_host=tls_host,
        env=dict(env or {}),
    )


# ---------------------------------------------------------------------- unix users


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int

    def __iter__(self) -> Iterator[Any]:  # (name, uid, gid) unpacking
        return iter((self.name, self.uid, self.gid))


def ensure_unix_user(short: str) -> tuple[UnixUser, bool]:
    """Create `dgt-<short>` if missing (system user, no home); return (user, created)."""
    name = short if short.startswith(USER_PREFIX) else USER_PREFIX + short
    created = False
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                name,
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        try:  # exit 9: a concurrent session created it first, which is fine
            pw = pwd.getpwnam(name)
        except KeyError:
            pytest.fail(f"useradd {name} failed ({r.returncode}): {r.stderr}")
        created = r.returncode == 0
    return UnixUser(name, pw.pw_uid, pw.pw_gid), created


def remove_unix_user(name: str) -> None:
    subprocess.run(["userdel", name], check=False, capture_output=True)


# ------------------------------------------------------------------------- the CLI


OUT_OF_SEQUENCE_TRIES = 8


class DockerCLI:
    """Runs the real `docker` CLI against the gate (unix or TLS) or the daemon (direct).

    cli(args, listener="unix"|"tls"|"direct", input=None, user=None, env=None,
        timeout=60, check=False, cert_dir=None, cwd=None, gate=None, shell=False)

    `args` is a list of docker arguments (a string is split with shlex); with
    shell=True it is a shell command line run by `sh -c` in which `docker` is the
    real CLI with the same environment (for pipelines). `user` (a login or a
    UnixUser) runs it as that unix user through setpriv, with HOME and DOCKER_CONFIG
    in a directory that user owns.
    """

    def __init__(
        self,
        base_dir: Path,
        docker_host: str,
        gate_getter: Callable[[], Gate],
    ) -> None:
        self.base_dir = base_dir
        self.docker_host = docker_host
        self._gate_getter = gate_getter
        self.docker = shutil.which("docker") or "docker"

    def home_for(self, user: UnixUser | None) -> Path:
        name = user.name if user else "root"
        home = self.base_dir / "homes" / name
        if not home.exists():
            home.mkdir(parents=True, mode=0o700)
            (home / "docker-config").mkdir(mode=0o700)
            if user is not None:
                for p in (home, home / "docker-config"):
                    os.chown(p, user.uid, user.gid)
        return home

    def env(
        self,
        listener: str = "unix",
        *,
        user: UnixUser | None = None,
        env: Mapping[str, str] | None = None,
        cert_dir: str | os.PathLike[str] | None = None,
        gate: Gate | None = None,
    ) -> dict[str, str]:
        home = self.home_for(user)
        out = {
            "PATH": os.environ.get(
                "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
            "HOME": str(home),
            "DOCKER_CONFIG": str(home / "docker-config"),
            "LANG": "C.UTF-8",
            "TERM": "xterm",
            "DOCKER_CLI_HINTS": "false",
        }
        if listener == "direct":
            out["DOCKER_HOST"] = self.docker_host
        else:
            g = gate or self._gate_getter()
            if listener == "unix":
                out["DOCKER_HOST"] = g.unix_url
            elif listener == "tls":
                out["DOCKER_HOST"] = g.tls_url
                out["DOCKER_TLS_VERIFY"] = "1"
                out["DOCKER_CERT_PATH"] = str(cert_dir or g.admin_cert_dir)
            else:
                raise ValueError(f"unknown listener {listener!r}")
        out.update(env or {})
        return out

    def __call__(
        self,
        args: Sequence[str] | str,
        *,
        listener: str = "unix",
        input: str | bytes | None = None,
        user: str | UnixUser | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
        cert_dir: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        gate: Gate | None = None,
        shell: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        u = resolve_user(user)
        full_env = self.env(listener, user=u, env=env, cert_dir=cert_dir, gate=gate)
        if shell:
            if not isinstance(args, str):
                args = shlex.join(args)
            argv = ["sh", "-c", args]
        else:
            if isinstance(args, str):
                args = shlex.split(args)
            argv = [self.docker, *args]
        if u is not None:
            argv = [
                "setpriv",
                f"--reuid={u.uid}",
                f"--regid={u.gid}",
                "--init-groups",
                *argv,
            ]
        data = input.decode() if isinstance(input, bytes) else input
        try:
            for attempt in range(OUT_OF_SEQUENCE_TRIES):
                r = subprocess.run(
                    argv,
                    input=data,
                    stdin=subprocess.DEVNULL if data is None else None,
                    capture_output=True,
                    text=True,
                    env=full_env,
                    timeout=timeout,
                    cwd=cwd,
                    check=False,
                )
                # Swarm bumps a service's version while it rolls out the previous
                # change (UpdateStatus): the CLI's read-then-update of a `service
                # update/rollback/scale` or `stack deploy` right after one may be
                # refused "update out of sequence" (gate or not); as any user or
                # script would, run it again (it changed nothing).
                if shell or r.returncode == 0 or "update out of sequence" not in r.stderr:
                    break
                time.sleep(0.2 * (attempt + 1))
        except subprocess.TimeoutExpired as exc:
            out = (
                exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
            )
            err = (
                exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            )
            pytest.fail(
                f"`{shlex.join(argv)}` ({listener}) timed out after {timeout}s\n"
                f"stdout so far:\n{out}\nstderr so far:\n{err}"
            )
        if check and r.returncode != 0:
            pytest.fail(
                f"`{shlex.join(argv)}` ({listener}) exited {r.returncode}\n"
                f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
            )
        return r

    def popen(
        self,
        args: Sequence[str],
        *,
        listener: str = "unix",
        user: str | UnixUser | None = None,
        env: Mapping[str, str] | None = None,
        cert_dir: str | os.PathLike[str] | None = None,
        gate: Gate | None = None,
    ) -> subprocess.Popen[str]:
        """Start the CLI in the background (stdin closed, text pipes)."""
        u = resolve_user(user)
        full_env = self.env(listener, user=u, env=env, cert_dir=cert_dir, gate=gate)
        argv = [self.docker, *args]
        if u is not None:
            argv = ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", *argv]
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )


def resolve_user(user: str | UnixUser | None) -> UnixUser | None:
    if user is None or isinstance(user, UnixUser):
        return user
    pw = pwd.getpwnam(user)
    return UnixUser(pw.pw_name, pw.pw_uid, pw.pw_gid)


def describe(r: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: the command, its exit code and its output."""
    cmd = r.args if isinstance(r.args, str) else shlex.join(str(a) for a in r.args)
    return f"`{cmd}` exited {r.returncode}\n--- stdout:\n{r.stdout}\n--- stderr:\n{r.stderr}"


@contextlib.contextmanager
def ro_root_quota_gate(
    session_dir: Path, docker_host: str, roots: Path, name: str
) -> Iterator[Gate]:
    """A plain-socket gate whose member profile binds ``roots/ro`` read-only only, with
    64m default and 256m max memory and a 512m memory quota (review rounds 24e-24j);
    its profiles are written to ``roots/policies``."""
    policies = roots / "policies"
    policies.mkdir()
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        f"description: {name} member\n"
        "mounts:\n"
        "  binds:\n"
        f"    - path: {roots / 'ro'}\n"
        "      read_only: true\n"
        "resources:\n"
        "  memory: {default: 64m, max: 256m}\n"
        "quota:\n"
        "  memory: 512m\n"
    )
    g = new_gate(session_dir, docker_host, tls=False, extra_args=["--policies-dir", str(policies)])
    g.init()
    g.start()
    try:
        yield g
    finally:
        g.stop()


@contextlib.contextmanager
def nosymfollow(path: Path) -> Iterator[Path]:
    """``path`` bind-mounted on itself with ``nosymfollow`` (as an admin would mount a
    bind root the gate lets users bind below), unmounted afterwards. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting nosymfollow needs root")
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,nosymfollow", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class _Connector:
    """The child that made connections as another uid, kept alive until the last of
    them is collected: the gate places a unix peer by its process (/proc/<pid>), and
    refuses a connection whose process is gone before it could look (a container's
    process could otherwise connect, hand the socket out and exit)."""

    def __init__(self, pid: int, pipe: socket.socket, count: int) -> None:
        self.pid, self.pipe, self.count = pid, pipe, count

    def release(self) -> None:
        self.count -= 1
        if self.count <= 0:
            # A byte, not EOF: later children inherited this end too (fork), so its
            # EOF would not reach the child while they live.
            with contextlib.suppress(OSError):
                self.pipe.send(b"x")
            self.pipe.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


def connect_as_uid(path: str, uid: int, count: int = 1) -> list[socket.socket]:
    """``count`` connections to a unix socket made by ``uid`` (as the kernel records
    them): a child drops to the uid, connects, passes the sockets back and stays
    until they are all gone."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            # It lingers: it must not hold copies of the test's other sockets (a
            # connection the test closes would stay open to the gate).
            keep = child.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 1 << 20)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(uid)
            conns = []  # kept referenced: a collected socket object closes its fd
            for _ in range(count):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                conns.append(s)
            socket.send_fds(child, [b"x"], [s.fileno() for s in conns])
            for s in conns:
                s.close()  # the parent's now (a copy here would keep them open)
            child.settimeout(3600)
            child.recv(1)  # until the parent says so (or dies)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                child.sendall(b"!" + repr(exc).encode())
        finally:
            os._exit(0)
    child.close()
    msg, fds, _, _ = socket.recv_fds(parent, 1024, count)
    if msg.startswith(b"!") or len(fds) != count:
        parent.close()
        os.waitpid(pid, 0)
        pytest.fail(f"connecting as uid {uid} failed: {msg[1:].decode(errors='replace')}")
    connector = _Connector(pid, parent, count)
    socks = [socket.socket(fileno=fd) for fd in fds]
    for s in socks:
        weakref.finalize(s, connector.release)
    return socks


def api_as(
    gate: Gate, user: Any, method: str, path: str, body: Any = None, *, data: str | None = None
) -> tuple[int, Any]:
    """One Engine API call as unix user ``user`` through ``gate``'s socket (curl run
    with that uid, so the gate sees it as the kernel says): the status and the parsed
    JSON answer (or its text). ``body`` is sent as JSON; ``data`` as written (raw
    JSON text: ``1.0``, ``-0`` or a duplicate key reach the gate unchanged)."""
    argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
    argv += ["curl", "-sS", "--unix-socket", str(gate.socket), "-X", method]
    argv += ["-w", "\n%{http_code}"]
    if body is not None:
        data = json.dumps(body)
    if data is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", data]
    argv.append(f"http://gate/v1.41{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    text, _, code = out.rpartition("\n")
    try:
        return int(code), json.loads(text) if text else None
    except ValueError:
        return int(code or 0), text


def remove_owned(client: Any, *users: str) -> None:
    """Everything the gate stamped with one of ``users`` as owner, removed on the
    daemon directly (a module's clean-up): services first, so Swarm does not start
    their tasks again, then containers with their anonymous volumes, then the rest."""
    for user in users:
        flt = {"label": f"dockergate.owner={user}"}
        for service in client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                service.remove()
        for container in client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for kind in ("secrets", "configs", "networks", "volumes"):
            for obj in getattr(client, kind).list(filters=flt):
                with contextlib.suppress(Exception):
                    obj.remove()


SHIPPED_POLICIES = Path(__file__).resolve().parents[1] / "policies"


@contextlib.contextmanager
def policies_gate(
    base: Path,
    upstream: str,
    extra: Mapping[str, str] | None = None,
    *,
    tls: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Gate]:
    """A started gate serving a copy of the shipped profiles (plus ``extra`` files,
    name -> YAML) from its own ``--policies-dir`` (``gate.policies``), which a module
    may edit and reload; stopped at the end if it still runs."""
    g = new_gate(base, upstream, tls=tls, env=env)
    policies = Path(g.socket).parent / "policies"
    shutil.copytree(SHIPPED_POLICIES, policies)
    for name, text in (extra or {}).items():
        (policies / name).write_text(text)
    g.extra_args.extend(["--policies-dir", str(policies)])
    g.policies = policies  # type: ignore[attr-defined]
    with running(g):
        yield g


@contextlib.contextmanager
def running(g: Gate) -> Iterator[Gate]:
    """``g`` initialised and started; stopped at the end if it still runs (a test
    may have stopped or restarted it)."""
    g.init()
    g.start()
    try:
        yield g
    finally:
        if g.alive():
            g.stop()


@contextlib.contextmanager
def started_gate(base: Path, upstream: str, **options: Any) -> Iterator[Gate]:
    """A module's gate: ``new_gate(base, upstream, **options)``, running."""
    with running(new_gate(base, upstream, **options)) as g:
        yield g


def admin_image(client: Any, tag: str, config: Mapping[str, Any]) -> str:
    """An image made on the daemon directly (an admin's, as a registry's could be):
    busybox committed as ``tag`` (``repo:tag``) with ``config`` over its own."""
    repo, _, version = tag.rpartition(":")
    container = client.containers.create("busybox", ["true"])
    try:
        container.commit(repo, version, conf=dict(config))
    finally:
        container.remove()
    return tag
