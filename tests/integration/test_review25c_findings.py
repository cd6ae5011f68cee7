"""Review round 25c: Swarm objects field by field, as an attacker.

A member and an intern (the shipped profiles) over the gate's unix socket, sending
``/services/create`` and ``/services/{id}/update`` bodies field by field (ContainerSpec,
Privileges, Mounts, Networks, EndpointSpec, Placement, Resources, RestartPolicy,
Healthcheck, Mode, UpdateConfig, ``rollback=previous``), secrets and configs
(Templating, Driver, names), tasks, nodes and ``/swarm``, on dockerd 20.10 with a
manager and a drained worker.

Findings (each ``test_finding_*`` FAILS on the reviewed code, 1426eba):

- Medium: a service's replicas are not counted in ``quota.containers``. The intern
  (``containers: 10``) is given a service of 1000 replicas at 8 MiB each; a member
  (``containers: 100``) ran 105 task containers on the manager (each with its own
  ``containerd-shim``, 107 shims holding 1.37 GiB RSS outside every cgroup and
  outside the memory quota, which counted 840 MiB). Only memory bounds the count:
  16g / 6 MiB is ~2700 task containers for an intern, ~21800 for a member.
- Medium: ``ContainerSpec.Healthcheck.Interval`` is not bounded: 1 ms (Swarm's
  minimum) makes dockerd exec the probe back to back, about 7 execs a second per
  task here, costing dockerd ~11 % and containerd ~9 % of a CPU per task (measured
  over 10 s), in the engine's processes, outside the task's CPU limit and the gate's
  exec cap. (``docker run --health-interval 1ms`` is the same for containers.)
- Low: ``rollback=previous`` deploys a spec stored before the user's profile was
  changed, without what the gate fills in for the new profile. A member's service,
  updated once, then the user demoted to intern: their next update gets
  ``node.role==worker`` (the task goes pending off the manager), and ``docker
  service rollback`` puts the PreviousSpec back without it: the task ran on the
  manager again. ``_check_restored`` runs ``check_service`` on a copy, so the
  constraint (and any default, log cap) it adds never reaches Swarm.

Held (pinned in ``test_works_*`` where cheap): the ``host`` network by name and by ID
prefix; lower-case ``CapabilityAdd``; the ``rtprio`` ulimit; an intern's
``node.role == manager``; ``Runtime: plugin``; a host-mode port 80; SELinux
``Disable``; another user's task by ID (inspect, logs: "not found"); ``GET /swarm``
without join tokens; a member's stack with a secret, a config and an overlay network,
``service update --env-add/--image``, ``rollback`` and ``scale``. Checked and left
alone: a volume mount with an absolute ``Source`` and ``CredentialSpec.File`` pass the
gate but dockerd rejects the task; ``RestartPolicy.Delay: 0`` restarts a failing
task without Swarm's 5 s delay (10 replicas: ~6 container starts a second, dockerd
~18 % of a CPU; dockerd's own restart policy backs off); creating a secret, config or
service under a name another user holds answers "already exists" (a name oracle,
inherent to Swarm's cluster-wide names). Config templates reach only the secrets and
configs the task itself references.

Only the local ``busybox`` image; loopback only. The intern's tasks stay pending (the
only worker is drained), so the findings start no container.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import api_as as api
from tests.helpers import remove_owned

pytestmark = pytest.mark.timeout(90)

OWNER = "dockergate.owner"
MEMBER = "r25c-m"
INTERN = "r25c-i"
DEMOTED = "r25c-x"
MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def people(gate, unix_user):
    m, i, x = unix_user("r25cm"), unix_user("r25ci"), unix_user("r25cx")
    gate.dockergate("user", "add", MEMBER, "--profile", "member", "--uid", str(m.uid))
    gate.dockergate("user", "add", INTERN, "--profile", "intern", "--uid", str(i.uid))
    gate.dockergate("user", "add", DEMOTED, "--profile", "member", "--uid", str(x.uid))
    return {"member": m, "intern": i, "demoted": x}


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    remove_owned(direct_client, MEMBER, INTERN, DEMOTED)


def spec(name: str, container: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "600"], **(container or {})}
        },
    }
    s["TaskTemplate"].update(extra.pop("template", {}))
    s.update(extra)
    return s


def created(direct_client, answer: tuple[int, Any]) -> Any:
    """The service a 201 made (removed at once: the tests only need the answer)."""
    code, body = answer
    if code == 201 and isinstance(body, dict):
        with contextlib.suppress(Exception):
            direct_client.services.get(body["ID"]).remove()
    return answer


# ======================================================================== findings


def test_finding_service_replicas_pass_the_containers_quota(gate, people, direct_client):
    """The intern's profile allows 10 containers (``quota.containers``); task
    containers are left out of that count (``quota.usage``: ``not is_task``) and a
    service is checked against ``quota.services`` (3) and memory only. 1000 replicas
    of 8 MiB fit the 16g memory quota and are accepted; on a node they are 1000
    containers, each with a containerd-shim outside every cgroup (a member's 105
    tasks here: 107 shims, 1.37 GiB RSS). Severity: Medium (a quota escape that can
    take a node's memory and dockerd down). Expected: a service's tasks (replicas,
    or nodes for global modes) count in ``quota.containers`` with the user's
    containers and other services' tasks, refused past it."""
    body = spec(
        f"r25c-many-{_rand()}",
        template={"Resources": {"Limits": {"MemoryBytes": 8 * MIB}}},
        Mode={"Replicated": {"Replicas": 1000}},
    )
    code, answer = created(
        direct_client, api(gate, people["intern"], "POST", "/services/create", body)
    )
    assert code == 403, (code, answer)
    assert "quota.containers" in str(answer), answer


def test_finding_service_health_check_every_millisecond(gate, people, direct_client):
    """``ContainerSpec.Healthcheck.Interval`` of 1 ms (Swarm's and dockerd's
    minimum) is accepted: dockerd then runs the probe as an exec back to back (72
    exec_start events in 10 s for one task), which costs dockerd and containerd about
    a fifth of a CPU per task here: work in the engine's processes, outside the task's
    ``NanoCPUs`` and the gate's per-container exec cap. Severity: Medium (one user
    slows the engine for everyone; scales with replicas). Expected: a floor on the
    interval (e.g. 1 s, or the probe timeout's order), refused below it, for services
    (``Healthcheck.Interval``/``StartInterval``) and containers alike."""
    body = spec(
        f"r25c-hc-{_rand()}",
        {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 1_000_000, "Timeout": 10**9}},
    )
    code, answer = created(
        direct_client, api(gate, people["intern"], "POST", "/services/create", body)
    )
    assert code == 403, (code, answer)
    assert "Healthcheck.Interval" in str(answer), answer


def test_finding_rollback_after_demotion_runs_on_managers(cli, gate, people, direct_client):
    """A member's service (log, memory, CPU and pids settings that fit the intern
    profile too), updated once; the user is then set to ``intern``. Their next
    ``service update`` is stamped ``node.role==worker`` (off the manager), but
    ``docker service rollback`` is let through and Swarm puts back the PreviousSpec,
    which has no such constraint: the task ran on the manager again.
    ``services._check_restored`` checks a deep copy with ``check_service``, whose
    fill-ins (the placement constraint, defaults, log caps) never reach what Swarm
    deploys. Severity: Low (needs an earlier, laxer profile). Expected: the rollback
    refused when the restored spec would not pass unchanged (or the stored spec
    re-checked and the rollback sent as an update with the filled-in spec)."""
    x, name = people["demoted"], f"r25c-rb-{_rand()}"
    try:
        r = cli(
            [
                "service", "create", "-d", "--name", name, "--replicas", "0",
                "--log-driver", "json-file", "--log-opt", "max-size=10m",
                "--log-opt", "max-file=2", "--limit-memory", "64m", "--limit-cpu", "1",
                "--limit-pids", "100", "busybox", "sleep", "600",
            ],
            user=x,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        r = cli(["service", "update", "-d", "--env-add", "A=1", name], user=x)
        assert r.returncode == 0, r.stderr
        gate.dockergate("user", "set-profile", DEMOTED, "intern")
        r = cli(["service", "update", "-d", "--env-add", "B=1", name], user=x)
        assert r.returncode == 0, r.stderr
        now = direct_client.services.get(name).attrs["Spec"]["TaskTemplate"]
        assert "node.role==worker" in now["Placement"]["Constraints"], now
        r = cli(["service", "rollback", "-d", name], user=x)
        if r.returncode != 0:
            assert "dockergate:" in r.stderr, r.stderr
            return
        back = direct_client.services.get(name).attrs["Spec"]["TaskTemplate"]
        constraints = (back.get("Placement") or {}).get("Constraints") or []
        assert "node.role==worker" in constraints, (back.get("Placement"), back["ContainerSpec"])
    finally:
        gate.dockergate("user", "set-profile", DEMOTED, "member")


# =========================================================================== works


def test_works_service_fields_that_stay_closed(gate, people, direct_client):
    """Field by field, what a member or intern must not get, each a 403 naming it."""
    m, i = people["member"], people["intern"]
    host_id = direct_client.networks.get("host").id[:12]
    cases = [
        (m, spec("w-host", template={"Networks": [{"Target": "host"}]}), "network 'host'"),
        (m, spec("w-hid", template={"Networks": [{"Target": host_id}]}), host_id),
        (m, spec("w-cap", {"CapabilityAdd": ["sys_admin"]}), "CapabilityAdd"),
        (m, spec("w-ul", {"Ulimits": [{"Name": "rtprio", "Soft": 9, "Hard": 9}]}), "rtprio"),
        (m, spec("w-rt", template={"Runtime": "plugin"}), "TaskTemplate.Runtime"),
        (
            m,
            spec(
                "w-port",
                EndpointSpec={
                    "Ports": [{"TargetPort": 80, "PublishedPort": 80, "PublishMode": "host"}]
                },
            ),
            "PublishedPort=80",
        ),
        (m, spec("w-sel", {"Privileges": {"SELinuxContext": {"Disable": True}}}), "SELinux"),
        (
            i,
            spec("w-mgr", template={"Placement": {"Constraints": ["node.role == manager"]}}),
            "Swarm managers",
        ),
    ]
    for u, body, word in cases:
        code, answer = created(direct_client, api(gate, u, "POST", "/services/create", body))
        assert code == 403 and word in str(answer), (body["Name"], code, answer)


def test_works_member_stack_with_secret_config_network_update_rollback(cli, people):
    """A member's stack (a secret, a config, an overlay network; no replicas, so no
    container), then ``service update --env-add``/``--image``, ``rollback`` and
    ``scale``; another user sees none of it."""
    m, i, t = people["member"], people["intern"], _rand()
    stack, d = f"r25c{t}", Path(tempfile.mkdtemp(prefix="dgt-r25c-"))
    d.chmod(0o755)
    (d / "s.txt").write_text("s3cret\n")
    (d / "c.txt").write_text("conf\n")
    (d / "stack.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  app:\n"
        "    image: busybox\n"
        "    command: sleep 600\n"
        "    deploy: {replicas: 0}\n"
        "    networks: [net]\n"
        "    secrets: [s]\n"
        "    configs: [c]\n"
        "networks:\n  net: {driver: overlay}\n"
        "secrets:\n  s: {file: ./s.txt}\n"
        "configs:\n  c: {file: ./c.txt}\n"
    )
    for p in d.iterdir():
        p.chmod(0o644)

    def ok(*args: str, user: Any = m) -> str:
        r = cli(list(args), user=user, cwd=d)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    svc = f"{stack}_app"
    try:
        ok("stack", "deploy", "-c", "stack.yml", stack)
        ok("service", "update", "-d", "--env-add", "A=1", svc)
        ok("service", "update", "-d", "--image", "busybox:latest", svc)
        ok("service", "rollback", "-d", svc)
        ok("service", "scale", "-d", f"{svc}=0")
        assert svc in ok("service", "ls", "--format", "{{.Name}}")
        assert svc not in ok("service", "ls", "--format", "{{.Name}}", user=i)
        assert f"{stack}_s" not in ok("secret", "ls", "--format", "{{.Name}}", user=i)
    finally:
        cli(["stack", "rm", stack], user=m)
        shutil.rmtree(d, ignore_errors=True)


# ================================================ the fixes' refusals and neighbours


def _container(direct_client, answer: tuple[int, Any]) -> tuple[int, Any]:
    code, body = answer
    if code == 201 and isinstance(body, dict):
        with contextlib.suppress(Exception):
            direct_client.containers.get(body["Id"]).remove(force=True)
    return answer


def test_container_health_interval_floor_and_its_neighbours(gate, people, direct_client):
    """A container's ``Healthcheck.Interval``/``StartInterval`` below 1 s is refused
    (as a service's); 1 s, dockerd's default (0) and a disabled check pass. An image
    whose ``HEALTHCHECK --interval=1ms`` the request would inherit is refused too,
    unless the request sets its own interval."""
    m = people["member"]
    hc = {"Test": ["CMD", "true"]}
    for key in ("Interval", "StartInterval"):
        body = {"Image": "busybox", "Healthcheck": {**hc, key: 999_000_000}}
        code, answer = _container(direct_client, api(gate, m, "POST", "/containers/create", body))
        assert code == 403 and f"Healthcheck.{key}" in str(answer), (code, answer)
    for health in ({**hc, "Interval": 10**9}, hc, {"Test": ["NONE"]}):
        body = {"Image": "busybox", "Healthcheck": health}
        code, answer = _container(direct_client, api(gate, m, "POST", "/containers/create", body))
        assert code == 201, (health, code, answer)
    tag = f"r25c-hc-{_rand()}:latest"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "Dockerfile").write_text("FROM busybox\nHEALTHCHECK --interval=1ms CMD true\n")
        direct_client.images.build(path=d, tag=tag, rm=True)
    try:
        code, answer = _container(
            direct_client, api(gate, m, "POST", "/containers/create", {"Image": tag})
        )
        assert code == 403 and "HEALTHCHECK" in str(answer), (code, answer)
        own = {"Image": tag, "Healthcheck": {"Interval": 5 * 10**9}}
        code, answer = _container(direct_client, api(gate, m, "POST", "/containers/create", own))
        assert code == 201, (code, answer)
    finally:
        direct_client.images.remove(tag, force=True)


def test_service_tasks_within_the_containers_quota_and_scaling_down(gate, people, direct_client):
    """The neighbours of the tasks quota: the intern's service of 3 replicas (10
    containers) is accepted, one of 11 is refused with the count, and an update to
    fewer tasks than the service runs always passes."""
    i = people["intern"]
    name = f"r25c-q-{_rand()}"
    body = spec(name, template={"Resources": {"Limits": {"MemoryBytes": 8 * MIB}}})
    code, answer = api(
        gate, i, "POST", "/services/create", {**body, "Mode": {"Replicated": {"Replicas": 3}}}
    )
    assert code == 201, (code, answer)
    try:
        svc = direct_client.services.get(answer["ID"])
        version = svc.attrs["Version"]["Index"]
        spec_now = svc.attrs["Spec"]
        over = {**spec_now, "Mode": {"Replicated": {"Replicas": 11}}}
        code, answer = api(gate, i, "POST", f"/services/{svc.id}/update?version={version}", over)
        assert code == 403 and "quota.containers" in str(answer), (code, answer)
        assert "11 asked" in str(answer), answer
        fewer = {**spec_now, "Mode": {"Replicated": {"Replicas": 1}}}
        code, answer = api(gate, i, "POST", f"/services/{svc.id}/update?version={version}", fewer)
        assert code == 200, (code, answer)
    finally:
        with contextlib.suppress(Exception):
            direct_client.services.get(name).remove()


def test_network_list_types_as_the_engine_reads_them(gate, people, direct_client):
    """``type=builtin`` is bridge, host and none for dockerd; Swarm's ``ingress`` is
    ``custom``: a member's filtered lists keep that reading, with the built-ins'
    ``Containers`` left out."""
    m = people["member"]

    def names(flt: dict[str, Any]) -> set[str]:
        code, nets = api(gate, m, "GET", f"/networks?filters={quote(json.dumps(flt))}")
        assert code == 200, nets
        assert all(not n.get("Containers") for n in nets if not n.get("Labels")), nets
        return {n["Name"] for n in nets}

    engine = {n.name for n in direct_client.networks.list()}
    builtin = names({"type": {"builtin": True}})
    assert {"bridge", "host", "none"} & engine <= builtin and "ingress" not in builtin, builtin
    custom = names({"type": {"custom": True}})
    assert "ingress" in custom and not {"bridge", "host", "none"} & custom, custom
