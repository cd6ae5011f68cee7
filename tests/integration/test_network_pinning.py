"""Network references are pinned to full IDs: dockerd looks a container's networks up
again at every start (``FindNetwork``: full ID, then name, then ID prefix), so a name
checked at create or connect must not be able to name another user's network later.

The attacks use a decoy network named after a prefix of the victim network's ID,
deleted before the start; each has its legitimate neighbour (the real CLI, or the
same request on a network that stays). Nothing here sends traffic anywhere.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from tests.integration import test_review_findings as first_round

# The first round's gate (members mallory and victim), raw requests.
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created, start, network, build = (
    first_round.created,
    first_round.start,
    first_round.network,
    first_round.build,
)


@pytest.fixture(scope="module")
def pin_member(gate, unix_user) -> str:
    """A member of the session gate of this module's own (registering the same name
    twice in one session fails), for the real CLI."""
    login, uid, _gid = unix_user("pinuser")
    gate.dockergate("user", "add", "m-pinuser", "--profile", "member", "--uid", str(uid))
    return login


pytestmark = pytest.mark.timeout(180)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def joined_networks(direct_client, cid: str) -> set[str]:
    settings = direct_client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
    return {str(n.get("NetworkID")) for n in settings.values()}


def decoy_for(users, cleanup, direct_client) -> tuple[str, str]:
    """The victim's network, and mallory's decoy named after a prefix of its ID. The
    gate refuses such a name (review 22a); the pinning must hold without that check,
    so the decoy is made on the daemon with mallory's owner label (as an admin, or a
    gate of another store, could have made it) and used through the gate."""
    victim_net = network(users["victim"], f"pin-vnet-{_rand()}", cleanup)
    r = users["mallory"].request(
        "POST", "/v1.41/networks/create", {"Name": victim_net[:12], "Driver": "bridge"}
    )
    assert r.status == 403 and b"looks like a network ID" in r.body, (r.status, r.body)
    decoy = direct_client.networks.create(
        victim_net[:12], driver="bridge", labels={"dockergate.owner": "rv-mallory"}
    ).id
    cleanup.append(("network", decoy))
    return victim_net, decoy


def delete_network(raw, network_id: str) -> int:
    return raw.request("DELETE", f"/v1.41/networks/{network_id}").status


# --------------------------------------------------------------- create pins full IDs


def test_create_pins_network_mode_and_endpoint_to_full_ids(users, cleanup, direct_client):
    """The neighbour of every attack below: a network by name works, and what dockerd
    stores is the full ID (the endpoint keyed by the network's name, as dockerd does)."""
    name = f"pin-own-{_rand()}"
    own = network(users["mallory"], name, cleanup)
    cid = created(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"NetworkMode": name},
            "NetworkingConfig": {"EndpointsConfig": {name: {"Aliases": ["web"]}}},
        },
        cleanup,
    )
    attrs = direct_client.api.inspect_container(cid)
    assert attrs["HostConfig"]["NetworkMode"] == own
    assert attrs["NetworkSettings"]["Networks"][name]["NetworkID"] == own
    assert start(users["mallory"], cid).status == 204
    endpoint = direct_client.api.inspect_container(cid)["NetworkSettings"]["Networks"][name]
    assert endpoint["NetworkID"] == own and "web" in endpoint["Aliases"]


def test_create_with_network_mode_only_gets_a_pinned_endpoint(users, cleanup, direct_client):
    name = f"pin-own-{_rand()}"
    own = network(users["mallory"], name, cleanup)
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": own[:10]}},
        cleanup,
    )
    stored = direct_client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
    assert stored == {name: stored[name]} and stored[name]["NetworkID"] == own


def test_decoy_deleted_before_start_cannot_redirect_network_mode(users, cleanup, direct_client):
    victim_net, decoy = decoy_for(users, cleanup, direct_client)
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": victim_net[:12]}},
        cleanup,
    )
    assert delete_network(users["mallory"], decoy) == 204
    r = start(users["mallory"], cid)
    assert r.status != 204, "started on a network that no longer exists"
    assert victim_net not in joined_networks(direct_client, cid)


def test_decoy_cannot_redirect_after_disconnecting_every_endpoint(users, cleanup, direct_client):
    """With no endpoint stored, dockerd falls back to ``NetworkMode`` at start."""
    victim_net, decoy = decoy_for(users, cleanup, direct_client)
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": victim_net[:12]}},
        cleanup,
    )
    r = users["mallory"].request("POST", f"/v1.41/networks/{decoy}/disconnect", {"Container": cid})
    assert r.status == 200, (r.status, r.body)
    assert delete_network(users["mallory"], decoy) == 204
    start(users["mallory"], cid)
    assert victim_net not in joined_networks(direct_client, cid)


# --------------------------------------------------------------- connect while stopped


def test_decoy_connected_while_stopped_cannot_redirect_at_start(users, cleanup, direct_client):
    """A stopped container stores a connect by the network's *name*: the gate pins the
    endpoint's ``NetworkID``."""
    victim_net, decoy = decoy_for(users, cleanup, direct_client)
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    r = users["mallory"].request("POST", f"/v1.41/networks/{decoy}/connect", {"Container": cid})
    assert r.status == 200, (r.status, r.body)
    stored = direct_client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
    assert stored[victim_net[:12]]["NetworkID"] == decoy
    assert delete_network(users["mallory"], decoy) == 204
    start(users["mallory"], cid)
    assert victim_net not in joined_networks(direct_client, cid)


def test_connect_stopped_and_running_containers_to_own_network(users, cleanup, direct_client):
    name = f"pin-own-{_rand()}"
    own = network(users["mallory"], name, cleanup)
    stopped = created(users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "60"]}, cleanup)
    running = created(users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "60"]}, cleanup)
    assert start(users["mallory"], running).status == 204
    for cid in (stopped, running):
        r = users["mallory"].request(
            "POST",
            f"/v1.41/networks/{name}/connect",
            {"Container": cid, "EndpointConfig": {"Aliases": ["db"]}},
        )
        assert r.status == 200, (r.status, r.body)
    assert start(users["mallory"], stopped).status == 204
    for cid in (stopped, running):
        assert own in joined_networks(direct_client, cid)


# --------------------------------------------------------------- start re-checks stored references


def test_start_refuses_a_stored_name_that_now_finds_another_users_network(
    users, cleanup, direct_client
):
    """A container made before the pinning (here: directly on the daemon, labelled as
    mallory's) holds the decoy's name; once the decoy is gone, the gate's start refuses
    what dockerd would find by ID prefix."""
    victim_net, decoy = decoy_for(users, cleanup, direct_client)
    owner = direct_client.api.inspect_network(decoy)["Labels"]["dockergate.owner"]
    cid = direct_client.api.create_container(
        "busybox",
        ["true"],
        labels={"dockergate.owner": owner},
        host_config=direct_client.api.create_host_config(network_mode=victim_net[:12]),
    )["Id"]
    cleanup.append(("container", cid))
    assert delete_network(users["mallory"], decoy) == 204
    r = start(users["mallory"], cid)
    assert r.status == 403 and b"network" in r.body, (r.status, r.body)
    assert victim_net not in joined_networks(direct_client, cid)


def test_start_accepts_a_stored_name_of_ones_own_network(users, cleanup, direct_client):
    name = f"pin-own-{_rand()}"
    own = network(users["mallory"], name, cleanup)
    owner = direct_client.api.inspect_network(own)["Labels"]["dockergate.owner"]
    cid = direct_client.api.create_container(
        "busybox",
        ["true"],
        labels={"dockergate.owner": owner},
        host_config=direct_client.api.create_host_config(network_mode=name),
    )["Id"]
    cleanup.append(("container", cid))
    r = start(users["mallory"], cid)
    assert r.status == 204, (r.status, r.body)
    assert own in joined_networks(direct_client, cid)


# --------------------------------------------------------------- builds on a network


def test_build_network_cannot_be_removed_while_the_build_runs(users, cleanup, direct_client):
    """The classic builder creates each RUN container with the pinned ID but starts it
    by the network's name: the network stays while the build runs (409), and can be
    removed after."""
    name = f"pin-build-{_rand()}"
    own = network(users["mallory"], name, cleanup)
    replies: list = []
    thread = threading.Thread(
        target=lambda: replies.append(
            build(users["mallory"], f"networkmode={name}&nocache=1", "FROM busybox\nRUN sleep 4\n")
        )
    )
    thread.start()
    try:
        deadline = time.time() + 30
        seen = False
        while time.time() < deadline and not seen:
            seen = any(
                c.attrs["HostConfig"]["NetworkMode"] == own
                for c in direct_client.containers.list(all=True, sparse=False)
            )
            time.sleep(0.1)
        assert seen, "the build's RUN container did not appear"
        assert delete_network(users["mallory"], name) == 409
        prune = users["mallory"].request("POST", "/v1.41/networks/prune")
        assert prune.status == 409, (prune.status, prune.body)
    finally:
        thread.join(60)
    assert replies and replies[0].status == 200, replies
    assert b"errorDetail" not in replies[0].body, replies[0].body[-400:]
    assert delete_network(users["mallory"], own) == 204


# --------------------------------------------------------------- the real CLI


def test_cli_run_on_a_network_by_name_stop_and_start_again(cli, pin_member, direct_client):
    tag = _rand()
    net, other, c = f"pin-cli-{tag}", f"pin-cli2-{tag}", f"pin-cli-c-{tag}"

    def run(*args: str):
        r = cli(list(args), user=pin_member)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout.strip()

    try:
        net_id = run("network", "create", net)
        other_id = run("network", "create", other)
        run(
            "run",
            "-d",
            "--name",
            c,
            "--network",
            net,
            "--network-alias",
            "web",
            "busybox",
            "sleep",
            "600",
        )
        run("stop", "-t", "0", c)
        run("network", "connect", other, c)
        run("start", c)
        shown = json.loads(run("inspect", c))[0]["NetworkSettings"]["Networks"]
        assert {n["NetworkID"] for n in shown.values()} == {net_id, other_id}
        assert "web" in shown[net]["Aliases"]
        run("network", "disconnect", other, c)
        run("restart", "-t", "0", c)
    finally:
        for ref in (c,):
            try:
                direct_client.containers.get(ref).remove(force=True)
            except Exception:
                pass
        for ref in (net, other):
            try:
                direct_client.networks.get(ref).remove()
            except Exception:
                pass


def test_container_references_are_forwarded_by_full_id(users, cleanup, direct_client):
    """``VolumesFrom`` and ``container:<x>`` modes name a container: what dockerd gets
    is the full ID of the one checked, never a name or prefix to look up again."""
    name = f"pin-src-{_rand()}"
    source = created(users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "60"]}, cleanup, name)
    assert start(users["mallory"], source).status == 204
    cid = created(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {
                "VolumesFrom": [f"{name}:ro"],
                "PidMode": f"container:{source[:10]}",
                "NetworkMode": f"container:{name}",
            },
        },
        cleanup,
    )
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert host["VolumesFrom"] == [f"{source}:ro"]
    assert host["PidMode"] == host["NetworkMode"] == f"container:{source}"
    assert start(users["mallory"], cid).status == 204
