"""Review round 24c: the two newest fixes attacked, then the same idea elsewhere.

e999a29 (``check_bind``, ``writable_mounts_below``): dockerd 20.10 makes a ``:ro``
bind read-only with one remount of its top, so a file system mounted read-write
below the source stays writable in the container. The gate now refuses a read-only
bind of a ``read_only`` root with a read-write mount below it, lets the most
specific rule decide, and refuses a writable bind holding a read-only root. What it
does not look at: a *read-only* bind of the writable root that holds the read-only
one (the read-only root is then a mount below the bind), binds inherited with
``VolumesFrom`` or made again at ``start`` after a mount appeared below, and the
mount table the shipped stack lets the gate see. It also refuses binds that are
read-only all the way down (non-recursive, or a read-only mount stacked over a
writable one by an admin).

f0cf258 (``refuse_node_templates``) held: see the report.

The ``test_finding_*`` tests FAIL on the reviewed code and assert the correct
behaviour; the ``test_works_*`` tests pass and pin the legitimate neighbours.

One small gate of this module (started once) has a profile with a writable root
``top`` holding a read-only root ``top/common`` (itself a mount point, as an NFS
export or the admin's ``nosymfollow`` bind is), and read-only roots ``ro1`` (a
read-write tmpfs below it), ``ro2`` (a tmpfs below it that the admin made read-only
by stacking a read-only bind over it) and ``ro3`` (nothing below it yet). Containers
are only created, never started, except where the start is the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Gate, new_gate, nosymfollow
from tests.integration.test_hostile import Raw

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
REPO = Path(__file__).resolve().parents[2]


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def roots() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dgt-r24c-"))
    d.chmod(0o755)
    for sub in ("top/sub", "top/common", "ro1/export", "ro2/e", "ro3"):
        (d / sub).mkdir(parents=True)
    try:
        with contextlib.ExitStack() as stack:
            for root in ("top", "top/common", "ro1", "ro2", "ro3"):
                stack.enter_context(nosymfollow(d / root))
            for path in (d / "ro1/export", d / "ro2/e"):
                _mount("-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(path))
                stack.callback(_umount, path)
            # ro2/e: the admin made it read-only by binding it over itself read-only
            # (the project's own recipe for nosymfollow, with ro).
            _mount("--bind", str(d / "ro2/e"), str(d / "ro2/e"))
            stack.callback(_umount, d / "ro2/e")
            _mount("-o", "remount,bind,ro", str(d / "ro2/e"))
            yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ro_gate(session_dir: Path, docker_host: str, roots: Path) -> Iterator[Gate]:
    policies = roots / "policies"
    policies.mkdir()
    (policies / "admin.yaml").write_text("admin: true\n")
    (policies / "member.yaml").write_text(
        textwrap.dedent(
            f"""
            description: r24c member
            mounts:
              binds:
                - path: {roots / "top"}
                - path: {roots / "top/common"}
                  read_only: true
                - path: {roots / "ro1"}
                  read_only: true
                - path: {roots / "ro2"}
                  read_only: true
                - path: {roots / "ro3"}
                  read_only: true
            resources:
              memory: {{default: 64m, max: 256m}}
            """
        )
    )
    g = new_gate(session_dir, docker_host, extra_args=["--policies-dir", str(policies)])
    g.init()
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def member(ro_gate: Gate, unix_user) -> Raw:
    u = unix_user("r24cmem")
    ro_gate.dockergate("user", "add", "r24c-member", "--profile", "member", "--uid", str(u.uid))
    return Raw(str(ro_gate.socket), u.uid)


@pytest.fixture
def made(direct_client) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for cid in ids:
        with contextlib.suppress(Exception):
            direct_client.api.remove_container(cid, force=True)


def _create(raw: Raw, made: list[str], binds=(), mounts=(), **host):
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "HostConfig": {"Binds": list(binds), "Mounts": list(mounts), **host},
    }
    r = raw.request("POST", f"{V}/containers/create?name=dgt-r24c-{_rand()}", body)
    if r.status == 201:
        made.append(json.loads(r.body)["Id"])
    return r


def _refused(r) -> bool:
    return r.status == 403 and b"dockergate:" in r.body


# ------------------------------------------------- read-only roots: what is still writable


def test_finding_read_only_bind_of_the_writable_root_makes_the_read_only_root_writable(
    member, roots, made
):
    """The profile lists ``top`` (writable) and ``top/common`` (read-only) inside it,
    as the fix allows ("the writable root may then be bound read-only only").
    ``-v <top>:/t:ro`` passes: the most specific rule for ``top`` is the writable one,
    so ``writable_mounts_below`` is never asked, and the "writable bind holding a
    read-only root" check only runs for writable binds. But ``top/common`` is a mount
    point of its own (an NFS export, or the admin's ``nosymfollow`` bind the gate
    requires), and dockerd 20.10 remounts only the top of the ``:ro`` bind: observed
    on the test daemon through the gate, ``touch /t/common/x`` succeeded and the file
    was on the host in the read-only root (any read-write mount below ``top/common``
    likewise). Severity: High (the team's read-only data rewritten by any member,
    with a plain ``docker run -v``). Expected: refused (a read-only bind whose subtree
    holds a read-only root is checked for read-write mounts at or below that root,
    ``top/common`` included), as ``-v <top>/common:/c:ro``'s would be if ``common``
    had such a mount below it. Cause: dockergate/policy/hostpaths.py:check_bind
    (``below`` only for ``rule.read_only`` and strictly below the source)."""
    r = _create(member, made, binds=[f"{roots / 'top'}:/t:ro"])
    assert _refused(r), (r.status, r.body)


def test_finding_volumes_from_inherits_a_read_only_bind_with_a_writable_mount_now_below(
    member, roots, made
):
    """A container made when ``ro3`` had nothing mounted below it (``-v <ro3>:/r:ro``,
    rightly accepted, or made before e999a29) is a template for later ones:
    ``--volumes-from`` copies its bind (``RW: m.RW && mode``, recursive) into a new
    container *created now*, when a read-write file system is mounted at
    ``ro3/late``, which ``-v <ro3>:/r:ro`` is refused for. ``check_references`` only
    checks that the source container is the caller's. Observed: the new container
    wrote ``/r/late/x`` on the host. Severity: Medium (needs a container made before
    the mount appeared below the read-only root: an export mounted later, or any
    container from before the fix). Expected: refused (the binds inherited through
    ``VolumesFrom`` checked as the container's own). Cause:
    dockergate/api/containers.py:check_references. The same holds for a plain
    ``docker start`` of the old container (``check_started`` re-checks networks and
    the quota, not binds): dockerd binds the source again, recursively, at every
    start."""
    first = _create(member, made, binds=[f"{roots / 'ro3'}:/r:ro"])
    assert first.status == 201, (first.status, first.body)
    late = roots / "ro3" / "late"
    late.mkdir(exist_ok=True)
    _mount("-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(late))
    try:
        assert _refused(_create(member, made, binds=[f"{roots / 'ro3'}:/r:ro"]))  # the fix
        r = _create(member, made, VolumesFrom=[made[0]])
        assert _refused(r), (r.status, r.body)
    finally:
        _umount(late)


def test_finding_non_recursive_read_only_bind_is_refused_though_nothing_below_is_visible(
    member, roots, made
):
    """``--mount type=bind,src=<ro1>,dst=/r,readonly,bind-nonrecursive`` (API 1.40,
    ``BindOptions.NonRecursive``) is a plain ``bind``, not ``rbind``: the read-write
    ``ro1/export`` is not in the container at all, so the bind is read-only all the
    way down, and it is the way to bind such a tree on dockerd 20.10. The gate refuses
    it like the recursive one ("writable mounts below it"), and its advice does not
    mention it. Severity: Low (a legitimate, safe spelling refused). Expected: 201.
    Cause: dockergate/policy/hostpaths.py:check_bind does not receive ``NonRecursive``
    (check_mount passes only Source and ReadOnly)."""
    mount = {
        "Type": "bind",
        "Source": str(roots / "ro1"),
        "Target": "/r",
        "ReadOnly": True,
        "BindOptions": {"NonRecursive": True},
    }
    r = _create(member, made, mounts=[mount])
    assert r.status == 201, (r.status, r.body)


def test_non_recursive_bind_through_an_api_without_it_is_refused(member, roots, made):
    """Round 31a: dockerd clears ``BindOptions.NonRecursive`` below API 1.40 and binds
    recursively, read-write mount below included: the bind above passes only because
    it is not recursive, so through ``/v1.39`` it is refused, naming the version; the
    neighbour through ``/v1.40`` (and the CLI, which negotiates 1.41) still passes."""
    mount = {
        "Type": "bind",
        "Source": str(roots / "ro1"),
        "Target": "/r",
        "ReadOnly": True,
        "BindOptions": {"NonRecursive": True},
    }
    body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Mounts": [mount]}}
    for version, status in (("/v1.39", 403), ("/v1.24", 403), ("/v1.40", 201)):
        r = member.request("POST", f"{version}/containers/create?name=dgt-r24c-{_rand()}", body)
        if r.status == 201:
            made.append(json.loads(r.body)["Id"])
        assert r.status == status, (version, r.status, r.body)
        if status == 403:
            assert b"NonRecursive through API v" in r.body and b"API 1.40" in r.body, r.body


def test_finding_mount_made_read_only_by_the_admin_as_advised_is_still_refused(member, roots, made):
    """The refusal says "have an admin mount it read-only". The admin does it the way
    the project's README mounts a root ``nosymfollow``: ``mount --bind E E && mount -o
    remount,bind,ro E``. The visible mount at ``ro2/e`` is now read-only (and is in a
    container: ``rbind`` copies the stack, the read-only bind on top), but
    ``/proc/self/mountinfo`` still lists the read-write mount it covers, and
    ``writable_mounts_below`` counts every line: ``-v <ro2>:/r:ro`` stays refused
    naming ``ro2/e``. Severity: Low (the advised remedy does not work; only a remount
    of the file system itself does). Expected: 201 (only the top-most mount at each
    mount point counts). Cause: dockergate/policy/hostpaths.py:writable_mounts_below."""
    r = _create(member, made, binds=[f"{roots / 'ro2'}:/r:ro"])
    assert r.status == 201, (r.status, r.body)


def test_finding_shipped_stack_hides_mounts_made_after_the_gate_started():
    """deploy/dockergate-stack.yml gives the gate the bind roots as
    ``${DOCKERGATE_BIND_ROOT}:${DOCKERGATE_BIND_ROOT}:ro``: a bind with Docker's
    default propagation, ``rprivate``. The gate's ``/proc/self/mountinfo`` is then a
    copy of the host's mounts below the root *as they were when the gate's task
    started*: an NFS export mounted there later (boot order, an automounter, an
    admin's ``mount``) never shows up, ``writable_mounts_below`` finds nothing, and
    ``-v /srv/common:/c:ro`` lets the container write into it (checked with the test
    daemon: a container of ``-v D:D:ro`` does not see a tmpfs mounted below ``D``
    after it started). Severity: Medium (the fix is silently void in the shipped
    deployment after any later mount). Expected: the root mounted with
    ``bind-propagation=rslave`` (long syntax), so that later host mounts reach the
    gate's view. Cause: deploy/dockergate-stack.yml."""
    text = (REPO / "deploy" / "dockergate-stack.yml").read_text()
    assert "DOCKERGATE_BIND_ROOT" in text
    assert "rslave" in text or "rshared" in text, "the bind root is mounted rprivate"


def test_works_read_only_roots_beside_and_inside_writable_ones(member, roots, made):
    """The neighbours: a writable bind below ``top`` beside the read-only root, and a
    read-only bind of ``top/common`` (nothing mounted below it) are accepted; a
    writable ``top`` (holding the read-only root), a writable ``top/common`` and
    ``ro1:ro`` (a read-write tmpfs below it) are refused, and ``ro1/export:ro`` (that
    mount by itself) is accepted."""
    for binds in (
        [f"{roots / 'top/sub'}:/s"],
        [f"{roots / 'top/common'}:/c:ro"],
        [f"{roots / 'ro1/export'}:/e:ro"],
        [f"{roots / 'ro3'}/.:/r:ro"],
    ):
        r = _create(member, made, binds=binds)
        assert r.status == 201, (binds, r.status, r.body)
    for binds, words in (
        ([f"{roots / 'top'}:/t"], b"over a read-only path"),
        ([f"{roots / 'top/common'}:/c"], b"writable bind mount of a read-only path"),
        ([f"{roots / 'ro1'}:/r:ro"], b"writable mounts below it"),
        ([f"{roots / 'ro1'}//.:/r:ro"], b"writable mounts below it"),
    ):
        r = _create(member, made, binds=binds)
        assert _refused(r) and words in r.body, (binds, r.status, r.body)


def test_works_start_of_a_container_with_a_read_only_bind(member, roots, made, direct_client):
    """A read-only bind of a read-only root with nothing mounted below it runs and is
    read-only in the container."""
    body = {
        "Image": "busybox",
        "Cmd": ["sh", "-c", "touch /r/x 2>&1; true"],
        "HostConfig": {"Binds": [f"{roots / 'ro3'}:/r:ro"]},
    }
    r = member.request("POST", f"{V}/containers/create", body)
    assert r.status == 201, (r.status, r.body)
    cid = json.loads(r.body)["Id"]
    made.append(cid)
    assert member.request("POST", f"{V}/containers/{cid}/start").status == 204
    direct_client.api.wait(cid, timeout=30)
    assert b"Read-only file system" in direct_client.api.logs(cid)
    assert not os.path.exists(roots / "ro3" / "x")
