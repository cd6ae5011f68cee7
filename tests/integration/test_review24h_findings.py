"""Review round 24h: the afternoon's fixes (887ba74..862d2eb) attacked.

862d2eb counts a stopped container in the memory quota when dockerd starts it again
by itself (``quota.restarted_by_dockerd``) and checks ``docker update --restart`` of
a stopped one; follows ``NonRecursive`` binds through ``VolumesFrom``
(``containers.flat_binds``); bounds ``t`` of stop/restart. 3366fbc makes the
operator's ``policy`` commands read the running gate's profiles directory from
``<state>/policies.json`` (``policy_cmd.policies_directory``).

Ranked findings (each ``test_finding_*`` FAILS on the reviewed code and asserts the
correct behaviour):

* Medium - ``docker update --restart unless-stopped`` of a container that exited by
  itself parks its memory past the quota: dockerd starts such a container again at
  its next start (it was never stopped by hand), but ``restarted_by_dockerd`` treats
  every stopped ``unless-stopped`` container as one stopped by hand.
* Medium - a container's own recursive bind is checked at start as non-recursive
  when a ``VolumesFrom`` source has a ``NonRecursive`` bind at the same target
  (``flat_binds`` unions targets, though the container's own bind is the one
  dockerd mounts there): the start re-check (a mount that appeared below the bind
  since create) is skipped and the read-write mount is writable inside.
* Low - with ``serve --policies-dir`` given relative (a systemd unit's
  ``WorkingDirectory``), ``policy show/list/validate/check`` and ``admin usage``
  resolve it against the operator's current directory: ``/tmp/policies`` made by a
  member is shown as "the rules the gate applies".

``test_works_*`` pin the legitimate neighbours. One small gate (512m quota, 256m
per container, a read-only bind root ``ro`` holding a read-write tmpfs at
``ro/export``), started once with a relative ``--policies-dir``. Only ``busybox``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, dockergate_argv, new_gate, nosymfollow
from tests.integration.test_hostile import Raw, Reply

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def roots() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r24h-"))
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
def gate24h(session_dir: Path, docker_host: str, roots: Path) -> Iterator[Gate]:
    policies = roots / "policies"
    policies.mkdir()
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            f"""
            description: r24h member
            mounts:
              binds:
                - path: {roots / "ro"}
                  read_only: true
            resources:
              memory: {{default: 64m, max: 256m}}
            quota:
              memory: 512m
            """
        )
    )
    # Relative, as a systemd unit with WorkingDirectory= would give it; the gate runs
    # in this process's current directory.
    relative = os.path.relpath(policies)
    g = new_gate(session_dir, docker_host, tls=False, extra_args=["--policies-dir", relative])
    g.init()
    g.start()
    g.relative_policies = relative  # type: ignore[attr-defined]
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def member(gate24h: Gate, unix_user) -> Raw:
    u = unix_user("r24hmem")
    gate24h.dockergate("user", "add", "r24h-member", "--profile", "member", "--uid", str(u.uid))
    return Raw(str(gate24h.socket), u.uid)


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
    r = raw.request("POST", f"{V}/containers/create?name=dgt-r24h-{_rand()}", body)
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


# ------------------------------------------- quota: unless-stopped that exited by itself


def test_finding_update_unless_stopped_of_a_self_exited_container_parks_memory(
    member, made, direct_client
):
    """Medium. 862d2eb checks ``docker update --restart`` of a stopped container
    against the memory quota when dockerd would start it again by itself
    (``quota.restarted_by_dockerd``), and counts such containers from then on. It
    says ``unless-stopped`` ones never are ("stopped by hand stay stopped; one that
    exited by itself is restarted at once"). That holds only for a container that
    had the policy when it exited: one that ran with ``--restart no`` and exited by
    itself (a batch job, ``docker run`` of a command that ends) is stopped but not
    stopped by hand (``HasBeenManuallyStopped`` false in dockerd's record), and
    after ``docker update --restart unless-stopped`` moby's ``daemon.restore``
    starts it at dockerd's next start (restartmanager: ``IsUnlessStopped() &&
    !hasBeenManuallyStopped``). Reproducer (512m quota): A (256m, restart no,
    ``true``) exits by itself; B and C (256m each) fill the quota; ``docker update
    --restart always A`` is refused (the fix), ``docker update --restart
    unless-stopped A`` is accepted and A is never counted: any number of such
    containers run together after a reboot. Expected: refused like ``always`` (the
    gate cannot tell from inspect whether it was stopped by hand: count a stopped
    ``unless-stopped`` one, or refuse the update unless it fits). Cause:
    dockergate/policy/quota.py:restarted_by_dockerd (used by
    api/containers.py:container_update and quota.live_memory)."""
    a = _cid(_create(member, made, ["true"], 256))
    _ok(member.request("POST", f"{V}/containers/{a}/start"))
    _wait_exited(direct_client, a)
    _cid(_create(member, made, ["sleep", "600"], 256))
    _cid(_create(member, made, ["sleep", "600"], 256))
    always = member.request(
        "POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "always"}}
    )
    assert _refused(always), (always.status, always.body)  # the fix holds for always
    r = member.request(
        "POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "unless-stopped"}}
    )
    record = _on_disk(direct_client, a) or {}
    policy = direct_client.api.inspect_container(a)["HostConfig"]["RestartPolicy"]["Name"]
    assert _refused(r) and policy in ("", "no"), (
        r.status,
        r.body,
        policy,
        "HasBeenManuallyStopped",
        record.get("HasBeenManuallyStopped"),
        "HasBeenStartedBefore",
        record.get("HasBeenStartedBefore"),
    )


def test_works_unless_stopped_counts_until_removed_or_set_to_no(member, made, direct_client):
    """The fix's other side: the gate cannot tell a container stopped by hand, so a
    stopped ``unless-stopped`` one counts (the refusal says so and how to free it);
    ``docker update --restart no`` frees it, and the update is accepted."""
    a = _cid(_create(member, made, ["sleep", "600"], 256))
    _ok(member.request("POST", f"{V}/containers/{a}/start"))
    _ok(
        member.request(
            "POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "unless-stopped"}}
        )
    )
    _ok(member.request("POST", f"{V}/containers/{a}/stop?t=0"))
    _cid(_create(member, made, ["sleep", "600"], 256))
    r = _create(member, made, ["sleep", "600"], 256)
    assert _refused(r) and b"unless-stopped" in r.body and b"--restart no" in r.body, r.body
    _ok(member.request("POST", f"{V}/containers/{a}/update", {"RestartPolicy": {"Name": "no"}}))
    _cid(_create(member, made, ["sleep", "600"], 256))


# ----------------------------------- binds at start: own bind shadowing a NonRecursive one


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


def test_finding_own_recursive_bind_passes_start_as_nonrecursive_of_volumes_from(
    member, made, roots, direct_client
):
    """Medium. 862d2eb collects the ``NonRecursive`` bind targets of a container and of
    its ``VolumesFrom`` sources into one set (``containers.flat_binds``), and
    ``check_present_binds`` checks every bind whose target is in it as non-recursive.
    But a container's own bind at a target replaces the one ``VolumesFrom`` brings
    there (moby ``registerMountPoints``: volumes-from first, then ``Binds`` and
    ``Mounts`` by destination), and that own bind may be recursive. Reproducer: A
    has a non-recursive read-only bind of ``ro`` at ``/d``; B is created with
    ``--volumes-from A`` and its own ``-v ro/data:/d:ro`` (recursive; nothing is
    mounted below ``ro/data`` yet, so the create passes); then a read-write file
    system is mounted at ``ro/data/late`` (what the start re-check of 81856ee is
    for); ``docker start B`` is accepted, and B writes into ``/d/late`` through its
    read-only bind. Without ``--volumes-from A`` the same start is refused
    (``test_works_...``). Expected: refused. Cause: dockergate/api/containers.py:
    flat_binds (a source's flat targets count though the container's own mount
    shadows them) with policy/hostpaths.py:check_present_binds."""
    a = _cid(_create(member, made, ["true"], Mounts=[_nonrecursive(roots)]))
    b = _cid(
        _create(
            member,
            made,
            ["sh", "-c", "touch /d/late/pwned"],
            VolumesFrom=[a],
            Binds=[f"{roots / 'ro' / 'data'}:/d:ro"],
        )
    )
    with _late_mount(roots) as late:
        r = member.request("POST", f"{V}/containers/{b}/start")
        if r.status == 204:
            with contextlib.suppress(Exception):
                direct_client.api.wait(b, timeout=10)
        written = (late / "pwned").exists()
        assert _refused(r) and not written, (r.status, r.body, "written:", written)


def test_works_own_recursive_bind_refused_at_start_after_a_mount_appeared(member, made, roots):
    """The neighbour: the same B without ``--volumes-from``: its start is refused once
    a read-write mount appeared below its read-only bind (the re-check holds)."""
    b = _cid(_create(member, made, ["true"], Binds=[f"{roots / 'ro' / 'data'}:/d:ro"]))
    with _late_mount(roots):
        r = member.request("POST", f"{V}/containers/{b}/start")
        assert _refused(r) and b"late" in r.body, (r.status, r.body)


# ------------------------------------------------ operator: a relative --policies-dir


def _policy_show(gate: Gate, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    argv = [*dockergate_argv(), "--state-dir", str(gate.state_dir), "policy", "show", "member"]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=30, check=False
    )


def test_finding_policy_show_resolves_a_relative_policies_dir_in_the_callers_cwd(
    gate24h, member, tmp_path
):
    """Low. 3366fbc makes ``policy show/list/validate/check`` and ``admin usage`` read
    the directory the running gate serves, from ``<state>/policies.json``; the gate
    writes it as given to ``serve --policies-dir``. Given relative (a systemd unit
    with ``WorkingDirectory=/etc/dockergate`` and ``--policies-dir policies``), the
    commands resolve it against the operator's own current directory: run from
    ``/tmp`` they read ``/tmp/policies``, which any member can make, and present a
    forged ``member.yaml`` as "the rules the gate applies" (``validate`` says ok,
    ``check`` passes a compose file by it, ``usage`` shows its quotas). Expected:
    the gate's directory (the gate records it absolute; the command reads that).
    Cause: dockergate/server.py (policies.json ``directory`` = ``str(profiles.directory)``,
    not resolved) with dockergate/cli/policy_cmd.py:policies_directory."""
    relative: str = gate24h.relative_policies  # type: ignore[attr-defined]
    # The operator runs the command from a directory where a member made `relative`.
    depth = len(Path(relative).parts)
    cwd = tmp_path.joinpath(*(["w"] * depth))
    cwd.mkdir(parents=True)
    forged = Path(os.path.normpath(cwd / relative))
    forged.mkdir(parents=True, exist_ok=True)
    (forged / "member.yaml").write_text("description: forged by a member\nquota:\n  memory: 64g\n")
    r = _policy_show(gate24h, cwd)
    assert r.returncode == 0 and "r24h member" in r.stdout and "forged" not in r.stdout, (
        r.returncode,
        r.stdout,
        r.stderr,
    )


def test_works_policy_show_from_the_gates_directory(gate24h, member):
    """The neighbour: run from the directory the gate was started in, ``policy show``
    shows the gate's profile (the 24f fix)."""
    r = _policy_show(gate24h, Path.cwd())
    assert r.returncode == 0 and "r24h member" in r.stdout, (r.returncode, r.stdout, r.stderr)
