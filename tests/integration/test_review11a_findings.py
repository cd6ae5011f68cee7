"""Findings of review round 11a (today's changes: inspect of built-in networks and
shared volumes, volume names held cluster-wide, Swarm task containers).

They reuse the first round's gate, profile (512m memory quota, 256m per container,
64m default), users and cleanup (tests/integration/test_review_findings.py) and raw
requests as members.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration import test_review10a_findings as tenth
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand = first_round._rand

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20


def _running_tasks(raw: Raw, sid: str) -> list[dict[str, Any]]:
    flt = quote(json.dumps({"label": [f"com.docker.swarm.service.id={sid}"]}))
    r = raw.request("GET", f"/v1.41/containers/json?filters={flt}")
    assert r.status == 200, (r.status, r.body)
    return [c for c in json.loads(r.body) if c["State"] == "running"]


def _wait_running(raw: Raw, sid: str, count: int, seconds: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    running = _running_tasks(raw, sid)
    while time.monotonic() < deadline and len(running) < count:
        time.sleep(0.3)
        running = _running_tasks(raw, sid)
    return running


def _sleeping_service(raw: Raw, cleanup, name: str, **extra: Any) -> str:
    spec = {
        "Name": name,
        "TaskTemplate": {
            # `sleep` as pid 1 ignores SIGTERM: a replaced task stops after this (not 10 s)
            "ContainerSpec": {
                "Image": "busybox",
                "Command": ["sleep", "300"],
                "StopGracePeriod": 1_000_000_000,
            },
            "Resources": {"Limits": {"MemoryBytes": 200 * MIB}},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        **extra,
    }
    status, sid = tenth._service(raw, spec, cleanup)
    assert status == 201, (status, sid)
    assert _wait_running(raw, sid, 1, 30), "no running task container"
    return sid


# ------------------------------------------------------- built-in network inspect


@pytest.fixture
def victim_published_service(users, cleanup) -> str:
    """A victim's service publishing a port: its tasks join Swarm's ingress network."""
    name = f"rv11-victimsvc-{_rand()}"
    port = 8000 + random.randrange(1000)
    _sleeping_service(
        users["victim"],
        cleanup,
        name,
        EndpointSpec={"Ports": [{"TargetPort": 80, "PublishedPort": port}]},
    )
    return name


def test_ingress_verbose_inspect_shows_other_users_services(users, victim_published_service):
    """``builtin_network`` lets members inspect Swarm's ingress network and filters its
    ``Containers`` to their own, but ``?verbose=true`` adds ``Services``: every
    service publishing a port, with its name, VIP, published ports, and each task's
    name (``<service>.<slot>.<task id>``), endpoint ID and address. Another user's
    service must look missing: ``docker network inspect -v ingress`` must not list it."""
    m = users["mallory"]
    r = m.request("GET", "/v1.41/networks/ingress?verbose=true")
    assert r.status == 200, (r.status, r.body)
    assert victim_published_service.encode() not in r.body, json.loads(r.body).get("Services")


def test_ingress_plain_inspect_works_without_others(users, victim_published_service):
    """The neighbour: the plain inspect of the ingress network works and shows
    nobody else's containers."""
    m = users["mallory"]
    r = m.request("GET", "/v1.41/networks/ingress")
    assert r.status == 200, (r.status, r.body)
    assert json.loads(r.body)["Ingress"] is True
    assert victim_published_service.encode() not in r.body


# ------------------------------------------------------- task containers and the quota


def test_restart_of_running_task_container_leaves_an_uncounted_copy(users, cleanup):
    """``docker restart`` of a *running* task container is let through
    (``check_started`` refuses only stopped ones). dockerd stops it, Swarm sees the
    task fail and starts a replacement, and dockerd then starts the old container
    again: both run. The old one carries the task label, so the quota skips it, and
    the service's spec counts one replica. Each restart adds another 200m container
    past the 512m quota (bounded only by the task history retention)."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = _sleeping_service(m, cleanup, f"rv11-restart-{_rand()}")
    task = _running_tasks(m, sid)[0]["Id"]
    r = m.request("POST", f"/v1.41/containers/{task}/restart?t=0")
    # A restart dockerd carried out gets 10 s to show its second container; one the
    # gate refused never reached dockerd (a short look still checks nothing moved).
    refused_by_gate = r.status in (403, 409) and b"docker service update" in r.body
    running = _wait_running(m, sid, 2, 3 if refused_by_gate else 10)
    assert len(running) <= 1, (
        f"restart answered {r.status}; {len(running)} running containers of a 1-replica "
        f"service: {[(c['Id'][:12], c['Status']) for c in running]}"
    )


def test_exec_into_own_task_container_works(users, cleanup):
    """The neighbour: a member execs into their own service's task container."""
    m = users["mallory"]
    sid = _sleeping_service(m, cleanup, f"rv11-exec-{_rand()}")
    task = _running_tasks(m, sid)[0]["Id"]
    r = m.request("POST", f"/v1.41/containers/{task}/exec", {"Cmd": ["true"], "AttachStdout": True})
    assert r.status == 201, (r.status, r.body)
    exec_id = json.loads(r.body)["Id"]
    r = m.request("POST", f"/v1.41/exec/{exec_id}/start", {"Detach": False, "Tty": False})
    assert r.status == 200, (r.status, r.body)


# ------------------------------------------------------- volume names held cluster-wide


def test_refused_create_does_not_hold_a_volume_name(users, cleanup):
    """``volume_usable`` claims each named volume's name in the store before the rest
    of the create is checked: a create the gate itself then refuses (here for
    ``--privileged``) creates no volume, yet the name is held by the caller for good
    (claims are never released, and no admin command releases them). One refused
    request can hold any number of names (``-v db:/a -v data:/b ...``) that other
    users, and stacks (``<stack>_<volume>``), will then be refused."""
    m, v = users["mallory"], users["victim"]
    name = f"rv11-wanted-{_rand()}"
    r = first_round.create(
        m,
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"Privileged": True, "Binds": [f"{name}:/data"]},
        },
    )
    assert r.status == 403 and b"rivileged" in r.body, (r.status, r.body)
    r = v.request("POST", "/v1.41/volumes/create", {"Name": name})
    if r.status == 201:
        cleanup.append(("volume", name))
    assert r.status == 201, (r.status, r.body)


def test_own_volume_name_stays_usable_after_removal(users, cleanup):
    """The neighbour: a name one used stays one's own, after its volume is removed."""
    v = users["victim"]
    name = f"rv11-mine-{_rand()}"
    cleanup.append(("volume", name))
    r = v.request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201, (r.status, r.body)
    r = v.request("DELETE", f"/v1.41/volumes/{name}")
    assert r.status == 204, (r.status, r.body)
    r = v.request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201, (r.status, r.body)
    r = users["mallory"].request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status in (403, 409), (r.status, r.body)
