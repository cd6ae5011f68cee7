"""Review round 23a: a member's tags (``image_tags``), unique network names and the
built-in network listing, and the replay of volume mounts by containers gone since.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the correct
behaviour. The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members; the admin is
uid 0 on the same socket. Only the local ``busybox`` image is used; traffic stays on
loopback.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created
start = first_round.start
network = first_round.network
build = first_round.build

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"


def _rand() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def admin(rgate) -> Raw:
    return Raw(str(rgate.socket), 0)


# ------------------------------------------------------------ a member's tag records


def test_finding_a_removed_tags_record_outlives_it_and_claims_the_admins_same_tag(
    users, admin, cleanup
):
    """``image_tags`` keeps (owner, image ID) per name, and ``named_by_caller`` takes
    the row as proof for as long as the name names that ID. Nothing ends the row when
    the member removes her tag, nor when an admin later makes the same name on the same
    image (admins' tags are never recorded). rv-mallory tags busybox
    ``corp-base:stable`` (a new name: allowed, row written) and removes it again. The
    admin then publishes busybox as ``corp-base:stable`` for everyone. rv-mallory's old
    row matches (same name, same ID, busybox's): she may ``docker rmi`` the admin's
    shared tag (200), and since no registry is reachable, everyone's ``FROM`` / ``run``
    of it breaks until an admin notices. The same holds for an admin's tag made while
    hers still exists, and for a tag the admin makes directly on dockerd. Severity:
    Medium (a shared tag removed by a member; needs her to guess/see the name first,
    which a squatted-then-released name gives). Expected: 403 (the row ended with her
    tag, or an admin's tag of that name ends it)."""
    repo = f"dgt-r23a-base-{_rand()}"
    cleanup.append(("image", f"{repo}:stable"))
    mallory = users["mallory"]
    r = mallory.request("POST", f"{V}/images/busybox/tag?repo={repo}&tag=stable")
    assert r.status == 201, (r.status, r.body)
    r = mallory.request("DELETE", f"{V}/images/{repo}:stable")
    assert r.status == 200, (r.status, r.body)  # hers: fine
    r = admin.request("POST", f"{V}/images/busybox/tag?repo={repo}&tag=stable")
    assert r.status == 201, (r.status, r.body)
    r = mallory.request("DELETE", f"{V}/images/{repo}:stable")
    assert r.status == 403, (r.status, r.body)
    assert admin.request("GET", f"{V}/images/{repo}:stable/json").status == 200


def test_finding_a_tag_dockerd_refuses_records_the_shared_tag_for_the_member(users, admin, cleanup):
    """``image_tag`` writes the ``image_tags`` row *before* dockerd tags, for the
    canonical name (``canonical`` lower-cases the repository), after a check that
    looks the name up as written. An upper-case repository is no valid reference:
    dockerd answers the gate's ``GET /images/Corp-base:stable/json`` with an error
    (so the check sees "no such tag": allowed), records nothing of it, and refuses the
    tag itself (400), but the row for ``docker.io/library/corp-base:stable`` naming
    the source's image ID is written. An admin has published busybox as
    ``corp-base:stable``; rv-mallory sends ``POST
    /images/busybox/tag?repo=CORP-BASE&tag=stable`` (refused by dockerd) and then
    ``docker rmi corp-base:stable``: ``named_by_caller`` finds her row (her name, the
    same ID) and the admin's shared tag is untagged (200). The same works for
    ``repo=BUSYBOX&tag=latest`` and ``docker rmi busybox``: the one image everyone
    runs loses its name (or is deleted, when nothing else names or uses it), and no
    registry is reachable to pull it back. Severity: High (any member removes any
    tag on any image, admins' and other users' alike, with two requests). Expected:
    the rmi refused (403): no row for a tag dockerd did not make, nor for one that
    already names an image the member did not build."""
    repo = f"dgt-r23a-shared-{_rand()}"
    cleanup.append(("image", f"{repo}:stable"))
    r = admin.request("POST", f"{V}/images/busybox/tag?repo={repo}&tag=stable")
    assert r.status == 201, (r.status, r.body)
    mallory = users["mallory"]
    r = mallory.request("POST", f"{V}/images/busybox/tag?repo={repo.upper()}&tag=stable")
    assert r.status != 201, (r.status, r.body)  # dockerd refuses an upper-case repository
    r = mallory.request("DELETE", f"{V}/images/{repo}:stable")
    assert r.status == 403, (r.status, r.body)
    assert admin.request("GET", f"{V}/images/{repo}:stable/json").status == 200


def test_finding_a_registry_spelled_in_upper_case_records_the_lower_case_tag(users, admin, cleanup):
    """``canonical`` lower-cases the registry host, dockerd does not: for dockerd
    ``REGISTRY.LOCAL:5000/app:1`` and ``registry.local:5000/app:1`` are two tags (a
    reference's domain keeps its case). So rv-mallory's ``docker tag busybox
    REGISTRY.LOCAL:5000/app:1`` passes the check (that tag does not exist), dockerd
    makes it (201), and the gate records the row for the canonical
    ``registry.local:5000/app:1``, the admin's shared tag on the same image: her
    ``docker rmi registry.local:5000/app:1`` then untags the admin's (200). With
    ``DOCKER.IO/library/busybox`` the row is ``docker.io/library/busybox:latest``.
    Severity: High (as the upper-case repository: any tag of another user's or an
    admin's on any image, via a tag dockerd accepts). Expected: 403."""
    path = f"dgt-r23a-app-{_rand()}"
    repo, loud = f"registry.local:5000/{path}", f"REGISTRY.LOCAL:5000/{path}"
    cleanup.append(("image", f"{repo}:1"))
    cleanup.append(("image", f"{loud}:1"))
    r = admin.request("POST", f"{V}/images/busybox/tag?repo={repo}&tag=1")
    assert r.status == 201, (r.status, r.body)
    mallory = users["mallory"]
    r = mallory.request("POST", f"{V}/images/busybox/tag?repo={loud}&tag=1")
    assert r.status == 201, (r.status, r.body)  # a tag of its own for dockerd
    r = mallory.request("DELETE", f"{V}/images/{repo}:1")
    assert r.status == 403, (r.status, r.body)
    assert admin.request("GET", f"{V}/images/{repo}:1/json").status == 200


def test_finding_a_build_tagged_with_an_upper_case_registry_blocks_everyones_from_busybox(
    users, cleanup
):
    """The registry of tags in progress (``_moving_tags``, ``_writing_tags``) is keyed
    by ``canonical``, which folds the registry host's case, while the ownership check
    asks dockerd about the tag as written. rv-mallory's ``docker build -t
    DOCKER.IO/library/busybox:latest`` passes the check (dockerd has no such tag: for
    it that is another repository than ``busybox``) and then holds
    ``docker.io/library/busybox:latest`` for as long as her build runs (a ``RUN sleep``
    of her choosing). Meanwhile every other user's ``docker build`` ``FROM busybox`` is
    refused 409 "the tag is being moved", and an admin's ``docker tag ... busybox``
    too. Severity: Medium (everyone's builds stopped at will by one member, with a
    request that passes the check). Expected: the victim's build succeeds (200)."""
    mallory, victim = users["mallory"], users["victim"]
    cleanup.append(("image", "DOCKER.IO/library/busybox:latest"))
    held: dict[str, object] = {}

    def hold() -> None:
        held["reply"] = build(
            mallory, "t=DOCKER.IO/library/busybox:latest", "FROM busybox\nRUN sleep 4\n"
        )

    worker = threading.Thread(target=hold, daemon=True)
    worker.start()
    time.sleep(1.5)
    tag = f"dgt-r23a-vb-{_rand()}:1"
    cleanup.append(("image", tag))
    r = build(victim, f"t={tag}", "FROM busybox\nRUN true\n")
    worker.join(20)
    assert r.status == 200, (r.status, r.body[:300], held.get("reply"))
    assert b"errorDetail" not in r.body, r.body[-300:]


def test_works_member_removes_the_tag_she_made(users, cleanup):
    """The legitimate neighbour: ``docker tag busybox proj:1`` then ``docker rmi
    proj:1`` by the same member; another member may not remove it."""
    repo = f"dgt-r23a-proj-{_rand()}"
    cleanup.append(("image", f"{repo}:1"))
    r = users["mallory"].request("POST", f"{V}/images/busybox/tag?repo={repo}&tag=1")
    assert r.status == 201, (r.status, r.body)
    r = users["victim"].request("DELETE", f"{V}/images/{repo}:1")
    assert r.status == 403, (r.status, r.body)
    r = users["mallory"].request("DELETE", f"{V}/images/{repo}:1")
    assert r.status == 200, (r.status, r.body)


def test_works_network_ls_holds_the_builtins_and_no_other_users_network(users, cleanup):
    """The legitimate neighbour of the built-in listing: a member's ``network ls``
    (plain, legacy list-form filters, ``type=custom``) shows host/none (bridge) beside
    her own networks, never another member's, and no containers of the built-ins."""
    mine = network(users["mallory"], f"dgt-r23a-m-{_rand()}", cleanup)
    theirs = network(users["victim"], f"dgt-r23a-v-{_rand()}", cleanup)

    def ls(flt: str = "") -> list[dict]:
        r = users["mallory"].request("GET", f"{V}/networks{flt}")
        assert r.status == 200, (r.status, r.body)
        return json.loads(r.body)

    plain = ls()
    names = {n["Name"] for n in plain}
    ids = {n["Id"] for n in plain}
    # (the private engine runs with --bridge=none: no bridge network there)
    assert {"host", "none"} <= names and mine in ids and theirs not in ids
    assert all(not n.get("Containers") for n in plain if n["Name"] in ("bridge", "host"))
    legacy = ls('?filters={"type":["builtin"],"name":["dgt-r23a"]}'.replace('"', "%22"))
    assert legacy == []
    custom = {n["Id"] for n in ls('?filters={"type":{"custom":true}}'.replace('"', "%22"))}
    assert mine in custom and theirs not in custom
    assert not {"bridge", "host", "none"} & {
        n["Name"] for n in ls('?filters={"type":{"custom":true}}'.replace('"', "%22"))
    }
