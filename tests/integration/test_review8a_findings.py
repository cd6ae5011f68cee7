"""Findings of review round 8a (attacks on rmi/image prune for members, anonymous
volumes, event tombstones, docker info counts and the parsing changes of today).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import docker.errors
import pytest

from tests.integration import test_review_findings as first_round

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, build, created, start, network = (
    first_round._rand,
    first_round.build,
    first_round.created,
    first_round.start,
    first_round.network,
)

pytestmark = pytest.mark.timeout(180)


def _built_id(reply) -> str:
    assert reply.status == 200, (reply.status, reply.body[-2000:])
    ids = []
    for line in reply.body.decode(errors="replace").splitlines():
        if line.strip():
            msg = json.loads(line)
            assert "error" not in msg, msg
            ids.append(((msg.get("aux") or {}).get("ID")) or "")
    found = [i for i in ids if i]
    assert found, reply.body[-2000:]
    return found[-1]


def _exists(direct_client, image_id: str) -> bool:
    try:
        direct_client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def _victim_untagged_image(users, cleanup) -> str:
    """An image the victim built without a tag (``docker build -q .``, run by ID)."""
    vid = _built_id(build(users["victim"], "rm=1", f"FROM busybox\nLABEL v={_rand()}\n"))
    cleanup.append(("image", vid))
    return vid


# --------------------------------------------------------------- rmi / prune of parents


def test_rmi_of_own_image_does_not_prune_another_users_parent(users, cleanup, direct_client):
    """``docker rmi`` is forwarded without ``noprune``: dockerd's ``imageDeleteHelper``
    then deletes the removed image's parent chain quietly while each parent is untagged,
    childless and unused (image_delete.go), whoever built it. Mallory builds FROM the
    victim's untagged image (by ID), removes her own build: the victim's image goes."""
    vid = _victim_untagged_image(users, cleanup)
    tag = f"rv8a-m-{_rand()}:1"
    mid = _built_id(build(users["mallory"], f"t={tag}&rm=1", f"FROM {vid}\nLABEL m={_rand()}\n"))
    cleanup.append(("image", mid))
    r = users["mallory"].request("DELETE", f"/v1.41/images/{tag}")
    assert r.status == 200, (r.status, r.body)
    assert not _exists(direct_client, mid)
    assert _exists(direct_client, vid), "mallory's rmi deleted the victim's image (parent prune)"


def test_image_prune_does_not_prune_another_users_parent(users, cleanup, direct_client):
    """``image prune`` deletes each dangling head matching the filters with
    ``ImageDelete(id, false, true)`` (image_prune.go): prune=true, so the parents go
    too, unlabelled. The gate's built-by filter only applies to the heads."""
    vid = _victim_untagged_image(users, cleanup)
    mid = _built_id(build(users["mallory"], "rm=1", f"FROM {vid}\nLABEL m={_rand()}\n"))
    cleanup.append(("image", mid))
    r = users["mallory"].request("POST", "/v1.41/images/prune")
    assert r.status == 200, (r.status, r.body)
    assert not _exists(direct_client, mid)
    assert _exists(direct_client, vid), "mallory's prune deleted the victim's image (parent)"


def test_rmi_of_own_image_still_works(users, cleanup, direct_client):
    """Neighbour: a member removes her own build (and its own untagged parents)."""
    tag = f"rv8a-m-{_rand()}:1"
    mid = _built_id(build(users["mallory"], f"t={tag}&rm=1", f"FROM busybox\nLABEL m={_rand()}\n"))
    cleanup.append(("image", mid))
    r = users["mallory"].request("DELETE", f"/v1.41/images/{tag}")
    assert r.status == 200, (r.status, r.body)
    assert not _exists(direct_client, mid)


# --------------------------------------------------------------- events of removed networks


def _network_events(raw, since: int, until: int) -> list[dict]:
    filters = quote(json.dumps({"type": ["network"]}))
    r = raw.request("GET", f"/v1.41/events?since={since}&until={until}&filters={filters}")
    assert r.status == 200, (r.status, r.body)
    return [json.loads(line) for line in r.body.splitlines() if line.strip()]


def test_removed_networks_events_not_claimed_by_a_network_named_after_its_id(
    users, cleanup, direct_client
):
    """A replayed network event is judged by ``resolve(network, Actor.ID)``
    (``EventOwnership.allows``), and the tombstone (``removed_owner``) is read only
    when that finds nothing. But dockerd's network inspect finds a network by full ID,
    then by *name*, then by ID prefix: once the victim's network is gone, mallory
    creates a network named after its full ID, and ``events --since`` shows her every
    event of the victim's network (create, connect with the victim's container ID,
    disconnect, destroy)."""
    since = int(time.time()) - 1
    victim_net = network(users["victim"], f"rv8a-vnet-{_rand()}", cleanup)
    cid = created(
        users["victim"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": victim_net}},
        cleanup,
    )
    r = start(users["victim"], cid)
    assert r.status == 204, (r.status, r.body)
    r = users["victim"].request("DELETE", f"/v1.41/containers/{cid}?force=1")
    assert r.status == 204, (r.status, r.body)
    r = users["victim"].request("DELETE", f"/v1.41/networks/{victim_net}")
    assert r.status == 204, (r.status, r.body)
    # Named after the gone network's ID: the gate refuses such names now (review 23b),
    # so the decoy is made on the daemon with mallory's label; the events must hold.
    r = users["mallory"].request("POST", "/v1.41/networks/create", {"Name": victim_net})
    assert r.status == 403 and b"looks like a network ID" in r.body, (r.status, r.body)
    decoy = direct_client.networks.create(victim_net, labels={"dockergate.owner": "rv-mallory"})
    cleanup.append(("network", decoy.id))
    until = int(time.time()) + 1
    time.sleep(1.5)
    seen = _network_events(users["mallory"], since, until)
    leaked = [e for e in seen if (e.get("Actor") or {}).get("ID") == victim_net]
    assert not leaked, f"mallory saw the removed victim network's events: {leaked}"


def test_removed_own_network_events_show(users, cleanup):
    """Neighbour: a member's own network, removed through the gate, keeps its events
    in a replay (the tombstone)."""
    since = int(time.time()) - 1
    own = network(users["mallory"], f"rv8a-mnet-{_rand()}", cleanup)
    r = users["mallory"].request("DELETE", f"/v1.41/networks/{own}")
    assert r.status == 204, (r.status, r.body)
    until = int(time.time()) + 1
    time.sleep(1.5)
    seen = _network_events(users["mallory"], since, until)
    assert any((e.get("Actor") or {}).get("ID") == own for e in seen), seen


# --------------------------------------------------------------- Dockerfile continuation


HIDDEN_FROM = (
    "ARG IMG=127.0.0.1:9/rv8a:1\n"
    "ARG Z=\\\\\n"  # ends in two escapes: no continuation for dockerd, one for the gate
    "FROM busybox\n"
    "ARG IMG=busybox\n"
    "FROM $IMG\n"
    "RUN true\n"
)


def test_base_image_hidden_behind_a_double_escape_is_checked(users):
    """The gate joins ``FROM busybox`` into the ARG line ending in ``\\\\`` (BuildKit's
    continuation needs a non-escape before the final escape), so it reads the stage's
    ``ARG IMG=busybox`` as a meta ARG and resolves the second FROM to busybox. dockerd
    expands it with the meta ARG: it pulls ``127.0.0.1:9/rv8a:1``, from a registry the
    profile does not allow (and would run that image's unread ONBUILD triggers)."""
    r = build(users["mallory"], "rm=1", HIDDEN_FROM)
    assert r.status == 403, (r.status, r.body[-600:])


def test_base_image_from_an_unlisted_registry_is_refused(users):
    """Neighbour: the same base named plainly is refused."""
    r = build(users["mallory"], "rm=1", "FROM 127.0.0.1:9/rv8a:1\nRUN true\n")
    assert r.status == 403, (r.status, r.body[-600:])


# --------------------------------------------------------------- read-only shared volumes


@pytest.mark.parametrize("how", ["bind", "mount"])
def test_read_only_shared_volume_is_not_filled_from_the_image(
    users, shared_name, cleanup, direct_client, how
):
    """dockerd copies the image's files at the mount point into an *empty* volume when
    a container is created (``populateVolumes``: any volume mount with ``CopyData``,
    read-only or not; only ``nocopy`` / ``VolumeOptions.NoCopy`` stops it). So a member
    who may mount the shared volume read-only only writes it anyway while it is empty:
    the image's /etc (or any content of an image she built) lands in the volume every
    other user reads. The gate should forward read-only shared mounts with nocopy."""
    direct_client.volumes.create(shared_name)
    host: dict = (
        {"Binds": [f"{shared_name}:/etc:ro"]}
        if how == "bind"
        else {
            "Mounts": [
                {"Type": "volume", "Source": shared_name, "Target": "/etc", "ReadOnly": True}
            ]
        }
    )
    try:
        created(
            users["mallory"], {"Image": "busybox", "Cmd": ["true"], "HostConfig": host}, cleanup
        )
        mountpoint = Path(direct_client.volumes.get(shared_name).attrs["Mountpoint"])
        written = sorted(p.name for p in mountpoint.iterdir())
        assert not written, f"mallory filled the read-only shared volume: {written}"
    finally:
        for container in direct_client.containers.list(all=True):
            if any(m.get("Name") == shared_name for m in container.attrs.get("Mounts") or []):
                container.remove(force=True)
        direct_client.volumes.get(shared_name).remove(force=True)
