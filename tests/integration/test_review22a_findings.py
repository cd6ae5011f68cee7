"""Review round 22a: the day's changes seen by a member (and the admin they can reach):
null struct fields dropped from bodies, unique network names, secret drivers, the
registry of tags in progress (``_writing_tags``), an admin's commit.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the correct
behaviour. The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members; the admin is
uid 0 on the same socket. Only the local ``busybox`` image is used; traffic stays on
loopback.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

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
network = first_round.network

pytestmark = pytest.mark.timeout(120)

V = "/v1.41"


def _rand() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def admin(rgate) -> Raw:
    return Raw(str(rgate.socket), 0)


def _commit_own_image(raw: Raw, repo: str, tag: str, cleanup) -> str:
    """An image ``raw``'s user committed (built-by them), tagged ``repo:tag``."""
    cid = created(raw, {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    r = raw.request("POST", f"{V}/commit?container={cid}&repo={repo}&tag={tag}")
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{repo}:{tag}"))
    return json.loads(r.body)["Id"]


# ------------------------------------------------- the registry of tags in progress


def test_finding_admin_tag_made_during_a_members_build_is_taken_by_the_build(
    users, admin, cleanup, direct_client
):
    """``check_not_being_written`` refuses (409) a tag another user's build, commit or
    import in progress will write, but admins never reach it (``image_tag``,
    ``commit``, ``image_create`` and ``build`` return early for them), and a member's
    build registers its ``-t`` regardless. rv-mallory starts a build ``-t
    team-base:latest`` (a new name: allowed) whose RUN step lasts a few seconds; the
    admin meanwhile tags busybox ``team-base:latest`` for everyone (201). When the
    build ends, dockerd moves the tag to mallory's image: the admin's tag now names an
    image built-by rv-mallory, hers to move again at will, and everyone (the admin
    too) runs her image under the name the admin chose. This is review 21c's race with
    the most valuable victim. Severity: Medium (a shared tag taken over; needs the
    admin to tag, pull, commit or build a name while a member's build of that name
    runs, which a member can keep running for as long as they like). Expected: the
    admin's tag refused with a 409 naming the build in progress (or the tag left on
    the admin's image)."""
    repo = f"dgt-r22a-team-{_rand()}"
    cleanup.append(("image", f"{repo}:latest"))
    result: dict[str, Reply] = {}

    def run_build() -> None:
        result["build"] = build(
            users["mallory"], f"t={repo}:latest&nocache=1", "FROM busybox\nRUN sleep 3\n"
        )

    thread = threading.Thread(target=run_build)
    thread.start()
    try:
        time.sleep(1.2)  # the build is in its RUN step
        tagged = admin.request("POST", f"{V}/images/busybox:latest/tag?repo={repo}&tag=latest")
    finally:
        thread.join(30)
    assert result["build"].status == 200, (result["build"].status, result["build"].body[-300:])
    if tagged.status == 409:
        return  # refused while the build runs: correct
    assert tagged.status == 201, (tagged.status, tagged.body)
    busybox = direct_client.images.get("busybox:latest").id
    now = direct_client.images.get(f"{repo}:latest")
    assert now.id == busybox, (
        f"the admin's tag {repo}:latest was taken over by rv-mallory's build: it names "
        f"{now.id[:19]} (labels {now.labels}), not busybox"
    )


def test_finding_refused_tag_attempts_block_the_owners_own_tag(users, cleanup):
    """``check_new_tag`` registers the caller as a writer of the tag *before* it looks
    at whose the tag is, and a refused request stays registered until it is answered.
    rv-mallory sends ``docker tag busybox victim-app:dev`` in a loop from a few
    connections: each is refused (403: the tag is rv-victim's), but while each is in
    flight rv-victim's own ``docker tag``/``commit``/``build -t victim-app:dev`` is
    refused 409 "another user's build, commit or import in progress will write that
    tag" (most of rv-victim's attempts here). Severity: Medium (a member keeps any
    other member from updating their own tags, for as long as they like, with
    requests that are all refused). Expected: only a request that may write the tag
    (past the ownership check) blocks others; rv-victim's retags all succeed."""
    repo = f"dgt-r22a-vapp-{_rand()}"
    _commit_own_image(users["victim"], repo, "dev", cleanup)
    stop = threading.Event()
    seen: dict[int, int] = {}

    def flood() -> None:
        while not stop.is_set():
            r = users["mallory"].request(
                "POST", f"{V}/images/busybox:latest/tag?repo={repo}&tag=dev"
            )
            seen[r.status] = seen.get(r.status, 0) + 1

    threads = [threading.Thread(target=flood) for _ in range(6)]
    for t in threads:
        t.start()
    statuses = []
    try:
        time.sleep(0.3)
        for _ in range(20):
            # rv-victim retags their own image onto its own tag (it stays theirs).
            r = users["victim"].request("POST", f"{V}/images/{repo}:dev/tag?repo={repo}&tag=dev")
            statuses.append((r.status, r.body[:160]))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert 201 not in seen, f"mallory moved rv-victim's tag: {seen}"
    refused = [s for s in statuses if s[0] != 201]
    assert not refused, (
        f"{len(refused)} of {len(statuses)} of rv-victim's retags of their own tag were "
        f"refused while rv-mallory's refused attempts ran ({seen}): {refused[0]}"
    )


def test_works_member_retags_own_image(users, cleanup):
    repo = f"dgt-r22a-own-{_rand()}"
    _commit_own_image(users["victim"], repo, "dev", cleanup)
    r = users["victim"].request("POST", f"{V}/images/{repo}:dev/tag?repo={repo}&tag=v2")
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{repo}:v2"))
    r = users["mallory"].request("POST", f"{V}/images/busybox:latest/tag?repo={repo}&tag=dev")
    assert r.status == 403, (r.status, r.body)


# ------------------------------------------------------------------ network names


def test_finding_concurrent_creates_make_two_networks_of_one_name(users, direct_client):
    """``check_unique_name`` lists the name and then forwards with
    ``CheckDuplicate: true``, but nothing serializes creates of one name, and
    dockerd's own check (``GetNetworkByName`` then ``NewNetwork``) is no lock either:
    rv-mallory and rv-victim creating one name at the same moment both get 201 within
    a few tries. From then on the name is ambiguous (the situation the day's commit
    set out to prevent: the first owner can no longer use it by name, and the second
    one's create answer shows nothing). Compose's ``<project>_default`` names are easy
    to guess. Severity: Low (a race to win, though an easy one: ~1 in 6 tries of 8
    parallel creates here). Expected: at most one network of a name, whatever the
    timing (e.g. the gate holds a lock per name until dockerd has answered)."""
    made = 0
    tries = 0
    for tries in range(1, 41):  # noqa: B007 - reported below
        name = f"dgt-r22a-race-{_rand()}"
        go = threading.Event()

        def create(raw: Raw, name: str = name, go: threading.Event = go) -> None:
            go.wait()
            raw.request("POST", f"{V}/networks/create", {"Name": name, "CheckDuplicate": True})

        both = [users["mallory"], users["victim"]] * 4
        threads = [threading.Thread(target=create, args=(u,)) for u in both]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(30)
        nets = [n for n in direct_client.networks.list() if n.name == name]
        made = len(nets)
        for n in nets:
            with contextlib.suppress(Exception):
                n.remove()
        if made > 1:
            break
    assert made <= 1, f"{made} networks named alike after {tries} tries of 8 parallel creates"


def test_finding_network_named_after_another_users_short_id_takes_it(users, cleanup):
    """The day's ``check_unique_name`` keeps a new network's name off existing
    *names*, but dockerd finds a network by full ID, then by name, then by ID prefix
    (``FindNetwork``): a name equal to another network's short ID (the 12 characters
    ``docker network ls`` shows) wins over that network's own ID prefix. rv-mallory
    creates a network named after rv-victim's short ID (201); rv-victim's ``docker
    network inspect <short id>`` then says "not found" and ``docker run --network
    <short id>`` is refused as someone else's network; the admin's ``docker network
    connect <short id> ...`` reaches rv-mallory's network. Severity: Low (a member
    takes another's short ID away; pinning keeps a member's own references safe). Note:
    review 4b's ``test_network_reference_cannot_be_redirected_to_another_users_network``
    makes such a decoy in its setup (and would need to accept the refusal). Expected:
    a member's network name that is a prefix of an existing network's ID (at least 12
    hex digits) refused, like a taken name."""
    theirs = network(users["victim"], f"dgt-r22a-vnet-{_rand()}", cleanup)
    short = theirs[:12]
    r = users["mallory"].request("POST", f"{V}/networks/create", {"Name": short})
    if r.status == 201:
        cleanup.append(("network", json.loads(r.body)["Id"]))
    r2 = users["victim"].request("GET", f"{V}/networks/{short}")
    assert r2.status == 200 and json.loads(r2.body)["Id"] == theirs, (
        f"rv-mallory's network named {short!r} ({r.status}) took rv-victim's short ID: "
        f"rv-victim's inspect of it answers {r2.status} {r2.body[:160]!r}"
    )


def test_works_network_names(users, cleanup):
    name = f"dgt-r22a-net-{_rand()}"
    network(users["victim"], name, cleanup)
    r = users["mallory"].request("POST", f"{V}/networks/create", {"Name": name})
    assert r.status == 403, (r.status, r.body)
    r = users["mallory"].request(
        "POST", f"{V}/networks/create", {"Name": name, "CheckDuplicate": True}
    )
    assert r.status == 409, (r.status, r.body)
    # Names dockerd keeps apart are free.
    for other in (name.upper(), name + " ", name + "-2"):
        r = users["mallory"].request("POST", f"{V}/networks/create", {"Name": other})
        assert r.status == 201, (other, r.status, r.body)
        cleanup.append(("network", json.loads(r.body)["Id"]))


# ------------------------------------------------------------- nulls in bodies


def test_finding_null_item_of_a_pointer_list_panics_dockerd(users, cleanup, rgate):
    """The day's ``canonicalize`` keeps a ``null`` that is a list's item, as data. But
    ``HostConfig.BlkioDeviceReadBps`` (and ``...WriteBps``, ``...ReadIOps``,
    ``...WriteIOps``) is a ``[]*blkiodev.ThrottleDevice``: a ``null`` item is a nil
    pointer, which the gate passes (no device check reads it) and dockerd stores. The
    container's start then dereferences it (``getBlkioThrottleDevices``): dockerd's
    handler panics ("http: panic serving ... nil pointer dereference", a goroutine dump
    in dockerd's log per try), the gate answers 502 "closed the connection" and logs an
    upstream error. Severity: Low (the panic is recovered per request; a member fills
    dockerd's log and gets 502s at will). Expected: the create refused (400: a list of
    objects takes objects), as the gate already does for ``Ulimits: [null]``."""
    r = users["mallory"].request(
        "POST",
        f"{V}/containers/create",
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"BlkioDeviceReadBps": [None]}},
    )
    started = None
    if r.status == 201:
        cid = json.loads(r.body)["Id"]
        cleanup.append(("container", cid))
        started = start(users["mallory"], cid)
    assert r.status == 400, (
        f"created ({r.status}); its start answered "
        f"{started.status if started else '-'} {started.body[:120] if started else b''!r}"
    )


def test_works_null_struct_fields_are_as_absent(users, cleanup, direct_client):
    cid = created(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "Healthcheck": None,
            "HostConfig": {"Memory": None, "RestartPolicy": None, "Ulimits": None},
        },
        cleanup,
    )
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert host["Memory"] == 64 << 20, host["Memory"]  # the profile's default


# ------------------------------------------------------------ secrets and configs


def test_works_secret_templating_and_no_driver(users, cleanup):
    data = "e3sgLlNlcnZpY2UuTmFtZSB9fQ=="  # {{ .Service.Name }}
    r = users["mallory"].request(
        "POST",
        f"{V}/secrets/create",
        {"Name": f"dgt-r22a-s-{_rand()}", "Data": data, "Templating": {"Name": "golang"}},
    )
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("secret", json.loads(r.body)["ID"]))
    for driver in ({}, {"Name": ""}, {"name": "x"}):
        r = users["mallory"].request(
            "POST",
            f"{V}/secrets/create",
            {"Name": f"dgt-r22a-s-{_rand()}", "Data": data, "Driver": driver},
        )
        assert r.status == 403, (driver, r.status, r.body)


# ------------------------------------------------------------------ admin commit


def test_works_admin_commit_with_changes_and_no_body(users, admin, cleanup, direct_client):
    cid = created(users["victim"], {"Image": "busybox", "Cmd": ["sleep", "30"]}, cleanup)
    assert start(users["victim"], cid).status == 204
    repo = f"dgt-r22a-adm-{_rand()}"
    changes = "ENV%20A%3D1"
    r = admin.request("POST", f"{V}/commit?container={cid}&repo={repo}&tag=1&changes={changes}")
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{repo}:1"))
    r = admin.request("POST", f"{V}/commit?container={cid}&repo={repo}&tag=2&pause=0", {})
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{repo}:2"))
    one = direct_client.api.inspect_image(f"{repo}:1")["Config"]
    assert "A=1" in one["Env"], one["Env"]
    assert one["Labels"].get("dockergate.built-by") == "root", one["Labels"]
    two = direct_client.api.inspect_image(f"{repo}:2")["Config"]
    assert two["Labels"].get("dockergate.built-by") == "root", two["Labels"]
