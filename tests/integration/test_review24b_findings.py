"""Review round 24b: a fresh attacker's first hour (a member, with the docker CLI,
docker-py and raw requests over the gate's unix socket).

Swarm expands Go templates in a service's ``ContainerSpec.Mounts`` (``Source``,
``Target``, ``VolumeOptions.Labels``: swarmkit's ``template.ExpandContainerSpec``)
on the node, just before it creates the task's container, with the service's labels,
name, node and task in context, and string literals allowed (``{{"../x"}}``). The
gate checks ``Source`` as the literal text it was sent: a path below the bind root
with a component that is not ``..`` to it, or a volume name nobody has.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the secure
behaviour (a ``dockergate:`` refusal). The ``test_works_*`` tests pass and pin the
legitimate neighbours (templates where Docker documents them for users: hostname and
environment; plain mounts of the bind root and of the shared volume).

They reuse the first round's gate, profile (a bind root ``<area>/data`` mounted
nosymfollow, ``<area>/secret/flag`` outside it, a read-only shared volume), users and
cleanup (tests/integration/test_review_findings.py) and raw requests as members.
Services are placed on a node label no node has, so their tasks stay pending: what
is checked is the spec the gate lets through, and nothing runs (run, the bind task
prints the flag and the volume task writes into the read-only shared volume: see the
report). Only the local ``busybox`` image is used; traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest

from tests.integration import test_review_findings as first_round

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
NOWHERE = "node.labels.dgt-r24b-nowhere==1"  # no node has it: tasks stay pending


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _service(mounts: list[dict], **container) -> dict:
    return {
        "Name": f"dgt-r24b-{_rand()}",
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "busybox",
                "Command": ["sleep", "300"],
                "Mounts": mounts,
                **container,
            },
            "Placement": {"Constraints": [NOWHERE]},
        },
    }


def _create_service(raw, spec: dict, cleanup):
    r = raw.request("POST", f"{V}/services/create", spec)
    if r.status == 201:
        cleanup.append(("service", json.loads(r.body)["ID"]))
    return r


@pytest.fixture
def shared_volume(shared_name: str, direct_client) -> Iterator[str]:
    """The profile's shared volume, made by an admin (directly on the daemon) when no
    earlier test has; removed again only then."""
    made = not any(v.name == shared_name for v in direct_client.volumes.list())
    if made:
        direct_client.volumes.create(shared_name)
    yield shared_name
    if made:
        with contextlib.suppress(Exception):
            direct_client.volumes.get(shared_name).remove(force=True)


def _refused(r) -> bool:
    return r.status == 403 and b"dockergate:" in r.body


# ------------------------------------------------ templates in a service's mounts


def test_finding_service_bind_source_template_leaves_the_bind_root(users, area, cleanup):
    """``docker service create --mount type=bind,source='<root>/{{"../secret"}}',
    target=/h busybox cat /h/flag``: ``check_bind`` resolves the literal path, whose
    last component is ``{{"..`` then ``secret"}}`` (no ``..``, nothing there: below the
    root, and no directory on the way to follow), so it passes; Swarm expands the
    template on the node to ``<root>/../secret`` and dockerd binds that. Run on the
    review swarm (placed on the manager), the task's container had
    ``Source: <area>/secret`` and printed ``REVIEW-FLAG-outside-the-allowed-bind-root``
    within 1.3 s. With ``{{"../../../.."}}`` (writable) it is the host's ``/`` in a
    container running as root: root on every node the service is placed on. Any
    template reaching the same text works (``{{index .Service.Labels "p"}}`` with a
    service label ``p=../..``, ``{{printf ...}}``). Severity: High (host root for any
    member; interns too where their profile allows any bind root). Expected: a
    ``dockergate:`` refusal (no template in a bind ``Source``, or only placeholders
    that cannot hold ``/`` or ``..``)."""
    source = f'{area}/data/{{{{"../secret"}}}}'
    spec = _service([{"Type": "bind", "Source": source, "Target": "/h", "ReadOnly": True}])
    r = _create_service(users["mallory"], spec, cleanup)
    assert _refused(r), (r.status, r.body)


def test_finding_service_volume_source_template_mounts_another_users_volume(users, cleanup):
    """``--mount type=volume,source='{{"<victim's volume>"}}'``: ``volume_usable`` looks
    up the literal name (no such volume: it would be the caller's new one), and Swarm
    expands it on the node to the victim's volume name, which dockerd mounts as it
    exists (the mount's owner label only applies to a volume it creates). Observed on
    the review swarm: a running task of the intern rv-pintern's service wrote a file
    into rv-victim's volume. Severity: High (any user reads and rewrites another
    user's volume). Expected: a ``dockergate:`` refusal."""
    vol = f"dgt-r24b-victim-{_rand()}"
    r = users["victim"].request("POST", f"{V}/volumes/create", {"Name": vol})
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("volume", vol))
    spec = _service([{"Type": "volume", "Source": f'{{{{"{vol}"}}}}', "Target": "/v"}])
    r = _create_service(users["mallory"], spec, cleanup)
    assert _refused(r), (r.status, r.body)


def test_finding_service_volume_source_template_writes_the_read_only_shared_volume(
    users, shared_volume, cleanup
):
    """The same with the profile's read-only shared volume: ``Source:
    '{{"<shared>"}}'`` without ``ReadOnly`` passes (the literal is no shared name), and
    the task's container got the shared volume with ``RW: true`` (observed on the
    review swarm: ``echo pwned > /v/x`` landed in the team's data everyone mounts
    read-only). Severity: High (the team's shared read-only data changed by any
    member or intern). Expected: a ``dockergate:`` refusal."""
    source = f'{{{{"{shared_volume}"}}}}'
    spec = _service([{"Type": "volume", "Source": source, "Target": "/v"}])
    r = _create_service(users["mallory"], spec, cleanup)
    assert _refused(r), (r.status, r.body)


def test_works_service_templates_in_hostname_and_env_with_plain_mounts(
    users, area, shared_volume, cleanup, direct_client
):
    """The documented templates (``--hostname '{{.Node.Hostname}}-{{.Task.Slot}}'``,
    ``--env SLOT={{.Task.Slot}}``) beside a bind of the root itself and a read-only
    mount of the shared volume: accepted, stored as sent."""
    spec = _service(
        [
            {"Type": "bind", "Source": f"{area}/data", "Target": "/data"},
            {"Type": "volume", "Source": shared_volume, "Target": "/shared", "ReadOnly": True},
        ],
        Hostname="{{.Node.Hostname}}-{{.Task.Slot}}",
        Env=["SLOT={{.Task.Slot}}"],
    )
    r = _create_service(users["mallory"], spec, cleanup)
    assert r.status == 201, (r.status, r.body)
    stored = direct_client.api.inspect_service(json.loads(r.body)["ID"])["Spec"]
    container = stored["TaskTemplate"]["ContainerSpec"]
    assert container["Hostname"] == "{{.Node.Hostname}}-{{.Task.Slot}}"
    assert [m["Source"] for m in container["Mounts"]] == [f"{area}/data", shared_volume]


def test_works_service_bind_outside_the_root_refused(users, area, cleanup):
    """The plain spelling of the first finding (``source=<area>/secret``, or
    ``<root>/../secret``) is refused with the profile's bind rule."""
    for source in (f"{area}/secret", f"{area}/data/../secret"):
        spec = _service([{"Type": "bind", "Source": source, "Target": "/h", "ReadOnly": True}])
        r = _create_service(users["mallory"], spec, cleanup)
        assert _refused(r), (source, r.status, r.body)


def test_fixed_templates_refused_in_every_field_swarm_expands_and_on_update(users, area, cleanup):
    """The fix's reach: a template is refused in a mount's ``Target``, its volume labels
    and driver options, and a network attachment's ``DriverOpts`` (where an endpoint
    sysctl would be named), and on ``service update`` as on create; the refusal names
    the field."""
    cases = [
        ([{"Type": "bind", "Source": f"{area}/data", "Target": '/d{{"x"}}'}], {}, "Target"),
        (
            [
                {
                    "Type": "volume",
                    "Target": "/v",
                    "VolumeOptions": {"Labels": {"a": "{{.Task.ID}}"}},
                }
            ],
            {},
            "VolumeOptions.Labels[a]",
        ),
    ]
    for mounts, extra, field in cases:
        r = _create_service(users["mallory"], _service(mounts, **extra), cleanup)
        assert _refused(r) and field.encode() in r.body, (field, r.status, r.body)
    spec = _service([])
    spec["TaskTemplate"]["Networks"] = [
        {"Target": "none", "DriverOpts": {"com.docker.network.endpoint.sysctls": "{{.x}}"}}
    ]
    r = _create_service(users["mallory"], spec, cleanup)
    assert _refused(r) and b"DriverOpts" in r.body, (r.status, r.body)

    spec = _service([{"Type": "bind", "Source": f"{area}/data", "Target": "/data"}])
    r = _create_service(users["mallory"], spec, cleanup)
    assert r.status == 201, (r.status, r.body)
    sid = json.loads(r.body)["ID"]
    version = json.loads(users["mallory"].request("GET", f"{V}/services/{sid}").body)["Version"]
    spec["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"] = f'{area}/data/{{{{"../.."}}}}'
    r = users["mallory"].request(
        "POST", f"{V}/services/{sid}/update?version={version['Index']}", spec
    )
    assert _refused(r), (r.status, r.body)
