"""Shared fixtures. The integration suite (tests/integration) needs a real, private
dockerd: run it through `scripts/test.sh`, which starts one and exports
DOCKERGATE_TEST_DOCKER_HOST. Without that variable the integration tests are skipped.

Environment knobs:
- DOCKERGATE_TEST_DOCKER_HOST  unix:// URL of the private daemon (set by scripts/test.sh)
- DOCKERGATE_TEST_RUN_DIR      scripts/test.sh's run dir; the session's temp files go there
- DOCKERGATE_TEST_LISTENERS    comma list overriding the `listener` parametrisation;
                               "direct" runs the CLI tests against the daemon itself
                               (to check the tests, not the gate)
- DOCKERGATE_SLOW=1            also run tests marked slow (minutes long)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ENV_DOCKER_HOST,
    DockerCLI,
    Gate,
    UnixUser,
    ensure_unix_user,
    free_port,
    new_gate,
    slug,
)

INTEGRATION_DIR = Path(__file__).parent / "integration"
DEFAULT_LISTENERS = ("unix", "tls")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "listeners(*names): restrict the `listener` parametrisation (unix, tls) for a test",
    )
    config.addinivalue_line("markers", "slow: long-running; skipped unless DOCKERGATE_SLOW=1")


def _listener_override() -> list[str] | None:
    raw = os.environ.get("DOCKERGATE_TEST_LISTENERS", "").strip()
    return [x.strip() for x in raw.split(",") if x.strip()] or None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "listener" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("listeners")
    allowed = list(marker.args) if marker else list(DEFAULT_LISTENERS)
    override = _listener_override()
    if override:
        allowed = [x for x in override if x in allowed or x == "direct"]
    metafunc.parametrize("listener", allowed)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_daemon = pytest.mark.skip(
        reason=f"{ENV_DOCKER_HOST} is not set: run the integration suite via scripts/test.sh, "
        "which starts a private dockerd"
    )
    slow = pytest.mark.skip(reason="slow test: set DOCKERGATE_SLOW=1 to run it")
    have_daemon = bool(os.environ.get(ENV_DOCKER_HOST))
    run_slow = os.environ.get("DOCKERGATE_SLOW") == "1"
    for item in items:
        if not have_daemon and INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(no_daemon)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(slow)


# ------------------------------------------------------------------------- basics


@pytest.fixture(scope="session", autouse=True)
def _no_ca_bundle_override() -> Iterator[None]:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the CA that docker-py's
    TLSConfig sets (Session.merge_environment_settings), so a docker-py TLS client
    would not trust the gate's own CA. Drop them for the test session."""
    saved = {
        k: os.environ.pop(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if k in os.environ
    }
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def docker_host() -> str:
    """unix:// URL of the private daemon started by scripts/test.sh."""
    url = os.environ.get(ENV_DOCKER_HOST)
    if not url:
        pytest.skip(f"{ENV_DOCKER_HOST} is not set (run via scripts/test.sh)")
    return url


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    """A short, world-traversable (0755) temp dir: sockets, state dirs, CLI homes.
    Inside scripts/test.sh's run dir when there is one, so that even a killed session
    leaves nothing behind (test.sh removes its run dir whatever happens)."""
    run_dir = os.environ.get("DOCKERGATE_TEST_RUN_DIR")
    if run_dir and os.path.isdir(run_dir):
        d = Path(tempfile.mkdtemp(prefix="py", dir=run_dir))
    else:
        d = Path(tempfile.mkdtemp(prefix="dgt-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------- the gate


class _GateHolder:
    """Starts the session gate on first use, so `direct` runs need no gate."""

    def __init__(self, base: Path, docker_host: str) -> None:
        self.base = base
        self.docker_host = docker_host
        self.gate: Gate | None = None

    def get(self) -> Gate:
        if self.gate is None:
            g = Gate(
                state_dir=self.base / "state",
                socket=self.base / "gate.sock",
                tls_port=free_port(),
                upstream=self.docker_host,
                log_path=self.base / "gate.log",
            )
            g.init()
            self.gate = g  # set before start: a failed start is still stopped/reported
            g.start()
        return self.gate


_holder: _GateHolder | None = None


@pytest.fixture(scope="session")
def _gate_holder(session_dir: Path, docker_host: str) -> Iterator[_GateHolder]:
    global _holder
    holder = _GateHolder(session_dir, docker_host)
    _holder = holder
    yield holder
    _holder = None
    if holder.gate is not None:
        holder.gate.stop()


@pytest.fixture(scope="session")
def gate(_gate_holder: _GateHolder) -> Gate:
    """The session's gate: `dockergate serve` in front of the private daemon, with a
    unix socket (`.socket`, `.unix_url`) and a TLS listener on 127.0.0.1
    (`.tls_url`, admin bundle in `.admin_cert_dir`). `.log()` is its output."""
    return _gate_holder.get()


@pytest.fixture(autouse=True)
def _gate_watch(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: the session gate must still be running. Remembers where the
    gate's log was so a failing test's report shows what the gate said meanwhile."""
    holder = _holder
    g = holder.gate if holder else None
    request.node._gate_log_start = (g, g.log_size() if g else 0)
    yield
    g = holder.gate if holder else None
    if g is not None:
        if request.node._gate_log_start[0] is None:
            request.node._gate_log_start = (g, 0)
        g.check_alive()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when in ("call", "teardown") and report.failed:
        g, start = getattr(item, "_gate_log_start", (None, 0))
        if g is None and _holder is not None:
            g, start = _holder.gate, 0
        if g is not None:
            text = g.log(start)
            if len(text) > 20000:
                text = "...\n" + text[-20000:]
            report.sections.append(("gate log during this test", text or "(nothing)"))


@pytest.fixture
def gate_factory(session_dir: Path, docker_host: str) -> Iterator[Callable[..., Gate]]:
    """Start extra gates for one test: gate_factory(upstream=None, *, tls=True,
    extra_args=(), state_dir=None, init=True, wait=True, tls_host="127.0.0.1",
    tls_port=None, env=None). Each is stopped (SIGTERM) at the end of the test, which fails if
    it had crashed."""
    started: list[Gate] = []

    def make(
        upstream: str | None = None,
        *,
        tls: bool = True,
        extra_args: Sequence[str] = (),
        state_dir: str | os.PathLike[str] | None = None,
        init: bool = True,
        wait: bool = True,
        tls_host: str = "127.0.0.1",
        tls_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Gate:
        g = new_gate(
            session_dir,
            upstream or docker_host,
            tls=tls,
            extra_args=extra_args,
            state_dir=state_dir,
            tls_host=tls_host,
            tls_port=tls_port,
            env=env,
        )
        if init and not state_dir:
            g.init()
        started.append(g)
        return g.start(wait=wait)

    yield make
    errors = []
    for g in started:
        try:
            g.stop()
        except pytest.fail.Exception as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors))


# ------------------------------------------------------------------ users and CLI


@pytest.fixture(scope="session")
def unix_user() -> Callable[[str], UnixUser]:
    """unix_user("alice") -> (name, uid, gid) of the unix user `dgt-alice`, created if
    missing (system user, no home, no login shell).

    The users are kept afterwards, on purpose: deleting them lets a concurrent or later
    session's new user inherit a uid that a running gate still has registered."""

    def make(short: str) -> UnixUser:
        return ensure_unix_user(short)[0]

    return make


@pytest.fixture(scope="session")
def cli(session_dir: Path, docker_host: str, _gate_holder: _GateHolder) -> DockerCLI:
    """The real docker CLI: cli(args, listener="unix"|"tls"|"direct", input=None,
    user=None, env=None, timeout=60, check=False, cert_dir=None, cwd=None, gate=None,
    shell=False) -> CompletedProcess (text). See tests.helpers.DockerCLI."""
    return DockerCLI(session_dir, docker_host, _gate_holder.get)


# ---------------------------------------------------------------------- docker-py


@pytest.fixture(scope="session")
def direct_client(docker_host: str) -> Iterator[Any]:
    """docker-py straight to the private daemon: for assertions and clean-up."""
    import docker

    c = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="session")
def docker_client(_gate_holder: _GateHolder, docker_host: str) -> Iterator[Callable[..., Any]]:
    """docker_client(listener="unix"|"tls"|"direct", cert_dir=None, gate=None) ->
    docker.DockerClient through the gate (TLS: admin bundle unless cert_dir)."""
    import docker
    import docker.tls

    clients: dict[tuple[str, str, int], Any] = {}

    def make(
        listener: str = "unix",
        cert_dir: str | os.PathLike[str] | None = None,
        gate: Gate | None = None,
    ) -> Any:
        if listener == "direct":
            key = (listener, "", 0)
            if key not in clients:
                clients[key] = docker.DockerClient(base_url=docker_host, version="auto")
            return clients[key]
        g = gate or _gate_holder.get()
        key = (listener, str(cert_dir or ""), id(g))
        if key in clients:
            return clients[key]
        if listener == "unix":
            c = docker.DockerClient(base_url=g.unix_url, version="auto", timeout=120)
        elif listener == "tls":
            d = Path(cert_dir) if cert_dir else g.admin_cert_dir
            tls = docker.tls.TLSConfig(
                client_cert=(str(d / "cert.pem"), str(d / "key.pem")),
                ca_cert=str(d / "ca.pem"),
                verify=True,
            )
            c = docker.DockerClient(base_url=g.https_url, tls=tls, version="auto", timeout=120)
        else:
            raise ValueError(f"unknown listener {listener!r}")
        clients[key] = c
        return c

    yield make
    for c in clients.values():
        with contextlib.suppress(Exception):
            c.close()


# ------------------------------------------------------------- names and clean-up


class Names:
    """Unique names for one test; everything named with them is removed afterwards
    (services, containers, networks, volumes, secrets, configs, image tags)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, what: str = "x") -> str:
        return f"{self.prefix}-{what}" if what else self.prefix

    def cleanup(self, client: Any) -> None:
        p = self.prefix
        for svc in client.services.list():
            if svc.name.startswith(p):
                with contextlib.suppress(Exception):
                    svc.remove()
        for kind in ("secrets", "configs"):
            for obj in getattr(client, kind).list():
                if obj.name.startswith(p):
                    with contextlib.suppress(Exception):
                        obj.remove()
        deadline = time.monotonic() + 30
        while True:
            left = [c for c in client.containers.list(all=True) if c.name.startswith(p)]
            for c in left:
                with contextlib.suppress(Exception):
                    c.remove(force=True, v=True)
            nets = [n for n in client.networks.list() if n.name.startswith(p)]
            for n in nets:
                with contextlib.suppress(Exception):
                    n.remove()
            if not left and not nets:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for v in client.volumes.list():
            if v.name.startswith(p):
                with contextlib.suppress(Exception):
                    v.remove(force=True)
        for img in client.images.list():
            for tag in img.tags:
                if tag.startswith(p):
                    with contextlib.suppress(Exception):
                        client.images.remove(tag, force=True)


@pytest.fixture
def names(request: pytest.FixtureRequest, direct_client: Any) -> Iterator[Names]:
    """names("c") -> "t-<test>-<rand>-c"; all such objects are removed after the test."""
    n = Names(f"t-{slug(request.node.originalname, 14)}-{os.urandom(2).hex()}")
    yield n
    n.cleanup(direct_client)


@pytest.fixture(scope="session")
def exec_container(direct_client: Any) -> Iterator[str]:
    """Name of one long-running busybox container (`sleep 3600`) for exec/cp tests."""
    name = f"dgt-session-{os.urandom(3).hex()}"
    c = direct_client.containers.run("busybox", ["sleep", "3600"], name=name, detach=True)
    yield name
    with contextlib.suppress(Exception):
        c.remove(force=True)
