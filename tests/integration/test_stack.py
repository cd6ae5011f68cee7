"""deploy/dockergate-stack.yml, deployed as the team would: `docker stack deploy -c
deploy/dockergate-stack.yml gate` on the test swarm, with the image built from
deploy/Dockerfile, the CA and server certificates as Docker secrets and the private
PostgreSQL as the shared store (reached through its unix socket, which a second
compose file mounts: the store is only on the host's loopback).

The gate task runs on the engine's host network, which is the test daemon's private
network namespace, so the TLS listener is reached from inside that namespace
(`nsenter --net`, loopback only); its user socket is a file in a bind-mounted host
directory and is reached directly. A member registered in PostgreSQL (by the admin,
on the host) runs containers over TLS with their bundle and over the socket as their
unix user; both are stamped with their name. No certificate, or one from another CA,
is refused; an unregistered uid on the socket is refused too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.helpers import UnixUser, describe, dockergate_argv

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not (
            os.environ.get("DOCKERGATE_TEST_PG_URL") and os.environ.get("DOCKERGATE_TEST_RUN_DIR")
        ),
        reason="needs scripts/test.sh's private PostgreSQL and run dir",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
STACK = "gate"
PORT = 2376  # the stack's default, in the engine's own network namespace


def _dg(state: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    return subprocess.run(
        [*dockergate_argv(), "--state-dir", str(state), "--db", db, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, str]]:
    """A fresh database: (URL from the host over TCP, URL for the task over the socket)."""
    import sqlalchemy

    base = os.environ["DOCKERGATE_TEST_PG_URL"]
    name = f"dg_stack_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(base)
    host_url = urlunsplit(parts._replace(path=f"/{name}"))
    user, password = parts.username, parts.password
    task_url = (
        f"postgresql+psycopg://{user}:{password}@/{name}?host=/run/postgresql&port={parts.port}"
    )
    try:
        yield host_url, task_url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="module")
def deployed(
    image: str,
    cli: Any,
    docker_host: str,
    session_dir: Path,
    database: tuple[str, str],
    direct_client: Any,
) -> Iterator[dict[str, Any]]:
    host_url, task_url = database
    work = Path(session_dir) / f"stack-{uuid.uuid4().hex[:6]}"
    work.mkdir(mode=0o755)
    state = work / "state"
    r = _dg(state, host_url, "init")  # CA, server cert (localhost, 127.0.0.1), schema
    assert r.returncode == 0, describe(r)
    sockdir = work / "run"
    sockdir.mkdir(mode=0o755)
    run_dir = Path(os.environ["DOCKERGATE_TEST_RUN_DIR"])
    override = work / "pg-socket.yml"
    override.write_text(
        'version: "3.8"\nservices:\n  gate:\n    volumes:\n'
        f"      - {run_dir / 'pg' / 'sock'}:/run/postgresql\n"
    )
    # The stack binds the root rslave, which dockerd allows from a shared mount only
    # (systemd makes / shared; this machine's / may be private).
    binds = work / "binds"
    binds.mkdir(mode=0o755)
    subprocess.run(["mount", "--bind", str(binds), str(binds)], check=True)
    subprocess.run(["mount", "--make-shared", str(binds)], check=True)
    env = {
        "DOCKERGATE_BIND_ROOT": str(binds),
        "DOCKERGATE_IMAGE": image,
        "DOCKERGATE_PKI": str(state / "pki"),
        "DOCKERGATE_DB": task_url,
        "DOCKER_SOCKET": docker_host.removeprefix("unix://"),
        "DOCKERGATE_SOCKET_DIR": str(sockdir),
    }
    started = time.monotonic()
    r = cli(
        [
            "stack",
            "deploy",
            "-c",
            str(ROOT / "deploy" / "dockergate-stack.yml"),
            "-c",
            str(override),
            STACK,
        ],
        listener="direct",
        env=env,
        cwd=str(ROOT),
        timeout=120,
    )
    assert r.returncode == 0, describe(r)
    try:
        socket_path = sockdir / "docker.sock"
        deadline = time.monotonic() + 120
        while not socket_path.exists():
            if time.monotonic() > deadline:
                ps = cli(["service", "ps", "--no-trunc", f"{STACK}_gate"], listener="direct")
                logs = cli(["service", "logs", f"{STACK}_gate"], listener="direct")
                pytest.fail(f"the stack's gate did not come up:\n{describe(ps)}\n{describe(logs)}")
            time.sleep(0.5)
        yield {
            "state": state,
            "db": host_url,
            "socket": socket_path,
            "netns": run_dir / "netns",
            "seconds": time.monotonic() - started,
            "binds": binds,
        }
    finally:
        cli(["stack", "rm", STACK], listener="direct")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # sparse: no inspect per listed container, which races with their removal
            left = direct_client.containers.list(
                all=True, sparse=True, filters={"label": f"com.docker.stack.namespace={STACK}"}
            )
            if not left:
                break
            time.sleep(0.5)
        for name in (f"{STACK}_state",):
            with contextlib.suppress(Exception):
                direct_client.volumes.get(name).remove(force=True)
        subprocess.run(["umount", "-R", "-l", str(binds)], check=False)


@pytest.fixture(scope="module")
def member(deployed: dict[str, Any], unix_user: Any) -> tuple[UnixUser, Path]:
    u = unix_user("stackmember")
    r = _dg(
        deployed["state"],
        deployed["db"],
        "user",
        "add",
        "stack-member",
        "--profile",
        "member",
        "--uid",
        str(u.uid),
    )
    assert r.returncode == 0, describe(r)
    bundle = deployed["state"].parent / "member-bundle"
    r = _dg(deployed["state"], deployed["db"], "user", "cert", "stack-member", "--out", str(bundle))
    assert r.returncode == 0, describe(r)
    for path in (bundle, *bundle.iterdir()):
        os.chown(path, u.uid, u.gid)
    time.sleep(1.0)  # the deployed gate polls the store every 0.25 s
    return u, bundle


def in_netns(
    cli: Any, deployed: dict[str, Any], user: UnixUser, args: list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    """The docker CLI as ``user`` inside the engine's network namespace, where the
    stack's TLS listener is (on loopback)."""
    full = cli.env("direct", user=user, env={"DOCKER_HOST": f"tcp://127.0.0.1:{PORT}", **env})
    argv = [
        "nsenter",
        f"--net={deployed['netns']}",
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--init-groups",
        cli.docker,
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, env=full, timeout=120, check=False)


def test_stack_serves_a_member_over_tls_and_the_socket(
    deployed: dict[str, Any],
    member: tuple[UnixUser, Path],
    cli: Any,
    direct_client: Any,
    unix_user: Any,
) -> None:
    u, bundle = member
    tls = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(bundle)}
    name = f"stk-{uuid.uuid4().hex[:6]}"
    r = in_netns(cli, deployed, u, ["run", "--name", name, "busybox", "echo", "over tls"], **tls)
    assert r.stdout.strip() == "over tls", describe(r)
    labels = direct_client.containers.get(name).labels
    assert labels["dockergate.owner"] == "stack-member", labels
    direct_client.containers.get(name).remove(force=True)

    r = in_netns(cli, deployed, u, ["ps"])  # no certificate at all
    assert r.returncode != 0, describe(r)
    foreign = Path(deployed["state"]).parent / "foreign"
    r = _dg(foreign, "sqlite:///" + str(foreign.parent / "foreign.db"), "init")
    assert r.returncode == 0, describe(r)
    foreign_bundle = bundle.parent / "foreign-bundle"
    shutil.copytree(foreign / "clients" / "admin", foreign_bundle)
    for path in (foreign_bundle, *foreign_bundle.iterdir()):
        os.chown(path, u.uid, u.gid)
    r = in_netns(
        cli, deployed, u, ["ps"], DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(foreign_bundle)
    )
    assert r.returncode != 0, describe(r)  # another CA's certificate: no handshake

    sock = {"DOCKER_HOST": f"unix://{deployed['socket']}"}
    name = f"stk-{uuid.uuid4().hex[:6]}"
    r = cli(["run", "--name", name, "busybox", "echo", "over the socket"], user=u, env=sock)
    assert r.stdout.strip() == "over the socket", describe(r)
    assert direct_client.containers.get(name).labels["dockergate.owner"] == "stack-member"
    direct_client.containers.get(name).remove(force=True)
    stranger = unix_user("stackstranger")
    r = cli(["ps"], user=stranger, env=sock)
    assert r.returncode != 0 and "is not registered" in r.stderr, describe(r)


def test_stack_task_is_global_healthy_and_labelled(
    deployed: dict[str, Any], cli: Any, direct_client: Any
) -> None:
    service = direct_client.services.get(f"{STACK}_gate")
    spec = service.attrs["Spec"]
    assert "Global" in spec["Mode"], spec["Mode"]
    assert spec["Labels"]["dockergate.tls-port"] == str(PORT)
    secrets = {s["SecretName"] for s in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]}
    assert secrets == {"dockergate_ca_1", "dockergate_server_cert_1", "dockergate_server_key_1"}
    deadline = time.monotonic() + 90
    status = ""
    while time.monotonic() < deadline:
        tasks = [t for t in service.tasks() if t["DesiredState"] == "running"]
        cids = [t["Status"].get("ContainerStatus", {}).get("ContainerID") for t in tasks]
        if cids and cids[0]:
            status = (
                direct_client.api.inspect_container(cids[0])["State"]
                .get("Health", {})
                .get("Status", "")
            )
            if status == "healthy":
                break
        time.sleep(1)
    assert status == "healthy"
    # The bind root is rslave: a file system mounted below it now reaches the gate's
    # mount table (which it reads to refuse read-only binds over writable mounts).
    late = deployed["binds"] / "late"
    late.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(late)], check=True)
    try:
        seen = direct_client.containers.get(cids[0]).exec_run(["cat", "/proc/self/mountinfo"])
        assert f" {late} ".encode() in seen.output, seen.output.decode(errors="replace")
    finally:
        subprocess.run(["umount", "-l", str(late)], check=False)


def test_stack_needs_the_shared_store(cli: Any) -> None:
    """Without DOCKERGATE_DB the file does not deploy (each node would otherwise keep
    users of its own), and the error says what to set."""
    r = cli(
        ["stack", "config", "-c", str(ROOT / "deploy" / "dockergate-stack.yml")],
        listener="direct",
        env={"DOCKERGATE_PKI": "/nonexistent"},
    )
    assert r.returncode != 0 and "set DOCKERGATE_DB" in r.stderr, describe(r)
