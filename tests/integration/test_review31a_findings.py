"""Review round 31a: the API version in the path, against dockerd 20.10's adjustments.

Findings (each ``test_finding_*`` FAILS on the reviewed code, 14cd6b7):

- High: a member's service made or updated through an older API version in the
  path (``POST /v1.40/services/create``, also ``/v1.30``, ``/v1.24``, and
  ``POST /v1.40/services/{id}/update``) runs without the profile's pids limit.
  The gate fills ``TaskTemplate.Resources.Limits.Pids`` (member: default 4096,
  max 32768) whatever the version, but dockerd 20.10's ``adjustForAPIVersion``
  zeroes ``Limits.Pids`` (and ``CapabilityAdd/Drop``, ``Ulimits``, the job
  modes) for API < 1.41 before it hands the spec to Swarm: the service's tasks
  may fork without bound (the very limit review 18's "one member may hold every
  pid of the host" put in). Cause: ``api/services.py`` / ``policy/service.py``
  check and re-encode the body as API 1.41 semantics and never look at
  ``ex.version``. Fix: refuse non-admins' service create/update below /v1.41
  (400/403 "dockergate: use API 1.41 or later", which every current client
  negotiates), or more broadly refuse non-admins' inspected routes below the
  schema's API (1.41): dockerd also drops ``BindOptions.NonRecursive`` of a
  container's mounts below 1.40 (not reproduced here).

Held (``test_works_*``): a service through /v1.41 and one without a version in
the path get ``Limits.Pids`` 4096; a container made through /v1.40 keeps its
``PidsLimit`` 4096 (dockerd adjusts containers' bodies only below 1.40/1.25 for
fields the gate does not rely on here).

One module gate on a copy of the shipped profiles, a member as a unix user;
services with 0 replicas and a created (never started) container only; only
``busybox``; loopback only.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, policies_gate, remove_owned
from tests.integration.test_review30a_findings import dg

pytestmark = pytest.mark.timeout(120)

MEMBER = "r31a-m"
PIDS_DEFAULT = 4096  # policies/member.yaml pids.default


@pytest.fixture(scope="module")
def g31(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def member(g31: Gate, unix_user, direct_client) -> Iterator[Any]:
    u = unix_user("r31am")
    r = dg(g31, "user", "add", MEMBER, "--profile", "member", "--uid", str(u.uid))
    assert r.returncode == 0, r.stderr
    g31.settle()
    yield u
    remove_owned(direct_client, MEMBER)


def call(g: Gate, user: Any, method: str, path: str, body: Any, version: str) -> tuple[int, Any]:
    """One Engine API call as ``user`` (curl with that uid) through ``g``'s socket,
    with ``/v{version}`` in front of the path (none when ``version`` is empty)."""
    argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
    argv += ["curl", "-sS", "--unix-socket", str(g.socket), "-X", method, "-w", "\n%{http_code}"]
    argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    argv.append(f"http://gate/v{version}{path}" if version else f"http://gate{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    text, _, code = out.rpartition("\n")
    try:
        return int(code), json.loads(text) if text else None
    except ValueError:
        return int(code or 0), text


def service_spec(name: str) -> dict[str, Any]:
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "600"]}},
        "Mode": {"Replicated": {"Replicas": 0}},
    }


def pids_of(direct_client: Any, service_id: str) -> int | None:
    spec = direct_client.api.inspect_service(service_id)["Spec"]
    return ((spec["TaskTemplate"].get("Resources") or {}).get("Limits") or {}).get("Pids")


def _name() -> str:
    return f"r31a-{uuid.uuid4().hex[:6]}"


# ======================================================================== findings


def test_finding_service_through_an_older_api_version_runs_without_the_pids_limit(
    g31, member, direct_client
):
    """High. Steps, as a member (pids default 4096): ``curl --unix-socket <gate> -X
    POST http://gate/v1.40/services/create -d '{"Name":"s","TaskTemplate":
    {"ContainerSpec":{"Image":"busybox","Command":["sleep","600"]}}}'`` → 201, and
    ``docker service inspect s`` shows ``Limits`` with MemoryBytes and NanoCPUs but
    no ``Pids`` (through /v1.41 it has ``Pids: 4096``). The same through /v1.24, and
    for ``POST /v1.40/services/{id}/update`` of a service made through /v1.41 (its
    Pids is dropped). dockerd 20.10's ``adjustForAPIVersion`` zeroes Limits.Pids
    below 1.41 after the gate filled it in. Expected: the service keeps the
    profile's limit, or the request is refused (403/400 naming the API version)."""
    results: dict[str, Any] = {}
    for version in ("1.40", "1.24"):
        code, out = call(g31, member, "POST", "/services/create", service_spec(_name()), version)
        results[f"create /v{version}"] = (
            code if code != 201 else pids_of(direct_client, out["ID"]),
            out if code != 201 else None,
        )
    name = _name()
    code, out = call(g31, member, "POST", "/services/create", service_spec(name), "1.41")
    assert code == 201, out
    service_id = out["ID"]
    assert pids_of(direct_client, service_id) == PIDS_DEFAULT
    version_index = direct_client.api.inspect_service(service_id)["Version"]["Index"]
    spec = service_spec(name)
    code, out = call(
        g31, member, "POST", f"/services/{service_id}/update?version={version_index}", spec, "1.40"
    )
    results["update /v1.40"] = (
        code if code != 200 else pids_of(direct_client, service_id),
        out if code != 200 else None,
    )
    # Each: refused (a 4xx status) or the profile's pids limit in the stored spec.
    bad = {
        k: v for k, v in results.items() if not (v[0] == PIDS_DEFAULT or 400 <= (v[0] or 0) < 500)
    }
    assert not bad, f"services without the profile's pids limit (Limits.Pids, error): {bad}"


# ======================================================================== held


def test_works_service_through_api_141_or_no_version_gets_the_pids_limit(
    g31, member, direct_client
):
    for version in ("1.41", ""):
        code, out = call(g31, member, "POST", "/services/create", service_spec(_name()), version)
        assert code == 201, out
        assert pids_of(direct_client, out["ID"]) == PIDS_DEFAULT


def test_works_container_through_api_140_keeps_the_pids_limit(g31, member, direct_client):
    name = _name()
    body = {"Image": "busybox", "Cmd": ["true"]}
    code, out = call(g31, member, "POST", f"/containers/create?name={name}", body, "1.40")
    assert code == 201, out
    host = direct_client.api.inspect_container(out["Id"])["HostConfig"]
    assert host["PidsLimit"] == PIDS_DEFAULT
