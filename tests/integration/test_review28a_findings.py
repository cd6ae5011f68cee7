"""Review round 28a: the newest fixes (2635e64, review 27a/27b/27c) attacked as a member.

Findings (each ``test_finding_*`` FAILS on the reviewed code, 4441449):

- Medium: an image whose ``HEALTHCHECK`` is ``{"Test": ["NONE"], "Interval":
  100ms}`` passes every check of the new rule, yet a service task takes its 100 ms
  interval. ``resources.check_healthcheck`` returns early when ``Test`` is
  ``["NONE"]``, and the image checks of the fix (``images.check_image_healthcheck``,
  commit's ``check_healthcheck``/``check_inherited_healthcheck``) go through it. A
  member commits their container with the body ``{"Healthcheck": {"Test": ["NONE"],
  "Interval": 100000000}}`` (201; dockerd stores the interval as given) onto the tag
  their running service uses; the service's own ``Healthcheck: {"Test": ["CMD",
  "true"]}`` (checked at create against the plain image, passed) leaves
  ``Interval`` at 0, so dockerd fills it from the image for the next task: probes
  every 100 ms (27a's finding, one step further). The same image comes from a
  container created with its own ``{"Test": ["NONE"], "Interval": 100ms}`` (201)
  committed without a body, and is tagged and built FROM (inherited) freely; the
  same container committed with ``changes=HEALTHCHECK CMD true`` gives an image
  that itself probes every 100 ms (dockerd fills the change's zero interval from
  the container's config).
- Held and pinned (``test_works_*``): a classic build's HEALTHCHECK flags:
  ``--interval=100ms``, ``=0.1s``, ``--interval=100ms NONE`` refused by the gate;
  ``--interval 100ms`` (no ``=``) and a duplicate ``--interval`` refused by dockerd
  (400, no image); ``--start-period=100ms`` and ``HEALTHCHECK NONE`` build; an
  ``ONBUILD HEALTHCHECK --interval=100ms`` (Dockerfile or commit ``changes``)
  makes an image, and the child build is refused naming the trigger; a container
  from the NONE image with its own ``Test`` is refused (the merge is checked there).

Checked by reading, not pinned: ``changes`` lines are refused when they could join
(trailing escape, ``#`` directives, newlines); ``_flags`` ports BuildKit's
``extractBuilderFlags`` (quotes, backslashes; flag names are case-sensitive in
dockerd: ``--INTERVAL`` is an unknown flag); HEALTHCHECK flags are not ARG/ENV
expanded by the 20.10 classic builder, and BuildKit is off for members; ``docker
load`` is refused for non-admins; a create's audit ``detail`` goes through
``_clean`` (4000 characters, no NUL) and ``printable`` in ``dockergate audit``, and
the 201 filter reads dockerd's (small) answer, not the user's; ``/_dockergate/health``
answers the revision from the gate's snapshot (no store query; one ``/_ping`` as
before).

Noticed and left alone: the Dockerfile check reads every stage (a fast HEALTHCHECK
or base in a stage the final image does not inherit from, or one a ``target`` does
not build, is refused: a false refusal, on the safe side); ``HEALTHCHECK
--interval=100ms NONE`` is refused although the builder ignores the flags of NONE.

Only ``busybox`` and the member's commits of it; loopback only; one module gate.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
import tempfile
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

MEMBER = "r28a-m"
FAST = 100 * 10**6  # 100 ms in nanoseconds
NONE_FAST = {"Test": ["NONE"], "Interval": FAST}


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g28(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def member(g28, unix_user, direct_client) -> Iterator[Any]:
    m = unix_user("r28am")
    g28.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    yield m
    remove_owned(direct_client, MEMBER)
    for image in direct_client.images.list():
        for tag in image.tags:
            if tag.startswith("r28a-"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def plain(g28, member) -> str:
    """A stopped busybox container of the member's (``true``), to commit."""
    code, made = api(
        g28, member, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"]}
    )
    assert code == 201, made
    return str(made["Id"])


def build(gate: Gate, user: Any, dockerfile: str, tag: str) -> tuple[int, str]:
    """A classic build of a context holding only ``dockerfile``, as ``user``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(buf.getvalue())
        f.flush()
        Path(f.name).chmod(0o644)
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
        argv += ["curl", "-sS", "--unix-socket", str(gate.socket), "-X", "POST"]
        argv += ["-w", "\n%{http_code}", "-H", "Content-Type: application/x-tar"]
        argv += ["--data-binary", f"@{f.name}", f"http://gate/v1.41/build?t={quote(tag)}"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    text, _, code = out.rpartition("\n")
    return int(code or 0), text


def image_health(direct_client, reference: str) -> dict[str, Any] | None:
    try:
        return direct_client.api.inspect_image(reference)["Config"].get("Healthcheck")
    except Exception:
        return None


def task_intervals(direct_client, service_id: str) -> list[int]:
    """The health check interval of each task container of a service that probes
    (a ``Test`` other than NONE), 0 for dockerd's default."""
    flt = {"label": f"com.docker.swarm.service.id={service_id}"}
    out = []
    for c in direct_client.containers.list(all=True, filters=flt):
        health = (c.attrs.get("Config") or {}).get("Healthcheck") or {}
        if (health.get("Test") or ["NONE"])[0] != "NONE":
            out.append(int(health.get("Interval") or 0))
    return out


def wait_for(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# ======================================================================== findings


def test_finding_service_task_probes_fast_from_a_healthcheck_none_image(
    g28, member, plain, direct_client
):
    """``check_healthcheck`` (policy/resources.py) skips a ``Healthcheck`` whose
    ``Test`` is ``["NONE"]`` entirely, interval included, and the fix's image checks
    (api/containers.py ``commit``; api/images.py ``check_image_healthcheck`` for tag
    and build bases) rely on it. dockerd keeps the interval in the image, and a
    container (a service task) with its own ``Test`` but ``Interval`` 0 takes it.

    Steps, as a member: commit a plain image ``app:1``; ``POST /services/create``
    of ``app:1`` with ``Healthcheck: {"Test": ["CMD", "true"]}`` (201: the image has
    no HEALTHCHECK); ``POST /commit?container=C&repo=app&tag=1`` with body
    ``{"Healthcheck": {"Test": ["NONE"], "Interval": 100000000}}`` (201, moves the
    member's own tag); the next task (``true`` exits, restart policy ``any``) runs
    with ``Healthcheck.Interval=100ms``. Severity: Medium (the 26a/27a rule bypassed
    with ordinary requests: one exec per 100 ms per replica, outside the CPU limit).
    Expected: that commit refused (403 naming the HEALTHCHECK interval), or the
    interval dropped; in any case no task probing more often than once a second.
    Fix: in ``check_healthcheck`` skip ``Test: ["NONE"]`` only for a container's or
    a service's *own* check where nothing inherits it, and check an image's
    ``Interval``/``StartInterval`` whatever its ``Test`` (``check_image_healthcheck``,
    the commit body and the committed container's config)."""
    m, repo = member, f"r28a-{_rand()}/app"
    code, answer = api(g28, m, "POST", f"/commit?container={plain}&repo={repo}&tag=1")
    assert code == 201, answer
    spec = {
        "Name": f"r28a-hc-{_rand()}",
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": f"{repo}:1",
                "Command": ["true"],
                "Healthcheck": {"Test": ["CMD", "true"]},
            },
            "RestartPolicy": {"Condition": "any", "Delay": 0},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }
    code, answer = api(g28, m, "POST", "/services/create", spec)
    assert code == 201, answer
    sid = answer["ID"]
    try:
        assert wait_for(lambda: task_intervals(direct_client, sid), 8)  # the first task
        path = f"/commit?container={plain}&repo={repo}&tag=1"
        code, answer = api(g28, m, "POST", path, {"Healthcheck": NONE_FAST})
        assert code == 403 and "Healthcheck.Interval" in str(answer), (code, answer)  # the fix
        stored = image_health(direct_client, f"{repo}:1")
        seen = task_intervals(direct_client, sid)
    finally:
        with contextlib.suppress(Exception):
            direct_client.services.get(sid).remove()
    assert FAST not in seen, (code, answer, stored, seen)


def test_finding_healthcheck_none_image_with_a_fast_interval_made_and_named_freely(
    g28, member, plain, direct_client
):
    """The same image by the other doors, none of which looks past ``Test: NONE``:
    a container created with its own ``{"Test": ["NONE"], "Interval": 100ms}``
    (201) committed without a body gives an image with that interval (``commit``
    checks the container's config through ``check_inherited_healthcheck``, which
    skips NONE), and committed with ``changes=HEALTHCHECK CMD true`` gives an image
    that itself probes every 100 ms (``{"Test": ["CMD-SHELL", "true"], "Interval":
    100ms}``: dockerd's commit fills the change's zero interval from the
    container's config); ``docker tag`` of such an image (``image_tag``) and a build ``FROM``
    it (``check_dockerfile``: the built image inherits the interval) both pass.
    Severity: Medium (same cause as above). Expected: each refused with 403 naming
    the HEALTHCHECK interval (or the image made without it); a container's own NONE
    with an interval could equally be refused or have its interval dropped."""
    m, t = member, _rand()
    results: dict[str, Any] = {}
    body = {"Image": "busybox", "Cmd": ["true"], "Healthcheck": NONE_FAST}
    code, made = api(g28, m, "POST", "/containers/create", body)
    if code == 201:
        code, _answer = api(g28, m, "POST", f"/commit?container={made['Id']}&repo=r28a-{t}/c&tag=1")
        results["commit of own NONE+100ms"] = (code, image_health(direct_client, f"r28a-{t}/c:1"))
        # changes HEALTHCHECK CMD: dockerd fills its zero Interval from the container's.
        change = quote("HEALTHCHECK CMD true")
        path = f"/commit?container={made['Id']}&repo=r28a-{t}/p&tag=1&changes={change}"
        code, _ = api(g28, m, "POST", path)
        results["commit changes HEALTHCHECK CMD"] = (
            code,
            image_health(direct_client, f"r28a-{t}/p:1"),
        )
    # Since the fix only an admin makes such an image (as a registry's could be).
    direct_client.containers.get(plain).commit(f"r28a-{t}/n", "1", conf={"Healthcheck": NONE_FAST})
    path = f"/images/r28a-{t}/n:1/tag?repo=r28a-{t}/renamed&tag=1"
    results["tag"] = api(g28, m, "POST", path)[0]
    code, _ = build(g28, m, f"FROM r28a-{t}/n:1\n", f"r28a-{t}/child:1")
    results["build FROM"] = (code, image_health(direct_client, f"r28a-{t}/child:1"))
    bad = {
        k: v
        for k, v in results.items()
        if (v if isinstance(v, int) else v[0]) < 400
        and (isinstance(v, int) or (v[1] or {}).get("Interval") == FAST)
    }
    assert not bad, results


# =========================================================================== works


def test_works_build_healthcheck_flags_and_triggers(g28, member, plain, direct_client):
    """The fix's Dockerfile reading against dockerd 20.10's classic builder: refused
    by the gate (403, naming the HEALTHCHECK) or by dockerd (400, no image) where
    the probe would be fast; ordinary health checks build; an ONBUILD HEALTHCHECK
    is refused where it would run (the child build names the trigger). A container
    of the NONE+100ms image with its own ``Test`` is refused (the merge is read)."""
    m, t = member, _rand()
    cases = {
        "HEALTHCHECK --interval=100ms CMD true": 403,
        "HEALTHCHECK --interval=0.1s --timeout=1s CMD true": 403,
        "HEALTHCHECK --interval=100ms NONE": 403,
        "HEALTHCHECK --interval 100ms CMD true": 400,  # dockerd: missing a value
        "HEALTHCHECK --interval=2s --interval=100ms CMD true": 400,  # duplicate flag
        "HEALTHCHECK --start-period=100ms CMD true": 200,
        "HEALTHCHECK NONE": 200,
    }
    got = {}
    for i, line in enumerate(cases):
        tag = f"r28a-{t}/b{i}:1"
        code, text = build(g28, m, f"FROM busybox\n{line}\n", tag)
        health = image_health(direct_client, tag)
        ok = code == cases[line] and (code == 200) == (health is not None)
        if code == 403:
            ok = ok and "HEALTHCHECK" in text
        got[line] = (code, health, ok)
    assert all(v[2] for v in got.values()), got
    # ONBUILD HEALTHCHECK: from a Dockerfile and from commit changes, refused in the child.
    code, _ = build(
        g28, m, "FROM busybox\nONBUILD HEALTHCHECK --interval=100ms CMD true\n", f"r28a-{t}/ob1:1"
    )
    assert code == 200
    change = quote("ONBUILD HEALTHCHECK --interval=100ms CMD true")
    code, answer = api(
        g28, m, "POST", f"/commit?container={plain}&repo=r28a-{t}/ob2&tag=1&changes={change}"
    )
    assert code == 201, answer
    for parent in ("ob1", "ob2"):
        code, text = build(g28, m, f"FROM r28a-{t}/{parent}:1\n", f"r28a-{t}/{parent}c:1")
        assert code == 403 and "ONBUILD trigger" in text, (parent, code, text)
    # The NONE+100ms image (an admin's): a container with its own Test is refused,
    # one with its own NONE (no probe) is not.
    direct_client.containers.get(plain).commit(f"r28a-{t}/n", "1", conf={"Healthcheck": NONE_FAST})
    body = {"Image": f"r28a-{t}/n:1", "Healthcheck": {"Test": ["NONE"]}}
    code, answer = api(g28, m, "POST", "/containers/create", body)
    assert code == 201, (code, answer)
    direct_client.containers.get(answer["Id"]).remove()
    body = {"Image": f"r28a-{t}/n:1", "Healthcheck": {"Test": ["CMD", "true"]}}
    code, answer = api(g28, m, "POST", "/containers/create", body)
    assert code == 403 and "HEALTHCHECK" in str(answer), (code, answer)
