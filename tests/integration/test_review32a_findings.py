"""Review round 32a: today's fixes attacked (3b275dc): API versions below 1.40/1.41,
null list items, removed objects kept in the store, bounded memos and refusal labels,
the upstream pool trim.

Findings (each ``test_finding_*`` FAILS on 3b275dc):

- High: a member's ``volume prune`` requests shut the gate for everyone. Since
  582021a every removal remembered (``api/ownership.py``: ``remember_removal``) is
  also written to the store by ``keep_removals``'s sink: one ``asyncio.to_thread``
  transaction per row, in the default executor the user directory's 0.25 s poll
  also runs in. ``remember_pruned`` (``api/dispatch.py``) remembers *all* the
  caller's volumes (or networks) on every prune, whatever the prune's filters
  remove: 120 volumes (no quota on volumes) and 70 ``POST /volumes/prune?filters=
  {"label":["nomatch"]}`` (2 s, nothing removed) queue 8,400 writes; the poll
  waits behind them past ``stale_after`` (5 s) and the gate answers every user 503
  "store unavailable: no answer from the user database for more than 5 s; refusing
  everyone" until the backlog drains (seconds per batch; indefinitely while the
  member keeps pruning). Fix: write only removals that happened (after dockerd's
  2xx, the IDs a prune reports), skip a write when the kept row already says the
  same owner and lifetime, batch them through one bounded queue and one writer
  (the audit writer's pattern), and give the directory poll its own thread.
- Medium: one member can fill ``dockergate_refusals``'s 500 labels, after which
  every other refusal (another member's ``--privileged``) is counted as "other".
  ``refusal_label`` (``metrics.py``) keeps a profile rule's ``what`` as the label,
  and ``check_ulimits`` (``policy/resources.py``) puts the client's ulimit name in
  it: ``the x<N> ulimit``. Fix: a fixed ``what`` ("this ulimit"), the name in the
  message only; or key profile labels by (profile, rule id) from a closed set.

What held (``test_works_*``):

- API versions: ``POST /v1.40/services/create`` and ``/v1.40/services/{id}/update``
  of a member refused naming the pids limit; a ``Version: 1.40`` *header* on
  ``/v1.41`` is not what dockerd 20.10 reads (the pids limit stays); a NonRecursive
  bind through ``/v1.39`` refused; docker-compose 1.29 ``up``/``down -v`` of a
  ``version: "2.0"`` file (API 1.22: env, dns_search, named and anonymous volumes,
  tmpfs, cap_drop, ulimits, mem_limit) as a member; container creates through
  ``/v1.24``, ``/v1.30``, ``/v1.38``, ``/v1.40`` with Mounts, Tmpfs, empty lists.
  ``POST /v1.23/containers/{id}/start`` with a HostConfig body refused (400).
- Null list items: refused (400) with the path (``Env[1]``); the compose 1.29 file
  above (``environment: [FOO]`` is sent as "FOO") and the raw old-version creates
  carry none. docker-py, ``stack deploy`` and Portainer-like bodies were not re-run
  here (31e's compose/stack/docker-py flows are in the suite).
- Removed objects: attribution needs the ID; volume IDs are names, which stay held
  by their first user (``volume_names``), and ``removed_owner`` applies only before
  the current holder's creation; a removal dockerd refused (a volume in use) is
  still recorded, but with the true owner and lifetime. Migration 0006 applies to a
  PostgreSQL database at 0005 with ``dockergate db upgrade`` and ``db status``
  then says head.

Noticed and left alone: below API 1.41 every service create/update of a non-admin is
refused (the profile always fills in a pids limit), so docker-py with an explicit
``version="1.40"`` cannot make services (documented in the refusal); refusals that
are not profile rules are now labelled by route and status, so "volume name held by
another user", "API version below 1.41" and "network names are unique" are no longer
told apart in the scrape (README still says "by rule"); ``remember_anonymous_volumes``
records a container's anonymous volumes also on ``rm`` without ``-v``; an admin's
volume name over 255 characters fails the PostgreSQL row (a warning only).

One module gate (unix, shipped profiles, SQLite store), two members, ``busybox``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import (
    Gate,
    UnixUser,
    dockergate_argv,
    raw_request,
    remove_owned,
    started_gate,
    wait_until,
)
from tests.integration.test_hostile import Raw

pytestmark = pytest.mark.timeout(120)

ALICE, BOB = "r32a-alice", "r32a-bob"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g32(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with started_gate(session_dir, docker_host, tls=False) as g:
        yield g


@pytest.fixture(scope="module")
def people(g32: Gate, unix_user, direct_client) -> Iterator[dict[str, Any]]:
    a, b = unix_user("r32a-a"), unix_user("r32a-b")
    g32.dockergate("user", "add", ALICE, "--profile", "member", "--uid", str(a.uid))
    g32.dockergate("user", "add", BOB, "--profile", "member", "--uid", str(b.uid))
    try:
        yield {
            "alice": Raw(str(g32.socket), a.uid),
            "bob": Raw(str(g32.socket), b.uid),
            "alice_user": a,
        }
    finally:
        remove_owned(direct_client, ALICE, BOB)


def _direct(docker_host: str, method: str, target: str, body: Any = None, **headers: str):
    data = json.dumps(body).encode() if body is not None else b""
    h = {"Content-Type": "application/json", **headers}
    return raw_request(docker_host.removeprefix("unix://"), method, target, headers=h, body=data)


def _refusal_labels(g: Gate) -> list[str]:
    reply = raw_request(g.socket, "GET", "/_dockergate/metrics")  # root: an admin
    assert reply.status == 200, reply.body[:300]
    return [
        line for line in reply.body.decode().splitlines() if line.startswith("dockergate_refusals")
    ]


def _service(name: str, **resources: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "60"]}},
        "Mode": {"Replicated": {"Replicas": 0}},
    }
    if resources:
        spec["TaskTemplate"]["Resources"] = {"Limits": resources}
    return spec


# ========================================================================= findings


def test_finding_made_up_ulimit_names_fill_the_refusal_series(g32, people):
    """Alice sends 505 container creates, each with a ulimit of a new made-up name:
    each refusal's label is "profile member: the x<N> ulimit" (the client's name),
    so the 500 labels ``Metrics`` keeps are hers. Bob's ``--privileged`` refusal
    afterwards should be counted under its rule; it is counted as "other"."""
    a, b = people["alice"], people["bob"]
    t = _rand()
    for i in range(505):
        ulimits = [{"Name": f"x{t}{i}", "Soft": 1, "Hard": 1}]
        r = a.request(
            "POST",
            "/v1.41/containers/create",
            {"Image": "busybox", "HostConfig": {"Ulimits": ulimits}},
        )
        assert r.status == 403, r.body
    r = b.request(
        "POST", "/v1.41/containers/create", {"Image": "busybox", "HostConfig": {"Privileged": True}}
    )
    assert r.status == 403 and b"privileged" in r.body, r.body
    labels = _refusal_labels(g32)
    ulimit_series = [line for line in labels if "ulimit" in line]
    assert len(ulimit_series) <= 3, f"{len(ulimit_series)} series of made-up ulimit names"
    assert any("privileged containers" in line for line in labels), [
        line for line in labels if "other" in line
    ]


def test_finding_a_members_volume_prunes_shut_the_gate_for_everyone(g32, people):
    """Alice makes 120 volumes and sends 70 volume prunes whose filter matches none
    of them (nothing is removed). Each prune remembers all 120 as removed and writes
    each row to the store in its own worker-thread transaction: 8,400 writes queue
    ahead of the user directory's poll, which goes stale (5 s), and Bob (and every
    user) gets 503 "store unavailable" until they drain. Expected: Bob's requests
    keep working."""
    a, b = people["alice"], people["bob"]
    t = _rand()
    for i in range(120):
        r = a.request("POST", "/v1.41/volumes/create", {"Name": f"r32a-pv-{t}-{i}"})
        assert r.status == 201, r.body
    flt = quote(json.dumps({"label": [f"r32a-nomatch-{t}"]}))
    seen: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def bob_polls() -> None:
        while not stop.is_set():
            r = b.request("GET", "/v1.41/containers/json")
            seen.append((round(time.monotonic() - t0, 1), r.status))
            if r.status == 503:
                return
            time.sleep(0.2)

    poller = threading.Thread(target=bob_polls)
    poller.start()
    try:
        for _ in range(70):
            r = a.request("POST", f"/v1.41/volumes/prune?filters={flt}")
            assert r.status == 200, r.body
            assert json.loads(r.body).get("VolumesDeleted") in (None, []), r.body
        poller.join(timeout=8)
    finally:
        stop.set()
        poller.join()
        # Let the backlog drain, so the module's clean-up finds the gate open.
        wait_until(
            lambda: b.request("GET", "/v1.41/containers/json").status == 200,
            30,
            0.5,
            "the gate open again",
        )
    refused = [x for x in seen if x[1] != 200]
    assert not refused, f"Bob refused while Alice pruned (s since start, status): {refused}"


# ============================================================================ works


def test_works_old_api_service_refused_and_version_header_ignored(g32, people, docker_host):
    a = people["alice"]
    t = _rand()
    r = a.request("POST", "/v1.40/services/create", _service(f"r32a-s40-{t}"))
    assert r.status == 403, r.body
    assert b"TaskTemplate.Resources.Limits.Pids" in r.body and b"1.41" in r.body, r.body
    # dockerd 20.10 reads the version from the path, not from a "Version" header.
    r = a.request(
        "POST",
        "/v1.41/services/create",
        _service(f"r32a-sh-{t}", Pids=77),
        headers={"Version": "1.40"},
    )
    assert r.status == 201, r.body
    sid = json.loads(r.body)["ID"]
    r = a.request("POST", f"/v1.40/services/{sid}/update?version=1", _service(f"r32a-sh-{t}"))
    assert r.status == 403, r.body
    spec = json.loads(_direct(docker_host, "GET", f"/v1.41/services/{sid}").body)["Spec"]
    assert spec["TaskTemplate"]["Resources"]["Limits"]["Pids"] == 77, spec


def test_works_non_recursive_bind_below_1_40_refused_and_old_creates_pass(g32, people):
    a = people["alice"]
    bind = {
        "Type": "bind",
        "Source": "/srv/nfs/data",
        "Target": "/d",
        "BindOptions": {"NonRecursive": True},
    }
    r = a.request(
        "POST", "/v1.39/containers/create", {"Image": "busybox", "HostConfig": {"Mounts": [bind]}}
    )
    assert r.status in (400, 403), r.body
    for v in ("1.24", "1.30", "1.38", "1.40"):
        body = {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {
                "Mounts": [{"Type": "volume", "Target": "/x"}],
                "Dns": [],
                "Tmpfs": {"/t": ""},
            },
        }
        r = a.request("POST", f"/v{v}/containers/create", body)
        assert r.status == 201, (v, r.body)
    r = a.request("POST", "/v1.41/containers/create", {"Image": "busybox", "Env": ["A=1", None]})
    assert r.status == 400 and b"Env[1]" in r.body, r.body


def test_works_compose_file_version_2_0_as_a_member(g32, people, cli, session_dir):
    """docker-compose 1.29 talks API 1.22 for a ``version: "2.0"`` file."""
    u: UnixUser = people["alice_user"]
    d = Path(tempfile.mkdtemp(prefix="r32a", dir=session_dir))
    (d / "docker-compose.yml").write_text(
        textwrap.dedent(
            """
            version: "2.0"
            services:
              app:
                image: busybox
                command: sleep 60
                environment: [FOO, BAR=1]
                dns_search: [example.org]
                volumes: ["data:/data", "/data2"]
                tmpfs: [/run]
                cap_drop: [NET_RAW]
                ulimits: {nofile: {soft: 1024, hard: 2048}}
                mem_limit: 64m
            volumes:
              data: {}
            """
        )
    )
    for p in (d, *d.iterdir()):
        os.chown(p, u.uid, u.gid)
    project = f"r32ac{_rand()}"
    for cmd in (f"docker-compose -p {project} up -d", f"docker-compose -p {project} down -v -t 0"):
        r = cli(cmd, user=u, gate=g32, cwd=d, shell=True)
        assert r.returncode == 0, r.stderr


def test_works_migration_0006_from_0005_on_postgresql(g32):
    """A PostgreSQL store at 0005 (before today), then ``dockergate db upgrade``."""
    base = os.environ.get("DOCKERGATE_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL: DOCKERGATE_TEST_PG_URL is not set")
    import psycopg

    from dockergate.config import load_settings
    from dockergate.store import db

    name = f"dgt_{_rand()}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DOCKERGATE_DB": base.rsplit("/", 1)[0] + "/" + name}
    settings = load_settings(environ=env, overrides={"state_dir": str(g32.state_dir)})
    assert db.upgrade(settings, "0005")[1] == "0005"
    argv = [*dockergate_argv(), "--state-dir", str(g32.state_dir), "db"]
    r = subprocess.run([*argv, "upgrade"], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*argv, "status"], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "0006" in r.stdout, r.stdout + r.stderr
