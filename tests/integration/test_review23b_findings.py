"""Review 23b: findings in today's changes (tags a member named, network name checks).

Each test states the expected behaviour; a failing test is a finding.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.timeout(180)

OWNER = "dockergate.owner"
MEMBER = "r23b-m"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def member(gate, unix_user):
    u = unix_user("r23bm")
    gate.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(u.uid))
    return u


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    flt = {"label": f"{OWNER}={MEMBER}"}
    for c in direct_client.containers.list(all=True, filters=flt):
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)
    for n in direct_client.networks.list(filters=flt):
        with contextlib.suppress(Exception):
            n.remove()
    for img in direct_client.images.list():
        for tag in img.tags:
            if tag.startswith("r23b"):
                with contextlib.suppress(Exception):
                    direct_client.images.remove(tag, force=True)


def ok(r) -> str:
    assert r.returncode == 0, f"{r.args}\nrc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def test_finding_an_admins_tag_on_the_same_image_stays_the_members(cli, member, direct_client):
    """Severity High (a member takes over a tag an admin set, then moves it). The
    image_tags row says who named a tag and which image it named; it "counts only
    while the tag still names that image (an admin's later tag, through the gate or
    not, ends it)" (models.ImageTag). Nothing ends it: an admin's tag, pull, build or
    commit through the gate (hold_admin_tag) never touches the row, so when the admin
    later puts the same name on the same image (a re-pull of python:3 after a member
    tagged python:3.12 as python:3 -- the same image ID on Docker Hub; a re-tag), the
    member still owns it: they may remove it and build under it, so other users'
    ``FROM <tag>`` builds run the member's image. Expected: an admin's tag (and any
    pull of that name) through the gate ends a member's claim; here the member's rmi
    of the admin's tag is refused."""
    name = f"r23b-base-{_rand()}:1"
    ok(cli(["tag", "busybox", name], user=member))  # the member names it ...
    ok(cli(["rmi", name], user=member))  # ... and removes the name again
    ok(cli(["tag", "busybox", name]))  # later, the admin tags busybox under that name
    try:
        rmi = cli(["rmi", name], user=member)
        assert rmi.returncode != 0, "the member removed the admin's tag"
    finally:
        with contextlib.suppress(Exception):
            direct_client.images.remove(name)


def test_finding_network_name_check_tells_other_users_network_ids(cli, member, direct_client):
    """Severity Medium (an oracle for other users' network IDs, and short names that
    fail at random). network create refuses a member's all-hex name that is the
    start of any network's ID (_check_not_an_id_prefix). The answer depends on the IDs
    of networks the member may not see: with <= 16 tries per character a member reads
    another user's network ID (the gate hides those, review 21b), and ordinary names
    such as ``db``, ``cafe`` or ``2024`` are refused whenever some network's ID starts
    so. Expected: a name's fate does not depend on other users' network IDs (e.g.
    refuse every all-hex name, or only ones of 12+ characters, alike for all)."""
    other = direct_client.networks.create(f"r23b-other-{_rand()}", labels={OWNER: "someone"})
    try:
        ids = [n.id for n in direct_client.networks.list()]
        taken = other.id[:3]
        free = next(
            p
            for p in (f"{a}{b}{c}" for a in "0123456789abcdef" for b in "0123" for c in "0f")
            if not any(i.startswith(p) for i in ids)
        )
        r_taken = cli(["network", "create", taken], user=member)
        r_free = cli(["network", "create", free], user=member)
        with contextlib.suppress(Exception):
            cli(["network", "rm", free], user=member)
        with contextlib.suppress(Exception):
            cli(["network", "rm", taken], user=member)
        assert (r_taken.returncode == 0) == (r_free.returncode == 0), (
            f"{taken!r} (start of another user's network ID): rc={r_taken.returncode} "
            f"{r_taken.stderr.strip()}; {free!r}: rc={r_free.returncode}"
        )
    finally:
        other.remove()


def test_finding_a_member_deletes_an_image_they_only_tagged(cli, member, direct_client, tmp_path):
    """Severity Medium (a member deletes another user's image). ``docker tag <image>
    NEW`` is allowed on any image (a new name), and now makes NEW the member's: ``docker
    rmi NEW`` passes the gate (named_by_caller). When NEW is the image's only tag (an
    untagged build result, an image whose tag moved on to a rebuild), dockerd untags
    *and deletes the image*: the member removes an image someone else built, which
    the built-by rule exists to prevent. Expected: a tag a member only named is
    untagged, never the image's last reference (refuse the rmi when it is the image's
    only tag and the image is not the caller's)."""
    (tmp_path / "Dockerfile").write_text(f"FROM busybox\nLABEL r23b={_rand()}\n")
    image_id = ok(cli(["build", "-q", str(tmp_path)], env={"DOCKER_BUILDKIT": "0"})).strip()
    name = f"r23b-only-{_rand()}:1"
    try:
        ok(cli(["tag", image_id, name], user=member))
        ok(cli(["image", "inspect", image_id], listener="direct"))  # there before the rmi
        rmi = cli(["rmi", name], user=member)
        inspect = cli(["image", "inspect", image_id], listener="direct")
        assert inspect.returncode == 0, (
            f"the member's rmi deleted the admin's image: {rmi.stdout} {inspect.stderr}"
        )
    finally:
        with contextlib.suppress(Exception):
            direct_client.images.remove(image_id, force=True)
