"""Review round 29a: the last fixes of the day (ce670e5, cb82c2e, 7443cc3, 953d7c5)
attacked as a member and as a local user of the unix socket.

Findings (each ``test_finding_*`` FAILS on the reviewed code, 953d7c5):

- Medium: a build whose *first* stage from a fast-HEALTHCHECK image has its own
  HEALTHCHECK passes with a *later* stage from the same image that has none, and
  the built image probes every 100 ms. ``dockerfile.base_images`` lists each base
  image once (at its first FROM line) and ``images.check_dockerfile`` skips the
  check when that line's stage has its own HEALTHCHECK: the other stages' FROM of
  the same image are never looked at. ``FROM fast AS a`` / ``HEALTHCHECK CMD
  true`` / ``FROM fast`` builds (200) an image with the admin image's 100 ms
  interval; onto the tag a member's service runs it is 28a's finding again.
- Medium: commit with a body ``Healthcheck`` that passes (``Interval`` 2 s) and
  ``changes=HEALTHCHECK CMD true`` gives an image probing every 100 ms, from a
  container created with its own ``{"Test": ["NONE"], "Interval": 100ms}``
  (201, allowed). dockerd applies ``changes`` over the body (the change's
  HEALTHCHECK replaces the body's, intervals 0) and then fills zeros from the
  container's config; ``containers.commit`` checks the merge with the body's
  check as the image's own, not the change's.
- Low: a socket path that fits ``sun_path`` but not with 3 + len(pid) more
  characters no longer starts: ``listeners.start_unix`` binds
  ``.<name>.<pid>`` in the same directory first (``OSError: AF_UNIX path too
  long``, the gate exits at start-up; 104 characters worked before 953d7c5).

Held and pinned (``test_works_*``): a stage's own HEALTHCHECK over a fast base
builds (the fix) and the same base without one is refused; a second gate started on
a live gate's socket path exits and the first keeps answering on a 0666 socket, no
temporary file left; the create audit row (name and ID) still comes through the
container create's own answer filter.

Checked by reading, not pinned: ``ONBUILD HEALTHCHECK`` lines are ``onbuild``
instructions, so they never count as a stage's own check; ``COPY --from`` does
not carry config; a stage ``FROM`` an earlier stage inherits that stage's
(checked) config; the second (physical-line) reading's FROM lines are checked
whatever the stage; ``audit --kind`` knows every kind the gate and the CLI write
(routes' kinds, ``user``, ``policy``); stop waits shown in seconds.

Noticed and left alone (see the report): ``start_unix``'s temporary name is
predictable (``.<name>.<pid>``; pid 1 for every gate in a container), so two gates
starting at once on one shared directory (the stack's ``/run/dockergate``) can
unlink each other's temporary socket; ``Gate.shutdown`` unlinks the socket path
even when another gate has put its socket there since; ``_clear_stale_socket`` and
the rename are not atomic together (a gate starting between them is replaced
silently); ``os.chmod`` follows a symlink (only matters in a directory others may
write, as before).

Only ``busybox`` and commits of it; loopback only; one module gate.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import Gate, admin_image, new_gate, ping, policies_gate, remove_owned
from tests.helpers import api_as as api
from tests.integration.test_review28a_findings import build, image_health

pytestmark = pytest.mark.timeout(90)

MEMBER = "r29a-m"
FAST = 100 * 10**6  # 100 ms in nanoseconds


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g29(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def member(g29, unix_user, direct_client) -> Iterator[Any]:
    m = unix_user("r29am")
    g29.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    yield m
    remove_owned(direct_client, MEMBER)
    for image in direct_client.images.list():
        for tag in image.tags:
            if tag.startswith("r29a-"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def fast_image(direct_client, member) -> Iterator[str]:
    """An admin's image (as a registry's could be) probing every 100 ms."""
    health = {"Healthcheck": {"Test": ["CMD", "true"], "Interval": FAST}}
    tag = admin_image(direct_client, f"r29a-{_rand()}/fast:1", health)
    yield tag


# ======================================================================== findings


def test_finding_later_stage_from_the_same_fast_base_is_not_checked(
    g29, member, fast_image, direct_client
):
    """api/images.py ``check_dockerfile``: ``froms`` (api/dockerfile.py
    ``base_images``) holds each image once, with its *first* FROM line; that line's
    stage has its own HEALTHCHECK, so the check is skipped, and the final stage's
    ``FROM`` of the same image (no HEALTHCHECK: it inherits the base's) is never
    checked. Steps, as a member: build ``FROM fast AS first`` / ``HEALTHCHECK CMD
    true`` / ``FROM fast`` (fast: an image with ``Interval`` 100 ms). Got: 200, the
    image has ``Interval: 100000000``. Expected: 403 naming the base's HEALTHCHECK
    (as ``FROM fast`` alone is). Fix: decide per FROM instruction, not per distinct
    image: e.g. check every FROM line (of ``instructions``) whose stage has no
    HEALTHCHECK, or have ``base_images`` return every (line, image)."""
    tag = f"r29a-{_rand()}/twostage:1"
    text = f"FROM {fast_image} AS first\nHEALTHCHECK CMD true\nFROM {fast_image}\n"
    code, answer = build(g29, member, text, tag)
    health = image_health(direct_client, tag)
    assert code == 403 and "HEALTHCHECK" in answer, (code, answer[-300:], health)
    assert (health or {}).get("Interval") != FAST, health


def test_finding_commit_changes_healthcheck_over_a_passing_body_takes_the_containers_interval(
    g29, member, direct_client
):
    """api/containers.py ``commit``: the merge is checked with the body's
    ``Healthcheck`` as the image's own. dockerd (daemon/commit.go) runs
    ``BuildFromConfig(body, changes)`` first, where ``HEALTHCHECK CMD true``
    replaces the body's check whole (intervals 0), then ``merge`` fills the zeros
    from the container's config. Steps, as a member: create a container with
    ``Healthcheck: {"Test": ["NONE"], "Interval": 100000000}`` (201, a container's
    own NONE is allowed); ``POST /commit?container=C&repo=r&tag=1&changes=HEALTHCHECK
    CMD true`` with body ``{"Healthcheck": {"Test": ["CMD", "true"], "Interval":
    2000000000}}``. Got: 201, the image probes ``true`` every 100 ms. Expected: 403
    (as without a body). Fix: when ``changes`` hold a HEALTHCHECK line, take its
    (parsed) check as the image's own in ``check_inherited_healthcheck`` (the last
    one wins), not the body's; or refuse a body Healthcheck together with a
    HEALTHCHECK change."""
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "Healthcheck": {"Test": ["NONE"], "Interval": FAST},
    }
    code, made = api(g29, member, "POST", "/containers/create", body)
    assert code == 201, made
    repo = f"r29a-{_rand()}/chg"
    change = quote("HEALTHCHECK CMD true")
    path = f"/commit?container={made['Id']}&repo={repo}&tag=1&changes={change}"
    passing = {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 2 * 10**9}}
    code, answer = api(g29, member, "POST", path, passing)
    health = image_health(direct_client, f"{repo}:1")
    assert (health or {}).get("Interval") != FAST, (code, answer, health)
    assert code == 403, (code, answer, health)


def test_finding_a_socket_path_that_fits_no_longer_starts(session_dir, docker_host, g29):
    """listen/listeners.py ``start_unix`` binds ``.<name>.<pid>`` beside the path
    first: 3 + len(pid) more characters than the configured path, over
    ``sun_path``'s 108 for a path of 104 that bound before 953d7c5 (the gate
    exits at start-up with ``OSError: AF_UNIX path too long``). Expected: the gate
    serves on any path the kernel takes. Fix: a shorter temporary name (or bind
    through a directory descriptor, ``/proc/self/fd/N/name``), or fall back to
    binding the path itself (then chmod) when the temporary one is too long."""
    g = new_gate(session_dir, docker_host, tls=False, state_dir=g29.state_dir)
    g.extra_args.extend(g29.extra_args)
    room = 104 - len(str(g.socket.parent)) - len("/gate.sock") - 1
    deep = g.socket.parent / ("d" * room)
    deep.mkdir(mode=0o755)
    g.socket = deep / "gate.sock"
    assert len(str(g.socket)) == 104
    g.start(wait=False)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and g.alive() and not g.socket.exists():
            time.sleep(0.1)
        alive = g.alive()
        answered = False
        if alive:
            with contextlib.suppress(OSError, ValueError):
                answered = ping(g.socket, timeout=3).status == 200
        assert alive and answered, g.log()[-600:]
    finally:
        if g.alive():
            g.stop()
        g.kill()


# =========================================================================== works


def test_works_stage_with_its_own_healthcheck_over_a_fast_base(
    g29, member, fast_image, direct_client
):
    """The fix held: a stage's own HEALTHCHECK replaces its base's (builds, no
    fast interval); the same base without one is refused naming its HEALTHCHECK."""
    t = _rand()
    code, answer = build(g29, member, f"FROM {fast_image}\n", f"r29a-{t}/plain:1")
    assert code == 403 and "its HEALTHCHECK" in answer, (code, answer[-300:])
    text = f"FROM {fast_image}\nHEALTHCHECK --interval=2s CMD true\n"
    code, answer = build(g29, member, text, f"r29a-{t}/own:1")
    health = image_health(direct_client, f"r29a-{t}/own:1")
    assert code == 200 and (health or {}).get("Interval") == 2 * 10**9, (code, health)


def test_works_second_gate_on_a_live_path_leaves_the_first_serving(session_dir, docker_host, g29):
    """A second gate on the live socket's path exits; the first still answers on its
    0666 socket, and no ``.gate.sock.*`` temporary is left beside it."""
    g = new_gate(session_dir, docker_host, tls=False, state_dir=g29.state_dir)
    g.extra_args.extend(g29.extra_args)
    g.socket = g29.socket
    g.start(wait=False)
    try:
        assert g.proc is not None
        code = g.proc.wait(30)
    finally:
        g.kill()
    assert code != 0 and "listening" in g.log(), g.log()[-600:]
    assert ping(g29.socket, timeout=3).status == 200
    assert os.stat(g29.socket).st_mode & 0o777 == 0o666
    left = [p.name for p in g29.socket.parent.iterdir() if p.name.startswith(".gate.sock")]
    assert not left, left
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(g29.socket))


def test_works_create_audit_row_keeps_name_and_id(g29, member, direct_client):
    """The create audit capture after the handler: a member's named container create
    is recorded with its ID and ``name=``."""
    name = f"r29a-aud-{_rand()}"
    code, made = api(g29, member, "POST", f"/containers/create?name={name}", {"Image": "busybox"})
    assert code == 201, made
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        out = g29.dockergate("audit", "--user", MEMBER, "--kind", "containers", "--json").stdout
        rows = json.loads(out)
        if any(f"name={name}" in str(r) for r in rows):
            break
        time.sleep(0.3)
    mine = [r for r in rows if f"name={name}" in str(r)]
    assert mine and made["Id"] in json.dumps(mine), rows[-3:]
