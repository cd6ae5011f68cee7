"""Review round 21b: a member (and an intern) trying to escape or hurt others through
the less-walked routes (Swarm service modes and updates, network create options,
config-only networks, secret drivers and templating, volume driver options).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the secure
behaviour (a ``dockergate:`` refusal, or the other user's object left usable and
unnamed). The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate, profile (64m default and 256m maximum memory, a
512m memory quota), users and cleanup (tests/integration/test_review_findings.py)
and raw requests as members. Services are placed on a node label no node has, so
their tasks stay pending: the quota counts specs, and nothing runs. Only the local
``busybox`` image is used; traffic stays on loopback.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration import test_review_findings as first_round

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup

pytestmark = pytest.mark.timeout(120)

V = "/v1.41"
MIB = 1 << 20
QUOTA = 512 * MIB  # the review member profile's quota.memory


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _spec(mode: dict, memory: int = 128 * MIB, name: str | None = None) -> dict:
    """A service whose tasks can never be placed (no node has the label): the spec is
    what the quota counts; nothing starts."""
    return {
        "Name": name or f"dgt-r21b-{_rand()}",
        "Mode": mode,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "300"]},
            "Resources": {"Limits": {"MemoryBytes": memory}},
            "Placement": {"Constraints": ["node.labels.dgt-r21b-nowhere==1"]},
        },
    }


def _create_service(raw, spec: dict, cleanup):
    r = raw.request("POST", f"{V}/services/create", spec)
    if r.status == 201:
        cleanup.append(("service", json.loads(r.body)["ID"]))
    return r


def _replicas(direct_client, service_id: str) -> dict:
    return direct_client.api.inspect_service(service_id)["Spec"]["Mode"]


# ------------------------------------------------ service modes: the memory quota


def test_finding_service_mode_global_null_hides_the_replicas_from_the_quota(
    users, cleanup, direct_client
):
    """``Mode: {"Global": null, "Replicated": {"Replicas": 12}}``: ``service_tasks``
    asks ``"Global" in mode`` and counts one task per node (1-2 here), while Go
    decodes ``null`` into a nil ``*GlobalService``, so dockerd sees one mode only,
    replicated with 12 replicas (``docker service inspect`` shows
    ``{"Replicated": {"Replicas": 12}}``). 12 x 128m = 1536m against a 512m quota:
    the gate itself then reports "1536m used" to the next request. Severity: Medium
    (the memory quota, the profile's main limit on what a member holds of the swarm,
    bypassed threefold with one request; any multiple works). Expected: refused with
    a ``dockergate:`` quota message, as the same spec without the ``null`` is."""
    spec = _spec({"Global": None, "Replicated": {"Replicas": 12}})
    r = _create_service(users["mallory"], spec, cleanup)
    if r.status == 201:
        mode = _replicas(direct_client, json.loads(r.body)["ID"])
        pytest.fail(f"12 x 128m passed a 512m quota; dockerd runs Mode={mode}")
    assert r.status == 403 and b"dockergate:" in r.body, (r.status, r.body)


def test_finding_service_mode_replicated_job_null_counts_one_task(users, cleanup, direct_client):
    """``Mode: {"ReplicatedJob": null, "Replicated": {"Replicas": 8}}``: ``is_job`` and
    ``service_tasks`` take ``"ReplicatedJob" in mode`` for a job of
    ``MaxConcurrent``/``TotalCompletions`` 1, so one 128m task is counted; dockerd
    ignores the nil job and runs a replicated service of 8 (1024m against 512m).
    Severity: Medium (memory quota bypass). Expected: a ``dockergate:`` refusal."""
    spec = _spec({"ReplicatedJob": None, "Replicated": {"Replicas": 8}})
    r = _create_service(users["mallory"], spec, cleanup)
    if r.status == 201:
        mode = _replicas(direct_client, json.loads(r.body)["ID"])
        pytest.fail(f"8 x 128m passed a 512m quota; dockerd runs Mode={mode}")
    assert r.status == 403 and b"dockergate:" in r.body, (r.status, r.body)


def test_finding_service_scale_with_global_null_passes_the_quota(users, cleanup, direct_client):
    """The same ``"Global": null`` on ``POST /services/{id}/update`` (what ``docker
    service scale`` sends, a whole spec): a 1-replica service of the member's is
    scaled to 16 x 128m = 2048m against the 512m quota. Severity: Medium.
    Expected: a ``dockergate:`` refusal, the service left at 1 replica."""
    r = _create_service(users["mallory"], _spec({"Replicated": {"Replicas": 1}}), cleanup)
    assert r.status == 201, (r.status, r.body)
    sid = json.loads(r.body)["ID"]
    current = direct_client.api.inspect_service(sid)
    spec = current["Spec"]
    spec["Mode"] = {"Global": None, "Replicated": {"Replicas": 16}}
    version = current["Version"]["Index"]
    up = users["mallory"].request("POST", f"{V}/services/{sid}/update?version={version}", spec)
    mode = _replicas(direct_client, sid)
    assert up.status == 403 and b"dockergate:" in up.body, (up.status, up.body, mode)
    assert mode == {"Replicated": {"Replicas": 1}}, mode


def test_works_service_quota_counts_replicas_and_global(users, cleanup, direct_client):
    """The neighbours: the same 12 x 128m without the ``null`` is refused for the
    quota; 2 x 128m passes, a global service (one task per node) passes, and a
    replicated job of 2 passes."""
    m = users["mallory"]
    over = _create_service(m, _spec({"Replicated": {"Replicas": 12}}), cleanup)
    assert over.status == 403 and b"quota" in over.body, (over.status, over.body)
    for mode in (
        {"Replicated": {"Replicas": 2}},
        {"Global": {}},
        {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 2}},
    ):
        r = _create_service(m, _spec(mode, memory=64 * MIB), cleanup)
        assert r.status == 201, (mode, r.status, r.body)


# ------------------------------------------------ networks: another user's name


def _network(raw, body: dict, cleanup):
    r = raw.request("POST", f"{V}/networks/create", body)
    if r.status == 201:
        cleanup.append(("network", json.loads(r.body)["Id"]))
    return r


def test_finding_duplicate_network_name_takes_another_users_network_away(
    users, cleanup, direct_client
):
    """``POST /networks/create`` with ``CheckDuplicate: false`` (API < 1.44; the
    default of old clients and docker-py) and the name of another user's network:
    dockerd 20.10 creates a second network of that name (it only warns). From then
    on the owner's own references by name fail: the gate's resolve of the name no
    longer finds *their* network, so ``docker run --network NAME``, ``network
    connect NAME`` and compose's ``<project>_default`` are refused as "does not exist
    or belongs to someone else"; an admin's reference is ambiguous for dockerd.
    Compose project names (hence network names) are guessable. Severity: Medium
    (one member breaks another's existing work at will; the victim cannot remove
    the intruder). Expected: the duplicate refused (a ``dockergate:`` 409/403, as
    dockerd answers when CheckDuplicate is true), and the victim's network still
    usable by its name."""
    name = f"dgt-r21b-net-{_rand()}"
    r = _network(users["victim"], {"Name": name, "Driver": "bridge"}, cleanup)
    assert r.status == 201, (r.status, r.body)
    dup = _network(
        users["mallory"], {"Name": name, "Driver": "bridge", "CheckDuplicate": False}, cleanup
    )
    use = users["victim"].request(
        "POST",
        f"{V}/containers/create",
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": name}},
    )
    if use.status == 201:
        cleanup.append(("container", json.loads(use.body)["Id"]))
    assert use.status == 201, ("victim lost their network's name", dup.status, use.body)
    assert dup.status in (403, 409) and b"dockergate:" in dup.body, (dup.status, dup.body)


def test_finding_duplicate_network_warning_names_another_users_network_id(users, cleanup):
    """The same create answers 201 with dockerd's ``Warning``: "Network with name X
    (id : <the other user's full network ID>) already exists": an oracle for other
    users' network names that also hands out their IDs (which the gate otherwise
    answers like missing objects). Severity: Low (names/IDs of others' objects).
    Expected: no other user's ID in the answer."""
    name = f"dgt-r21b-net-{_rand()}"
    r = _network(users["victim"], {"Name": name, "Driver": "bridge"}, cleanup)
    assert r.status == 201, (r.status, r.body)
    victim_id = json.loads(r.body)["Id"]
    dup = _network(
        users["mallory"], {"Name": name, "Driver": "bridge", "CheckDuplicate": False}, cleanup
    )
    assert victim_id.encode() not in dup.body, (dup.status, dup.body)


def test_works_own_networks_by_name_and_duplicates_of_ones_own(users, cleanup):
    """The neighbour: a member's network is used by its name; a name another user
    holds, asked with ``CheckDuplicate: true`` (the CLI and compose), is refused by
    dockerd without the other's ID (a conflict, as for a container name)."""
    name = f"dgt-r21b-net-{_rand()}"
    r = _network(users["victim"], {"Name": name, "Driver": "bridge"}, cleanup)
    assert r.status == 201, (r.status, r.body)
    victim_id = json.loads(r.body)["Id"]
    use = users["victim"].request(
        "POST",
        f"{V}/containers/create",
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": name}},
    )
    assert use.status == 201, (use.status, use.body)
    cleanup.append(("container", json.loads(use.body)["Id"]))
    dup = _network(
        users["mallory"], {"Name": name, "Driver": "bridge", "CheckDuplicate": True}, cleanup
    )
    assert dup.status == 409, (dup.status, dup.body)
    assert victim_id.encode() not in dup.body, dup.body


# ------------------------------------------------ what held


def test_works_config_only_networks_and_driver_options_stay_closed(users, cleanup):
    """What held: ``ConfigFrom`` another user's config-only network is refused by
    dockerd (the gate's owner label is a "user specified configuration"); a member's
    own config-only network is held to the driver-option allowlist; a volume mount's
    ``DriverConfig`` options (type=none,o=bind,device=/) are refused."""
    cfg = f"dgt-r21b-cfg-{_rand()}"
    r = _network(users["victim"], {"Name": cfg, "ConfigOnly": True}, cleanup)
    assert r.status == 201, (r.status, r.body)
    r = _network(
        users["mallory"],
        {"Name": f"dgt-r21b-{_rand()}", "ConfigFrom": {"Network": cfg}, "Driver": "bridge"},
        cleanup,
    )
    assert r.status >= 400, (r.status, r.body)
    r = _network(
        users["mallory"],
        {"Name": f"dgt-r21b-{_rand()}", "ConfigOnly": True, "Options": {"parent": "lo"}},
        cleanup,
    )
    assert r.status == 403 and b"dockergate:" in r.body, (r.status, r.body)
    r = users["mallory"].request(
        "POST",
        f"{V}/containers/create",
        {
            "Image": "busybox",
            "HostConfig": {
                "Mounts": [
                    {
                        "Type": "volume",
                        "Source": f"dgt-r21b-{_rand()}",
                        "Target": "/x",
                        "VolumeOptions": {
                            "DriverConfig": {
                                "Options": {"type": "none", "o": "bind", "device": "/"}
                            }
                        },
                    }
                ]
            },
        },
    )
    assert r.status == 403 and b"dockergate:" in r.body, (r.status, r.body)


# ------------------------------------------------ secret drivers (from the round's notes)


def test_finding_secret_driver_plugin_is_for_admins(users, cleanup):
    """A secret with ``Driver`` names an external secret provider plugin, which answers
    each task with the value it keeps under the name and labels the secret gives: a
    member's secret could ask for what the admin keeps there. Expected: refused for
    members, whatever plugins exist (here none: dockerd would answer its own 500)."""
    body = {"Name": f"dgt-r21b-sec-{_rand()}", "Driver": {"Name": "vault"}, "Labels": {}}
    r = users["mallory"].request("POST", f"{V}/secrets/create", body)
    if r.status == 201:
        cleanup.append(("secret", json.loads(r.body)["ID"]))
    assert r.status == 403 and b"dockergate:" in r.body and b"Driver" in r.body, r


def test_works_secret_with_data_and_a_null_driver(users, cleanup):
    """The neighbour: a secret given by its data, also with ``"Driver": null`` (what a
    client sends for no driver), is created."""
    data = "aGVsbG8="  # base64 of "hello"
    for extra in ({}, {"Driver": None}):
        body = {"Name": f"dgt-r21b-sec-{_rand()}", "Data": data, **extra}
        r = users["mallory"].request("POST", f"{V}/secrets/create", body)
        assert r.status == 201, r
        cleanup.append(("secret", json.loads(r.body)["ID"]))
