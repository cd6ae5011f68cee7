"""Review round 21c: a member (and an intern) through the image, build and file-copy
routes (classic builds and their query, commit, import, tag, rmi, prune, save,
history, the archive routes, export, changes).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the secure
behaviour (a ``dockergate:`` refusal, or another user's tag left where they put it).
The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate, profile (64m default and 256m maximum memory, a
512m memory quota, the default ulimit rules: ``rtprio``, ``rttime`` and ``nice``
refused), users and cleanup (tests/integration/test_review_findings.py) and raw
requests as members; the admin is uid 0 on the same socket. Only the local
``busybox`` image is used; nothing leaves loopback (the one pull a test provokes is
of a ``127.0.0.1:9/...`` name: dockerd's connection is refused at once).
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import threading
import time
import uuid
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
start = first_round.start

pytestmark = pytest.mark.timeout(120)

V = "/v1.41"


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _stream(r: Reply) -> str:
    """The ``stream`` and ``error`` texts of a build's JSON lines, joined."""
    out = []
    for line in r.body.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            out.append(str(item.get("stream") or item.get("error") or ""))
    return "".join(out)


def _built(raw: Raw, tag: str, dockerfile: str, cleanup) -> str:
    r = build(raw, f"t={quote(tag, safe='')}&rm=1", dockerfile)
    assert r.status == 200 and "Successfully tagged" in _stream(r), (r.status, r.body[-400:])
    cleanup.append(("image", tag))
    return tag


def _in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []

    def run() -> None:
        try:
            out.append(fn())
        except OSError as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _running_with(direct_client, marker: str) -> list:
    return [
        c
        for c in direct_client.containers.list()
        if marker in " ".join(c.attrs.get("Config", {}).get("Cmd") or [])
    ]


def _wait_running(direct_client, marker: str, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _running_with(direct_client, marker)
        if found:
            return found
        time.sleep(0.2)
    return []


def _admin(rgate) -> Raw:
    return Raw(str(rgate.socket), 0)


# ------------------------------------------------ build ulimits: Go's key matching


def test_finding_build_ulimits_second_key_spelling_passes_a_refused_ulimit(users):
    """The build's ``ulimits`` query parameter is read with ``loads_strict`` (exact
    duplicate keys refused) and checked by ``check_ulimits`` on the keys ``Name``,
    ``Soft`` and ``Hard`` only. dockerd decodes it into go-units' ``Ulimit`` struct,
    whose fields have no JSON tags: Go matches ``name``/``soft``/``hard`` to them
    case-insensitively, and the later key wins. ``[{"Name": "nofile", "Soft": 1024,
    "Hard": 1024, "name": "rtprio", "soft": 99, "hard": 99}]`` is checked as a nofile
    limit and applied as ``rtprio 99``, a ulimit every shipped profile refuses (a
    SCHED_FIFO busy loop starves the node; ``nice`` and ``rttime`` likewise): the
    gate answered 200 and dockerd's RUN step failed with runc's "error setting rlimit
    type 14" (RLIMIT_RTPRIO; this test engine's runc may not raise it, an ordinary
    host's root runc may).
    Container create is safe (its body is checked field by exact spelling).
    Severity: Medium (a profile limit bypassed on every member's build). Expected: a
    400/403 ``dockergate:`` refusal of a key that is not the exact field spelling,
    as for bodies."""
    ulimits = [
        {"Name": "nofile", "Soft": 1024, "Hard": 1024, "name": "rtprio", "soft": 99, "hard": 99}
    ]
    r = build(
        users["mallory"],
        f"rm=1&nocache=1&ulimits={quote(json.dumps(ulimits), safe='')}",
        "FROM busybox\nRUN cat /proc/self/limits\n",
    )
    out = _stream(r)
    applied = [line for line in out.splitlines() if "realtime priority" in line]
    assert r.status in (400, 403) and "dockergate" in r.message, (r.status, applied or out[-300:])


def test_works_build_ulimit_within_the_profile(users):
    ulimits = [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    r = build(
        users["mallory"],
        f"rm=1&nocache=1&ulimits={quote(json.dumps(ulimits), safe='')}",
        "FROM busybox\nRUN grep 'open files' /proc/self/limits\n",
    )
    out = _stream(r)
    assert r.status == 200 and "1024" in out and "2048" in out, (r.status, out[-300:])
    refused = build(
        users["mallory"],
        f"rm=1&ulimits={quote(json.dumps([{'Name': 'rtprio', 'Soft': 99, 'Hard': 99}]), safe='')}",
        "FROM busybox\nRUN true\n",
    )
    assert refused.status == 403 and "rtprio" in refused.message, (refused.status, refused.body)


# ------------------------------------------------ FROM pins: removal by image ID


def test_finding_base_removed_by_id_mid_build_is_pulled_unread(users, cleanup, direct_client):
    """A member's build must start ``FROM`` images already here: the gate reads their
    ``ONBUILD`` triggers (an ``ADD <url>`` trigger is dockerd fetching from the
    host's network) and pins the tags so nobody moves them until the build ends
    (``pin_build_bases``). The pin is by *tag*; ``image_delete`` registers the name
    it was given, and "an ID is no tag". A member's ``rmi <ID>`` of an image they
    built removes its only tag as well, and the pin does not see it. dockerd resolves
    each ``FROM`` when its stage starts, so with ``FROM busybox AS a / RUN sleep 6 /
    FROM 127.0.0.1:9/base:1``, ``DELETE /images/<ID of base:1>`` during the first
    stage answered 200 ("Untagged: 127.0.0.1:9/base:1"), and the second ``FROM``
    made dockerd pull ``127.0.0.1:9/base:1`` ("dial tcp 127.0.0.1:9: connect:
    connection refused"): from a registry the member controls, an image whose
    triggers the gate never read (``ONBUILD ADD http://169.254.169.254/...`` runs
    in the member's build, and its answer lands in an image they read).
    Severity: High (the daemon reaches the host's network for a member, the very
    fetch the FROM rules exist to stop). Expected: the removal refused (409, as a
    ``rmi <tag>`` is) while a build starts FROM a tag of that image, or the pin
    held by image ID."""
    m = users["mallory"]
    base = _built(m, f"127.0.0.1:9/dgt-r21c-base-{_rand()}:1", "FROM busybox\nLABEL a=b\n", cleanup)
    image_id = direct_client.images.get(base).id
    marker = f"dgt-r21c-pin-{_rand()}"
    dockerfile = f"FROM busybox AS first\nRUN echo {marker} && sleep 6\nFROM {base}\nRUN true\n"
    t, outs = _in_thread(lambda: build(m, "rm=1&forcerm=1&nocache=1", dockerfile))
    try:
        assert _wait_running(direct_client, marker), outs
        gone = m.request("DELETE", f"{V}/images/{image_id}")
    finally:
        t.join(60)
    out = _stream(outs[0]) if outs and isinstance(outs[0], Reply) else repr(outs)
    pulled = "127.0.0.1:9" in out and ("connection refused" in out or "/v2/" in out)
    assert gone.status == 409 and not pulled, (gone.status, gone.body[:300], out[-400:])


def test_works_rmi_by_tag_is_refused_while_a_build_starts_from_it(users, cleanup, direct_client):
    m = users["mallory"]
    base = _built(m, f"dgt-r21c-base-{_rand()}:1", "FROM busybox\nLABEL a=b\n", cleanup)
    marker = f"dgt-r21c-pin-{_rand()}"
    dockerfile = f"FROM busybox AS first\nRUN echo {marker} && sleep 3\nFROM {base}\nRUN true\n"
    t, outs = _in_thread(lambda: build(m, "rm=1&forcerm=1&nocache=1", dockerfile))
    try:
        assert _wait_running(direct_client, marker), outs
        gone = m.request("DELETE", f"{V}/images/{quote(base, safe='')}")
    finally:
        t.join(60)
    assert gone.status == 409 and "build in progress" in gone.message, (gone.status, gone.body)
    assert outs and "Successfully built" in _stream(outs[0]), outs


# ------------------------------------------------ tags written when a build ends


def test_finding_long_build_takes_a_tag_another_member_created_meanwhile(
    users, cleanup, direct_client
):
    """``check_new_tag`` checks a build's ``-t`` when the build starts; dockerd writes
    the tag when it ends. A tag another user creates in between is moved by the
    build's end: mallory's ``docker build -t app:v2`` (a name nobody has yet) whose
    RUN step waits, then the victim's own ``docker build -t app:v2`` (the gate saw
    no such tag: 200, "Successfully tagged"), then mallory's build ends and dockerd
    moves ``app:v2`` to mallory's image. The victim's next ``docker run app:v2`` runs
    mallory's code with the victim's volumes and rights. A RUN step can wait for as
    long as mallory likes (until a date, or until the victim's CI makes the tag), and
    an import (``fromSrc=-``) whose body is sent slowly does the same. Tags a build
    in progress will write are registered as moving (``_moving_tags``), but nothing
    reads that table for another user's new tag. Severity: Medium (another user's
    tag taken over; needs the name before its owner uses it). Expected: while a
    build or import of one user will write a tag, another user's tag, build ``-t``,
    commit or import of that name is refused (409), or the build's own tag is
    refused at its end."""
    m, v = users["mallory"], users["victim"]
    tag = f"dgt-r21c-app-{_rand()}:v2"
    cleanup.append(("image", tag))
    marker = f"dgt-r21c-tag-{_rand()}"
    t, outs = _in_thread(
        lambda: build(
            m,
            f"t={quote(tag, safe='')}&rm=1&forcerm=1&nocache=1",
            f"FROM busybox\nRUN echo {marker} && sleep 5\nLABEL evil=1\n",
        )
    )
    try:
        assert _wait_running(direct_client, marker), outs
        mine = build(v, f"t={quote(tag, safe='')}&rm=1", "FROM busybox\nLABEL app=victim\n")
    finally:
        t.join(60)
    labels = direct_client.images.get(tag).labels or {}
    victim_tagged = mine.status == 200 and "Successfully tagged" in _stream(mine)
    assert not (victim_tagged and labels.get("dockergate.built-by") != "rv-victim"), (
        mine.status,
        mine.message or _stream(mine)[-200:],
        labels,
    )


# ------------------------------------------------ built-by inherited by admins' images


def test_finding_admins_commit_of_a_members_image_is_the_members_to_move(
    users, rgate, cleanup, direct_client
):
    """Ownership of a tag is the image's ``dockergate.built-by`` label. Builds and
    member commits stamp it; an admin's ``docker commit`` through the gate does not
    (``commit`` in api/containers.py returns at once for admins), and dockerd copies
    the container's labels, which hold the image's, into the new image. An admin who
    commits a container made from mallory's image as ``team-golden:1`` (the usual
    "freeze what the member set up" step) makes an image labelled
    ``built-by=rv-mallory``: mallory then moved ``team-golden:1`` to her own image
    (``docker tag`` answered 201) and could ``rmi`` it; and everyone else's ``docker
    pull`` of such a name is refused as "an image rv-mallory built". The same holds
    for images built directly on the engine or in CI ``FROM`` a member's image, then
    pulled here. Severity: Medium (a shared tag an admin made, taken over by a member:
    everyone's next run of it runs her code). Expected: the admin's commit stamps the
    admin as author (or clears ``built-by``), so the member's tag is refused (403)."""
    m = users["mallory"]
    base = _built(m, f"dgt-r21c-mine-{_rand()}:1", "FROM busybox\nLABEL a=b\n", cleanup)
    admin = _admin(rgate)
    r = admin.request("POST", f"{V}/containers/create", {"Image": base, "Cmd": ["true"]})
    assert r.status == 201, (r.status, r.body)
    cid = json.loads(r.body)["Id"]
    cleanup.append(("container", cid))
    golden = f"dgt-r21c-golden-{_rand()}"
    cleanup.append(("image", f"{golden}:1"))
    r = admin.request("POST", f"{V}/commit?container={cid}&repo={golden}&tag=1", {})
    assert r.status == 201, (r.status, r.body)
    moved = m.request("POST", f"{V}/images/busybox:latest/tag?repo={golden}&tag=1")
    assert moved.status == 403, (moved.status, moved.body)


def test_works_admins_own_build_and_members_commit_are_stamped(users, rgate, cleanup):
    m = users["mallory"]
    base = _built(m, f"dgt-r21c-mine-{_rand()}:1", "FROM busybox\nLABEL a=b\n", cleanup)
    admin_tag = f"dgt-r21c-admin-{_rand()}:1"
    _built(_admin(rgate), admin_tag, f"FROM {base}\nLABEL b=c\n", cleanup)
    moved = m.request("POST", f"{V}/images/busybox:latest/tag?repo={quote(admin_tag, safe='')}")
    assert moved.status == 403, (moved.status, moved.body)


# ------------------------------------------------ the legitimate neighbours


def _tar(members: list[tuple[str, str, bytes | str]]) -> bytes:
    """(type, name, data-or-link-target) with type 'file', 'symlink', 'link' or 'char'."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o4755
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            else:
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
            tar.addfile(info)
    return buf.getvalue()


def test_works_archive_put_stays_out_of_a_read_only_shared_volume(
    users, shared_name, cleanup, direct_client
):
    """A member's ``docker cp`` into their own container: a tar whose symlink points
    at the read-only shared volume, then a member below the link, and a path through
    a link, leave the volume as it was (dockerd extracts in the container's root,
    with the volume mounted read-only); ``..`` stays inside the container."""
    direct_client.volumes.create(shared_name)
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"Binds": [f"{shared_name}:/shared:ro"]},
        },
        cleanup,
    )
    assert start(m, cid).status == 204
    body = _tar([("symlink", "x", "/shared"), ("file", "x/evil", b"evil\n")])
    r = m.request("PUT", f"{V}/containers/{cid}/archive?path=/tmp", body, ctype="application/x-tar")
    r2 = m.request(
        "PUT",
        f"{V}/containers/{cid}/archive?path=/tmp/x",
        _tar([("file", "evil2", b"evil\n")]),
        ctype="application/x-tar",
    )
    r3 = m.request(
        "PUT",
        f"{V}/containers/{cid}/archive?path=/../../shared",
        _tar([("file", "evil3", b"evil\n")]),
        ctype="application/x-tar",
    )
    listing = direct_client.containers.run(
        "busybox",
        ["ls", "-a", "/s"],
        volumes={shared_name: {"bind": "/s", "mode": "ro"}},
        remove=True,
    ).decode()
    assert "evil" not in listing, (r.status, r2.status, r3.status, listing)
    assert r2.status >= 400 and r3.status >= 400, (r2.status, r2.body, r3.status, r3.body)


def test_works_member_build_commit_tag_cp_and_rmi(users, cleanup, direct_client):
    m = users["mallory"]
    app = _built(m, f"dgt-r21c-own-{_rand()}:dev", "FROM busybox\nRUN echo hi > /hi\n", cleanup)
    again = build(m, f"t={quote(app, safe='')}&rm=1", "FROM busybox\nRUN echo 2 > /hi\n")
    assert again.status == 200 and "Successfully tagged" in _stream(again), again.body[-300:]
    cid = created(m, {"Image": app, "Cmd": ["sleep", "60"]}, cleanup)
    assert start(m, cid).status == 204
    put = m.request(
        "PUT",
        f"{V}/containers/{cid}/archive?path=/tmp&copyUIDGID=1",
        _tar([("file", "f.txt", b"data\n")]),
        ctype="application/x-tar",
    )
    assert put.status == 200, (put.status, put.body)
    got = m.request("GET", f"{V}/containers/{cid}/archive?path=/tmp/f.txt")
    assert got.status == 200 and b"data" in got.body, (got.status, got.body[:200])
    assert m.request("HEAD", f"{V}/containers/{cid}/archive?path=/tmp").status == 200
    assert m.request("GET", f"{V}/containers/{cid}/changes").status == 200
    committed = f"dgt-r21c-commit-{_rand()}"
    r = m.request("POST", f"{V}/commit?container={cid}&repo={committed}&tag=1", {})
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{committed}:1"))
    labels = direct_client.images.get(f"{committed}:1").labels or {}
    assert labels.get("dockergate.built-by") == "rv-mallory", labels
    r = m.request("POST", f"{V}/images/{quote(app, safe='')}/tag?repo={committed}&tag=2")
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{committed}:2"))
    for path in (f"/images/{committed}:1/history", f"/images/{committed}:1/get"):
        assert m.request("GET", V + path).status == 200, path
    assert m.request("DELETE", f"{V}/images/{committed}:2").status == 200
    other = users["victim"].request("DELETE", f"{V}/images/{committed}:1")
    assert other.status == 403 and "dockergate" in other.message, (other.status, other.body)
    theirs = users["victim"].request("GET", f"{V}/containers/{cid}/archive?path=/tmp/f.txt")
    assert theirs.status == 404, (theirs.status, theirs.body[:200])


def test_works_intern_build_on_a_manager_is_refused_with_a_reason(users):
    r = build(users["pintern"], "rm=1", "FROM busybox\nRUN true\n")
    assert r.status == 403 and "manager" in r.message and "dockergate" in r.message, (
        r.status,
        r.body[:300],
    )
