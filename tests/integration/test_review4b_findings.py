"""Findings of review round 4b (attacks on this session's changes and on references
the daemon resolves again later). Every attack here succeeded on 5d41c47.

They reuse the first round's gate and profile (tests/integration/test_review_findings.py),
the build-check gate with a registry allowlist (tests/integration/test_build_checks.py:
``registries: [docker.io, "127.0.0.1:9"]``), the third round's loopback HTTP server in
the private dockerd's network namespace, and raw requests as members.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from tests.integration import test_build_checks as build_checks
from tests.integration import test_review3_findings as third_round
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

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
# The build-check gate (registry allowlist) and the daemon-side loopback server.
bgate = build_checks.bgate
people = build_checks.people
daemon_loopback_server = third_round.daemon_loopback_server

pytestmark = pytest.mark.timeout(180)


# --------------------------------------------------------------- references resolved again at start


def test_network_reference_cannot_be_redirected_to_another_users_network(
    users, cleanup, direct_client
):
    """``HostConfig.NetworkMode=<name>`` is checked at create (the name is mallory's
    network), but dockerd stores the name as written and looks it up again at every
    start (``FindNetwork``: full ID, name, then ID prefix); ``PidMode``/``IpcMode``
    ``container:<x>`` are pinned to a full ID by dockerd at create, networks are not.
    Mallory names her network after a prefix of the victim's network ID, creates a container on it, deletes her network
    (nothing is attached before the start) and starts the container: it joins the
    victim's network and reaches every container on it (an ``--internal`` network
    too). The prefix need not be known: one decoy per leading hex digit suffices."""
    victim_net = network(users["victim"], f"rv4b-vnet-{_rand()}", cleanup)
    r = users["mallory"].request("POST", "/v1.41/networks/create", {"Name": victim_net[:12]})
    if r.status == 403:
        return  # a name that is another network's ID prefix is refused (review 22a): secure
    assert r.status == 201, (r.status, r.body)
    decoy_net = json.loads(r.body)["Id"]
    cleanup.append(("network", decoy_net))
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": victim_net[:12]}},
        cleanup,
    )
    r = users["mallory"].request("DELETE", f"/v1.41/networks/{decoy_net}")
    assert r.status == 204, (r.status, r.body)
    r = start(users["mallory"], cid)
    if r.status != 204:
        return  # refused at start: secure
    joined = direct_client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
    ids = {n.get("NetworkID") for n in joined.values()}
    assert victim_net not in ids, f"mallory's container joined the victim's network: {joined}"


# --------------------------------------------------------------- daemon-side fetches (this session)


def test_login_server_address_is_read_as_dockerd_reads_it(bgate, people, daemon_loopback_server):
    """``/auth`` holds ``serveraddress`` to the profile's registries, but the gate takes
    the host after the *first* ``://`` anywhere in the string, while dockerd prefixes
    ``https://`` to an address without a scheme and takes ``url.Parse``'s host.
    ``127.0.0.1:PORT/x://docker.io`` is docker.io to the gate and 127.0.0.1:PORT to
    dockerd, which then sends ``GET /v2/`` (with the given credentials) to any host
    and port its own network reaches: a login probe of arbitrary hosts, loopback-only
    services included (status codes come back in the error)."""
    port, hits = daemon_loopback_server
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request(
        "POST",
        "/v1.41/auth",
        {"username": "x", "password": "y", "serveraddress": f"127.0.0.1:{port}/x://docker.io"},
    )
    time.sleep(0.5)
    fetched = hits.read_text()
    assert not fetched, f"dockerd contacted 127.0.0.1:{port} for the member: {fetched.split()}"
    assert r.status == 403, (r.status, r.body)


def test_login_to_an_allowed_registry_still_reaches_the_daemon(bgate, people):
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request(
        "POST",
        "/v1.41/auth",
        {"username": "x", "password": "y", "serveraddress": "http://127.0.0.1:9/v2/"},
    )
    assert r.status != 403 and b"dockergate:" not in r.body, (r.status, r.body)


def _commit(raw, cid: str, repo: str, changes: list[str], body: dict | None = None):
    query = "".join(f"&changes={quote(c, safe='')}" for c in changes)
    return raw.request(
        "POST", f"/v1.41/commit?container={cid}&repo={repo}&tag=1{query}", body or {}
    )


def test_commit_body_cannot_add_an_onbuild_add_of_a_url(users, cleanup, direct_client):
    """This session refused ``ONBUILD ADD <url>`` in commit ``changes``, but the commit
    *body* is a container config whose ``OnBuild`` dockerd keeps as the image's
    triggers: the same trigger goes in unchecked. Whoever's build is not read by the
    gate (admins, BuildKit profiles) and starts FROM the image makes dockerd fetch the
    URL from the host's network into a shared image."""
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    repo = f"dgt-review4b-onbuild-body-{_rand()}"
    r = _commit(users["mallory"], cid, repo, [], {"OnBuild": ["ADD http://127.0.0.1:9/x /loot"]})
    cleanup.append(("image", f"{repo}:1"))
    if r.status != 201:
        return  # refused: secure
    triggers = direct_client.api.inspect_image(f"{repo}:1")["Config"].get("OnBuild") or []
    assert not any("://" in t for t in triggers), f"the image carries {triggers}"


def test_commit_changes_cannot_join_lines_into_an_onbuild_add_of_a_url(
    users, cleanup, direct_client
):
    """The gate parses each ``changes`` value on its own; dockerd joins them with
    newlines into one Dockerfile. A first value ``# escape=``` is a parser directive
    for the whole text, a value ``ONBUILD ADD ``` ends in that escape (no ``\\`` or
    ``$`` for the gate to see) and the next value (``http://...``) is its continuation:
    dockerd stores ``ONBUILD ADD http://...``."""
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    repo = f"dgt-review4b-onbuild-join-{_rand()}"
    changes = ["# escape=`", "ONBUILD ADD `", "http://127.0.0.1:9/x /loot"]
    r = _commit(users["mallory"], cid, repo, changes)
    cleanup.append(("image", f"{repo}:1"))
    if r.status != 201:
        return  # refused: secure
    triggers = direct_client.api.inspect_image(f"{repo}:1")["Config"].get("OnBuild") or []
    assert not any("://" in t for t in triggers), f"the image carries {triggers}"


def test_commit_changes_cannot_join_lines_into_a_gate_label(users, cleanup, direct_client):
    """The same joining writes the gate's own labels, which ``changes`` may not: the
    ``LABEL`` line applies after the body's labels, so the image says it was built by
    the victim (``dockergate.built-by``), or claims an owner (``dockergate.owner``):
    containers the victim then makes from it count as imprinted, i.e. nobody's."""
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    repo = f"dgt-review4b-label-join-{_rand()}"
    changes = ["# escape=`", "LABEL `", "dockergate.built-by=rv-victim dockergate.owner=rv-victim"]
    r = _commit(users["mallory"], cid, repo, changes)
    cleanup.append(("image", f"{repo}:1"))
    if r.status != 201:
        return  # refused: secure
    labels = direct_client.api.inspect_image(f"{repo}:1")["Config"].get("Labels") or {}
    assert labels.get("dockergate.built-by") == "rv-mallory", labels
    assert labels.get("dockergate.owner") == "", labels


# --------------------------------------------------------------- names of other users' objects


def test_container_list_since_filter_does_not_reveal_other_users_names(users, cleanup):
    """``GET /containers/json?filters={"since":[x]}`` gets the owner label pushed in,
    but dockerd first resolves ``x`` (exact ID or name) over *every* container and
    fails (500 on 20.10) when there is none: 200 for another user's container name or ID,
    an error for a free one. (``/tasks?filters={"service":[x]}`` is the same oracle for
    service names and ID prefixes.)"""
    name = f"rv4b-hidden-{_rand()}"
    created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup, name)

    def status(ref: str) -> int:
        flt = quote(json.dumps({"since": [ref]}), safe="")
        return users["mallory"].request("GET", f"/v1.41/containers/json?all=1&filters={flt}").status

    assert status(name) == status(f"rv4b-free-{_rand()}"), "another user's name answers differently"


def test_container_list_since_filter_works_on_ones_own_container(users, cleanup):
    older = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    name = f"rv4b-own-{_rand()}"
    created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup, name)
    newer = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    for key, expected, unexpected in (("since", newer, older), ("before", older, newer)):
        flt = quote(json.dumps({key: [name]}), safe="")
        r = users["mallory"].request("GET", f"/v1.41/containers/json?all=1&filters={flt}")
        assert r.status == 200, (r.status, r.body)
        ids = {c["Id"] for c in json.loads(r.body)}
        assert expected in ids and unexpected not in ids, (key, ids)


def test_task_list_service_filter_does_not_reveal_other_users_services(
    users, direct_client, cleanup
):
    """``/tasks?filters={"service":[x]}``: dockerd looks ``x`` up among every service
    and fails when none matches. Another user's service answers as a free name does;
    one's own is found by name."""
    import docker.types

    def service(owner_raw, name: str) -> str:
        owner = users_owner(owner_raw)
        svc = direct_client.services.create(
            "busybox",
            ["sleep", "60"],
            name=name,
            labels={"dockergate.owner": owner},
            mode=docker.types.ServiceMode("replicated", replicas=0),
        )
        cleanup.append(("service", svc.id))
        return svc.id

    def users_owner(raw) -> str:
        r = raw.request("GET", "/_dockergate/whoami")
        return json.loads(r.body)["user"]

    theirs = f"rv4b-svc-{_rand()}"
    mine = f"rv4b-svc-{_rand()}"
    service(users["victim"], theirs)
    mine_id = service(users["mallory"], mine)

    def tasks(ref: str):
        flt = quote(json.dumps({"service": [ref]}), safe="")
        return users["mallory"].request("GET", f"/v1.41/tasks?filters={flt}")

    assert tasks(theirs).status == tasks(f"rv4b-free-{_rand()}").status == 404
    r = tasks(mine)
    assert r.status == 200, (r.status, r.body)
    assert all(t["ServiceID"] == mine_id for t in json.loads(r.body))
