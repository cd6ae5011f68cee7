"""Findings of review round 6b (registry allowlist, commit ``changes``, events, pulls
over built tags). Each test FAILS on 126df34 where it demonstrates an attack.

Fixtures: the first round's gate and users (mallory, victim; no registry allowlist)
and test_build_checks' gate (registries docker.io and 127.0.0.1:9; bcann, bcbob).
No traffic leaves loopback (``localhost`` resolves through /etc/hosts).
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

import pytest

from tests.integration import test_build_checks as bc
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, build, created = first_round._rand, first_round.build, first_round.created
bgate, people = bc.bgate, bc.people

pytestmark = pytest.mark.timeout(180)


# --------------------------------------------------------------- registry allowlist


def test_login_server_address_with_a_foreign_scheme_is_held_to_the_allowlist(bgate, people):
    """Profile.allows_registry_host (dockergate/policy/model.py) drops everything up to
    the first "://" whatever precedes it, so ``localhost://127.0.0.1:9`` reads as the
    allowed 127.0.0.1:9. dockerd (registry.DefaultService.Auth) only strips ``https://``
    / ``http://``; anything else gets ``https://`` prepended and url.Parse takes the
    host as ``localhost:`` (empty port): the daemon logs in at https://localhost:443
    (``evil.example://127.0.0.1:9`` reaches evil.example), sending the member's
    credentials to a server outside the profile's registries."""
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    body = {"username": "x", "password": "secret", "serveraddress": "localhost://127.0.0.1:9"}
    r = raw.request("POST", "/v1.41/auth", body)
    assert r.status == 403, (r.status, r.body[:400])


def test_login_to_an_allowed_registry_reaches_the_daemon(bgate, people):
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    body = {"username": "x", "password": "secret", "serveraddress": "http://127.0.0.1:9"}
    r = raw.request("POST", "/v1.41/auth", body)
    assert r.status != 403 and b"dockergate:" not in r.body, (r.status, r.body[:300])


def test_lowercase_hub_names_still_pass_the_allowlist(bgate, people):
    raw = Raw(str(bgate.socket), people["bcann"].uid)
    r = raw.request("GET", "/v1.41/distribution/library/busybox/json")
    assert r.status != 403 and b"dockergate:" not in r.body, (r.status, r.body[:300])


# --------------------------------------------------------------- commit changes


@pytest.mark.parametrize(
    "change",
    [
        'LABEL docker"gate".owner=rv-victim docker"gate".built-by=rv-victim',
        "ENV A=b\nLABEL dockergate.owner=rv-victim dockergate.built-by=rv-victim",
    ],
)
def test_commit_changes_cannot_write_the_gates_labels(users, cleanup, direct_client, change):
    """check_changes (dockergate/api/images.py) looks for the word "dockergate" in a
    change that *starts* with LABEL/ONBUILD. dockerd joins all ``changes`` with "\\n"
    and parses them as one Dockerfile (BuildFromConfig), then shell-expands LABEL keys
    (quotes removed): ``LABEL docker"gate".owner=x`` writes ``dockergate.owner``, and a
    change ``ENV A=b\\nLABEL dockergate.owner=x`` is two instructions, the first not a
    LABEL. The committed image claims another user (their containers from it become
    nobody's) and names them as its builder (built-by decides who may move or pull
    over the tag). ``ONBUILD LABEL docker"gate"...`` likewise escapes claim_of."""
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    name = f"dgt-rv6b-commit-{_rand()}"
    r = m.request(
        "POST", f"/v1.41/commit?container={cid}&repo={name}&tag=v1&changes={quote(change)}"
    )
    if r.status == 201:
        cleanup.append(("image", f"{name}:v1"))
        labels = direct_client.images.get(f"{name}:v1").labels
        pytest.fail(f"commit went through; image labels: {labels}")
    assert r.status in (400, 403), (r.status, r.body)


def test_commit_changes_with_quoted_label_values_still_work(users, cleanup, direct_client):
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    name = f"dgt-rv6b-okcommit-{_rand()}"
    change = quote('LABEL description="my image" "team"=\'data science\'')
    r = m.request("POST", f"/v1.41/commit?container={cid}&repo={name}&tag=v1&changes={change}")
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{name}:v1"))
    labels = direct_client.images.get(f"{name}:v1").labels
    assert labels["description"] == "my image" and labels["team"] == "data science", labels


def test_commit_changes_cannot_add_an_onbuild_add_of_a_url(users, cleanup, direct_client):
    """check_changes parses each ``changes`` value on its own, but dockerd parses them
    joined by "\\n" as one Dockerfile, parser directives included: ``# escape=```
    then ``ONBUILD ADD ``` then ``http://127.0.0.1:1/x /x`` is one instruction,
    ``ONBUILD ADD http://127.0.0.1:1/x /x``, in the committed image. Members' builds
    read base triggers again, but an admin building FROM the image (or any build the
    gate does not read) has dockerd fetch the URL from the host's network."""
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    name = f"dgt-rv6b-onbuild-{_rand()}"
    changes = "".join(
        f"&changes={quote(c)}" for c in ("# escape=`", "ONBUILD ADD `", "http://127.0.0.1:1/x /x")
    )
    r = m.request("POST", f"/v1.41/commit?container={cid}&repo={name}&tag=v1{changes}")
    if r.status == 201:
        cleanup.append(("image", f"{name}:v1"))
        triggers = direct_client.images.get(f"{name}:v1").attrs["Config"].get("OnBuild")
        pytest.fail(f"commit went through; ONBUILD triggers: {triggers}")
    assert r.status in (400, 403), (r.status, r.body)


# --------------------------------------------------------------- events


def _stream(raw: Raw, path: str, out: list[bytes]) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(raw.request("GET", path).body), daemon=True)
    t.start()
    return t


def test_events_do_not_show_another_users_volume_reusing_a_name(users, cleanup, direct_client):
    """EventOwnership (dockergate/api/system.py) caches ownership per (kind, ID) for
    the stream's life, and a volume's ID is its *name*. Mallory's own volume ``v`` is
    seeded as hers; she removes it; the victim creates ``v`` (a compose project's
    ``proj_data``) and mounts it: mallory's stream shows the victim's volume events,
    whose ``mount`` attributes carry the victim's container full ID.

    Since the store holds each volume name for its first user, a name passes from
    one user to another only if nobody held it: mallory's volume is made on the
    daemon (an admin, or a gate of another store), with her label."""
    m, v = users["mallory"], users["victim"]
    name = f"dgt-rv6b-vol-{_rand()}"
    direct_client.volumes.create(name, labels={"dockergate.owner": "rv-mallory"})
    cleanup.append(("volume", name))
    until = int(time.time()) + 8
    filters = quote(json.dumps({"type": ["volume"]}))
    out: list[bytes] = []
    t = _stream(m, f"/v1.41/events?until={until}&filters={filters}", out)
    time.sleep(1.5)  # the stream is open and seeded
    assert m.request("DELETE", f"/v1.41/volumes/{name}").status == 204
    time.sleep(0.5)
    r = v.request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201, (r.status, r.body)
    victim_cid = created(
        v, {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": [f"{name}:/d"]}}, cleanup
    )
    assert v.request("POST", f"/v1.41/containers/{victim_cid}/start").status == 204
    t.join(30)
    assert out, "events stream did not end"
    events = [json.loads(line) for line in out[0].splitlines() if line.strip()]
    leaked = [e for e in events if e.get("Action") == "mount"]  # mallory mounts nothing
    assert not leaked, f"mallory sees the victim's volume events: {leaked}"


def test_past_events_of_a_removed_volume_do_not_follow_its_name(users, cleanup, direct_client):
    """Same cache, no timing needed: ownership is decided when an event is *relayed*,
    by the volume's current name. The victim's volume ``v`` was mounted and removed;
    mallory creates a volume named ``v`` and replays ``/events?since=...``: the
    victim's past ``mount`` events of ``v`` (with container IDs) are hers to read.

    The victim's volume and container are made on the daemon (through the gate the
    name would be held for the victim, and mallory could not take it)."""
    m = users["mallory"]
    name = f"dgt-rv6b-past-{_rand()}"
    since = int(time.time()) - 1
    victim = {"dockergate.owner": "rv-victim"}
    direct_client.volumes.create(name, labels=victim)
    c = direct_client.containers.create(
        "busybox", ["true"], labels=victim, volumes={name: {"bind": "/d", "mode": "rw"}}
    )
    c.start()
    time.sleep(1)
    c.remove(force=True)
    direct_client.volumes.get(name).remove()
    assert m.request("POST", "/v1.41/volumes/create", {"Name": name}).status == 201
    cleanup.append(("volume", name))
    until = int(time.time()) + 1
    filters = quote(json.dumps({"type": ["volume"]}))
    r = m.request("GET", f"/v1.41/events?since={since}&until={until}&filters={filters}")
    assert r.status == 200, (r.status, r.body)
    events = [json.loads(line) for line in r.body.splitlines() if line.strip()]
    leaked = [e for e in events if e.get("Action") == "mount"]
    assert not leaked, f"mallory replays the victim's volume events: {leaked}"


def test_events_show_ones_own_volume_lifecycle(users, cleanup):
    m = users["mallory"]
    name = f"dgt-rv6b-own-{_rand()}"
    until = int(time.time()) + 6
    filters = quote(json.dumps({"type": ["volume"]}))
    out: list[bytes] = []
    t = _stream(m, f"/v1.41/events?until={until}&filters={filters}", out)
    time.sleep(1.5)
    assert m.request("POST", "/v1.41/volumes/create", {"Name": name}).status == 201
    cleanup.append(("volume", name))
    cid = created(
        m, {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": [f"{name}:/d"]}}, cleanup
    )
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    t.join(30)
    events = [json.loads(line) for line in out[0].splitlines() if line.strip()]
    assert any(e.get("Action") == "create" and e["Actor"]["ID"] == name for e in events), events
    mounts = [e for e in events if e.get("Action") == "mount"]
    assert mounts and mounts[0]["Actor"]["Attributes"]["container"] == cid, events


# --------------------------------------------------------------- squatted upstream tags


def test_a_member_cannot_squat_an_upstream_tag_others_then_cannot_pull(users, cleanup):
    """Members may give a build any *new* tag (check_new_tag), and since 5d41c47 no one
    else may pull over a tag another user built (check_pull_target). Together: mallory
    builds ``-t python:3.12`` (here a fresh name under library/) before anyone pulled
    it; the victim's ``docker pull python:3.12`` is refused by the gate, so the victim's
    ``docker run python:3.12`` keeps starting mallory's image with the victim's mounts,
    volumes and rights, and the victim cannot get the real image back."""
    name = f"docker.io/library/dgt-rv6b-sq-{_rand()}"
    r = build(users["mallory"], f"t={quote(name + ':1', safe='')}", "FROM busybox\nRUN true\n")
    assert r.status == 200 and b"Successfully tagged" in r.body, (r.status, r.body[-300:])
    cleanup.append(("image", f"{name}:1"))
    short = name.rsplit("/", 1)[1]
    r = users["victim"].request("POST", f"/v1.41/images/create?fromImage={short}&tag=1")
    # Without network the daemon's pull fails; what matters is the gate's refusal.
    assert not (r.status == 403 and b"built here" in r.body), (r.status, r.body)
