"""Findings of review round 7a (attacks on network pinning, list-filter references,
volume events and the build/pull changes of b3fc352 and its parents).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import _read_reply

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, created, start, network = (
    first_round._rand,
    first_round.created,
    first_round.start,
    first_round.network,
)

pytestmark = pytest.mark.timeout(180)


# --------------------------------------------------------------- references dockerd resolves at restore


def _stored_host_config(direct_client, cid: str) -> dict:
    root = Path(direct_client.info()["DockerRootDir"])
    return json.loads((root / "containers" / cid / "hostconfig.json").read_text())


def test_links_are_stored_by_full_id(users, cleanup, direct_client):
    """``HostConfig.Links`` is owner-checked at create but forwarded as written; dockerd
    stores it so, and at every daemon start ``restore`` -> ``registerLinks`` looks each
    name up again with ``GetContainer`` (full ID, name, ID prefix; daemon_unix.go).
    Mallory names a decoy container after a prefix of the victim's container ID, links
    to it, renames the decoy: after the next dockerd restart her container is linked to
    the victim's, and its start hands her the victim's environment (``PEER_ENV_*``) and
    address. The stored link name is resolved here exactly as ``registerLinks`` would."""
    victim = created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    decoy = created(
        users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup, name=victim[:12]
    )
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Links": [f"{victim[:12]}:peer"]}},
        cleanup,
    )
    r = users["mallory"].request(
        "POST", f"/v1.41/containers/{decoy}/rename?name=rv7a-decoy-{_rand()}"
    )
    assert r.status == 204, (r.status, r.body)
    for link in _stored_host_config(direct_client, cid).get("Links") or []:
        name = link.split(":", 1)[0].lstrip("/")
        found = direct_client.api.inspect_container(name)["Id"]
        assert found != victim, f"mallory's stored link {link!r} now names the victim's container"


def test_links_to_ones_own_container_work(users, cleanup, direct_client):
    """Neighbour: a link to one's own container by name is accepted and resolves to it."""
    own = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    name = direct_client.api.inspect_container(own)["Name"].lstrip("/")
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Links": [f"{name}:peer"]}},
        cleanup,
    )
    links = direct_client.api.inspect_container(cid)["HostConfig"]["Links"]
    assert links and links[0].split(":", 1)[0].lstrip("/") == name, links


# --------------------------------------------------------------- container:<x> modes left unpinned


def _send_async(raw, method: str, path: str, body: dict | None, out: dict, key: str):
    """Send on a socket connected now; read the answer in a thread."""
    data = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", "Host: docker"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    sock = raw.connect()

    def run() -> None:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            out[key] = _read_reply(sock)
        finally:
            sock.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("field", ["NetworkMode", "PidMode", "VolumesFrom", "Links"])
def test_container_reference_cannot_change_hands_while_the_create_waits(
    users, cleanup, direct_client, field
):
    """``container:<x>`` in ``NetworkMode``/``PidMode``/``IpcMode`` is owner-checked,
    then forwarded as written; dockerd turns it into ``container:<full ID>`` at create
    (``adaptSharedNamespaceContainer``, daemon_unix.go) by looking ``<x>`` up *again*
    (full ID, name, ID prefix). The create waits for the user's quota lock *after*
    the check, and a ``restart?t=N`` of the user's own container holds that lock for
    N seconds: mallory's decoy container, named after a prefix of the victim's
    container ID, passes the check, is renamed while the create waits, and dockerd
    pins the victim's container. The start checks no ``container:`` mode: mallory's
    container joins the victim's network (or PID) namespace. ``VolumesFrom`` is read
    once, at that create (``registerMountPoints``): mallory gets the victim's volumes,
    writable; ``Links`` too (``registerLinks``): the start hands mallory the victim's
    environment as ``PEER_ENV_*``."""
    victim = created(
        users["victim"],
        {"Image": "busybox", "Cmd": ["sleep", "600"], "Volumes": {"/secret": {}}},
        cleanup,
    )
    assert start(users["victim"], victim).status == 204
    decoy = created(
        users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "600"]}, cleanup, name=victim[:12]
    )
    holder = created(users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "600"]}, cleanup)
    assert start(users["mallory"], holder).status == 204
    out: dict = {}
    # sleep as PID 1 ignores SIGTERM: the restart waits t=4 seconds, holding the lock.
    restarting = _send_async(
        users["mallory"], "POST", f"/v1.41/containers/{holder}/restart?t=4", None, out, "r"
    )
    time.sleep(0.7)
    reference: object = f"container:{victim[:12]}"
    if field == "VolumesFrom":
        reference = [victim[:12]]
    elif field == "Links":
        reference = [f"{victim[:12]}:peer"]
    body = {"Image": "busybox", "Cmd": ["sleep", "30"], "HostConfig": {field: reference}}
    creating = _send_async(users["mallory"], "POST", "/v1.41/containers/create", body, out, "c")
    time.sleep(0.7)
    r = users["mallory"].request(
        "POST", f"/v1.41/containers/{decoy}/rename?name=rv7a-decoy-{_rand()}"
    )
    assert r.status == 204, (r.status, r.body)
    creating.join(30)
    restarting.join(30)
    if out["c"].status != 201:
        return  # refused: secure
    cid = json.loads(out["c"].body)["Id"]
    cleanup.append(("container", cid))
    if field == "VolumesFrom":
        theirs = {m.get("Name") for m in direct_client.api.inspect_container(victim)["Mounts"]}
        mine = {m.get("Name") for m in direct_client.api.inspect_container(cid)["Mounts"]}
        assert not theirs & mine, f"mallory's container mounts the victim's volumes: {mine}"
        return
    if field == "Links":
        # inspect lists the links dockerd registered at create: the child's name first
        theirs = direct_client.api.inspect_container(victim)["Name"]
        links = direct_client.api.inspect_container(cid)["HostConfig"]["Links"] or []
        linked = {link.split(":", 1)[0] for link in links}
        assert theirs not in linked, f"mallory's container is linked to the victim's: {links}"
        return
    stored = direct_client.api.inspect_container(cid)["HostConfig"][field]
    r = start(users["mallory"], cid)
    if r.status != 204:
        return  # refused at start: secure
    assert stored != f"container:{victim}", (
        f"mallory's container shares the victim's container's namespace: {field}={stored}"
    )


def test_container_mode_on_ones_own_container_works(users, cleanup, direct_client):
    """Neighbour: ``--network container:<own name>`` and ``--pid container:<own>`` work."""
    own = created(users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "600"]}, cleanup)
    assert start(users["mallory"], own).status == 204
    name = direct_client.api.inspect_container(own)["Name"].lstrip("/")
    cid = created(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["sleep", "30"],
            "HostConfig": {"NetworkMode": f"container:{name}", "PidMode": f"container:{own[:12]}"},
        },
        cleanup,
    )
    r = start(users["mallory"], cid)
    assert r.status == 204, (r.status, r.body)
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert host["NetworkMode"] == host["PidMode"] == f"container:{own}", host


# --------------------------------------------------------------- events


def test_network_named_after_another_users_network_id_does_not_show_its_events(
    users, cleanup, direct_client
):
    """The event stream's seed remembers the user's networks by ID *and by name*
    (``EventOwnership.seed``), and a network event's ``Actor.ID`` is the network's ID
    (``LogNetworkEventWithAttributes``: ``nw.ID()``). A network mallory names after the
    full ID of the victim's network makes every event of the victim's network hers:
    connects and disconnects with the victim's container IDs."""
    victim_net = network(users["victim"], f"rv7a-vnet-{_rand()}", cleanup)
    # The gate now refuses a member's network named after an ID (review 22a): the
    # event seed must hold without it, so mallory's decoy is made on the daemon.
    refused = users["mallory"].request("POST", "/v1.41/networks/create", {"Name": victim_net})
    assert refused.status == 403, (refused.status, refused.body)
    decoy = direct_client.networks.create(victim_net, labels={"dockergate.owner": "rv-mallory"})
    cleanup.append(("network", decoy.id))
    since = int(time.time()) - 1
    cid = created(
        users["victim"],
        {"Image": "busybox", "Cmd": ["sleep", "30"], "HostConfig": {"NetworkMode": victim_net}},
        cleanup,
    )
    r = start(users["victim"], cid)
    assert r.status == 204, (r.status, r.body)
    until = int(time.time()) + 1
    time.sleep(1.5)
    filters = quote(json.dumps({"type": ["network"]}))
    r = users["mallory"].request(
        "GET", f"/v1.41/events?since={since}&until={until}&filters={filters}"
    )
    assert r.status == 200, (r.status, r.body)
    seen = [json.loads(line) for line in r.body.splitlines() if line.strip()]
    leaked = [e for e in seen if (e.get("Actor") or {}).get("ID") == victim_net]
    assert not leaked, f"mallory saw the victim's network events: {leaked}"


def test_own_network_events_show(users, cleanup):
    """Neighbour: the user's own network's connect event shows in a replay."""
    own_net = network(users["mallory"], f"rv7a-mnet-{_rand()}", cleanup)
    since = int(time.time()) - 1
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["sleep", "30"], "HostConfig": {"NetworkMode": own_net}},
        cleanup,
    )
    r = start(users["mallory"], cid)
    assert r.status == 204, (r.status, r.body)
    until = int(time.time()) + 1
    time.sleep(1.5)
    filters = quote(json.dumps({"type": ["network"]}))
    r = users["mallory"].request(
        "GET", f"/v1.41/events?since={since}&until={until}&filters={filters}"
    )
    assert r.status == 200, (r.status, r.body)
    seen = [json.loads(line) for line in r.body.splitlines() if line.strip()]
    assert any((e.get("Actor") or {}).get("ID") == own_net for e in seen), seen
