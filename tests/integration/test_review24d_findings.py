"""Review round 24d: where the gate (Python) reads a value differently from dockerd (Go).

The gate narrows every list a member asks for by pushing its owner label into the
``filters`` query parameter (``dispatch.owner_filtered`` -> ``query.with_label``:
``{"label": {"dockergate.owner=<caller>": true}}`` added to what the client sent).
That only narrows where dockerd ANDs the ``label`` values, which it does for the
objects it filters itself (``filters.Args.MatchKVList``: containers, volumes,
networks, images, events, prunes). For the Swarm objects it does not: dockerd 20.10
(``daemon/cluster/filters.go``: ``newListServicesFilters``, ``newListTasksFilters``,
``newListSecretsFilters``, ``newListConfigsFilters``) turns the ``label`` values
into a Go *map* with ``runconfig.ConvertKVStringsToMap(filter.Get("label"))``, keyed
by label name: two values for ``dockergate.owner`` collapse into one, and which one
survives depends on Go's map iteration order over ``filter.Get("label")`` (the
client's or the gate's). swarmkit then matches that single value
(``filterMatchLabels``; an empty value matches any owner).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the secure
behaviour (only the caller's own objects are listed, or a refusal). The
``test_works_*`` tests pass and pin the neighbours (a member's own label filters on
Swarm lists; the same trick on a container list, which dockerd ANDs).

They reuse the first round's gate, profile and users
(tests/integration/test_review_findings.py) and raw requests over the gate's unix
socket. Services are placed on a node label no node has: their tasks stay pending.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import uuid

import pytest

from tests.integration import test_review_findings as first_round

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup

pytestmark = pytest.mark.timeout(60)

V = "/v1.41"
NOWHERE = "node.labels.dgt-r24d-nowhere==1"  # no node has it: tasks stay pending
OWNER = "dockergate.owner"
TRIES = 6  # Go's map order: the client's value wins 7 times in 8 (see the findings)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _filters(*labels: str) -> str:
    return urllib.parse.quote(json.dumps({"label": dict.fromkeys(labels, True)}))


def _listed(raw, path: str, *labels: str) -> list[dict]:
    sep = "&" if "?" in path else "?"
    r = raw.request("GET", f"{V}/{path}{sep}filters={_filters(*labels)}")
    assert r.status == 200, (r.status, r.body)
    return json.loads(r.body)


def _owners(items: list[dict]) -> set[str]:
    """The owner labels of listed objects (a service's or secret's ``Spec.Labels``, a
    task's container labels, a container's ``Labels``)."""
    out = set()
    for item in items:
        spec = item.get("Spec") or {}
        labels = (
            spec.get("Labels")
            or (spec.get("ContainerSpec") or {}).get("Labels")
            or item.get("Labels")
            or {}
        )
        out.add(labels.get(OWNER, "?"))
    return out


def _service(raw, cleanup, labels: dict | None = None, **container) -> str:
    spec = {
        "Name": f"dgt-r24d-{_rand()}",
        "Labels": labels or {},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "300"], **container},
            "Placement": {"Constraints": [NOWHERE]},
        },
    }
    r = raw.request("POST", f"{V}/services/create", spec)
    assert r.status == 201, (r.status, r.body)
    service_id = json.loads(r.body)["ID"]
    cleanup.append(("service", service_id))
    return service_id


def _secret(raw, cleanup, kind: str = "secrets") -> str:
    r = raw.request("POST", f"{V}/{kind}/create", {"Name": f"dgt-r24d-{_rand()}", "Data": "aGk="})
    assert r.status == 201, (r.status, r.body)
    object_id = json.loads(r.body)["ID"]
    cleanup.append((kind[:-1], object_id))
    return object_id


# ----------------------------------------- the owner label filter on Swarm lists


def test_finding_service_list_label_filter_shows_another_users_services(users, cleanup):
    """``GET /services?filters={"label":{"dockergate.owner=rv-victim":true}}`` as the
    member rv-mallory: the gate forwards ``{"label": {"dockergate.owner=rv-mallory":
    true, "dockergate.owner=rv-victim": true}}`` (sorted keys), dockerd's
    ``ConvertKVStringsToMap`` keeps one value per label name, the last in Go's map
    iteration order of that two-key map, which is the client's 7 times in 8 (a small
    Go map is walked from a random one of its bucket's 8 slots). Observed on the review
    engine: 8 of 8 lists returned rv-victim's service, full spec included
    (``Env: ["SECRET_TOKEN=hunter2"]``, mounts, networks, labels), while ``GET
    /services/<id>`` of it is a 404 for her; ``GET /tasks`` the same (9 of 12: the
    victim's tasks with their container specs). ``{"label": {"dockergate.owner":
    true}}`` (no value: matches every owner in swarmkit's ``filterMatchLabels``) lists
    every user's services, 1 time in 8. Severity: High (any member or intern reads
    every other user's service and task specs, environment secrets included: the
    gate's promise that users only see their own objects). Go: moby 20.10
    ``daemon/cluster/filters.go`` ``newListServicesFilters``/``newListTasksFilters``
    + ``runconfig.ConvertKVStringsToMap``; Python: ``dispatch.owner_filtered`` /
    ``query.with_label`` assume label filters are ANDed. Expected: only the caller's
    own services and tasks (or a refusal of a client label filter on
    ``dockergate.*``)."""
    _service(users["victim"], cleanup, Env=["SECRET_TOKEN=hunter2"])
    seen: set[str] = set()
    for _ in range(TRIES):
        seen |= _owners(_listed(users["mallory"], "services", f"{OWNER}=rv-victim"))
        seen |= _owners(_listed(users["mallory"], "tasks", f"{OWNER}=rv-victim"))
        if seen - {"rv-mallory"}:
            break
    assert seen <= {"rv-mallory"}, f"rv-mallory listed services/tasks of {sorted(seen)}"


def test_finding_secret_and_config_lists_label_filter_show_another_users(
    users, cleanup, direct_client
):
    """The same collapse on ``GET /secrets`` and ``GET /configs`` (moby 20.10
    ``newListSecretsFilters``/``newListConfigsFilters``: ``Labels:
    runconfig.ConvertKVStringsToMap(filter.Get("label"))``): with ``{"label":
    {"dockergate.owner=rv-victim": true}}`` rv-mallory lists rv-victim's secrets
    (observed: 11 of 12 lists) and configs: names, labels, creation times, and for
    configs the ``Spec.Data`` itself (configs are not secret to dockerd: the list
    returns their content). Severity: High for configs (their data), Medium for
    secrets (names and labels only). Expected: only the caller's own."""
    _secret(users["victim"], cleanup, "secrets")
    config = _secret(users["victim"], cleanup, "configs")
    seen: set[str] = set()
    try:
        for _ in range(TRIES):
            for kind in ("secrets", "configs"):
                seen |= _owners(_listed(users["mallory"], kind, f"{OWNER}=rv-victim"))
            if seen - {"rv-mallory"}:
                break
    finally:
        with contextlib.suppress(Exception):
            direct_client.configs.get(config).remove()
    assert seen <= {"rv-mallory"}, f"rv-mallory listed secrets/configs of {sorted(seen)}"


def test_works_own_label_filters_on_swarm_lists(users, cleanup):
    """A member's own label filters on Swarm lists keep working: ``--filter
    label=team=x`` finds her service, ``--filter label=dockergate.owner=rv-mallory``
    (her own name) too, and neither shows another user's."""
    _service(users["victim"], cleanup, {"team": "r24d"})
    mine = _service(users["mallory"], cleanup, {"team": "r24d"})
    for labels in (("team=r24d",), (f"{OWNER}=rv-mallory",)):
        listed = _listed(users["mallory"], "services", *labels)
        assert [s["ID"] for s in listed] == [mine], labels
    secret = _secret(users["mallory"], cleanup, "secrets")
    listed = _listed(users["mallory"], "secrets", f"{OWNER}=rv-mallory")
    assert [s["ID"] for s in listed] == [secret]


def test_works_container_list_label_filter_is_anded(users, cleanup):
    """Containers, volumes and networks are filtered by dockerd itself, which ANDs the
    ``label`` values (``filters.Args.MatchKVList``): the same filter naming another
    owner lists nothing."""
    r = users["victim"].request(
        "POST", f"{V}/containers/create?name=dgt-r24d-{_rand()}", {"Image": "busybox"}
    )
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("container", json.loads(r.body)["Id"]))
    for _ in range(3):
        assert _listed(users["mallory"], "containers/json?all=1", f"{OWNER}=rv-victim") == []
        assert _listed(users["mallory"], "networks", f"{OWNER}=rv-victim") == []
