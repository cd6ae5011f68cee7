"""Review round 24g: today's changes (6289df6..887ba74) reviewed, then attacked.

9989ea4 makes the memory quota count stopped containers dockerd starts again by
itself (restart policy ``always``, ``on-failure`` after a failure), and bounds
``StopTimeout`` / ``StopGracePeriod`` to 0-120 s. 81856ee checks a container's
binds again at ``start``/``restart`` and when ``VolumesFrom`` copies them
(``checks.check_present_binds``), skipping the writable-mounts-below check for
``NonRecursive`` binds. What they miss: ``docker update --restart`` moves a stopped
container into the quota without a count; the quota's refusal tells a user whose
memory is held by containers they already stopped to "stop something"; a
non-recursive bind inherited with ``--volumes-from``, or given with a target dockerd
cleans (``/d/``), is checked as recursive at start, so a container the gate let
create cannot be started; and the per-request stop wait (``restart?t=-1``) is not
bounded while the gate holds the user's lock for the whole restart.

The ``test_finding_*`` tests FAIL on the reviewed code and assert the correct
behaviour; the ``test_works_*`` tests pass and pin the legitimate neighbours.

One small gate of this module (started once) has a member profile with a read-only
bind root ``ro`` that holds a read-write tmpfs at ``ro/export`` (an NFS export, say),
containers of 64m by default and at most 256m, and a 512m memory quota. Only the
local ``busybox`` image is used; traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, nosymfollow, ro_root_quota_gate
from tests.integration.test_hostile import Raw, Reply, _read_reply

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def roots() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r24g-"))
    d.chmod(0o755)
    (d / "ro" / "export").mkdir(parents=True)
    (d / "ro" / "data").mkdir()
    try:
        with nosymfollow(d / "ro"):
            export = d / "ro" / "export"
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(export)],
                check=True,
            )
            try:
                yield d
            finally:
                subprocess.run(["umount", "-l", str(export)], check=False)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def gate24g(session_dir: Path, docker_host: str, roots: Path) -> Iterator[Gate]:
    with ro_root_quota_gate(session_dir, docker_host, roots, "r24g") as g:
        yield g


@pytest.fixture(scope="module")
def member(gate24g: Gate, unix_user) -> Raw:
    u = unix_user("r24gmem")
    gate24g.dockergate("user", "add", "r24g-member", "--profile", "member", "--uid", str(u.uid))
    return Raw(str(gate24g.socket), u.uid)


@pytest.fixture
def made(direct_client) -> Iterator[list[str]]:
    """Container IDs, removed (forcibly) directly on the daemon after the test."""
    items: list[str] = []
    yield items
    for ref in reversed(items):
        with contextlib.suppress(Exception):
            direct_client.api.remove_container(ref, force=True, v=True)


def _create(raw: Raw, made: list, cmd: list[str], memory: int = 0, **host: Any) -> Reply:
    body: dict[str, Any] = {"Image": "busybox", "Cmd": cmd, "HostConfig": dict(host)}
    if memory:
        body["HostConfig"].update(Memory=memory * MIB, MemorySwap=memory * MIB)
    r = raw.request("POST", f"{V}/containers/create?name=dgt-r24g-{_rand()}", body)
    if r.status == 201:
        made.append(json.loads(r.body)["Id"])
    return r


def _cid(r: Reply) -> str:
    assert r.status == 201, (r.status, r.body)
    return str(json.loads(r.body)["Id"])


def _ok(r: Reply) -> None:
    assert r.status in (200, 201, 204), (r.status, r.body)


def _refused(r: Reply) -> bool:
    return r.status == 403 and b"dockergate:" in r.body


def _stopped(raw: Raw, made: list, policy: str, memory: int) -> str:
    """A container of ``memory`` MiB with restart policy ``policy``, started and then
    stopped by its owner (``docker stop``)."""
    cid = _cid(_create(raw, made, ["sleep", "600"], memory, RestartPolicy={"Name": policy}))
    _ok(raw.request("POST", f"{V}/containers/{cid}/start"))
    _ok(raw.request("POST", f"{V}/containers/{cid}/stop?t=0"))
    return cid


# ----------------------------------------- the quota's new rule: stopped but restarted


def test_finding_update_restart_policy_parks_memory_past_the_quota(member, made, direct_client):
    """Medium. 9989ea4 counts a stopped container in the memory quota when dockerd
    will start it again by itself (``quota.restarted_by_dockerd``: ``always``, or
    ``on-failure`` after a non-zero exit, which ``docker stop`` gives). What makes a
    stopped container such a one is its restart policy, and ``docker update
    --restart always`` changes it: ``container_update`` counts the quota only when
    the body carries ``Memory``. Reproducer (512m quota, 256m per container): run A
    (256m, no restart policy) and ``docker stop A`` (not counted); create B and C
    (256m each: 512m, full); ``docker update --restart always A``: accepted. The
    member now holds 768m for a 512m quota, and at the next start of dockerd (a
    reboot, an upgrade) A, B and C run together; with one container parked per
    update, any number of them. Expected: the update refused while A's memory does
    not fit (as a start of A is). Cause: dockergate/api/containers.py:
    container_update (quota only ``if body.get("Memory")``)."""
    a = _stopped(member, made, "no", 256)
    _cid(_create(member, made, ["sleep", "600"], 256))
    _cid(_create(member, made, ["sleep", "600"], 256))
    start = member.request("POST", f"{V}/containers/{a}/start")
    assert _refused(start), (start.status, start.body)  # the start of A is refused
    r = member.request("POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "always"}})
    policy = direct_client.api.inspect_container(a)["HostConfig"]["RestartPolicy"]["Name"]
    assert _refused(r) and policy == "no", (r.status, r.body, policy)


def test_works_update_restart_policy_within_the_quota(member, made, direct_client):
    """The same update while A's 256m fits (one other container of 256m): accepted,
    and A then counts (a third container of 64m is refused)."""
    a = _stopped(member, made, "no", 256)
    _cid(_create(member, made, ["sleep", "600"], 256))
    r = member.request("POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "always"}})
    _ok(r)
    assert direct_client.api.inspect_container(a)["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert _refused(_create(member, made, ["sleep", "600"], 64))


def test_finding_quota_refusal_after_stop_gives_the_wrong_remedy(member, made):
    """Low. Since 9989ea4 a member who ran containers with ``restart: always`` (a
    compose file's usual ``restart: always``, ``docker run --restart always``) and
    stopped them (``docker-compose stop``, ``docker stop``) still has their memory
    counted; the next ``docker run`` is refused with "the quota is 512m; stop
    something or ask for less": the user has stopped everything, ``docker ps`` shows
    nothing running, and the advice is what they already did. Yesterday this run
    was accepted. Expected: the refusal says that stopped containers dockerd starts
    again by themselves count, and how to free them (``docker rm``, or ``docker
    update --restart no``, which works: ``test_works_...``). Cause:
    dockergate/policy/quota.py:_check_memory (one advice for every cause; ``usage``
    does not report what the stopped restartable containers hold)."""
    _stopped(member, made, "always", 256)
    _stopped(member, made, "always", 256)
    r = _create(member, made, ["sleep", "600"], 64)
    assert _refused(r), (r.status, r.body)
    assert b"restart" in r.body, r.body


def test_works_update_restart_no_frees_a_stopped_container(member, made):
    """The remedy: ``docker update --restart no`` on the stopped ones frees their
    memory; the run is then accepted."""
    ids = [_stopped(member, made, "always", 256) for _ in range(2)]
    assert _refused(_create(member, made, ["sleep", "600"], 64))
    for cid in ids:
        _ok(
            member.request(
                "POST", f"{V}/containers/{cid}/update", {"RestartPolicy": {"Name": "no"}}
            )
        )
    _cid(_create(member, made, ["sleep", "600"], 64))


# ------------------------------------------ binds checked again at start: NonRecursive


def _nonrecursive(roots: Path, target: str = "/d") -> dict[str, Any]:
    return {
        "Type": "bind",
        "Source": str(roots / "ro"),
        "Target": target,
        "ReadOnly": True,
        "BindOptions": {"NonRecursive": True},
    }


def test_works_nonrecursive_read_only_bind_is_created_and_started(member, made, roots):
    """The gate's own advice for a read-only root with a writable mount below it
    (``--mount ...,readonly,bind-nonrecursive``): created and started."""
    cid = _cid(_create(member, made, ["sleep", "600"], Mounts=[_nonrecursive(roots)]))
    _ok(member.request("POST", f"{V}/containers/{cid}/start"))


def test_works_recursive_read_only_bind_refused(member, made, roots):
    """The rule that holds: a recursive read-only bind of ``ro`` (the read-write
    tmpfs at ``ro/export`` would be writable inside) is refused."""
    r = _create(member, made, ["true"], Binds=[f"{roots / 'ro'}:/d:ro"])
    assert _refused(r) and b"export" in r.body, (r.status, r.body)


def test_works_volumes_from_copies_nonrecursive_on_the_daemon(direct_client, made, roots):
    """What the finding below relies on, shown on the daemon directly: a container
    made with ``--volumes-from`` a non-recursive bind's container gets the bind
    non-recursive too (moby ``registerMountPoints`` copies the mount's ``Spec``): the
    tmpfs at ``ro/export`` is not in it, and ``/d`` is read-only."""
    a = direct_client.api.create_container(
        "busybox",
        ["true"],
        name=f"dgt-r24g-{_rand()}",
        host_config={"Mounts": [_nonrecursive(roots)]},
    )["Id"]
    made.append(a)
    script = "grep -c ' /d/export ' /proc/self/mountinfo; touch /d/x 2>/dev/null && echo rw"
    b = direct_client.api.create_container(
        "busybox",
        ["sh", "-c", script],
        name=f"dgt-r24g-{_rand()}",
        host_config={"VolumesFrom": [a]},
    )["Id"]
    made.append(b)
    direct_client.api.start(b)
    direct_client.api.wait(b, timeout=20)
    out = direct_client.api.logs(b).decode().split()
    assert out == ["0"], out  # no mount below /d, and /d not writable


def test_finding_volumes_from_a_nonrecursive_bind_cannot_start(member, made, roots):
    """Medium (regression). A member binds a read-only root non-recursively, as the
    gate's refusal advises (A), and makes B with ``--volumes-from A``: the create is
    accepted (``check_references`` -> ``check_present_binds(A)`` reads A's
    ``HostConfig.Mounts`` and sees ``NonRecursive``). ``docker start B`` is refused,
    "a read-only bind mount with writable mounts below it ... ro/export": at start
    ``check_present_binds(B)`` looks for ``NonRecursive`` in B's own
    ``HostConfig.Mounts``, where an inherited mount is not (it is in B's
    ``Mounts`` only), and checks A's bind as recursive. dockerd copies the bind
    non-recursive (``test_works_volumes_from_copies_nonrecursive_on_the_daemon``):
    nothing below is in B. Yesterday B started; now every ``--volumes-from`` of such
    a container (and a compose ``volumes_from``) is created and then cannot start.
    Expected: B starts. Cause: dockergate/policy/hostpaths.py:check_present_binds
    (``flat`` from ``HostConfig.Mounts`` instead of each mount's own options)."""
    a = _cid(_create(member, made, ["sleep", "600"], Mounts=[_nonrecursive(roots)]))
    b = _cid(_create(member, made, ["sleep", "600"], VolumesFrom=[a]))
    r = member.request("POST", f"{V}/containers/{b}/start")
    _ok(r)


def test_finding_nonrecursive_bind_with_a_target_dockerd_cleans_cannot_start(
    member, made, roots, direct_client
):
    """Low (regression). ``--mount type=bind,src=<ro>,dst=/d/,readonly,
    bind-nonrecursive`` (a trailing slash, as shells complete a directory) is
    created: the create-time check reads ``BindOptions`` of the mount itself.
    ``docker start`` is refused as if the bind were recursive: ``check_present_binds``
    matches ``HostConfig.Mounts[].Target`` ("/d/", as sent) with inspect's
    ``Mounts[].Destination``, which dockerd cleaned to "/d". Expected: it starts (as
    with ``dst=/d``). Cause: dockergate/policy/hostpaths.py:check_present_binds (the
    targets compared as strings)."""
    cid = _cid(_create(member, made, ["sleep", "600"], Mounts=[_nonrecursive(roots, "/d/")]))
    dest = [m["Destination"] for m in direct_client.api.inspect_container(cid)["Mounts"]]
    assert dest == ["/d"], dest
    r = member.request("POST", f"{V}/containers/{cid}/start")
    _ok(r)


# ------------------------------------- the stop wait of a request, under the user's lock


def _send(raw: Raw, method: str, path: str, timeout: float) -> socket.socket:
    sock = raw.connect()
    sock.settimeout(timeout)
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
    return sock


def test_finding_restart_waiting_for_ever_holds_the_users_lock(member, made, direct_client):
    """Low. 9989ea4 bounds how long dockerd waits at a stop to 0-120 s where a
    container asks (``StopTimeout``), "a negative one never ends". A restart request
    asks too: ``POST /containers/<id>/restart?t=-1`` (``docker restart -t -1``) is
    forwarded as sent, dockerd waits for ever for a process that ignores SIGTERM
    (busybox ``sleep`` as pid 1), and the gate holds the user's lock for the whole
    request (``check_started`` -> ``ex.hold``; released after the reply). Every
    later create, start, restart and memory update of that user then waits behind
    it, for ever: a member's own ``docker restart -t -1`` (or a script's large
    ``-t``) wedges all their work on this gate until an admin kills the container.
    Observed: a 64m create of the same member had no answer after 2 s. Expected:
    ``t`` outside 0-120 refused as ``StopTimeout`` is (or the lock not held while
    dockerd stops). Cause: dockergate/api/containers.py:container_restart (``t``
    unchecked) with check_started's lock."""
    cid = _cid(_create(member, made, ["sleep", "600"], 64))
    _ok(member.request("POST", f"{V}/containers/{cid}/start"))
    hold = _send(member, "POST", f"{V}/containers/{cid}/restart?t=-1", 30)
    try:
        time.sleep(0.3)
        hold.settimeout(0.1)
        with contextlib.suppress(TimeoutError, socket.timeout):
            first = _read_reply(hold)
            assert _refused(first) or first.status == 400, (first.status, first.body)
            return  # refused: the fix
        answered: list[Reply] = []
        body = {"Image": "busybox", "Cmd": ["true"]}

        def create() -> None:
            answered.append(
                member.request("POST", f"{V}/containers/create?name=dgt-r24g-{_rand()}", body)
            )

        t = threading.Thread(target=create, daemon=True)
        t.start()
        t.join(2)
        blocked = t.is_alive()
        # The gate itself answers (a list takes no lock): it is the user's lock.
        _ok(member.request("GET", f"{V}/containers/json"))
        direct_client.api.kill(cid)  # ends dockerd's wait: the restart answers
        t.join(10)
        for r in answered:
            if r.status == 201:
                made.append(json.loads(r.body)["Id"])
        assert not blocked, "the member's create waited behind restart?t=-1"
    finally:
        hold.close()


def test_works_restart_with_a_short_wait(member, made):
    """``docker restart -t 0``: answered, the container running again."""
    cid = _cid(_create(member, made, ["sleep", "600"], 64))
    _ok(member.request("POST", f"{V}/containers/{cid}/start"))
    _ok(member.request("POST", f"{V}/containers/{cid}/restart?t=0"))
