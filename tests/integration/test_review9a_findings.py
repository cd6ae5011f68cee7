"""Findings of review round 9a (attacks on the round-8 fixes: the gate's own image
prune, nocopy for read-only shared volumes, numeric exec users and cutting the
streams of users who lost their access).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, created, start = first_round._rand, first_round.created, first_round.start

pytestmark = pytest.mark.timeout(180)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _recv_until(sock: socket.socket, needle: bytes, seconds: float) -> bytes:
    got = b""
    deadline = time.monotonic() + seconds
    while needle not in got and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        got += data
    return got


# --------------------------------------------------------------- exec.root: false

BIG = "99999999999999999999"  # > 2**63 - 1: strconv.Atoi fails with ErrRange

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    + BIG.encode()
    + b":x:0:0:too big for Atoi:/root:/bin/sh\n"
    + b"wrap:x:4294967296:0:uid 2**32, 0 as uint32:/root:/bin/sh\n"
    + b"negwrap:x:-4294967296:0:uid -2**32, 0 as uint32:/root:/bin/sh\n"
    + b"nobody:x:1000:1000:nobody:/:/bin/sh\n"
)


def _non_root_container_with_passwd(m: Raw, cleanup) -> str:
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "120"], "User": "1000"}, cleanup)
    assert start(m, cid).status == 204
    r = m.request(
        "PUT",
        f"/v1.41/containers/{cid}/archive?path=/etc",
        _tar({"passwd": PASSWD}),
        ctype="application/x-tar",
    )
    assert r.status == 200, (r.status, r.body)
    return cid


@pytest.mark.parametrize("user", [BIG, f"{BIG}:1000"])
def test_exec_root_refused_for_a_uid_too_big_for_atoi(users, cleanup, direct_client, user):
    """``NUMERIC_USER`` (checks.py) takes any run of ASCII digits as a uid. But
    dockerd's ``getUser`` -> runc ``GetExecUser`` reads it with ``strconv.Atoi``, which
    fails with ErrRange above 2**63-1; the spec is then a *name* looked up in the
    container's /etc/passwd, which the member writes with ``docker cp``: a line
    ``99999999999999999999:x:0:0`` makes ``exec -u 99999999999999999999`` root."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": user, "AttachStdout": True},
    )
    if r.status == 201:
        out = direct_client.api.exec_start(json.loads(r.body)["Id"]).decode(errors="replace")
        pytest.fail(f"exec as {user!r} was allowed; it ran as uid {out.strip()!r}")
    assert r.status == 403, (r.status, r.body)


@pytest.mark.parametrize("user", ["4294967296", "-4294967296", "+4294967296:1000"])
def test_exec_root_refused_for_a_uid_that_wraps_to_zero(users, cleanup, direct_client, user):
    """``is_root_user`` asks ``int(uid) == 0``. dockerd's ``getUser`` (oci_linux.go)
    takes runc's ``ExecUser.Uid`` (a Go int) and converts it with ``uint32(...)``;
    runc checks the uid range only for a uid *not* found in /etc/passwd. With a line
    ``wrap:x:4294967296:0`` written by ``docker cp``, ``exec -u 4294967296`` (or
    ``-4294967296``) is matched by uid and runs as uid 2**32 mod 2**32 = 0."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": user, "AttachStdout": True},
    )
    if r.status == 201:
        out = direct_client.api.exec_start(json.loads(r.body)["Id"]).decode(errors="replace")
        pytest.fail(f"exec as {user!r} was allowed; it ran as uid {out.strip()!r}")
    assert r.status == 403, (r.status, r.body)


def test_exec_as_a_large_but_valid_uid_works(users, cleanup, direct_client):
    """Neighbour: a big uid Atoi still reads runs as that uid."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": "65534", "AttachStdout": True},
    )
    assert r.status == 201, (r.status, r.body)
    assert direct_client.api.exec_start(json.loads(r.body)["Id"]).strip() == b"65534"


# --------------------------------------------------------------- read-only shared volumes


def _drop_shared(direct_client, shared_name: str) -> None:
    for container in direct_client.containers.list(all=True):
        if any(m.get("Name") == shared_name for m in container.attrs.get("Mounts") or []):
            container.remove(force=True)
    direct_client.volumes.get(shared_name).remove(force=True)


def _create_with_shared_bind(m: Raw, shared_name: str, mode: str, cleanup):
    r = first_round.create(
        m,
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"Binds": [f"{shared_name}:/etc:{mode}"]},
        },
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    return r


@pytest.mark.parametrize("mode", ["ro,nocopy", "nocopy,ro"])
def test_read_only_shared_volume_bind_that_already_says_nocopy(
    users, shared_name, cleanup, direct_client, mode
):
    """``check_references`` appends ``,nocopy`` to every read-only shared bind. A
    member who already wrote ``nocopy`` (``docker run -v shared:/x:ro,nocopy``, the
    documented spelling, and the very thing the gate wants) gets ``ro,nocopy,nocopy``,
    which dockerd's ``linuxValidMountMode`` rejects (one copy mode at most): the
    create fails with 500 "invalid mode"."""
    direct_client.volumes.create(shared_name)
    try:
        r = _create_with_shared_bind(users["mallory"], shared_name, mode, cleanup)
        assert r.status == 201, (r.status, r.body)
        mountpoint = Path(direct_client.volumes.get(shared_name).attrs["Mountpoint"])
        assert not list(mountpoint.iterdir())
    finally:
        _drop_shared(direct_client, shared_name)


@pytest.mark.parametrize("mode", ["ro"])
def test_read_only_shared_volume_bind_gets_nocopy(users, shared_name, cleanup, direct_client, mode):
    """Neighbour: without nocopy of its own, the mount works and the volume stays empty."""
    direct_client.volumes.create(shared_name)
    try:
        r = _create_with_shared_bind(users["mallory"], shared_name, mode, cleanup)
        assert r.status == 201, (r.status, r.body)
        mountpoint = Path(direct_client.volumes.get(shared_name).attrs["Mountpoint"])
        assert not list(mountpoint.iterdir())
    finally:
        _drop_shared(direct_client, shared_name)


# --------------------------------------------------------------- image prune


def _prune(m: Raw, until: str):
    filters = json.dumps({"dangling": {"true": True}, "until": {until: True}})
    return m.request("POST", f"/v1.41/images/prune?filters={quote(filters)}")


@pytest.mark.parametrize("until", ["9" * 400, "9" * 400 + "h"])
def test_image_prune_with_an_overflowing_until_is_a_client_error(users, until):
    """``prune_until`` (images.py) catches ValueError only: ``int(float('9' * 400))``
    is ``int(inf)`` and a huge duration gives ``int(-inf)``, both OverflowError, so
    the gate answers 500 "internal error" (dockerd answers 400 for these)."""
    r = _prune(users["mallory"], until)
    assert r.status == 400, (r.status, r.body)


@pytest.mark.parametrize("until", ["1e9", "bogus"])
def test_image_prune_with_a_malformed_until_is_a_client_error(users, until):
    """Neighbour: other malformed values are 400."""
    r = _prune(users["mallory"], until)
    assert r.status == 400, (r.status, r.body)


def test_image_prune_plain_works(users):
    r = users["mallory"].request("POST", "/v1.41/images/prune")
    assert r.status == 200, (r.status, r.body)
    body = json.loads(r.body)
    assert "SpaceReclaimed" in body


# --------------------------------------------------------------- streams after a change


def test_demoting_an_admin_ends_their_unfiltered_event_stream(rgate, unix_user, users, cleanup):
    """``Gate.recheck_streams`` cuts a stream only when ``authenticate`` names another
    user (or none): an admin moved to the member profile (``dockergate user
    set-profile``) keeps the same name, so an ``events`` stream opened as admin goes
    on showing every user's events (and an exec shell into another user's container
    goes on), although each new request is already handled as a member."""
    u = unix_user("r9ademoted")
    name = f"rv9a-demoted-{_rand()}"
    rgate.dockergate("user", "add", name, "--profile", "admin", "--uid", str(u.uid))
    raw = Raw(str(rgate.socket), u.uid)
    sock = raw.connect()
    try:
        sock.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n")
        head = _recv_until(sock, b"\r\n\r\n", 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        rgate.dockergate("user", "set-profile", name, "member")
        time.sleep(3)  # well past the documented second
        cid = created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
        after = b""
        try:
            after = _recv_until(sock, cid.encode(), 5)
        except OSError:
            pass
        assert cid.encode() not in after, "a demoted admin still sees every user's events"
    finally:
        sock.close()


# --------------------------------------------------------------- rmi and prune regressions


def _chain(direct_client, image_id: str) -> list[str]:
    out = []
    while image_id:
        out.append(image_id)
        image_id = direct_client.api.inspect_image(image_id).get("Parent") or ""
    return out


@pytest.mark.xfail(
    strict=True,
    reason="known limit: a member's rmi/prune keep untagged parents (noprune), which may be "
    "another user's images; an admin's prune reclaims a classic build's intermediates",
)
def test_rmi_and_prune_reclaim_a_members_own_classic_build(users, direct_client, cleanup):
    """``image_delete`` now forwards ``noprune=1`` and ``image_prune`` deletes only
    dangling images labelled ``dockergate.built-by`` = the member. A classic build's
    intermediate images (one per step, the final image's parents) carry no built-by
    label (the gate's label is the last step's), so after ``docker rmi`` they become
    untagged heads that neither ``rmi`` (built-by check) nor ``image prune`` (label
    filter) of the member who made them can remove: ``docker rmi`` + ``docker image
    prune -f`` no longer reclaims a build nothing else uses (it did before: dockerd
    deleted the untagged parents)."""
    m = users["mallory"]
    tag = f"rv9a-chain-{_rand()}:latest"
    r = first_round.build(
        m,
        f"t={tag}&rm=1",
        f"FROM busybox\nRUN echo {_rand()} > /a\nRUN echo {_rand()} > /b\n",
    )
    assert r.status == 200, (r.status, r.body[-400:])
    final = direct_client.images.get(tag).id
    base = direct_client.images.get("busybox").id
    mine = [i for i in _chain(direct_client, final) if i != base]
    for i in mine:
        cleanup.append(("image", i))
    assert len(mine) >= 3, mine
    r = m.request("DELETE", f"/v1.41/images/{tag}")
    assert r.status == 200, (r.status, r.body)
    for _ in range(3):
        r = m.request("POST", "/v1.41/images/prune")
        assert r.status == 200, (r.status, r.body)
    left = []
    for i in mine:
        try:
            direct_client.api.inspect_image(i)
            left.append(i)
        except Exception:
            pass
    assert not left, f"{len(left)} of {len(mine)} images of mallory's own build are left"
