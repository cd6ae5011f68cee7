"""Review round 16a: unthemed, black box first (the real CLI, raw HTTP as members).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (one member cannot use up what every user of the engine shares, the
profile's pids cap and memory quota hold for builds too, one member cannot keep
another from rebuilding their own image). The ``test_works_*`` tests pass and pin
the legitimate neighbour.

They reuse the first round's gate, profile (64m default and 256m maximum memory, a
512m memory quota, pids default 4096), users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members. Only the
local ``busybox`` image is used; all traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw, Reply

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
build = first_round.build
created = first_round.created

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _stream(r: Reply) -> str:
    """The ``stream`` texts of a build's JSON lines, joined."""
    out = []
    for line in r.body.splitlines():
        with contextlib.suppress(ValueError):
            out.append(str(json.loads(line).get("stream") or ""))
    return "".join(out)


# ------------------------------------------------------------ shared address pools


def test_finding_one_member_takes_every_address_pool(users, cleanup):
    """Profiles limit containers, services and memory, but not networks
    (``network_create`` in api/networks.py checks the driver, options and subnets
    only; policy/quota.py has no count for them). Every local network takes a
    subnet from the engine's default address pools (31 by default: 172.17-31/16 and
    192.168/20 steps): ``for i in $(seq 40); do docker network create n$i; done`` as
    one member stopped after 29 with dockerd's "could not find an available,
    non-overlapping IPv4 address pool", and from then on no one, admins included,
    could create a network: the victim's ``docker network create`` and every
    ``docker compose up`` (a project network) failed until the member removed
    theirs."""
    m, v = users["mallory"], users["victim"]
    last = None
    for i in range(64):
        r = m.request("POST", "/v1.41/networks/create", {"Name": f"dgt-rv16a-pool-{_rand()}-{i}"})
        if r.status != 201:
            last = r
            break
        cleanup.append(("network", json.loads(r.body)["Id"]))
    assert last is not None, "64 networks created"
    r = v.request("POST", "/v1.41/networks/create", {"Name": f"dgt-rv16a-victim-{_rand()}"})
    if r.status == 201:
        cleanup.append(("network", json.loads(r.body)["Id"]))
    assert r.status == 201, (
        f"after mallory's {len(cleanup)} networks (her last create: {last.status} "
        f"{last.message!r}), the victim's network create got {r.status} {r.message!r}"
    )


def test_works_member_creates_a_few_networks_and_uses_them(users, cleanup):
    m = users["mallory"]
    ids = [first_round.network(m, f"dgt-rv16a-net-{_rand()}", cleanup) for _ in range(3)]
    cid = created(
        m,
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": ids[0]}},
        cleanup,
    )
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204


# ------------------------------------------------------------------- build steps

PIDS_MAX = "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"


@pytest.mark.xfail(
    strict=True,
    reason="known limit (policies/README.md, builds): the classic builder has no pids limit to set",
)
def test_finding_build_run_steps_have_no_pids_limit(users):
    """The profile caps pids (default 4096, max 32768 shipped; every container and
    service gets the default), but a classic build's RUN steps are containers the
    builder creates with no PidsLimit (the build API has no such parameter, and
    ``_check_build`` in api/images.py lets the build run anyway): ``RUN cat
    pids.max`` prints ``max``. A member's ``RUN :(){ :|:& };:`` forks until the
    host's pid space is gone, for every user and for dockerd itself. The gate
    could refuse classic builds to profiles with a pids maximum, or run them under
    a cgroup parent it limits."""
    r = build(users["mallory"], "rm=1&nocache=1", f"FROM busybox\nRUN {PIDS_MAX}\n")
    text = _stream(r)
    assert r.status == 200 and "Successfully built" in text, (r.status, r.body[-300:])
    values = [line.strip() for line in text.splitlines() if line.strip() in ("max",)]
    assert not values, f"a member's RUN step runs without a pids limit:\n{text[-600:]}"


def test_works_containers_get_the_pids_default(users, cleanup):
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["sh", "-c", PIDS_MAX]}, cleanup)
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    m.request("POST", f"/v1.41/containers/{cid}/wait")
    logs = m.request("GET", f"/v1.41/containers/{cid}/logs?stdout=1").body
    assert b"4096" in logs, logs


def _build_in_thread(raw: Raw, query: str, dockerfile: str, out: list) -> threading.Thread:
    def run() -> None:
        try:
            out.append(build(raw, query, dockerfile))
        except OSError as exc:  # the build is ended by the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _build_containers(direct_client, marker: str) -> list:
    return [
        c
        for c in direct_client.containers.list()
        if marker in " ".join(c.attrs.get("Config", {}).get("Cmd") or [])
    ]


def test_finding_parallel_builds_go_over_the_memory_quota(users, direct_client):
    """``_check_build`` (api/images.py) checks a build's memory against the quota
    once, before it starts; its RUN containers carry no owner label, so
    ``quota.usage`` never counts them while they run. Three ``docker build -m
    256m`` started together each saw 0 used of the 512m quota and all ran at once
    (768m), and ``docker run -m 256m`` and ``-m 200m`` beside them passed too: 1.2g
    of limits held under a 512m quota. A build in progress must count against the
    quota (the gate knows its memory until the build ends)."""
    m = users["mallory"]
    marker = f"dgt-rv16a-q-{_rand()}"
    dockerfile = f"FROM busybox\nRUN echo {marker} && sleep 25\n"
    outs: list = []
    threads = [
        _build_in_thread(m, f"rm=1&forcerm=1&nocache=1&memory={256 * MIB}", dockerfile, outs)
        for _ in range(3)
    ]
    try:
        running: list = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = _build_containers(direct_client, marker)
            if len(running) == 3 or len(outs) + len(running) >= 3:
                break
            time.sleep(0.5)
        held = sum(int(c.attrs["HostConfig"].get("Memory") or 0) for c in running)
        refused = [o for o in outs if isinstance(o, Reply) and o.status == 403]
        assert held <= 512 * MIB, (
            f"{len(running)} builds of one member run at once holding {held // MIB}m "
            f"under a 512m quota ({len(refused)} refused)"
        )
    finally:
        for c in _build_containers(direct_client, marker):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        for t in threads:
            t.join(30)


def test_works_a_build_within_the_quota(users):
    r = build(users["mallory"], f"rm=1&nocache=1&memory={128 * MIB}", "FROM busybox\nRUN true\n")
    assert r.status == 200 and "Successfully built" in _stream(r), (r.status, r.body[-300:])


# ---------------------------------------------------------- tags pinned by a build


@pytest.fixture
def victim_app(users, direct_client) -> Iterator[str]:
    """An image the victim built and tagged, as their daily loop does."""
    tag = f"dgt-rv16a-app-{_rand()}:dev"
    r = build(users["victim"], f"t={quote(tag, safe='')}&rm=1", "FROM busybox\nRUN true\n")
    assert r.status == 200 and "Successfully tagged" in _stream(r), (r.status, r.body[-300:])
    yield tag
    with contextlib.suppress(Exception):
        direct_client.images.remove(tag, force=True)


@pytest.mark.xfail(
    strict=True,
    reason="known limit (policies/README.md, builds): a build's FROM tags cannot be "
    "moved while it runs, whoever's tag it is",
)
def test_finding_another_members_endless_build_pins_ones_own_tag(users, victim_app, direct_client):
    """While a member's build runs, no one may move the tags it starts ``FROM``
    (``pin_build_bases`` / ``check_not_a_build_base`` in api/images.py: 409 "a build
    in progress starts FROM it"). Any member may build ``FROM`` any image, and a
    build runs as long as its RUN step does: mallory's ``FROM victim-app:dev`` with
    ``RUN sleep 1000000`` kept the victim's own ``docker build -t victim-app:dev``
    (and ``tag``, ``commit``, ``rmi``) refused for as long as she liked; the same
    build ``FROM busybox`` keeps every member from ``docker pull busybox``. The pin
    should hold what the gate read (the base's image ID), not other users' tags."""
    m, v = users["mallory"], users["victim"]
    marker = f"dgt-rv16a-pin-{_rand()}"
    outs: list = []
    t = _build_in_thread(
        m, "rm=1&forcerm=1&nocache=1", f"FROM {victim_app}\nRUN echo {marker} && sleep 60\n", outs
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _build_containers(direct_client, marker):
            time.sleep(0.5)
        assert _build_containers(direct_client, marker), outs
        r = build(v, f"t={quote(victim_app, safe='')}&rm=1", "FROM busybox\nRUN echo v2\n")
        assert r.status == 200 and "Successfully tagged" in _stream(r), (
            f"the victim's rebuild of their own {victim_app} while mallory builds FROM "
            f"it: {r.status} {r.message!r}"
        )
    finally:
        for c in _build_containers(direct_client, marker):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        t.join(30)


def test_works_rebuilding_ones_own_tag(users, victim_app):
    r = build(users["victim"], f"t={quote(victim_app, safe='')}&rm=1", "FROM busybox\nRUN echo 2\n")
    assert r.status == 200 and "Successfully tagged" in _stream(r), (r.status, r.body[-300:])
