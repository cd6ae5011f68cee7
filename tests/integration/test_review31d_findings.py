"""Review round 31d: the API version in the path, after the fix of round 31a (1403ea6).

No finding: each ``test_works_*`` pins what held on the reviewed code (b8787f3).

dockerd 20.10's routers read for ``VersionFromContext`` (container create, update,
start, wait, kill, stats, exec; service create/update ``adjustForAPIVersion``;
secret/config create; network list; info; build; image list/pull; commit; events;
swarm init) and probed through the gate as a member, against the real daemon:

- Services: every non-admin spec carries ``TaskTemplate.Resources.Limits.Pids``
  (the gate fills the profile's default, and ``pids.max`` always has a share of
  the node), so ``refuse_dropped_fields`` refuses *every* non-admin service create
  and update below 1.41. That also closes the other fields ``adjustForAPIVersion``
  clears there: the job modes (``Mode: {Replicated: {Replicas: 4}, ReplicatedJob:
  {MaxConcurrent: 0, TotalCompletions: 0}}`` is refused by dockerd at 1.41 "only one
  service mode", but at 1.40 the job is dropped and 4 replicas remain while the
  gate's quota counted the job's 0 tasks); Sysctls, MaxReplicas, CapabilityAdd/Drop,
  Ulimits, config Runtime targets only take away. Odd spellings are read as Go's
  ``versions.compare`` reads them (numeric per dot-part, missing parts 0):
  ``/v1.040``, ``/v01.40``, ``/v1.40.9`` refused, ``/v1.41.0`` passes with the
  pids limit.
- Version prefixes dockerd's ``/v{version:[0-9.]+}`` accepts but the gate's
  ``_VERSION_PREFIX`` does not strip (``/v1.40.``, ``/v1..41``) fall to the route
  table's default deny (403) for non-admins; too new/old (``/v1.42``, ``/v2.0``,
  ``/v1``) are refused by dockerd's version middleware (400).
- Reads: inspects are resolved with the client's version (``inspect_object``);
  the pre-1.20 and 1.20 container shapes keep ``Config.Labels``: own 200, another
  owner's 404. Network list below 1.28 (dockerd's detailed list with
  ``Containers``) shows Docker's own networks with ``Containers`` emptied.
- ``POST /v1.23/containers/{id}/start`` with a HostConfig body (dockerd < 1.24
  applies it) is refused; ``/v1.23/containers/{id}/copy`` is not a known route.

One module gate on a copy of the shipped profiles, a member as a unix user;
services with 0 replicas or an unsatisfiable constraint (no task runs), created
containers never started; only ``busybox``; loopback only.
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

MEMBER = "r31d-m"
OTHER = "r31d-other"  # an owner label of someone else, put on directly
PIDS_DEFAULT = 4096  # policies/member.yaml pids.default
NOWHERE = "node.labels.r31d==nowhere"  # no node has it: tasks stay pending
G = 1 << 30


@pytest.fixture(scope="module")
def g31(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


@pytest.fixture(scope="module")
def member(g31: Gate, unix_user, direct_client) -> Iterator[Any]:
    u = unix_user("r31dm")
    r = dg(g31, "user", "add", MEMBER, "--profile", "member", "--uid", str(u.uid))
    assert r.returncode == 0, r.stderr
    g31.settle()
    yield u
    remove_owned(direct_client, MEMBER, OTHER)


@pytest.fixture(scope="module")
def own_container(g31: Gate, member: Any) -> str:
    body = {"Image": "busybox", "Cmd": ["true"]}
    code, out = call(g31, member, "POST", f"/containers/create?name={_name()}", body, "1.41")
    assert code == 201, out
    return str(out["Id"])


@pytest.fixture(scope="module")
def other_container(member: Any, direct_client) -> str:
    """Another owner's container on Docker's own ``none`` network."""
    api = direct_client.api
    host = api.create_host_config(network_mode="none")
    labels = {"dockergate.owner": OTHER}
    return str(api.create_container("busybox", ["true"], host_config=host, labels=labels)["Id"])


def call(g: Gate, user: Any, method: str, path: str, body: Any, version: str) -> tuple[int, Any]:
    """One Engine API call as ``user`` (curl with that uid) through ``g``'s socket,
    with ``/v{version}`` in front of the path (none when ``version`` is empty)."""
    argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
    argv += ["curl", "-sS", "--unix-socket", str(g.socket), "-X", method, "-w", "\n%{http_code}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    argv.append(f"http://gate/v{version}{path}" if version else f"http://gate{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    text, _, code = out.rpartition("\n")
    try:
        return int(code), json.loads(text) if text else None
    except ValueError:
        return int(code or 0), text


def _name() -> str:
    return f"r31d-{uuid.uuid4().hex[:6]}"


def service_spec(mode: dict[str, Any], memory: int | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "600"]},
        "Placement": {"Constraints": [NOWHERE]},
    }
    if memory:
        template["Resources"] = {"Limits": {"MemoryBytes": memory}}
    return {"Name": _name(), "TaskTemplate": template, "Mode": mode}


# ======================================================================== held


def test_works_older_version_spellings_are_read_as_dockerd_reads_them(g31, member, direct_client):
    """Go's ``versions.LessThan`` compares dot-parts as numbers (``1.040`` is 1.40,
    ``1.40.9`` is below 1.41, ``1.41.0`` equals it): the gate's ``api_version``
    agrees, so the pids refusal cannot be stepped around by spelling."""
    spec = service_spec({"Replicated": {"Replicas": 0}})
    for version in ("1.040", "01.40", "1.40.9", "1.24"):
        code, out = call(g31, member, "POST", "/services/create", spec, version)
        assert code == 403 and "Limits.Pids" in out["message"], (version, code, out)
    code, out = call(g31, member, "POST", "/services/create", spec, "1.41.0")
    assert code == 201, out
    limits = direct_client.api.inspect_service(out["ID"])["Spec"]["TaskTemplate"]["Resources"]
    assert limits["Limits"]["Pids"] == PIDS_DEFAULT


def test_works_job_mode_dropped_below_141_cannot_hide_replicas_from_the_quota(
    g31, member, direct_client
):
    """Below 1.41 dockerd drops ``ReplicatedJob``/``GlobalJob`` and keeps
    ``Replicated``: the gate counts the job (0 tasks), dockerd would run 4 replicas
    of 40g (160g, over the member's 128g quota). Refused, because every non-admin
    spec carries the profile's pids limit; at 1.41 dockerd refuses two modes."""
    mem = 40 * G
    plain = service_spec({"Replicated": {"Replicas": 4}}, mem)
    code, out = call(g31, member, "POST", "/services/create", plain, "1.41")
    assert code == 403 and "memory quota" in out["message"], out
    for job in ({"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 0}}, {"GlobalJob": {}}):
        spec = service_spec({"Replicated": {"Replicas": 4}, **job}, mem)
        for version in ("1.40", "1.30"):
            code, out = call(g31, member, "POST", "/services/create", spec, version)
            assert 400 <= code < 500, (version, job, code, out)
        code, out = call(g31, member, "POST", "/services/create", spec, "1.41")
        assert code == 400 and "only one service mode" in out["message"], out
    services = direct_client.api.services(filters={"label": f"dockergate.owner={MEMBER}"})
    assert all((s["Spec"]["Mode"].get("Replicated") or {}).get("Replicas", 0) < 4 for s in services)


def test_works_prefixes_the_gate_does_not_strip_are_refused(g31, member, own_container):
    """dockerd's route accepts ``/v{version:[0-9.]+}`` (``1.40.`` is 1.40): the gate
    does not strip such a prefix, and the unknown path is refused for non-admins."""
    for version, method, path, body in (
        ("1.40.", "POST", "/services/create", service_spec({"Replicated": {"Replicas": 0}})),
        ("1.39.", "POST", f"/containers/create?name={_name()}", {"Image": "busybox"}),
        ("1..41", "GET", "/containers/json", None),
        ("1.23", "POST", f"/containers/{own_container}/copy", {"Resource": "/etc/passwd"}),
    ):
        code, out = call(g31, member, method, path, body, version)
        assert code == 403 and "not an API route" in out["message"], (version, path, code, out)


def test_works_versions_outside_the_daemon_range_are_refused_by_dockerd(g31, member):
    for version, word in (("1.42", "too new"), ("2.0", "too new"), ("1", "too old")):
        code, out = call(g31, member, "GET", "/containers/json", None, version)
        assert code == 400 and word in str(out), (version, code, out)


def test_works_start_with_a_hostconfig_through_v123_is_refused(
    g31, member, own_container, direct_client
):
    body = {"Privileged": True, "Binds": ["/:/host"]}
    code, out = call(g31, member, "POST", f"/containers/{own_container}/start", body, "1.23")
    assert code == 400, out
    host = direct_client.api.inspect_container(own_container)["HostConfig"]
    assert host["Privileged"] is False and not host["Binds"]


def test_works_old_inspect_shapes_keep_ownership(g31, member, own_container, other_container):
    for version in ("1.12", "1.19", "1.20", "1.24"):
        code, out = call(g31, member, "GET", f"/containers/{own_container}/json", None, version)
        assert code == 200 and out["Id"] == own_container, (version, code)
        code, out = call(g31, member, "GET", f"/containers/{other_container}/json", None, version)
        assert code == 404, (version, code, out)


def test_works_detailed_network_list_below_128_hides_others_containers(
    g31, member, other_container
):
    """Below 1.28 dockerd lists networks with their ``Containers``: Docker's own
    networks are shown to a member with none of them (another owner's container is
    on ``none``)."""
    for version in ("1.27", "1.24", "1.12"):
        code, out = call(g31, member, "GET", "/networks", None, version)
        assert code == 200, (version, out)
        names = {n["Name"] for n in out}
        assert "none" in names, (version, names)
        shown = {n["Name"]: n.get("Containers") for n in out if n.get("Containers")}
        assert not shown, (version, shown)
