"""Purge, audit, usage and whoami with the real docker CLI and the real dockergate CLI.

bob has running and stopped containers, a service and volumes; alice has a
container and a volume. A purge of bob (locally, then through the gate's admin
API over TLS) leaves nothing of his and everything of alice's; refusals and
purges are in the audit log; usage shows everyone; 1 000 audited requests in a
burst are all stored by the time the gate has stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dockergate.config import Settings
from dockergate.store.repository import Store
from tests import helpers
from tests.helpers import UnixUser, connect_as_uid, dockergate_argv, read_response

pytestmark = pytest.mark.timeout(300)

OWNER = "dockergate.owner"


# -- helpers ----------------------------------------------------------------------------


def dg(
    gate: Any,
    *args: str,
    env: Mapping[str, str] | None = None,
    user: UnixUser | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`dockergate --state-dir <gate's> ARGS` with stdin not a terminal and the private
    daemon as upstream; or, as a unix ``user``, `dockergate ARGS`."""
    argv = [*dockergate_argv(), "--state-dir", str(gate.state_dir), *args]
    if user is not None:  # a member has no business (and no access) in the state dir
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
        argv += [*dockergate_argv(), *args]
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOCKER_", "DOCKERGATE_")) or k == "DOCKERGATE_TEST_DOCKER_HOST"
    }
    full["DOCKERGATE_UPSTREAM"] = gate.upstream
    full.update(env or {})
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        check=False,
    )


def out(r: subprocess.CompletedProcess[str]) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


def owned(client: Any, user: str) -> dict[str, set[str]]:
    """Everything on the engine labelled as ``user``'s, by kind."""
    flt = {"label": f"{OWNER}={user}"}
    return {
        "container": {c.id for c in client.containers.list(all=True, filters=flt)},
        "service": {s.id for s in client.services.list(filters=flt)},
        "volume": {v.name for v in client.volumes.list(filters=flt)},
        "network": {n.id for n in client.networks.list(filters=flt)},
    }


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    """tests.helpers.wait_until, polling every 0.25 s (the audit writer batches)."""
    return helpers.wait_until(predicate, timeout, interval=0.25, what=what)


def audit_json(gate: Any, *args: str) -> list[dict[str, Any]]:
    r = dg(gate, "audit", "--json", *args)
    assert r.returncode == 0, out(r)
    return list(json.loads(r.stdout))


def connect_as(path: Path, uid: int, count: int) -> list[socket.socket]:
    """``count`` connections to the gate's unix socket made by ``uid`` (the kernel's
    peer credentials are what identify a caller)."""
    return connect_as_uid(str(path), uid, count)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def people(gate: Any, unix_user: Any) -> dict[str, tuple[UnixUser, str]]:
    """alice and bob (members) on the session gate, as unix users."""
    found = {}
    for short in ("alice", "bob", "carol"):
        u = unix_user(f"pa-{short}")
        name = f"pa-{short}"
        gate.dockergate("user", "add", name, "--profile", "member", "--uid", str(u.uid))
        found[short] = (u, name)
    return found


@pytest.fixture(scope="module")
def alice_objects(cli: Any, people: Any, direct_client: Any) -> Iterator[dict[str, str]]:
    u, _name = people["alice"]
    tag = uuid.uuid4().hex[:6]
    c, v = f"pa-alice-c-{tag}", f"pa-alice-v-{tag}"
    r = cli(["run", "-d", "--name", c, "busybox", "sleep", "600"], user=u)
    assert r.returncode == 0, r.stderr
    r = cli(["volume", "create", v], user=u)
    assert r.returncode == 0, r.stderr
    yield {"container": c, "volume": v}
    with contextlib.suppress(Exception):
        direct_client.containers.get(c).remove(force=True)
    with contextlib.suppress(Exception):
        direct_client.volumes.get(v).remove(force=True)


# -- purge --------------------------------------------------------------------------------


def test_purge_bob_leaves_alice_alone(
    gate: Any, cli: Any, people: Any, alice_objects: Any, direct_client: Any
) -> None:
    bob, bob_name = people["bob"]
    tag = uuid.uuid4().hex[:6]
    running, stopped = f"pa-bob-run-{tag}", f"pa-bob-stopped-{tag}"
    service, vol, vol2 = f"pa-bob-svc-{tag}", f"pa-bob-v-{tag}", f"pa-bob-v2-{tag}"
    for args in (
        ["run", "-d", "--name", running, "-v", f"{vol}:/data", "busybox", "sleep", "600"],
        ["create", "--name", stopped, "busybox", "true"],
        ["volume", "create", vol2],
        ["service", "create", "-d", "--name", service, "busybox", "sleep", "600"],
    ):
        r = cli(args, user=bob)
        assert r.returncode == 0, (args, r.stderr)
    # The service's task container is up too: the purge must win against Swarm.
    wait_until(
        lambda: len(owned(direct_client, bob_name)["container"]) >= 3, 60, "bob's task container"
    )
    before = owned(direct_client, bob_name)
    assert len(before["service"]) == 1 and {vol, vol2} <= before["volume"]
    alice_before = owned(direct_client, people["alice"][1])

    # --dry-run lists everything and changes nothing.
    r = dg(gate, "purge", "--user", bob_name, "--volumes", "--dry-run")
    assert r.returncode == 0, out(r)
    for name in (running, stopped, service, vol, vol2):
        assert name in r.stdout, out(r)
    assert "would remove" in r.stdout
    assert owned(direct_client, bob_name) == before
    assert direct_client.containers.get(running).status == "running"

    # No terminal and no --yes: the table, then a refusal that says what to do.
    r = dg(gate, "purge", "--user", bob_name, "--volumes")
    assert r.returncode == 1, out(r)
    assert "--yes" in r.stderr and running in r.stdout
    assert owned(direct_client, bob_name) == before

    r = dg(gate, "purge", "--user", bob_name, "--volumes", "--yes")
    assert r.returncode == 0, out(r)
    assert "removed" in r.stdout and "failed" not in r.stdout.replace("0 failed", "")
    gone = wait_until(
        lambda: not any(owned(direct_client, bob_name).values()) and True,
        30,
        "nothing of bob's on the engine",
    )
    assert gone
    assert owned(direct_client, people["alice"][1]) == alice_before
    assert direct_client.containers.get(alice_objects["container"]).status == "running"
    direct_client.volumes.get(alice_objects["volume"])

    # Again, through the gate's admin API over TLS with the admin bundle: a no-op.
    tls_env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(gate.admin_cert_dir)}
    r = dg(
        gate, "purge", "--user", bob_name, "--volumes", "--yes", "--host", gate.tls_url, env=tls_env
    )
    assert r.returncode == 0, out(r)
    assert "nothing owned by" in r.stdout

    # Both purges are in the audit log: the local one as a CLI action with its counts,
    # the remote one as the request plus a summary row.
    def purges() -> list[dict[str, Any]]:
        rows = audit_json(gate, "--kind", "user")
        return [x for x in rows if x["object_id"] == bob_name and "purge" in (x["route"] or "")]

    rows = wait_until(lambda: len(purges()) >= 2 and purges(), 10, "the purge audit rows")
    local = [x for x in rows if x["listener"] == "cli"]
    assert len(local) == 1 and local[0]["path"] == f"purge --user {bob_name} --volumes"
    assert "removed" in local[0]["detail"] and "0 failed" in local[0]["detail"]
    summary = [x for x in rows if x["route"] == "gate.purge.summary"]
    assert summary and summary[0]["user"] == "admin" and "nothing owned" in summary[0]["detail"]
    # The request's own row is added after its reply, after the summary row: it may
    # come in the audit writer's next flush.
    request = wait_until(
        lambda: [x for x in audit_json(gate, "--user", "admin") if x["route"] == "gate.purge"],
        10,
        "the purge request's audit row",
    )
    assert request[-1]["status"] == 200 and request[-1]["listener"] == "tls"
    table = dg(gate, "audit")
    assert f"purge --user {bob_name} --volumes" in table.stdout, out(table)


def test_purge_stop_only(gate: Any, cli: Any, people: Any, direct_client: Any) -> None:
    carol, name = people["carol"]
    tag = uuid.uuid4().hex[:6]
    c, svc = f"pa-carol-c-{tag}", f"pa-carol-svc-{tag}"
    try:
        for args in (
            ["run", "-d", "--name", c, "busybox", "sleep", "600"],
            [
                "service",
                "create",
                "-d",
                "--replicas",
                "2",
                "--name",
                svc,
                "busybox",
                "sleep",
                "600",
            ],
        ):
            r = cli(args, user=carol)
            assert r.returncode == 0, (args, r.stderr)
        r = dg(gate, "purge", "--user", name, "--stop-only", "--yes")
        assert r.returncode == 0, out(r)
        assert "killed" in r.stdout and "scaled to 0 (was 2)" in r.stdout
        assert direct_client.containers.get(c).status != "running"
        spec = direct_client.services.get(svc).attrs["Spec"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 0
        r = dg(gate, "purge", "--user", name, "--stop-only", "--volumes", "--yes")
        assert r.returncode == 2 and "--stop-only removes nothing" in r.stderr
    finally:
        r = dg(gate, "purge", "--user", name, "--all", "--yes")
        assert r.returncode == 0, out(r)
    assert not any(owned(direct_client, name).values())


def test_members_cannot_purge_through_the_gate(gate: Any, people: Any, direct_client: Any) -> None:
    alice, _ = people["alice"]
    r = dg(gate, "purge", "--user", people["bob"][1], "--yes", "--host", gate.unix_url, user=alice)
    assert r.returncode == 1, out(r)
    assert "admins only" in r.stderr
    r = dg(gate, "usage", "--host", gate.unix_url, user=alice)
    assert r.returncode == 1 and "admins only" in r.stderr, out(r)


# -- audit --------------------------------------------------------------------------------


def test_refused_privileged_run_is_audited_with_its_rule(gate: Any, cli: Any, people: Any) -> None:
    alice, name = people["alice"]
    r = cli(["run", "--rm", "--privileged", "busybox", "true"], user=alice)
    assert r.returncode != 0 and "privileged" in r.stderr, r.stderr

    def refused() -> list[dict[str, Any]]:
        return [
            x
            for x in audit_json(gate, "--user", name, "--denied")
            if x["route"] == "container.create"
        ]

    rows = wait_until(refused, 10, "alice's refused create in the audit log")
    row = rows[-1]
    assert row["decision"] == "deny" and row["status"] == 403
    assert "privileged" in (row["rule"] or "") and "profile member" in row["rule"]
    assert row["path"] == "/containers/create" and row["listener"] == "unix"
    assert row["identified_by"] == f"unix uid {alice.uid}"
    text = dg(gate, "audit", "--user", name, "--denied", "--since", "1h")
    assert (
        text.returncode == 0 and "privileged" in text.stdout and "/containers/create" in text.stdout
    )
    # Allowed reads are not recorded (audit_reads is off by default).
    r = cli(["ps"], user=alice)
    assert r.returncode == 0
    time.sleep(1.2)
    reads = [x for x in audit_json(gate, "--user", name) if x["method"] == "GET"]
    assert not [x for x in reads if x["decision"] == "allow"], reads


def test_user_admin_commands_are_audited(gate: Any) -> None:
    name = f"pa-tmp-{uuid.uuid4().hex[:4]}"
    gate.dockergate("user", "add", name, "--profile", "member")
    gate.dockergate("user", "remove", name)
    rows = [x for x in audit_json(gate, "--kind", "user") if x["object_id"] == name]
    assert [x["path"] for x in rows] == [f"user add {name}", f"user remove {name}"]
    assert rows[0]["listener"] == "cli" and rows[0]["user"] == "root"


# -- usage and whoami ---------------------------------------------------------------------


def test_usage_shows_everyone(
    gate: Any, people: Any, alice_objects: Any, direct_client: Any
) -> None:
    alice_name = people["alice"][1]
    ghost = f"pa-ghost-{uuid.uuid4().hex[:4]}"  # an owner label no user is registered for
    stray = direct_client.containers.create("busybox", ["true"], labels={OWNER: ghost})
    try:
        r = dg(gate, "usage", "--json")
        assert r.returncode == 0, out(r)
        users = {u["user"]: u for u in json.loads(r.stdout)["users"]}
        alice = users[alice_name]
        assert alice["registered"] and alice["profile"] == "member"
        assert alice["containers"]["running"] >= 1 and alice["containers"]["total"] >= 1
        assert alice["memory"]["reserved"] >= 2 << 30  # the member default, 2g per container
        assert alice["memory"]["quota"] == 128 << 30
        assert alice["last_activity"] is not None
        assert users[ghost]["registered"] is False and users[ghost]["containers"]["total"] == 1
        r = dg(gate, "usage")
        assert r.returncode == 0 and alice_name in r.stdout and "(unregistered)" in r.stdout, out(r)
        assert "of 128g" in r.stdout
        # The same through the gate's admin API.
        r = dg(gate, "usage", "--json", "--host", gate.unix_url)
        assert r.returncode == 0, out(r)
        remote = {u["user"]: u for u in json.loads(r.stdout)["users"]}
        assert remote[alice_name]["containers"] == alice["containers"]
        assert remote[ghost]["registered"] is False
    finally:
        stray.remove(force=True)


def test_whoami(gate: Any, people: Any, alice_objects: Any, tmp_path: Path) -> None:
    alice, name = people["alice"]
    r = dg(gate, "whoami", env={"DOCKER_HOST": gate.unix_url}, user=alice)
    assert r.returncode == 0, out(r)
    assert name in r.stdout and "profile member" in r.stdout and "128g" in r.stdout
    assert f"unix uid {alice.uid}" in r.stdout
    # Over TLS with the admin bundle, as the docker CLI would be configured.
    env = {
        "DOCKER_HOST": gate.tls_url,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(gate.admin_cert_dir),
    }
    r = dg(gate, "whoami", "--json", env=env)
    assert r.returncode == 0, out(r)
    me = json.loads(r.stdout)
    assert me["user"] == "admin" and me["admin"] is True and "cert" in me["identified_by"]
    # With a token from the docker config's HttpHeaders and only the CA in the cert path.
    token = gate.dockergate("user", "token", name).stdout.splitlines()[0]
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"HttpHeaders": {"X-Dockergate-Token": token}}))
    ca_only = tmp_path / "ca-only"
    ca_only.mkdir()
    (ca_only / "ca.pem").write_bytes((gate.admin_cert_dir / "ca.pem").read_bytes())
    env = {**env, "DOCKER_CERT_PATH": str(ca_only), "DOCKER_CONFIG": str(config)}
    r = dg(gate, "whoami", "--json", env=env)
    assert r.returncode == 0, out(r)
    me = json.loads(r.stdout)
    assert me["user"] == name and me["identified_by"].startswith("token")
    assert me["usage"]["running"] >= 1
    # Pointed at the daemon instead of a gate: say so.
    r = dg(gate, "whoami", env={"DOCKER_HOST": gate.upstream})
    assert r.returncode == 1 and "not a dockergate" in r.stderr, out(r)


# -- a burst ------------------------------------------------------------------------------


def test_burst_of_audited_requests_all_stored(gate_factory: Any, unix_user: Any) -> None:
    """1 000 refused writes from 10 keep-alive connections at once; after a clean stop
    (SIGTERM), every one of them is a row (with the per-minute budget of refusals
    off: the next test has it on)."""
    g = gate_factory(tls=False, env={"DOCKERGATE_AUDIT_REFUSALS_PER_MINUTE": "0"})
    u = unix_user("pa-burst")
    g.dockergate("user", "add", "pa-burst", "--profile", "member", "--uid", str(u.uid))
    socks = connect_as(g.socket, u.uid, 10)
    per_conn = 100
    request = (
        b"POST /v1.41/swarm/leave?force=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
    )

    def hammer(sock: socket.socket) -> list[int]:
        statuses = []
        with sock:
            for _ in range(per_conn):  # keep-alive: the next request as soon as possible
                sock.sendall(request)
                statuses.append(read_response(sock, 30.0, "POST").status)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(len(socks)) as pool:
        statuses = [s for result in pool.map(hammer, socks) for s in result]
    assert statuses == [403] * 1000
    g.stop()
    g.proc = None  # stopped here on purpose; nothing left for the fixture to stop
    with Store.open(Settings(state_dir=g.state_dir)) as store:
        rows = store.audit_entries(user="pa-burst")
    leave = [r for r in rows if r.route == "swarm.leave"]
    assert len(leave) == 1000
    assert {r.decision for r in leave} == {"deny"} and {r.status for r in leave} == {403}
    assert all("admins only" in (r.rule or "") for r in leave)


def test_refusals_past_the_budget_become_one_row(gate_factory: Any, unix_user: Any) -> None:
    """A member looping on a refused request: 120 rows (``audit_refusals_per_minute``),
    then one row counting the rest, written at the latest when the gate stops; the
    log says so."""
    g = gate_factory(tls=False)
    u = unix_user("pa-loop")
    g.dockergate("user", "add", "pa-loop", "--profile", "member", "--uid", str(u.uid))
    (sock,) = connect_as(g.socket, u.uid, 1)
    request = (
        b"POST /v1.41/swarm/leave?force=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
    )
    with sock:
        for _ in range(300):
            sock.sendall(request)
            assert read_response(sock, 30.0, "POST").status == 403
    g.stop()
    g.proc = None
    with Store.open(Settings(state_dir=g.state_dir)) as store:
        rows = [r for r in store.audit_entries(user="pa-loop") if r.route == "swarm.leave"]
    summed = [r for r in rows if "180 more refusals" in (r.rule or "")]
    assert len(rows) == 121 and len(summed) == 1, [r.rule for r in rows[-3:]]
    assert "refusals of pa-loop in a minute summed into one row" in g.log()
