"""Review round 27b: Python's reading of numbers and durations in the day's rules
against Go's (dockerd 20.10 and its swarmkit read the same bytes), as a member and an
intern over the gate's unix socket, with raw Engine API bodies.

Findings (each ``test_finding_*`` FAILS on the reviewed code, af42593):

- Medium: a negative health-check ``Interval`` in an image passes the 1 s floor. The
  floor (``policy/resources.py check_healthcheck``) refuses ``0 < Interval < 1s`` only;
  dockerd refuses a negative interval in a request (``cannot be less than 1ms``) but
  not in an image, and its health monitor waits ``time.After(Interval)``, which for a
  negative one fires at once: probes back to back. A member's ``POST
  /commit?container=C`` with the body ``{"Healthcheck": {"Test": ["CMD", "false"],
  "Interval": -1}}`` (the gate parses the body, checks no health setting, forwards it;
  dockerd stores it unvalidated) gives an image whose containers and service tasks
  the gate accepts (``check_inherited_healthcheck``: ``own or image`` = -1, not in
  ``(0, 1s)``). Measured: ``FailingStreak`` 27 to 33 one second after start (one probe per
  30 s by default; the 25c/26a cost, per container and per replica).
- Low: a replicated job without ``MaxConcurrent`` is counted as running all its
  completions at once. Go fills ``MaxConcurrent`` with 1 when the field is absent
  (``convert.ServiceSpecToGRPC``; stored here as ``{"MaxConcurrent": 1,
  "TotalCompletions": 12}``) and swarmkit runs that many at a time, but
  ``policy/service.py service_tasks`` reads ``MaxConcurrent or TotalCompletions``:
  an intern's ``{"ReplicatedJob": {"TotalCompletions": 12}}`` is refused "this many
  tasks (... + 12 asked); the quota is 10", for a job that holds one container (and
  one memory limit) at a time. The docker CLI and docker-py always send both fields;
  the Go SDK and curl users do not.
- Low: ``dockergate check`` reads compose durations unlike Go's
  ``time.ParseDuration`` (``policy/compose.py duration_ns``, which ``docker stack
  deploy`` uses): ``stop_grace_period: 1000000μs`` (U+03BC, Go's other micro sign) is
  "not a duration" (Go: 1 s, accepted by the gate), and ``healthcheck: interval:
  999999999.9999999999ns`` passes as 1 s (Python's float rounds it up; Go keeps
  999999999 ns and the gate refuses the deploy, as it refuses ``docker create
  --health-interval`` of the same text here).

Held (``test_works_*``): numbers the gate reads as Go does or refuses: ``1.0``,
``1e0``, ``1e9`` and ``"1s"`` in ``Replicas`` and ``Healthcheck.Interval`` are 400
(Go refuses them too), ``-0`` goes on as ``0``, ``2**64-1`` is out of range,
``2**63-1`` replicas hit the quota, ``-1`` replicas and a negative own interval are
refused by dockerd, case variants (``replicas``, ``interval``) and duplicate keys
are 400; two modes (``GlobalJob`` with ``Replicated``) are refused by dockerd.
Also checked (not pinned): ``Mode`` absent / ``Replicated: {}`` / ``Replicas: null``
are one task as for Swarm; ``MaxConcurrent: 0`` is counted as its completions
(over-counts; Swarm runs none); swarm's ``HealthCheck`` spelling (the swagger's) is
taken as ``Healthcheck`` and checked; ``dockerd``'s image merge copies no
``StopTimeout`` (so no negative stop wait from an image); ``first_difference`` only
compares Go-encoded specs with values the gate wrote as ints.

Only ``busybox`` (plus one committed image); loopback only; one module gate.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, api_as, policies_gate

pytestmark = pytest.mark.timeout(90)

OWNER = "dockergate.owner"
MEMBER, INTERN = "r27b-m", "r27b-i"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g27(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def people(g27, unix_user, direct_client) -> Iterator[dict[str, Any]]:
    m, i = unix_user("r27bm"), unix_user("r27bi")
    g27.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    g27.dockergate("user", "add", INTERN, "--profile", "intern", "--uid", str(i.uid))
    yield {"member": m, "intern": i}
    for user in (MEMBER, INTERN):
        flt = {"label": f"{OWNER}={user}"}
        for s in direct_client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                s.remove()
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)


def service_body(mode: str, container: str = "", image: str = "busybox") -> str:
    """A service create body with ``Mode`` and extra ``ContainerSpec`` members as raw
    JSON text (so that ``1.0``, ``-0`` or a duplicate key reach the gate unchanged)."""
    name = f"r27b-{_rand()}"
    spec = f'{{"Image":"{image}","Command":["sleep","600"]{container}}}'
    return f'{{"Name":"{name}","TaskTemplate":{{"ContainerSpec":{spec}}},"Mode":{mode}}}'


def made(direct_client, answer: tuple[int, Any]) -> tuple[int, Any, dict[str, Any] | None]:
    """The answer, and the ``Mode`` Swarm stored for a service it made (then removed)."""
    code, body = answer
    stored = None
    if code == 201 and isinstance(body, dict) and "ID" in body:
        stored = direct_client.api.inspect_service(body["ID"])["Spec"]["Mode"]
        direct_client.api.remove_service(body["ID"])
    return code, body, stored


# ======================================================================== findings


def test_finding_negative_image_health_interval_probes_back_to_back(g27, people, direct_client):
    """``docker commit`` with a config body sets an image's HEALTHCHECK to anything,
    unvalidated (dockerd checks intervals in create requests, not in images). Interval
    -1 passes the gate's floor (``0 < value < 1s`` only, in ``check_healthcheck``, fed
    by ``check_inherited_healthcheck``), and dockerd's monitor waits ``Interval``
    between probes: a negative wait is none. Severity: Medium (the health-check
    floor's cost: back-to-back execs in dockerd and containerd, outside every limit,
    per container and per service replica). Expected: the negative interval refused,
    at the commit (its ``Healthcheck`` checked as a container's) or at the create of
    a container or service from the image, naming the HEALTHCHECK."""
    m = people["member"]
    code, c = _raw(
        g27, m, "POST", "/containers/create", '{"Image":"busybox","Cmd":["sleep","600"]}'
    )
    assert code == 201, (code, c)
    repo = f"r27b-neghc-{_rand()}"
    health = '{"Healthcheck":{"Test":["CMD","false"],"Interval":-1}}'
    commit = _raw(g27, m, "POST", f"/commit?container={c['Id']}&repo={repo}&tag=1", health)
    outcomes: dict[str, Any] = {"commit": commit}
    try:
        if commit[0] == 201:
            image = f"{repo}:1"
            code, c2 = _raw(g27, m, "POST", "/containers/create", f'{{"Image":"{image}"}}')
            streak = None
            if code == 201:
                assert _raw(g27, m, "POST", f"/containers/{c2['Id']}/start")[0] == 204
                time.sleep(1.0)
                state = direct_client.api.inspect_container(c2["Id"])["State"]
                streak = (state.get("Health") or {}).get("FailingStreak")
            outcomes["container"] = (code, c2, f"FailingStreak 1 s after start: {streak}")
            body = service_body('{"Replicated":{"Replicas":0}}', image=image)
            answer = _raw(g27, m, "POST", "/services/create", body)
            outcomes["service"] = made(direct_client, answer)
        refused = [k for k, v in outcomes.items() if v[0] == 403 and "ealth" in str(v[1])]
        assert refused in (["commit"], ["container", "service"]), outcomes
    finally:
        with contextlib.suppress(Exception):
            direct_client.images.remove(f"{repo}:1", force=True)


def test_finding_job_without_max_concurrent_counted_all_at_once(g27, people, direct_client):
    """Swarm runs a replicated job ``MaxConcurrent`` tasks at a time, and Go fills an
    absent ``MaxConcurrent`` with 1 (stored so: checked here with a member's job).
    ``service_tasks`` reads ``MaxConcurrent or TotalCompletions``: an intern's job of
    12 completions, one at a time, is refused as 12 tasks over ``quota.containers``
    (10). Severity: Low (a refusal of what fits, for API clients that leave the field
    out; the CLI and docker-py send it). Expected: counted as one task, accepted."""
    mode = '{"ReplicatedJob":{"TotalCompletions":12}}'
    m_code, m_body, stored = made(
        direct_client, _raw(g27, people["member"], "POST", "/services/create", service_body(mode))
    )
    assert m_code == 201 and stored == {
        "ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 12}
    }, (m_code, m_body, stored)  # Go's reading of the same bytes
    code, body, _ = made(
        direct_client, _raw(g27, people["intern"], "POST", "/services/create", service_body(mode))
    )
    assert code == 201, (code, body)


def _check(g27: Gate, stack: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "stack.yml")
        path.write_text(stack, encoding="utf-8")
        return g27.dockergate("check", "--profile", "member", str(path), check=False)


STACK = "version: '3.8'\nservices:\n  app:\n    image: busybox\n    command: sleep 600\n"


def test_finding_check_reads_go_durations_its_own_way(cli, g27, people):
    """``duration_ns`` stands for Go's ``time.ParseDuration`` (what ``docker stack
    deploy`` uses) but knows one micro sign of Go's two, and sums float products:
    ``1000000μs`` (U+03BC) is "not a duration" for ``dockergate check`` while Go reads
    1 s; ``999999999.9999999999ns`` passes as 1 s while Go reads 999999999 ns, which
    the gate refuses (shown with ``docker create --health-interval``, the same Go
    parser). Severity: Low (the offline check exists to predict the gate's answer).
    Expected: the first stack passes, the second is reported (health check interval),
    as the gate decides."""
    m = people["member"]
    nearly = "999999999.9999999999ns"
    r = cli(
        ["create", "--health-cmd", "true", "--health-interval", nearly, "busybox"], user=m, gate=g27
    )
    assert r.returncode != 0 and "Healthcheck.Interval" in r.stderr, r.stderr  # the gate
    greek = _check(g27, STACK + "    stop_grace_period: 1000000\u03bcs\n")
    fast = _check(
        g27, STACK + f"    healthcheck:\n      test: [CMD, 'true']\n      interval: {nearly}\n"
    )
    assert (greek.returncode, fast.returncode) == (0, 1), (greek.stdout, fast.stdout)


# =========================================================================== works


def test_works_numbers_are_read_as_go_reads_them_or_refused(g27, people, direct_client):
    """Floats, strings, case variants, duplicates and numbers past int64 in the fields
    today's rules read (``Replicas``, ``Healthcheck.Interval``) are refused with a 400
    naming the field (Go refuses them as well, or would read another number); ``-0``
    goes on as 0; what only dockerd refuses (``Replicas: -1``, a negative own
    interval, two modes) is refused by dockerd before anything runs; 2**63-1 replicas
    hit the quota."""
    m, i = people["member"], people["intern"]
    hc = '"Healthcheck":{{"Test":["CMD","true"],{}}}'
    cases = [
        ('{"Replicated":{"Replicas":1.0}}', "", 400, "must be an integer"),
        ('{"Replicated":{"Replicas":1e0}}', "", 400, "must be an integer"),
        ('{"Replicated":{"replicas":0}}', "", 400, 'must be spelled "Replicas"'),
        ('{"Replicated":{"Replicas":0,"Replicas":0}}', "", 400, "duplicate key"),
        ('{"Replicated":{"Replicas":18446744073709551615}}', "", 400, "out of range"),
        ('{"Replicated":{"Replicas":9223372036854775807}}', "", 403, "quota.containers"),
        ('{"Replicated":{"Replicas":-1}}', "", 400, "uint64"),
        ('{"GlobalJob":{},"Replicated":{"Replicas":0}}', "", 400, "only one service mode"),
        ('{"Replicated":{"Replicas":0}}', "," + hc.format('"Interval":1e9'), 400, "integer"),
        ('{"Replicated":{"Replicas":0}}', "," + hc.format('"Interval":"1s"'), 400, "integer"),
        ('{"Replicated":{"Replicas":0}}', "," + hc.format('"interval":1'), 400, "spelled"),
        # Refused by the gate since 27b's fix (dockerd refuses it in a request too).
        ('{"Replicated":{"Replicas":0}}', "," + hc.format('"Interval":-1'), 403, "once a"),
        ('{"Replicated":{"Replicas":0}}', "," + hc.format('"Interval":1000'), 403, "once a"),
    ]
    got = []
    for mode, container, want, text in cases:
        for u in (m, i):
            code, body, _ = made(
                direct_client,
                _raw(g27, u, "POST", "/services/create", service_body(mode, container)),
            )
            if code != want or text not in str(body):
                got.append((mode, container, code, body))
    code, body, stored = made(
        direct_client,
        _raw(g27, i, "POST", "/services/create", service_body('{"Replicated":{"Replicas":-0}}')),
    )
    if (code, stored) != (201, {"Replicated": {"Replicas": 0}}):
        got.append(("-0", code, body, stored))
    code, body = _raw(
        g27,
        m,
        "POST",
        "/containers/create",
        '{"Image":"busybox",' + hc.format('"Interval":-1') + "}",
    )
    if code != 403 or "once a second" not in str(body):
        got.append(("container -1", code, body))
    assert not got, got


def _raw(gate: Gate, u: Any, method: str, path: str, data: str | None = None) -> tuple[int, Any]:
    """The body sent as written (see ``api_as``)."""
    return api_as(gate, u, method, path, data=data)
