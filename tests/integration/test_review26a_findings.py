"""Review round 26a: today's fixes (1426eba..a0d0e38) attacked as a member, an intern
and an operator.

Findings (each ``test_finding_*`` FAILS on the reviewed code, a0d0e38):

- Medium: the 1 s health-check floor is not applied to a service's image.
  ``check_image_healthcheck`` (api/containers.py) runs for ``containers/create`` only;
  a service (``check_service``, policy/service.py) is checked on its spec alone. A
  service of an image built ``HEALTHCHECK --interval=1ms`` (no ``Healthcheck``, or
  one with only ``Test``) is accepted for a member and an intern. Its task container
  got ``Healthcheck.Interval: 1000000`` from dockerd (checked here: 1 ms probes, the
  25c cost, per replica).
- Low: ``precreate_bind_volumes`` (api/containers.py) still makes the volume of a
  ``Binds`` entry dockerd then refuses. Today's fix covered only one-part entries:
  ``"x:"``, ``"v:/a:zz"``, ``"v:/a:rw:ro"`` (dockerd: 500 "invalid volume
  specification"/"invalid mode") and a duplicate ``["v:/a", "v:/a"]`` (400 "Duplicate
  mount point") each leave an empty volume ``x``/``v`` owned by the caller.
- Low: the audit refusal budget (audit/writer.py ``_counted_refusal``) counts any
  refusal alike, so cheap ones hide the ones that matter. With
  ``audit_refusals_per_minute`` at 3 (120 by default: a loop of 120 ``GET
  /containers/nope/json`` does the same), a ``Privileged`` create after three 404s
  has no audit row: the summary row names only the last refusal's route and path
  (another 404) and replaces the rule. Only the access log has it.
- Low: ``dockergate check`` (policy/compose.py ``check_file``) knows nothing of the
  new floor: a stack file with ``healthcheck: {interval: 500ms}`` passes it for a
  member, while the gate refuses that service (``Healthcheck.Interval``).

Held (``test_works_*``): rollbacks of an intern's service after ``--limit-memory``,
``--env-add`` and ``--publish-add`` (the stored PreviousSpec passes unchanged, the
placement constraint stays); ``Mode`` with a null ``Global``/``ReplicatedJob``/
``GlobalJob`` beside ``Replicated`` is counted as the replicas Swarm runs (and two
modes are refused by dockerd); a member's ``network ls`` with name/driver/dangling/
scope/id/type filters lists only their own networks and Docker's (no other user's
network, no ``Containers``); plain HTTP on the TLS listener with a first packet of
one byte gets the 400, an SSH banner too, lower-case garbage is closed, nothing is
logged at WARNING or above. Also checked (not pinned): ``own_volumes: false`` refuses
a nameless volume create; global services and jobs, ``Replicas: 0``; a 1 MB plain
POST gets the 400 before the reset; ``ReplicatedJob.MaxConcurrent: 0`` is counted as
its completions (over-counts, never under).

Only ``busybox`` (plus one image built from it); loopback only; one module gate.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import Gate, policies_gate
from tests.helpers import api_as as api

pytestmark = pytest.mark.timeout(90)

OWNER = "dockergate.owner"
MEMBER, INTERN, LOUD = "r26a-m", "r26a-i", "r26a-l"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g26(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    env = {"DOCKERGATE_AUDIT_REFUSALS_PER_MINUTE": "3"}
    with policies_gate(session_dir, docker_host, tls=True, env=env) as g:
        yield g


@pytest.fixture(scope="module")
def people(g26, unix_user, direct_client) -> Iterator[dict[str, Any]]:
    m, i, loud = unix_user("r26am"), unix_user("r26ai"), unix_user("r26al")
    g26.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    g26.dockergate("user", "add", INTERN, "--profile", "intern", "--uid", str(i.uid))
    g26.dockergate("user", "add", LOUD, "--profile", "member", "--uid", str(loud.uid))
    yield {"member": m, "intern": i, "loud": loud}
    for user in (MEMBER, INTERN, LOUD):
        flt = {"label": f"{OWNER}={user}"}
        for s in direct_client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                s.remove()
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for kind in ("networks", "volumes"):
            for o in getattr(direct_client, kind).list(filters=flt):
                with contextlib.suppress(Exception):
                    o.remove()


def spec(name: str, container: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "600"], **(container or {})}
        },
        "Mode": {"Replicated": {"Replicas": 0}},
    }
    s["TaskTemplate"].update(extra.pop("template", {}))
    s.update(extra)
    return s


def gone(direct_client, kind: str, answer: tuple[int, Any]) -> tuple[int, Any]:
    """Remove what a 201 made (the tests only need the answer)."""
    code, body = answer
    if code == 201 and isinstance(body, dict):
        with contextlib.suppress(Exception):
            if kind == "service":
                direct_client.services.get(body["ID"]).remove()
            else:
                direct_client.containers.get(body["Id"]).remove(force=True, v=True)
    return answer


# ======================================================================== findings


def test_finding_service_inherits_image_health_check_every_millisecond(g26, people, direct_client):
    """An image built ``HEALTHCHECK --interval=1ms``: ``docker run`` of it is refused
    since today (``check_image_healthcheck``), a service of it is not. Swarm's task
    container takes the image's Interval (dockerd merges what the spec leaves at 0;
    seen here: ``Config.Healthcheck.Interval == 1000000`` on the task of a member's
    service). Severity: Medium (the 25c cost: back-to-back execs in dockerd and
    containerd per replica, outside every limit). Expected: the service create (and
    update) refused as the container is, naming the image's HEALTHCHECK, unless the
    spec sets an Interval of its own of 1 s or more."""
    tag = f"r26a-hc-{_rand()}:latest"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "Dockerfile").write_text("FROM busybox\nHEALTHCHECK --interval=1ms CMD true\n")
        direct_client.images.build(path=d, tag=tag, rm=True)
    try:
        code, answer = api(g26, people["member"], "POST", "/containers/create", {"Image": tag})
        assert code == 403 and "HEALTHCHECK" in str(answer), (code, answer)  # held
        got = []
        for who in ("member", "intern"):
            for health in (None, {"Test": ["CMD", "true"]}):
                extra = {"Healthcheck": health} if health else {}
                body = spec(f"r26a-hc-{_rand()}", {"Image": tag, **extra})
                code, answer = gone(
                    direct_client,
                    "service",
                    api(g26, people[who], "POST", "/services/create", body),
                )
                got.append((who, health, code, answer))
        assert all(c == 403 and "HEALTHCHECK" in str(a) for _, _, c, a in got), got
    finally:
        direct_client.images.remove(tag, force=True)


def test_finding_refused_binds_leave_a_volume_behind(g26, people, direct_client):
    """``precreate_bind_volumes`` makes the named volume of every ``Binds`` entry with
    a colon before dockerd reads the entry; when dockerd then refuses it, the create
    fails and the volume stays (owned by the caller, empty). Today's fix (25d) only
    left one-part entries alone. Severity: Low (stray volumes, a failed create that
    changed something). Expected: the refused create leaves no volume (entries
    dockerd would refuse are refused first, or the precreated volume is removed when
    the create fails)."""
    m, t = people["member"], _rand()
    cases = [
        [f"r26a-x{t}:"],
        [f"r26a-z{t}:/a:zz"],
        [f"r26a-w{t}:/a:rw:ro"],
        [f"r26a-d{t}:/a", f"r26a-d{t}:/a"],
    ]
    got = []
    for binds in cases:
        body = {"Image": "busybox", "HostConfig": {"Binds": binds}}
        code, answer = gone(
            direct_client, "container", api(g26, m, "POST", "/containers/create", body)
        )
        got.append((binds, code, str(answer)[:80]))
    assert all(c >= 400 for _, c, _ in got), got  # dockerd refuses each
    left = sorted(
        v.name
        for v in direct_client.volumes.list(filters={"label": f"{OWNER}={MEMBER}"})
        if t in v.name
    )
    assert left == [], (left, got)


def test_finding_offline_check_passes_a_health_check_the_gate_refuses(g26, people):
    """``dockergate check`` translates a stack file into the API bodies and runs the
    gate's checks, but not ``check_healthcheck``: ``healthcheck: interval: 500ms``
    passes it, and the same service is refused by the gate. Severity: Low (the
    command exists to find refusals before a deploy). Expected: a violation naming
    the health check interval, exit 1."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "stack.yml")
        path.write_text(
            "version: '3.8'\n"
            "services:\n"
            "  app:\n"
            "    image: busybox\n"
            "    command: sleep 600\n"
            "    healthcheck:\n"
            "      test: [CMD, 'true']\n"
            "      interval: 500ms\n"
        )
        r = g26.dockergate("check", "--profile", "member", str(path), check=False)
    body = spec(
        f"r26a-hc5-{_rand()}", {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5 * 10**8}}
    )
    code, answer = api(g26, people["member"], "POST", "/services/create", body)
    assert code == 403 and "Healthcheck.Interval" in str(answer), (code, answer)  # the gate
    assert r.returncode == 1 and "ealth" in r.stdout, (r.returncode, r.stdout, r.stderr)


# =========================================================================== works


def test_works_intern_rollbacks_pass_unchanged(cli, g26, people, direct_client):
    """The new ``_check_restored`` comparison refuses no ordinary rollback: Swarm's
    stored PreviousSpec of an intern's service (with the gate's fill-ins) passes
    unchanged after ``--limit-memory``, ``--env-add`` and ``--publish-add``, and the
    rolled-back spec keeps the intern's placement off the managers."""
    i, name = people["intern"], f"r26a-rb-{_rand()}"
    r = cli(
        ["service", "create", "-d", "--name", name, "--replicas", "0", "busybox", "sleep", "9"],
        user=i,
        gate=g26,
    )
    assert r.returncode == 0, r.stderr
    try:
        for change in (
            ["--limit-memory", "128m"],
            ["--env-add", "A=1"],
            ["--publish-add", "8088:80"],
        ):
            r = cli(["service", "update", "-d", *change, name], user=i, gate=g26)
            assert r.returncode == 0, (change, r.stderr)
            r = cli(["service", "rollback", "-d", name], user=i, gate=g26)
            assert r.returncode == 0, (change, r.stderr)
        placement = direct_client.services.get(name).attrs["Spec"]["TaskTemplate"]["Placement"]
        assert "node.role==worker" in placement["Constraints"], placement
    finally:
        with contextlib.suppress(Exception):
            direct_client.services.get(name).remove()


def test_works_service_mode_nulls_count_as_replicas(g26, people, direct_client):
    """``"Global": null`` (or a null job mode) beside ``Replicated`` is what Swarm
    reads as Replicated: the tasks quota counts the replicas, not one per node."""
    for extra in ("Global", "ReplicatedJob", "GlobalJob"):
        body = spec(f"r26a-mode-{_rand()}", Mode={"Replicated": {"Replicas": 30}, extra: None})
        code, answer = gone(
            direct_client, "service", api(g26, people["intern"], "POST", "/services/create", body)
        )
        assert code == 403 and "quota.containers" in str(answer), (extra, code, answer)


def test_works_member_network_ls_filters_show_no_other_users_network(g26, people):
    """The member's list with dockerd's filters: their own networks and Docker's
    (unlabelled, ``Containers`` empty), never the intern's."""
    m, i = people["member"], people["intern"]
    theirs = f"r26a-net-{_rand()}"
    code, answer = api(g26, i, "POST", "/networks/create", {"Name": theirs, "Driver": "bridge"})
    assert code == 201, answer
    docker_own = {"bridge", "host", "none", "ingress", "docker_gwbridge"}
    for flt in (
        {},
        {"name": {"r26a": True}},
        {"driver": {"bridge": True}},
        {"dangling": {"true": True}},
        {"scope": {"local": True}},
        {"id": {answer["Id"][:12]: True}},
        {"type": {"custom": True}},
    ):
        code, nets = api(g26, m, "GET", f"/networks?filters={quote(json.dumps(flt))}")
        assert code == 200, (flt, nets)
        for n in nets:
            assert n["Name"] != theirs, (flt, n)
            if not (n.get("Labels") or {}).get(OWNER):
                assert n["Name"] in docker_own and not n.get("Containers"), (flt, n)


def test_works_plain_http_on_the_tls_listener(g26):
    """A first packet of one byte ``G`` then the rest, and an SSH banner, get the
    400; lower-case garbage is closed; none of it is logged as a warning or error."""
    start = g26.log_size()

    def exchange(*parts: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", g26.tls_port), timeout=3) as s:
            for part in parts:
                with contextlib.suppress(OSError):
                    s.sendall(part)
                time.sleep(0.05)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(4096):
                    data += chunk
            return data

    assert exchange(b"G", b"ET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.0 400 Bad Request"
    )
    assert b"Client sent an HTTP request to an HTTPS server" in exchange(b"SSH-2.0-x\r\n")
    assert exchange(b"hello\r\n") == b""
    log = g26.log(start)
    assert "WARNING" not in log and "ERROR" not in log and "Traceback" not in log, log


# ============================================== last: stops and restarts the gate


def test_finding_refusal_flood_hides_a_privileged_attempt(g26, people):
    """``audit_refusals_per_minute`` (3 for this gate, 120 by default) counts every
    refusal of a caller alike: after three cheap 404s, the member's ``Privileged``
    create is only counted, and the minute's summary row carries the route and path
    of the last refusal (another 404), with the rule replaced. Severity: Low (audit
    evasion; the request itself stays refused and the access log has it). Expected:
    distinct refusals are not lost in the summary: e.g. the budget per caller and
    rule (a loop repeats one refusal), or policy refusals always recorded, or the
    summary listing each rule it held back with its count."""
    loud = people["loud"]
    for k in range(3):
        assert api(g26, loud, "GET", f"/containers/r26a-nope{k}/json")[0] == 404
    body = {"Image": "busybox", "HostConfig": {"Privileged": True}}
    code, answer = api(g26, loud, "POST", "/containers/create", body)
    assert code == 403 and "privileged" in str(answer), (code, answer)
    assert api(g26, loud, "GET", "/containers/r26a-nope9/json")[0] == 404
    g26.stop()  # flushes the audit buffer and closes the refusal windows
    g26.start()
    r = g26.dockergate("audit", "--user", LOUD, "--denied", "--json")
    rows = json.loads(r.stdout)
    assert any("privileged" in str(row.get("rule")) for row in rows), [
        (row.get("path"), row.get("rule")) for row in rows
    ]
