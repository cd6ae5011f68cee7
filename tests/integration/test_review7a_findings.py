"""Findings of review round 7a (attacks on network pinning, list-filter references,
volume events and the build/pull changes of b3fc352 and its parents).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration import test_review_findings as first_round

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
    network(users["mallory"], victim_net, cleanup)
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
