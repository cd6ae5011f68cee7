"""Review round 24j: the last three fixes of the day (4bea053, dda4b1f) attacked.

4bea053 counts a stopped ``unless-stopped`` container in the memory quota
(``quota.restarted_by_dockerd``) and lets a container's own binds shadow the
``NonRecursive`` binds its ``VolumesFrom`` sources bring (``containers.flat_binds``,
one budget of 16 look-ups). dda4b1f starts a container the quota already counts
(running, restarting, or stopped and restartable by dockerd) without the user's lock
(``containers.check_started``).

Ranked findings (each ``test_finding_*`` FAILS on the reviewed code and asserts the
correct behaviour):

* Medium - the lock-free start decides from the inspect made before any lock: a
  ``docker update --restart no`` of the stopped ``always`` container between that
  inspect and the forwarded start frees its memory for another container, and the
  start then goes through unchecked: the memory quota is exceeded. The window is
  held open at will by the user's own ``docker cp`` into a ``VolumesFrom`` source
  (dockerd holds that container's lock while it reads the archive, and the start's
  ``flat_binds`` look-up waits on it).
* Medium - ``flat_binds`` unions the ``NonRecursive`` targets of every
  ``VolumesFrom`` source, though a later source's mount at the same target replaces
  an earlier one's (moby ``registerMountPoints``): a recursive read-only bind
  brought by the second source is checked at start as non-recursive, and a
  read-write mount that appeared below it since create is writable inside.

``test_works_*`` pin the legitimate neighbours. One small gate (512m quota, 256m per
container, a read-only bind root ``ro``). Only ``busybox``.
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

from tests.helpers import Gate, nosymfollow, ro_root_quota_gate, wait_until
from tests.integration.test_hostile import Raw, Reply

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def roots() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r24j-"))
    d.chmod(0o755)
    (d / "ro" / "export").mkdir(parents=True)
    (d / "ro" / "data" / "late").mkdir(parents=True)
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
def gate24j(session_dir: Path, docker_host: str, roots: Path) -> Iterator[Gate]:
    with ro_root_quota_gate(session_dir, docker_host, roots, "r24j") as g:
        yield g


@pytest.fixture(scope="module")
def member(gate24j: Gate, unix_user) -> Raw:
    u = unix_user("r24jmem")
    gate24j.dockergate("user", "add", "r24j-member", "--profile", "member", "--uid", str(u.uid))
    return Raw(str(gate24j.socket), u.uid)


@pytest.fixture
def made(direct_client) -> Iterator[list[str]]:
    items: list[str] = []
    yield items
    for ref in reversed(items):
        with contextlib.suppress(Exception):
            direct_client.api.remove_container(ref, force=True, v=True)


def _create(raw: Raw, made: list, cmd: list[str], memory: int = 0, **host: Any) -> Reply:
    body: dict[str, Any] = {"Image": "busybox", "Cmd": cmd, "HostConfig": dict(host)}
    if memory:
        body["HostConfig"].update(Memory=memory * MIB, MemorySwap=memory * MIB)
    r = raw.request("POST", f"{V}/containers/create?name=dgt-r24j-{_rand()}", body)
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


def _wait_exited(direct_client, cid: str) -> None:
    deadline = time.monotonic() + 10
    while direct_client.api.inspect_container(cid)["State"]["Status"] != "exited":
        assert time.monotonic() < deadline, "container did not exit"
        time.sleep(0.05)


def _on_disk(direct_client, cid: str) -> dict[str, Any] | None:
    """dockerd's own record of the container (what ``daemon.restore`` reads)."""
    root = direct_client.info().get("DockerRootDir") or ""
    try:
        return json.loads((Path(root) / "containers" / cid / "config.v2.json").read_text())
    except (OSError, ValueError):
        return None


def _running_memory(direct_client, ids: list[str]) -> int:
    total = 0
    for cid in ids:
        with contextlib.suppress(Exception):
            c = direct_client.api.inspect_container(cid)
            if c["State"]["Running"]:
                total += int(c["HostConfig"]["Memory"] or 0)
    return total


def _in_thread(fn, *args) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    return t, out


def _hold_container_lock(raw: Raw, cid: str) -> socket.socket:
    """``docker cp - S:/tmp`` whose archive is slow to come: dockerd takes S's lock
    before it reads the body (``containerExtractToDir``) and holds it until the body
    ends; every inspect of S waits meanwhile."""
    sock = raw.connect()
    head = (
        f"PUT {V}/containers/{cid}/archive?path=/tmp HTTP/1.1\r\nHost: docker\r\n"
        "Content-Type: application/x-tar\r\nContent-Length: 10240\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\0" * 1024)
    return sock


def _inspect_blocked(docker_host_sock: str, cid: str, wait: float = 0.5) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(wait)
    try:
        s.connect(docker_host_sock)
        s.sendall(f"GET {V}/containers/{cid}/json HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
        s.recv(1)
        return False
    except TimeoutError:
        return True
    finally:
        s.close()


def _setup_parked(member, made, direct_client) -> tuple[str, str, str]:
    """X runs (256m); S (a VolumesFrom source) exited; A (200m, --restart always,
    --volumes-from S) stopped by hand: counted, 456m of 512m."""
    x = _cid(_create(member, made, ["sleep", "600"], 256))
    _ok(member.request("POST", f"{V}/containers/{x}/start"))
    s = _cid(_create(member, made, ["true"]))
    _ok(member.request("POST", f"{V}/containers/{s}/start"))
    _wait_exited(direct_client, s)
    a = _cid(
        _create(
            member,
            made,
            ["sleep", "600"],
            200,
            RestartPolicy={"Name": "always"},
            VolumesFrom=[s],
        )
    )
    _ok(member.request("POST", f"{V}/containers/{a}/start"))
    _ok(member.request("POST", f"{V}/containers/{a}/stop?t=0"))
    return x, s, a


def test_finding_lock_free_start_races_update_restart_no_past_the_quota(
    member, made, direct_client, docker_host
):
    """Medium. dda4b1f (``check_started``) starts a stopped container that
    ``restarted_by_dockerd`` says is counted without taking the user's lock and
    without reading it again: the decision rests on the inspect ``owned_object``
    made before anything else. ``docker update --restart no`` of that container,
    under the lock, sees it stopped and not restartable, so it checks nothing and
    it stops being counted; the memory it held is free for a create. If the start's
    inspect came before the update and its forward after, the container runs
    uncounted-for: the quota is exceeded. The window is the start's own look-ups
    (``flat_binds`` of each ``VolumesFrom`` source), which the user holds open at
    will: a ``PUT /containers/S/archive`` (``docker cp``) whose body is slow keeps
    S's lock in dockerd, and inspects of S wait. Reproducer (512m quota): X 256m
    runs; A (200m, always, --volumes-from S) stopped by hand (counted: 456m); the cp
    into S stalls; ``docker start A`` (inspected: exited/always, no lock) waits on
    S; ``docker update --restart no A`` is accepted (A uncounted); ``docker create
    --memory 200m --restart unless-stopped B`` counts A as 0 and waits on S too; the
    cp ends: A starts, B is created, and ``docker start B`` (restartable, so
    lock-free) too: 656m run under a 512m quota. Before dda4b1f the start took the
    lock and read the container again. Expected: the total never exceeds the quota
    (take the lock, or re-read under it, whenever the container might stop being
    counted; at least read it again after the look-ups). Cause:
    dockergate/api/containers.py:check_started (decision from ``found.obj``, no
    lock) with container_update (``--restart no`` of a stopped one unchecked)."""
    x, s, a = _setup_parked(member, made, direct_client)
    stall = _hold_container_lock(member, s)
    try:
        # Until the gate has forwarded the cp and dockerd holds S's lock (a fixed 0.3 s
        # was not always enough on a busy machine).
        wait_until(
            lambda: _inspect_blocked(docker_host.removeprefix("unix://"), s),
            15,
            what="the cp to hold S's lock",
        )
        t_start, start = _in_thread(member.request, "POST", f"{V}/containers/{a}/start")
        time.sleep(0.3)
        _ok(member.request("POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "no"}}))
        t_b, created = _in_thread(
            lambda: _create(
                member, made, ["sleep", "600"], 200, RestartPolicy={"Name": "unless-stopped"}
            )
        )
        time.sleep(0.3)
    finally:
        stall.close()
    t_start.join(15)
    t_b.join(15)
    if created and created[0].status == 201:
        b = json.loads(created[0].body)["Id"]
        member.request("POST", f"{V}/containers/{b}/start")
    else:
        b = ""
    total = _running_memory(direct_client, [x, a, b])
    assert total <= 512 * MIB, (
        total // MIB,
        "MiB running;",
        "start A:",
        start and start[0].status,
        "create B:",
        created and (created[0].status, created[0].body[:200]),
    )


def test_works_start_after_update_restart_no_is_checked(member, made, direct_client):
    """The neighbour without the race: A (always) stopped by hand counts; ``docker
    update --restart no A`` frees it; B (200m) is created and started; ``docker
    start A`` then takes the lock and is refused (the quota advice names it)."""
    x, _s, a = _setup_parked(member, made, direct_client)
    _ok(member.request("POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "no"}}))
    b = _cid(_create(member, made, ["sleep", "600"], 200))
    _ok(member.request("POST", f"{V}/containers/{b}/start"))
    r = member.request("POST", f"{V}/containers/{a}/start")
    assert _refused(r) and b"memory" in r.body, (r.status, r.body)
    assert _running_memory(direct_client, [x, a, b]) <= 512 * MIB


def test_works_restart_of_a_running_container_does_not_wait_for_the_users_lock(
    member, made, direct_client
):
    """dda4b1f's point: a ``docker restart -t 2`` of a running container that ignores
    SIGTERM (dockerd waits the 2 s) does not hold the user's lock: a create made
    meanwhile answers at once."""
    a = _cid(_create(member, made, ["sleep", "600"], 64))
    _ok(member.request("POST", f"{V}/containers/{a}/start"))
    t, out = _in_thread(member.request, "POST", f"{V}/containers/{a}/restart?t=2")
    time.sleep(0.2)
    t0 = time.monotonic()
    _cid(_create(member, made, ["true"], 16))
    took = time.monotonic() - t0
    # Behind the lock the create could only answer after the restart (>= 2 s of stop
    # wait); a fixed bound on its own time is at the mercy of a busy machine.
    restarting = t.is_alive()
    t.join(10)
    assert out and out[0].status == 204, out
    assert restarting, f"the create took {took:.1f} s and answered after the restart"


# --------------------------------- binds at start: two VolumesFrom sources at one target


def _nonrecursive(roots: Path, target: str = "/d") -> dict[str, Any]:
    return {
        "Type": "bind",
        "Source": str(roots / "ro"),
        "Target": target,
        "ReadOnly": True,
        "BindOptions": {"NonRecursive": True},
    }


@contextlib.contextmanager
def _late_mount(roots: Path) -> Iterator[Path]:
    """A read-write file system that appears below ``ro/data`` after the containers
    were created (an automount, an NFS export mounted later)."""
    late = roots / "ro" / "data" / "late"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(late)], check=True
    )
    try:
        yield late
    finally:
        subprocess.run(["umount", "-l", str(late)], check=False)


def test_finding_later_volumes_from_source_shadows_an_earlier_nonrecursive_bind(
    member, made, roots, direct_client
):
    """Medium. 4bea053 lets a container's own binds shadow the ``NonRecursive``
    targets its ``VolumesFrom`` sources bring, but still unions the targets of all
    the sources (``flat_binds``), though one source's mount replaces an earlier
    source's at the same destination (moby ``registerMountPoints``: the sources in
    order, each ``mountPoints[destination] = ...``). Reproducer: S1 has a
    non-recursive read-only bind of ``ro`` at ``/d``; S2 a recursive read-only bind
    of ``ro/data`` at ``/d``; C is created ``--volumes-from S1 --volumes-from S2``
    (nothing below ``ro/data`` yet, so every check passes); a read-write file system
    is mounted at ``ro/data/late``; ``docker start C`` is accepted (``/d`` checked as
    non-recursive) and C writes into ``/d/late`` through a read-only bind. With
    ``--volumes-from S2`` alone the start is refused (``test_works_...``). Expected:
    refused. Cause: dockergate/api/containers.py:flat_binds (targets of every source
    unioned, not only of the source whose mount dockerd keeps) with
    policy/hostpaths.py:check_present_binds."""
    s1 = _cid(_create(member, made, ["true"], Mounts=[_nonrecursive(roots)]))
    s2 = _cid(_create(member, made, ["true"], Binds=[f"{roots / 'ro' / 'data'}:/d:ro"]))
    c = _cid(_create(member, made, ["sh", "-c", "touch /d/late/pwned"], VolumesFrom=[s1, s2]))
    mounted = {
        m["Destination"]: m["Source"] for m in direct_client.api.inspect_container(c)["Mounts"]
    }
    assert mounted.get("/d") == str(roots / "ro" / "data"), mounted  # S2's mount is kept
    with _late_mount(roots) as late:
        r = member.request("POST", f"{V}/containers/{c}/start")
        if r.status == 204:
            with contextlib.suppress(Exception):
                direct_client.api.wait(c, timeout=10)
        written = (late / "pwned").exists()
        assert _refused(r) and not written, (r.status, r.body, "written:", written)


def test_works_volumes_from_recursive_source_refused_at_start(member, made, roots):
    """The neighbour: C with ``--volumes-from S2`` alone is refused at start once a
    read-write mount appeared below S2's read-only bind."""
    s2 = _cid(_create(member, made, ["true"], Binds=[f"{roots / 'ro' / 'data'}:/d:ro"]))
    c = _cid(_create(member, made, ["true"], VolumesFrom=[s2]))
    with _late_mount(roots):
        r = member.request("POST", f"{V}/containers/{c}/start")
        assert _refused(r) and b"late" in r.body, (r.status, r.body)


def test_works_volumes_from_nonrecursive_source_starts(member, made, roots):
    """And S1's non-recursive bind alone still starts with the late mount present."""
    s1 = _cid(_create(member, made, ["true"], Mounts=[_nonrecursive(roots)]))
    c = _cid(_create(member, made, ["true"], VolumesFrom=[s1]))
    with _late_mount(roots):
        _ok(member.request("POST", f"{V}/containers/{c}/start"))
