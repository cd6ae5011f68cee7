"""Review round 31e: the brief, line by line, end to end, as two members over the unix
socket, over TLS with their bundles and with a token, on the lines earlier rounds
touched least (a Swarm stack's tasks, TLS streams, purge of networks, a gate restart).

Checklist (held unless marked):

- ``DOCKER_HOST`` at the gate, CLI 28 / docker-py / ``stack deploy`` / compose 1.29:
  held (compose 1.29 up/ps/logs/exec/down -v over TLS; docker-py over TLS creates a
  service whose tasks carry the owner label, and another member's docker-py sees no
  service, no task and gets "service not found" for ``tasks(filters=service)``).
- Listeners and identity (SO_PEERCRED, bundle, token via ``HttpHeaders`` with only
  ``ca.pem``): held (``test_works_tls_streams_bundle_and_token``).
- Path normalisation, default deny: not re-probed (31a-31d pinned it).
- Ownership of a member's stack: held. ``docker stack deploy`` over TLS of a service
  with a secret, a config, an overlay network and a named volume: every object and
  the task's ``ContainerSpec.Labels`` carry the owner; the other member's ``service
  ps``, ``stack ps``, ``ps -a``, ``inspect --type task`` (by ID prefix), ``service
  logs <task>``, ``GET /tasks`` and ``GET /tasks/{id}`` answer like nothing exists;
  ``stack rm`` removes all of it (``test_works_member_stack_over_tls_...``).
- Profiles: refusals as documented (``--privileged`` over TLS: "profile 'member'
  forbids privileged containers (HostConfig.Privileged=true); drop --privileged").
- Admin tools: ``purge --user X --volumes --networks`` removes the services, the
  task containers, the containers, the volumes and networks and leaves configs and
  secrets (``--all`` takes those); ``audit`` rows name who (and how identified), the
  object created (id and name) and the rule refused; ``usage`` counts the stack's
  task and memory: held (``test_works_purge_volumes_networks_then_audit``).
- State survives a restart: **FAIL (Low)**, see the finding below. Ownership, quotas,
  lists and inspect survive (they read labels); what ``events --since`` shows of
  objects removed through the gate does not.
- Request bodies, refusal format: not re-probed beyond a sample of malformed query
  values (no 500 of the gate's own).
- Streaming over TLS: held: ``echo | docker exec -i`` ends on stdin EOF (half-close
  through the gate's TLS layer, 100 kB too), ``cp`` in and out (and ``cp ... -``),
  ``logs -f`` stays open, ``stats --no-stream``, ``events`` live, ``wait`` returns
  the exit code; the same ``exec -i`` with a token instead of a certificate.
- Logs for operators: the access line names user, how identified, route, rule.

Finding (``test_finding_*`` FAILS on efdb328):

- Low: a gate restart drops a member's own history from ``docker events --since``.
  Before the restart, ``docker events --since T --until now`` as the member lists the
  create and remove events of the secret, network and volume they made and removed
  through the gate; after a restart (or ``scripts/run.sh`` again, an upgrade, a
  crash) the same command prints nothing. The owners of removed objects are kept only
  in process memory (``api/ownership.py``: ``_removed``, ``remember_removal``,
  ``removed_owner``), which also misses objects an admin purged (``dockergate purge``
  talks to the engine directly: the member's ``events`` after a purge shows the task
  container's kill/die/destroy but not ``service remove``) and removals through
  another gate of the cluster. The brief: "ownership lives in Docker labels, so a
  restart loses nothing". Fix: keep the tombstones in the store (a ``removed_objects``
  table: kind, id, owner, created, removed; written by ``remember_removal``, the
  prune paths and ``purge``; pruned after ``audit_retention_days``), or record
  them in the audit rows the gate already writes and read them back.

Noticed and left alone: dockerd's own 500s for malformed query values pass through
unchanged (``containers/json?limit=abc``, ``logs?since=abc``, ``events?since=abc``,
``services/{id}/logs?tail=x``, ``networks?filters={"type":["weird"]}``, prune
``until=abc``, ``top?ps_args=-o bogus``, ``nodes?filters={"role":["bogus"]}``): the
brief's "never a 500" would need the gate to validate every query value; the gate
already does for ``t``. ``GET /services/<own>?insertDefaults=x`` answers the member
"service ... not found" (dockerd: 400 ParseBool) since the resolving inspect carries
the client's query. ``POST /build/cancel`` is open to members (it cancels a BuildKit
build by its random ID; only admins build with BuildKit). ``--config-from`` is
refused by dockerd itself because of the owner label (21b).

One module gate (unix + TLS) on the shipped profiles, two unix users, only
``busybox``, loopback only.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Gate,
    UnixUser,
    dockergate_argv,
    remove_owned,
    started_gate,
    wait_until,
)
from tests.integration.test_hostile import Raw

pytestmark = pytest.mark.timeout(90)

OWNER = "dockergate.owner"
ALICE = "r31e-alice"
BOB = "r31e-bob"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args}\nrc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def g31e(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with started_gate(session_dir, docker_host) as g:  # the shipped profiles, unix + TLS
        yield g


@pytest.fixture(scope="module")
def people(g31e: Gate, unix_user, session_dir: Path, direct_client) -> Iterator[dict[str, Any]]:
    a, b = unix_user("r31ea"), unix_user("r31eb")
    g31e.dockergate("user", "add", ALICE, "--profile", "member", "--uid", str(a.uid))
    g31e.dockergate("user", "add", BOB, "--profile", "member", "--uid", str(b.uid))
    bundles = {}
    for name, u in ((ALICE, a), (BOB, b)):
        d = session_dir / f"r31e-bundle-{name}-{_rand()}"
        g31e.dockergate("user", "cert", name, "--out", str(d))
        for p in (d, *d.iterdir()):
            os.chown(p, u.uid, u.gid)
        bundles[name] = d
    try:
        yield {"alice": a, "bob": b, "bundles": bundles}
    finally:
        remove_owned(direct_client, ALICE, BOB)


class As:
    """The docker CLI as one user over one listener of the module's gate."""

    def __init__(self, cli, gate: Gate, user: UnixUser, listener: str, bundle: Path) -> None:
        self.cli, self.gate, self.user, self.listener = cli, gate, user, listener
        self.cert = bundle if listener == "tls" else None

    def __call__(self, args, **kw) -> subprocess.CompletedProcess[str]:
        return self.cli(
            args, user=self.user, listener=self.listener, cert_dir=self.cert, gate=self.gate, **kw
        )


def _as(cli, g31e: Gate, people, who: str, listener: str = "unix") -> As:
    name = ALICE if who == "alice" else BOB
    return As(cli, g31e, people[who], listener, people["bundles"][name])


@pytest.fixture
def workdir(people) -> Iterator[Path]:
    d = Path(os.environ.get("DOCKERGATE_TEST_RUN_DIR") or "/tmp") / f"r31e-wd-{_rand()}"
    d.mkdir(mode=0o755)
    a = people["alice"]
    os.chown(d, a.uid, a.gid)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


def _admin(g31e: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    """``dockergate ARGS`` as the operator runs it on the gate's host."""
    env = {**os.environ, "DOCKERGATE_UPSTREAM": g31e.upstream}
    argv = [*dockergate_argv(), "--state-dir", str(g31e.state_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


# ========================================================================= findings


def test_finding_events_of_removed_objects_lost_on_gate_restart(cli, g31e, people):
    """What the member did: ``docker secret create``, ``network create``, ``volume
    create``, then removed the three, and later ``docker events --since T --until
    now`` to see what they did.

    What happened: before the gate restarts, the six events show; after a restart
    (``scripts/run.sh`` again, an upgrade, a crash, ``systemctl restart``), nothing:
    who owned a removed object lives in the gate's memory only (``api/ownership.py``
    ``_removed``/``removed_owner``), and the events name only the object's ID.

    Expected: the same events after a restart, as before it ("a restart loses
    nothing"). Severity: Low (a member's own history, no other user's)."""
    a = _as(cli, g31e, people, "alice")
    t = _rand()
    sec, net, vol = f"r31e-es-{t}", f"r31e-en-{t}", f"r31e-ev-{t}"
    since = str(int(time.time()) - 1)
    ok(a(["secret", "create", sec, "-"], input="x"))
    ok(a(["network", "create", net]))
    ok(a(["volume", "create", vol]))
    ok(a(["secret", "rm", sec]))
    ok(a(["network", "rm", net]))
    ok(a(["volume", "rm", vol]))
    until = str(int(time.time()) + 1)
    time.sleep(1.1)  # --until in the past: the stream ends by itself
    events = ["events", "--since", since, "--until", until, "--format", "{{.Type}} {{.Action}}"]
    wanted = {
        "secret create",
        "secret remove",
        "network create",
        "network destroy",
        "volume create",
        "volume destroy",
    }
    before = set(ok(a(events)).splitlines())
    assert wanted <= before, before  # the gate knows, while it runs
    g31e.stop()
    g31e.start()
    after = set(ok(a(events)).splitlines())
    assert wanted <= after, f"after a gate restart the member's events are gone: {after}"


def test_events_of_what_a_local_purge_removed_are_replayed_after_a_restart(cli, g31e, people):
    """The same for ``dockergate purge`` run on the gate's host (it talks to the
    engine itself): what it removed is kept in the store, so a gate started after
    it still shows the member the removal of their secret and volume."""
    a = _as(cli, g31e, people, "alice")
    t = _rand()
    sec, vol = f"r31e-ps-{t}", f"r31e-pv-{t}"
    since = str(int(time.time()) - 1)
    ok(a(["secret", "create", sec, "-"], input="x"))
    ok(a(["volume", "create", vol]))
    r = _admin(g31e, "purge", "--user", ALICE, "--all", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    until = str(int(time.time()) + 1)
    time.sleep(1.1)
    g31e.stop()
    g31e.start()
    events = ["events", "--since", since, "--until", until, "--format", "{{.Type}} {{.Action}}"]
    after = set(ok(a(events)).splitlines())
    assert {"secret remove", "volume destroy"} <= after, after


# ============================================================================ works


def test_works_member_stack_over_tls_owned_tasks_hidden_then_removed(
    cli, g31e, people, workdir, direct_client
):
    """``docker stack deploy`` over TLS of a service with a secret, a config, an overlay
    network and a named volume: all owned, the task's container spec and container
    carry the owner; the other member sees no service, task, stack or container (by
    name, ID prefix, raw ``/tasks``); ``stack rm`` takes it all away."""
    a = _as(cli, g31e, people, "alice", "tls")
    b = _as(cli, g31e, people, "bob")
    st = f"r31est{_rand()}"
    (workdir / "s.txt").write_text("sec")
    (workdir / "c.txt").write_text("cfg")
    (workdir / "stack.yml").write_text(
        """version: "3.8"
services:
  web:
    image: busybox
    command: sleep 300
    networks: [net]
    volumes: [data:/data]
    secrets: [sec]
    configs: [cfg]
networks:
  net: {driver: overlay}
volumes:
  data: {}
secrets:
  sec: {file: ./s.txt}
configs:
  cfg: {file: ./c.txt}
"""
    )
    ok(a(["stack", "deploy", "-c", "stack.yml", st], cwd=workdir))
    try:
        flt = {"label": f"com.docker.stack.namespace={st}"}
        for kind in ("services", "secrets", "configs", "networks"):
            objs = getattr(direct_client, kind).list(filters=flt)
            labels = [o.attrs["Labels"] if kind == "networks" else o.attrs["Spec"]["Labels"]
                      for o in objs]  # fmt: skip
            assert labels and all(x.get(OWNER) == ALICE for x in labels), (kind, labels)

        def running_task() -> dict[str, Any] | None:
            tasks = direct_client.api.tasks(filters={"service": f"{st}_web"})
            return next((t for t in tasks if t["Status"]["State"] == "running"), None)

        task = wait_until(running_task, 30, 0.2, "the stack's task to run")
        assert task["Spec"]["ContainerSpec"]["Labels"][OWNER] == ALICE
        tid = task["ID"]
        ps = ok(a(["service", "ps", "-q", "--no-trunc", f"{st}_web"])).split()
        assert tid in ps, ps
        mine = ok(a(["ps", "--format", '{{.Names}} {{.Label "dockergate.owner"}}']))
        assert f"{st}_web.1." in mine and ALICE in mine, mine
        vols = direct_client.volumes.list(filters={"name": f"{st}_data"})
        assert vols and vols[0].attrs["Labels"][OWNER] == ALICE

        # The other member: nothing of it exists.
        assert b(["service", "ps", f"{st}_web"]).returncode != 0
        assert b(["stack", "ps", st]).returncode != 0
        assert ok(b(["ps", "-a", "-q"])).strip() == ""
        assert ok(b(["stack", "ls", "--format", "{{.Name}}"])).strip() == ""
        r = b(["inspect", "--type", "task", tid[:8]])
        assert r.returncode != 0 and "not found" in r.stderr, r.stderr
        assert b(["service", "logs", tid]).returncode != 0
        raw = Raw(str(g31e.socket), people["bob"].uid)
        assert json.loads(raw.request("GET", "/v1.41/tasks").body) == []
        assert raw.request("GET", f"/v1.41/tasks/{tid}").status == 404
        assert raw.request("GET", f"/v1.41/tasks/{tid}/logs?stdout=1").status == 404

        usage = ok(_admin(g31e, "usage", "--json"))
        assert ALICE in usage, usage
    finally:
        out = ok(a(["stack", "rm", st]))
    for word in ("Removing service", "Removing secret", "Removing config", "Removing network"):
        assert word in out, out
    assert not direct_client.services.list(filters=flt)
    assert not direct_client.secrets.list(filters=flt)
    assert not direct_client.configs.list(filters=flt)


def test_works_tls_streams_bundle_and_token(cli, g31e, people, workdir):
    """Over TLS: ``exec -i`` ends on stdin's EOF (half-close), ``cp`` both ways,
    ``logs -f`` stays open, ``stats --no-stream``, live ``events``, ``wait``; and
    ``exec -i`` with a token (only ``ca.pem`` and ``HttpHeaders``)."""
    a = _as(cli, g31e, people, "alice", "tls")
    t = _rand()
    c, w = f"r31e-c-{t}", f"r31e-w-{t}"
    ok(a(["run", "-d", "--name", c, "busybox", "sh", "-c", "echo hello; exec sleep 300"]))
    try:
        assert ok(a(f"echo piped | docker exec -i {c} cat", shell=True, timeout=20)) == "piped\n"
        n = ok(a(f"head -c 100000 /dev/zero | docker exec -i {c} wc -c", shell=True, timeout=20))
        assert n.strip() == "100000"
        f = workdir / "f.txt"
        f.write_text("data")
        os.chown(f, people["alice"].uid, people["alice"].gid)
        ok(a(["cp", str(f), f"{c}:/tmp/f.txt"]))
        ok(a(["cp", f"{c}:/tmp/f.txt", str(workdir / "g.txt")]))
        assert (workdir / "g.txt").read_text() == "data"
        logs = ok(a(f"timeout 2 docker logs -f {c}; echo rc=$?", shell=True, timeout=20))
        assert logs == "hello\nrc=124\n", logs  # still following when cut
        stats = ok(a(["stats", "--no-stream", "--format", "{{.Name}}", c]))
        assert stats.strip() == c
        ev = ok(
            a(
                f"timeout 3 docker events --filter container={c} & sleep 1; "
                f"docker kill -s USR1 {c} >/dev/null; wait",
                shell=True,
                timeout=20,
            )
        )
        assert "container kill" in ev and "signal=10" in ev, ev
        ok(a(["run", "-d", "--name", w, "busybox", "sh", "-c", "exit 3"]))
        assert ok(a(["wait", w])).strip() == "3"

        token = ok(g31e.dockergate("user", "token", ALICE)).strip()
        td = workdir / "tok"
        td.mkdir()
        (td / "ca.pem").write_bytes((people["bundles"][ALICE] / "ca.pem").read_bytes())
        (td / "config.json").write_text(json.dumps({"HttpHeaders": {"X-Dockergate-Token": token}}))
        u = people["alice"]
        for p in (td, *td.iterdir()):
            os.chown(p, u.uid, u.gid)
        r = subprocess.run(
            [
                "setpriv",
                f"--reuid={u.uid}",
                f"--regid={u.gid}",
                "--clear-groups",
                "sh",
                "-c",
                f"echo tok | docker --config {td} exec -i {c} cat",
            ],
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(td),
                "DOCKER_HOST": g31e.tls_url,
                "DOCKER_TLS": "1",
                "DOCKER_CERT_PATH": str(td),
            },
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert ok(r) == "tok\n"
    finally:
        a(["rm", "-f", c, w])


def test_works_purge_volumes_networks_then_audit(cli, g31e, people, direct_client):
    """``purge --user X --volumes --networks --yes``: the service, its task container,
    the containers, the volume and network go; the config stays (``--all`` takes it);
    ``audit`` names who, how, the created object and the refusal's rule."""
    b = _as(cli, g31e, people, "bob")
    t = _rand()
    net, vol, cfg, svc, c = (f"r31e-p{k}-{t}" for k in ("n", "v", "c", "s", "x"))
    ok(b(["network", "create", net]))
    ok(b(["volume", "create", vol]))
    ok(b(["config", "create", cfg, "-"], input="x"))
    ok(b(["service", "create", "-d", "--name", svc, "busybox", "sleep", "300"]))
    ok(
        b(
            [
                "run",
                "-d",
                "--name",
                c,
                "-v",
                f"{vol}:/d",
                "--network",
                net,
                "busybox",
                "sleep",
                "300",
            ]
        )
    )
    r = b(["run", "--rm", "--privileged", "busybox", "true"])
    assert "profile 'member' forbids privileged containers" in r.stderr, r.stderr

    out = ok(_admin(g31e, "purge", "--user", BOB, "--volumes", "--networks", "--yes"))
    for name in (svc, c, vol, net):
        assert name in out, out
    flt = {"label": f"{OWNER}={BOB}"}
    assert not direct_client.services.list(filters=flt)
    assert not direct_client.containers.list(all=True, filters=flt)
    assert not direct_client.volumes.list(filters=flt)
    assert not direct_client.networks.list(filters=flt)
    assert [x.name for x in direct_client.configs.list(filters=flt)] == [cfg]

    audit = ok(_admin(g31e, "audit", "--user", BOB, "--limit", "50"))
    assert f"name={svc}" in audit and f"name={c}" in audit, audit
    assert "profile member: privileged containers" in audit, audit
    assert "unix uid" in audit, audit
    admin_rows = ok(_admin(g31e, "audit", "--kind", "user", "--limit", "5"))
    assert f"purge --user {BOB} --volumes --networks" in admin_rows, admin_rows
    with contextlib.suppress(Exception):
        direct_client.configs.get(cfg).remove()
