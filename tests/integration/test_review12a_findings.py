"""Findings of review round 12a (today's changes: volume names held cluster-wide,
Swarm task containers and the quota, inspect of shared volumes and built-in networks).

They reuse the first round's gate, profile (512m memory quota, 256m per container,
64m default), users and cleanup (tests/integration/test_review_findings.py) and raw
requests as members.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests.helpers import dockergate_argv
from tests.integration import test_review10a_findings as tenth
from tests.integration import test_review11a_findings as eleventh
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
QUOTA = 512 * MIB


def _running_memory(raw: Raw) -> int:
    """What the member's running containers really hold (their memory limits)."""
    r = raw.request("GET", "/v1.41/containers/json")
    assert r.status == 200, (r.status, r.body)
    total = 0
    for c in json.loads(r.body):
        got = raw.request("GET", f"/v1.41/containers/{c['Id']}/json")
        assert got.status == 200, (got.status, got.body)
        total += int(json.loads(got.body)["HostConfig"]["Memory"] or 0)
    return total


def _update_service(raw: Raw, sid: str, change) -> Any:
    r = raw.request("GET", f"/v1.41/services/{sid}")
    assert r.status == 200, (r.status, r.body)
    service = json.loads(r.body)
    spec = service["Spec"]
    change(spec)
    template = spec["TaskTemplate"]
    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
    return raw.request(
        "POST", f"/v1.41/services/{sid}/update?version={service['Version']['Index']}", spec
    )


def _start_first_never_healthy(spec: dict[str, Any]) -> None:
    spec["UpdateConfig"] = {"Order": "start-first", "Parallelism": 1}
    spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = {
        "Test": ["CMD", "false"],
        "Interval": 3600 * 10**9,
        "Retries": 1,
    }


# ------------------------------------------------------- task containers and the quota


def test_start_first_updates_keep_uncounted_task_containers_running(users, cleanup):
    """``UpdateConfig.Order: start-first`` makes Swarm start a slot's new task before it
    stops the old one, and the old one is stopped only once the new one is RUNNING.
    With a health check that does not report for an hour, the new task stays
    STARTING (its container runs) and the old one keeps running; each further update
    adds another container to the slot. The quota counts the service's spec (one
    200m replica) whatever runs: a 1-replica service here runs 3 containers (600m)
    and the member then still starts a 256m container: 856m under a 512m quota.

    ``POST /services/{id}/update`` with ``UpdateConfig: {Order: start-first}``,
    ``ContainerSpec.Healthcheck: {Test: [CMD, false], Interval: 1h}`` and
    ``ForceUpdate`` raised, twice."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = eleventh._sleeping_service(m, cleanup, f"rv12-startfirst-{_rand()}")
    statuses = []
    for count in (2, 3):
        r = _update_service(m, sid, _start_first_never_healthy)
        statuses.append(r.status)
        if r.status != 200:
            break
        eleventh._wait_running(m, sid, count, 20)
    cid = first_round.created(
        m,
        {"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": {"Memory": 256 * MIB}},
        cleanup,
    )
    started = first_round.start(m, cid)
    held = _running_memory(m)
    tasks = len(eleventh._running_tasks(m, sid))
    assert held <= QUOTA, (
        f"updates answered {statuses}, {tasks} running task containers of a 1-replica "
        f"200m service, start of a 256m container answered {started.status}: the member's "
        f"running containers hold {held // MIB}m under a {QUOTA // MIB}m quota"
    )


def test_stop_first_force_update_keeps_one_task(users, cleanup):
    """The neighbour: ``docker service update --force`` (stop-first, the default)
    replaces the task; one container runs, and the quota holds."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = eleventh._sleeping_service(m, cleanup, f"rv12-stopfirst-{_rand()}")
    r = _update_service(m, sid, lambda spec: None)
    assert r.status == 200, (r.status, r.body)
    time.sleep(3)
    assert len(eleventh._wait_running(m, sid, 1, 20)) == 1
    assert _running_memory(m) <= QUOTA


# ------------------------------------------------------- volume names held cluster-wide


def _held_by_victim_without_a_volume(users, cleanup) -> str:
    """A name the victim holds in the store, with no volume of it on this engine (as
    when their volume of the name is on another node)."""
    v = users["victim"]
    name = f"rv12-victims-{_rand()}"
    cleanup.append(("volume", name))
    r = v.request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201, (r.status, r.body)
    r = v.request("DELETE", f"/v1.41/volumes/{name}")
    assert r.status == 204, (r.status, r.body)
    return name


def test_refused_create_holds_the_names_claimed_before_the_refused_one(users, cleanup):
    """``claim_names`` claims the gathered names one by one: when a later one is held
    by another user, the request is refused, but the names claimed before it stay
    held by the caller, though no volume was made (the round-11 fix meant a refused
    request to hold no name). ``docker run -v wanted:/a -v <victim's name>:/b``
    refused, ``wanted`` is then refused to everyone else for good."""
    m, v = users["mallory"], users["victim"]
    held = _held_by_victim_without_a_volume(users, cleanup)
    wanted = f"rv12-wanted-{_rand()}"
    cleanup.append(("volume", wanted))
    r = first_round.create(
        m,
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"Binds": [f"{wanted}:/a", f"{held}:/b"]},
        },
    )
    assert r.status == 403 and b"another user holds that name" in r.body, (r.status, r.body)
    r = v.request("POST", "/v1.41/volumes/create", {"Name": wanted})
    assert r.status == 201, (r.status, r.body)


def test_create_with_two_new_names_holds_both(users, cleanup):
    """The neighbour: a create with two new names passes and holds both."""
    m, v = users["mallory"], users["victim"]
    first, second = f"rv12-one-{_rand()}", f"rv12-two-{_rand()}"
    cleanup += [("volume", first), ("volume", second)]
    first_round.created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"Binds": [f"{first}:/a", f"{second}:/b"]},
        },
        cleanup,
    )
    for name in (first, second):
        r = v.request("POST", "/v1.41/volumes/create", {"Name": name})
        assert r.status in (403, 409), (r.status, r.body)


# ------------------------------------------------------- inspect of shared volumes

SHARE_SECRET = "S3cret-review-12a"


@pytest.fixture
def cifs_shared_volume(shared_name, cleanup, direct_client) -> str:
    """The profile's read-only shared volume, made by an admin as a CIFS share (the
    local driver mounts it on first use only: creating it needs no server)."""
    direct_client.volumes.create(
        shared_name,
        driver="local",
        driver_opts={
            "type": "cifs",
            "device": "//192.0.2.10/results",
            "o": f"username=svc-results,password={SHARE_SECRET},vers=3.0",
        },
    )
    cleanup.append(("volume", shared_name))
    return shared_name


def test_shared_volume_inspect_shows_the_admins_driver_options(users, cifs_shared_volume):
    """``shared_volume`` lets a member inspect the profile's shared volume (compose
    checks an ``external`` volume exists) and returns dockerd's whole answer, with the
    ``Options`` the admin created it with: for a CIFS or NFS share, the file server's
    address and account, password included. A member mounts the volume read-only;
    with the account they write to the share directly (or anything else it reaches).
    ``GET /volumes/<shared volume>`` as a member."""
    r = users["mallory"].request("GET", f"/v1.41/volumes/{cifs_shared_volume}")
    assert r.status == 200, (r.status, r.body)
    assert SHARE_SECRET.encode() not in r.body, json.loads(r.body).get("Options")


def test_shared_volume_inspect_works_for_a_member(users, cifs_shared_volume):
    """The neighbour: the member's inspect of the shared volume answers, with its name
    and driver (what compose needs)."""
    r = users["mallory"].request("GET", f"/v1.41/volumes/{cifs_shared_volume}")
    assert r.status == 200, (r.status, r.body)
    shown = json.loads(r.body)
    assert shown["Name"] == cifs_shared_volume and shown["Driver"] == "local", shown


def test_builtin_networks_show_no_other_users_tasks(users, cleanup):
    """The neighbour: the built-in networks (the test engines run without the default
    bridge), as a member inspects them (verbose too), show none of another user's
    task containers."""
    sid = eleventh._sleeping_service(users["victim"], cleanup, f"rv12-gw-{_rand()}")
    tasks = eleventh._running_tasks(users["victim"], sid)
    for network in ("none", "host", "docker_gwbridge", "ingress"):
        r = users["mallory"].request("GET", f"/v1.41/networks/{network}?verbose=true")
        assert r.status == 200, (network, r.status, r.body)
        for task in tasks:
            assert task["Id"][:12].encode() not in r.body, (network, r.body)


# ------------------------------------------------------- renamed task containers


def test_renamed_task_container_outlives_its_task(users, cleanup):
    """Swarm stops and removes a task's container by its name
    (``<service>.<slot>.<task>``). A member may rename their task container
    (``container_rename`` checks only the owner); ``docker service update --force``
    then starts a new task, while the renamed container, which Swarm no longer finds,
    keeps running with the task label: the quota skips it. Each rename + update
    leaves another 200m container running for a 1-replica service.
    ``POST /containers/<task container>/rename?name=x`` then a forced update."""
    m = users["mallory"]
    tenth._remove_own_containers(m)
    sid = eleventh._sleeping_service(m, cleanup, f"rv12-rename-{_rand()}")
    task = eleventh._running_tasks(m, sid)[0]["Id"]
    cleanup.append(("container", task))  # Swarm would no longer remove it
    r = m.request("POST", f"/v1.41/containers/{task}/rename?name=rv12-renamed-{_rand()}")
    renamed = r.status
    r = _update_service(m, sid, lambda spec: None)
    assert r.status == 200, (r.status, r.body)
    # Until the update's new task container runs (then the renamed one, if it
    # survived, runs beside it), instead of waiting 15 s for a second one that a
    # fixed gate never lets appear.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        c["Id"] != task for c in eleventh._running_tasks(m, sid)
    ):
        time.sleep(0.3)
    time.sleep(3)
    running = eleventh._running_tasks(m, sid)
    assert len(running) <= 1, (
        f"rename answered {renamed}; {len(running)} running containers of a 1-replica "
        f"service: {[(c['Id'][:12], c['Names']) for c in running]}"
    )


def _purge(gate, upstream: str, user: str) -> subprocess.CompletedProcess[str]:
    """``dockergate purge --user USER --volumes --yes`` by the operator of a gate
    whose engine is ``upstream``, with the gate's store."""
    argv = [*dockergate_argv(), "--state-dir", str(gate.state_dir)]
    argv += ["purge", "--user", user, "--volumes", "--yes"]
    env = {**os.environ, "DOCKERGATE_UPSTREAM": upstream}
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )


def test_purge_on_a_worker_engine_releases_names_still_in_use_elsewhere(rgate, users, cleanup):
    """``purge --volumes`` frees the user's names when the engine purged is "the only
    node": ``_single_node`` reads ``Swarm.Nodes`` from ``/info``, which dockerd fills
    in on managers only; a worker says 0, read as "no swarm". An operator purging a
    user on a worker's gate (gates on several nodes share the store) frees every
    name the user holds while their volumes remain on the other nodes: here the
    member's volume on the manager, whose name anyone can then take cluster-wide
    (and a service of theirs placed there mounts it)."""
    host2 = os.environ.get("DOCKERGATE_TEST_DOCKER_HOST2")
    if not host2:
        pytest.skip("needs the second test engine (scripts/test.sh starts it)")
    m = users["mallory"]
    name = f"rv12-kept-{_rand()}"
    cleanup.append(("volume", name))
    r = m.request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201, (r.status, r.body)
    done = _purge(rgate, host2, "rv-mallory")
    assert done.returncode == 0, done.stdout + done.stderr
    assert m.request("GET", f"/v1.41/volumes/{name}").status == 200  # still on the manager
    listed = rgate.dockergate("volume-names", "ls", "--user", "rv-mallory").stdout
    assert name in listed, (done.stderr, listed)


def test_purge_on_the_manager_of_two_nodes_keeps_names(rgate, users, cleanup, docker_host):
    """The neighbour: a purge of the manager's engine (two nodes) keeps the names."""
    m = users["victim"]
    name = f"rv12-keep-{_rand()}"
    cleanup.append(("volume", name))
    r = m.request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201, (r.status, r.body)
    done = _purge(rgate, docker_host, "rv-victim")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keeps their volume names" in done.stderr, done.stderr
    listed = rgate.dockergate("volume-names", "ls", "--user", "rv-victim").stdout
    assert name in listed, listed
