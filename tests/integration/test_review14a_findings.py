"""Findings of review round 14a (today's changes: a job's memory counted for what is
left of its current run, service reservations, security options as an allowlist,
annotations and endpoint sysctls, no :z/:Z on host binds, system df, worker gates).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the secure
behaviour (a ``dockergate:`` refusal, or the memory quota holding over what really
runs). The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate, profile (512m memory quota, 256m per container,
64m default, default confinement only, a read-only shared volume), users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members. The local
daemon is dockerd 20.10 (API 1.41); only the local ``busybox`` image is used.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration import test_review10a_findings as tenth
from tests.integration import test_review11a_findings as eleventh
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw, Reply

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand = first_round._rand

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
NANO = 1_000_000_000
QUOTA = 512 * MIB


def _refused(r: Reply) -> bool:
    if r.status not in (400, 403):
        return False
    try:
        return str(json.loads(r.body).get("message", "")).startswith("dockergate:")
    except ValueError:
        return False


def _running_memory(raw: Raw) -> int:
    """What the member's running containers really hold (their memory limits)."""
    r = raw.request("GET", "/v1.41/containers/json")
    assert r.status == 200, (r.status, r.body)
    total = 0
    for c in json.loads(r.body):
        got = raw.request("GET", f"/v1.41/containers/{c['Id']}/json")
        if got.status == 200:
            total += int(json.loads(got.body)["HostConfig"]["Memory"] or 0)
    return total


def _update(raw: Raw, sid: str) -> Reply:
    """``docker service update --force``: the spec as it is, ForceUpdate raised."""
    r = raw.request("GET", f"/v1.41/services/{sid}")
    assert r.status == 200, (r.status, r.body)
    service = json.loads(r.body)
    spec = service["Spec"]
    template = spec["TaskTemplate"]
    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
    return raw.request(
        "POST", f"/v1.41/services/{sid}/update?version={service['Version']['Index']}", spec
    )


@pytest.fixture
def task_containers(direct_client) -> Iterator[list[str]]:
    """Service IDs whose task containers are force-removed after the test (a long
    stop grace period would keep them running into the next tests)."""
    sids: list[str] = []
    yield sids
    for sid in sids:
        with contextlib.suppress(Exception):
            direct_client.services.get(sid).remove()
        flt = {"label": f"com.docker.swarm.service.id={sid}"}
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def _job(raw: Raw, cleanup, sids: list[str], command: list[str], **container: Any) -> str:
    spec = {
        "Name": f"rv14-job-{_rand()}",
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": command, **container},
            "Resources": {"Limits": {"MemoryBytes": 256 * MIB}},
        },
    }
    status, sid = tenth._service(raw, spec, cleanup)
    assert status == 201, (status, sid)
    sids.append(sid)
    return sid


# ------------------------------------------------------- a job's runs and the quota


def test_finding_job_update_keeps_the_previous_runs_tasks_running(users, cleanup, task_containers):
    """An update of a job starts a new run (``JobIteration`` + 1) and the quota counts
    the job for that run only. Swarm's job reconciler creates the new run's tasks at
    once and only marks the previous run's running tasks for removal: they stop as any
    removed task does, SIGTERM then ``StopGracePeriod`` (not capped by the gate; busybox
    ``sleep`` as PID 1 ignores SIGTERM). Unlike a replicated service's stop-first
    update, nothing waits for them. A 1-task 256m job updated twice runs three 256m
    containers (768m) for the grace period, under a 512m quota that counts 256m.

    ``POST /services/create`` with ``Mode: {ReplicatedJob: {MaxConcurrent: 1,
    TotalCompletions: 1}}``, ``ContainerSpec: {Command: [sleep, 300],
    StopGracePeriod: 120s}``, 256m limit; then ``POST /services/{id}/update`` with
    ``ForceUpdate`` raised, twice."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = _job(m, cleanup, task_containers, ["sleep", "300"], StopGracePeriod=120 * NANO)
    assert eleventh._wait_running(m, sid, 1, 30), "the job's task never ran"
    statuses = []
    for count in (2, 3):
        r = _update(m, sid)
        statuses.append(r.status)
        if r.status != 200:
            break
        eleventh._wait_running(m, sid, count, 20)
    time.sleep(2)
    running = len(eleventh._running_tasks(m, sid))
    held = _running_memory(m)
    assert held <= QUOTA, (
        f"updates answered {statuses}; {running} task containers of a 1-task 256m job "
        f"run: the member's running containers hold {held // MIB}m under a "
        f"{QUOTA // MIB}m quota"
    )


def test_works_finished_job_is_rerun_by_an_update(users, cleanup, task_containers):
    """The neighbour: a job that finished holds nothing, and ``docker service update
    --force`` runs it again (a new run), within the quota."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = _job(m, cleanup, task_containers, ["true"])
    flt = quote(json.dumps({"service": [sid]}))
    deadline = time.monotonic() + 30
    states: list[str] = []
    while time.monotonic() < deadline:
        r = m.request("GET", f"/v1.41/tasks?filters={flt}")
        assert r.status == 200, (r.status, r.body)
        states = [t["Status"]["State"] for t in json.loads(r.body)]
        if "complete" in states:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the job did not complete: {states}")
    r = _update(m, sid)
    assert r.status == 200, (r.status, r.body)
    assert _running_memory(m) <= QUOTA


def test_finding_removed_service_keeps_its_tasks_running(users, cleanup, task_containers):
    """The same gap outside jobs: ``DELETE /services/{id}`` drops the service from
    the quota at once, while Swarm stops its task containers with SIGTERM and then
    the spec's ``StopGracePeriod``, which the gate forwards uncapped. The quota
    counts neither services that are gone nor task containers, so a member who
    removes a 256m service and creates another (twice) runs three 256m containers
    (768m) under a 512m quota for as long as the grace period they chose.

    ``POST /services/create`` (1 replica, 256m, ``StopGracePeriod: 120s``,
    ``Command: [sleep, 300]``) then ``DELETE /services/{id}``; three times."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    statuses = []
    for _ in range(3):
        spec = {
            "Name": f"rv14-gone-{_rand()}",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Command": ["sleep", "300"],
                    "StopGracePeriod": 120 * NANO,
                },
                "Resources": {"Limits": {"MemoryBytes": 256 * MIB}},
            },
            "Mode": {"Replicated": {"Replicas": 1}},
        }
        status, sid = tenth._service(m, spec, cleanup)
        statuses.append(status)
        if status != 201:
            break
        task_containers.append(sid)
        eleventh._wait_running(m, sid, 1, 30)
        r = m.request("DELETE", f"/v1.41/services/{sid}")
        assert r.status == 200, (r.status, r.body)
    time.sleep(2)
    held = _running_memory(m)
    assert held <= QUOTA, (
        f"service creates answered {statuses}: the member's running containers hold "
        f"{held // MIB}m under a {QUOTA // MIB}m quota"
    )


def test_works_service_removed_and_created_again(users, cleanup, task_containers):
    """The neighbour: with the default grace period a removed service's task stops,
    and a new 256m service fits the quota."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = eleventh._sleeping_service(m, cleanup, f"rv14-again-{_rand()}")
    task_containers.append(sid)
    r = m.request("DELETE", f"/v1.41/services/{sid}")
    assert r.status == 200, (r.status, r.body)
    sid = eleventh._sleeping_service(m, cleanup, f"rv14-again-{_rand()}")
    task_containers.append(sid)
    assert _running_memory(m) <= QUOTA


# ------------------------------------------------------- security options


def test_finding_no_new_privileges_false_is_allowed(users, cleanup):
    """``check_security_opts`` accepts any ``no-new-privileges`` option, whatever its
    value. dockerd's ``parseSecurityOpt`` reads ``no-new-privileges=<bool>``
    (``strconv.ParseBool``: ``false``, ``0``, ``f``...) and sets the container's
    ``NoNewPrivileges`` from it, over the daemon's own ``"no-new-privileges": true``
    (daemon.json), which it copied in first: a member turns off what the admin set
    for every container (setuid binaries in the member's image work again).

    ``POST /containers/create`` with ``HostConfig.SecurityOpt:
    ["no-new-privileges=false"]``."""
    r = first_round.create(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"SecurityOpt": ["no-new-privileges=false"]},
        },
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert _refused(r), (r.status, r.body)


@pytest.mark.parametrize("opt", ["no-new-privileges", "no-new-privileges=true"])
def test_works_no_new_privileges(users, cleanup, opt):
    """The neighbour: ``--security-opt no-new-privileges`` (and ``=true``)."""
    first_round.created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"SecurityOpt": [opt]}},
        cleanup,
    )


# ------------------------------------------------------- SELinux relabelling


def test_finding_relabel_of_the_shared_volume(users, cleanup, shared_name, direct_client):
    """``:z`` / ``:Z`` are refused on host binds: dockerd relabels the source on an
    SELinux host, and ``:Z`` makes a shared tree private to one container. The check
    reads binds whose source starts with ``/`` only; a named volume's source is
    relabelled just the same (``MountPoint.Setup`` relabels ``m.Source``, the volume's
    directory, or for a bind-backed local volume the host directory mounted there,
    read-only or not). The profile's shared volume is the team's data: a member's
    ``-v <shared>:/data:ro,Z`` takes it away from every other container.

    ``POST /containers/create`` with ``HostConfig.Binds: ["<shared volume>:/data:ro,Z"]``."""
    direct_client.volumes.create(shared_name)
    cleanup.append(("volume", shared_name))
    r = first_round.create(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": [f"{shared_name}:/d:ro,Z"]}},
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert _refused(r), (r.status, r.body)


def test_works_shared_volume_read_only(users, cleanup, shared_name, direct_client):
    """The neighbour: the shared volume mounted read-only, without relabelling."""
    direct_client.volumes.create(shared_name)
    cleanup.append(("volume", shared_name))
    cid = first_round.created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": [f"{shared_name}:/d:ro"]}},
        cleanup,
    )
    assert cid
