"""Review round 27a: the newest fixes (a0d0e38..af42593) attacked as a member.

Findings (each ``test_finding_*`` FAILS on the reviewed code, af42593):

- Medium: a service's task takes a fast image HEALTHCHECK from a tag named after
  the check. ``services.check_image_healthcheck`` inspects the image
  ``ContainerSpec.Image`` names when the service is created or updated; Swarm
  resolves the name again for every task it starts, without the gate. A member's
  service of their plain ``app:1`` (first task: no health check), then ``docker
  tag fast:1 app:1`` (their own tag, allowed): the next task (restart policy)
  runs with ``Healthcheck.Interval=100ms``. A service of a name that does not exist
  yet (``later:1``) is not checked at all (no image found) and picks up the fast
  image once the member tags it so.
- Low: the audit summary row's 16 rule slots (``SUMMARY_RULES``,
  audit/writer.py ``_counted_refusal``) are keyed by the refusal's whole message,
  which often carries what the caller sent: 16 service creates with a template in
  ``Networks[0].DriverOpts[kN]`` take the slots, and a ``Privileged`` create after
  them is summed as ``1 x other rules`` (26a's finding again, with one more step).
- Low: ``dockergate check`` (policy/compose.py ``duration_ns``) refuses
  ``2000000μs`` (Greek mu, U+03BC), which Go and ``docker stack deploy`` accept:
  a false ``not a duration`` violation and exit 1.

Held (``test_works_*``): a service of the fast image is refused by tag, with
``docker.io/`` in front, by full and short ID, with no Healthcheck, ``{"Test":
[]}`` or only a Test; ``{"Test": ["NONE"]}`` and an own 1 s Interval pass. Two
concurrent creates naming one new volume, one refused by dockerd (``:zz``), keep
the volume for the good one. HTTP/1.0 without Host: keep-alive with two requests,
an empty ``Host:``, a POST with a body, a streamed route sent unframed. Checked by
hand, not pinned: compose 1.29 and ``docker stack config`` reject YAML ints,
floats and ``"10"`` for ``interval`` (so the check's "a bare number is seconds" is
never reached); ``1h30m``, ``0.99999999999999999s`` (Go: 1s) read alike; the 404
refusal's rule is one constant string (a flood of 404s takes one slot).

Only ``busybox`` and the member's commits of it; loopback only; one module gate
(restarted by the last test to flush the audit buffer).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import Gate, policies_gate, remove_owned
from tests.helpers import api_as as api

pytestmark = pytest.mark.timeout(90)

OWNER = "dockergate.owner"
MEMBER, LOUD = "r27a-m", "r27a-l"
FAST = 100 * 10**6  # the 100 ms HEALTHCHECK interval of the images made here


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g27(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    env = {"DOCKERGATE_AUDIT_REFUSALS_PER_MINUTE": "3"}
    with policies_gate(session_dir, docker_host, env=env) as g:
        yield g


@pytest.fixture(scope="module")
def people(g27, unix_user, direct_client) -> Iterator[dict[str, Any]]:
    m, loud = unix_user("r27am"), unix_user("r27al")
    g27.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    g27.dockergate("user", "add", LOUD, "--profile", "member", "--uid", str(loud.uid))
    yield {"member": m, "loud": loud}
    remove_owned(direct_client, MEMBER, LOUD)
    for image in direct_client.images.list():
        for tag in image.tags:
            if tag.startswith("r27a-"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


def as_user(u: Any) -> list[str]:
    return ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups"]


def raw(gate: Gate, u: Any, data: bytes) -> bytes:
    """Bytes sent as ``u`` on one connection to the gate's socket; all it answers
    until it closes (or 3 s of silence)."""
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(gate.socket)!r})\n"
        "s.settimeout(3)\n"
        "s.sendall(sys.stdin.buffer.read())\n"
        "out=b''\n"
        "try:\n"
        "    while (c:=s.recv(65536)):\n"
        "        out+=c\n"
        "except OSError:\n"
        "    pass\n"
        "sys.stdout.buffer.write(out)\n"
    )
    r = subprocess.run(
        [*as_user(u), "/usr/bin/python3", "-c", script], input=data, capture_output=True, timeout=30
    )
    return r.stdout + r.stderr


def task_intervals(direct_client, service_id: str) -> list[int]:
    flt = {"label": f"com.docker.swarm.service.id={service_id}"}
    return [
        int(((c.attrs.get("Config") or {}).get("Healthcheck") or {}).get("Interval") or 0)
        for c in direct_client.containers.list(all=True, filters=flt)
    ]


@pytest.fixture(scope="module")
def images(g27, people, direct_client) -> Iterator[dict[str, str]]:
    """``app``: the member's commit of busybox, plain; ``fast``: an image with
    ``HEALTHCHECK --interval=100ms`` an admin made (since the fix, a member's commit
    with that change is refused: as a registry's image would be there)."""
    m, t = people["member"], _rand()
    code, made = api(g27, m, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"]})
    assert code == 201, made
    out = {"app": f"r27a-{t}/app", "fast": f"r27a-{t}/fast", "later": f"r27a-{t}/later"}
    code, answer = api(g27, m, "POST", f"/commit?container={made['Id']}&repo={out['app']}&tag=1")
    assert code == 201, answer
    out["app_id"] = answer["Id"]
    change = quote("HEALTHCHECK --interval=100ms CMD true")
    code, answer = api(g27, m, "POST", f"/commit?container={made['Id']}&repo=x&changes={change}")
    assert code == 403 and "HEALTHCHECK" in str(answer), (code, answer)  # the fix
    base = direct_client.containers.create("busybox", ["true"])
    fast = base.commit(out["fast"], "1", changes=["HEALTHCHECK --interval=100ms CMD true"])
    out["fast_id"] = fast.id
    base.remove()
    yield out
    with contextlib.suppress(Exception):
        direct_client.images.remove(f"{out['fast']}:1", force=True)


def service(name: str, image: str, replicas: int, health: Any = None) -> dict[str, Any]:
    container: dict[str, Any] = {"Image": image, "Command": ["true"]}
    if health is not None:
        container["Healthcheck"] = health
    return {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": container,
            "RestartPolicy": {"Condition": "any", "Delay": 0},
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
    }


def wait_for(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# ======================================================================== findings


def test_finding_service_task_takes_a_fast_healthcheck_from_a_tag_named_later(
    g27, people, images, direct_client
):
    """``check_image_healthcheck`` (api/services.py) looks at the image the spec's
    ``ContainerSpec.Image`` names at create/update time, but Swarm resolves that name
    again for every task it starts (a restart, a node failure, a reschedule), with no
    request through the gate. A member creates a service of their own plain image
    ``app:1``, waits for its first task, then moves their own tag onto an image with
    ``HEALTHCHECK --interval=100ms`` (``docker tag fast:1 app:1``, allowed: the tag is
    theirs); the next task (the command exits, the restart policy restarts it) runs
    with ``Healthcheck.Interval=100ms``. Same with a service of a name that does not
    exist yet (``later:1``: the gate finds no image and checks nothing; the tasks
    fail until the member tags the fast image so). Severity: Medium (the 26a/26b
    rule bypassed with two ordinary commands). Expected: no task of a non-admin's
    service runs with a probe more often than once a second: e.g. the image pinned
    to the checked ID on this engine, or a non-admin's tag/commit/build/load that
    names an image with a fast HEALTHCHECK refused (the name may be a service's)."""
    m = people["member"]
    app, later, fast = f"{images['app']}:1", f"{images['later']}:1", f"{images['fast']}:1"
    code, answer = api(g27, m, "POST", "/containers/create", {"Image": fast})
    assert code == 403 and "HEALTHCHECK" in str(answer), (code, answer)  # held
    ids = {}
    for image in (app, later):
        code, answer = api(
            g27, m, "POST", "/services/create", service(f"r27a-hc-{_rand()}", image, 1)
        )
        assert code == 201, (image, code, answer)
        ids[image] = answer["ID"]
    # The first task of app:1 runs the plain image (what the gate checked); Swarm may
    # take longer than a few seconds to start it on a busy machine.
    assert wait_for(lambda: 0 in task_intervals(direct_client, ids[app]), 30)
    for repo in (images["app"], images["later"]):
        code, answer = api(g27, m, "POST", f"/images/{quote(fast, safe='')}/tag?repo={repo}&tag=1")
        # The fix: no name of a member's goes on an image that probes that often.
        assert code == 403 and "HEALTHCHECK" in str(answer), (repo, code, answer)
    seen = {image: task_intervals(direct_client, i) for image, i in ids.items()}
    for i in ids.values():
        with contextlib.suppress(Exception):
            direct_client.services.get(i).remove()
    assert not any(FAST in v for v in seen.values()), seen


def test_finding_check_calls_a_go_duration_in_greek_mu_not_a_duration(g27):
    """``dockergate check`` (policy/compose.py ``duration_ns``) knows ``µs`` (U+00B5)
    but not ``μs`` (U+03BC), which Go's ``time.ParseDuration`` and so ``docker stack
    deploy`` accept as well (``docker stack config`` prints ``2000000μs`` as
    ``2s``). A file with ``interval: 2000000μs`` and ``stop_grace_period:
    5000000μs`` (2 s and 5 s, which the gate accepts) fails the check: ``app: not a
    duration: '2000000μs'``, exit 1. Severity: Low (a false violation, rare
    spelling). Expected: exit 0 (add ``"μs"`` to ``_DURATION_UNITS`` and the
    pattern)."""
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
            "      interval: 2000000\u03bcs\n"
            "    stop_grace_period: 5000000\u03bcs\n"
        )
        r = g27.dockergate("check", "--profile", "member", str(path), check=False)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


# =========================================================================== works


def test_works_service_image_healthcheck_by_any_reference(g27, people, images, direct_client):
    """The fast image named as the gate and dockerd both resolve it: by tag, with
    ``docker.io/`` in front, by full and short ID; with no ``Healthcheck``, with
    ``{"Test": []}`` (dockerd takes the image's test and interval) and with only a
    Test: each refused naming the HEALTHCHECK. ``{"Test": ["NONE"]}`` and an own
    Interval of 1 s pass."""
    m, fast = people["member"], f"{images['fast']}:1"
    refs = [fast, f"docker.io/{fast}", images["fast_id"], images["fast_id"][7:19]]
    got = []
    for ref in refs:
        for health in (None, {"Test": []}, {"Test": ["CMD", "true"]}):
            code, answer = api(
                g27, m, "POST", "/services/create", service(f"r27a-r{_rand()}", ref, 0, health)
            )
            got.append((ref, health, code, str(answer)[-400:]))
    bad = [x for x in got if not (x[2] == 403 and "HEALTHCHECK" in x[3])]
    assert not bad, bad
    for health in ({"Test": ["NONE"]}, {"Test": ["CMD", "true"], "Interval": 10**9}):
        code, answer = api(
            g27, m, "POST", "/services/create", service(f"r27a-r{_rand()}", fast, 0, health)
        )
        assert code == 201, (health, code, answer)
        direct_client.services.get(answer["ID"]).remove()


def test_works_volume_undo_keeps_a_volume_another_create_uses(g27, people, direct_client):
    """Two creates of the member's at once naming the same new volume, one refused
    by dockerd (mode ``zz``), one good: whichever comes first, the volume stays (the
    undo waits for the user's lock, and dockerd keeps a volume in use)."""
    m, t = people["member"], _rand()
    results: dict[str, tuple[int, Any]] = {}

    def create(key: str, binds: list[str]) -> None:
        body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": binds}}
        results[key] = api(g27, m, "POST", "/containers/create", body)

    for k in range(2):
        vol = f"r27a-race{k}{t}"
        threads = [
            threading.Thread(target=create, args=("bad", [f"{vol}:/a:zz"])),
            threading.Thread(target=create, args=("good", [f"{vol}:/b"])),
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert results["bad"][0] >= 400 and results["good"][0] == 201, results
        # the undo (if any) ran before this: it is done under the lock the next call waits for
        assert api(g27, m, "GET", "/containers/json?limit=1")[0] == 200
        names = [v.name for v in direct_client.volumes.list(filters={"name": vol})]
        assert vol in names, (results, names)


def test_works_http10_without_host(g27, people):
    """HTTP/1.0 without ``Host``: two requests on one keep-alive connection, an
    empty ``Host:``, a create with a body, a streamed route (unframed, then closed)."""
    m = people["member"]
    out = raw(
        g27,
        m,
        b"GET /_ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /version HTTP/1.0\r\n\r\n",
    )
    assert out.count(b" 200 OK\r\n") == 2 and out.endswith(b"}\n"), out[:400]
    out = raw(g27, m, b"GET /version HTTP/1.0\r\nHost:\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b'"ApiVersion"' in out, out[:400]
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    out = raw(
        g27,
        m,
        b"POST /v1.41/containers/create HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert out.startswith(b"HTTP/1.1 201 Created") and b'"Id"' in out, out[:400]
    out = raw(g27, m, b"GET /v1.41/events?since=0&until=1 HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"chunked" not in out.lower(), out[:400]


# ============================================== last: stops and restarts the gate


def test_finding_summary_row_hides_a_privileged_attempt_behind_16_rules(g27, people):
    """Today's summary row counts held-back refusals by rule, but only the first 16
    rules one by one (``SUMMARY_RULES``, audit/writer.py ``_counted_refusal``); the
    rest go into ``other rules``. A refusal's rule is its whole message, which for
    many refusals carries what the caller sent: a service create with
    ``Networks[0].DriverOpts[kN] = "{{.Node.ID}}"`` is refused with a message naming
    ``kN``, so 16 such creates (N = 0..15) take the 16 slots, and a ``Privileged``
    create after them is ``1 x other rules``. With ``audit_refusals_per_minute`` 3
    here (120 by default: 120 cheap 404s first do the same). Severity: Low (audit
    evasion, as 26a's; the request stays refused, the access log has it). Expected:
    the privileged attempt is named in the audit table: e.g. the summary keyed by a
    stable rule (``Denied.rule``, the refusal's kind, not its text), or profile
    refusals always recorded or always given a slot."""
    loud = people["loud"]
    for k in range(3):
        assert api(g27, loud, "GET", f"/containers/r27a-nope{k}/json")[0] == 404
    for k in range(16):
        body = {
            "Name": f"r27a-t{k}",
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
            "Networks": [{"Target": "", "DriverOpts": {f"k{k}": "{{.Node.ID}}"}}],
        }
        code, answer = api(g27, loud, "POST", "/services/create", body)
        assert code == 403 and f"DriverOpts[k{k}]" in str(answer), (code, answer)
    body = {"Image": "busybox", "HostConfig": {"Privileged": True}}
    code, answer = api(g27, loud, "POST", "/containers/create", body)
    assert code == 403 and "privileged" in str(answer), (code, answer)
    g27.stop()  # flushes the audit buffer and closes the refusal windows
    g27.start()
    rows = json.loads(g27.dockergate("audit", "--user", LOUD, "--denied", "--json").stdout)
    rules = [str(row.get("rule")) for row in rows]
    assert any("privileged" in r for r in rules), rules
