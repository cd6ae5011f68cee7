"""Review round 26b: the research team's users under the day's new rules (service
tasks in ``quota.containers``, health checks at most once a second, rollbacks to a
spec the profile would change refused, admin rights from ``admin: true``).

A member, an intern and a member-like ``team`` profile, over the gate's unix socket
as their own unix users, with the real docker CLI 28 and docker-compose 1.29, on
dockerd 20.10 (a Swarm manager and a drained worker).

Findings (each ``test_finding_*`` FAILS on the reviewed code, a0d0e38):

- Medium: a service inherits its image's ``HEALTHCHECK`` unchecked. The day's rule
  looks at an image's HEALTHCHECK for containers (``check_image_healthcheck``) but
  not for services: ``docker run`` of a member's ``docker commit --change
  'HEALTHCHECK --interval=100ms CMD true'`` image is refused, yet ``docker service
  create IMAGE`` is accepted and its task container runs with
  ``Healthcheck.Interval=100ms`` (21 ``exec_start`` events in 3 s for one task),
  the engine-side load the rule was made to stop. Also with ``--health-cmd`` but no
  interval (dockerd fills the interval from the image).
- Medium: after a profile change, ``docker stack deploy`` of a stack whose services
  say ``update_config: failure_action: rollback`` is refused, naming a setting the
  stack file does not have. The operator lowers ``resources.logs.max_size`` (100m
  to 50m) in the team's profile, or moves a member to ``intern``; the next deploy
  (new image) answers ``forbids logs this large
  (TaskTemplate.LogDriver.Options.max-size=100m); at most 50m``: the new spec got
  50m and fits, the refusal is about the *running* spec, which Swarm would roll back
  to (``service_update`` -> ``_check_restored`` -> ``check_service``). Nothing says
  so, and the way out (deploy once with ``failure_action: pause``) is not named.
- Low: ``dockergate whoami`` prints ``containers: 2 running, 1 in total, 2 service
  tasks`` for a member with one created container and a service of two running
  tasks (``2 running, 0 in total`` without the container): ``running`` counts task
  containers, ``in total`` does not (``quota.usage``).

Held (``test_works_*``): a member's HDFS/Jupyter-like stack (three services,
replicas, ``deploy.resources``, health checks of 10 s/30 s with ``start_period``, a
config, a secret, an overlay network, a named volume), deployed again with more
replicas and a new image, then ``service rollback``, ``service update --rollback``
and ``service scale`` (all accepted; the restored specs pass the profile as they
were stored); an intern near ``quota.containers`` (refusals name the quota with the
counts, a rollback back past it is refused, scaling to exactly the quota passes,
whoami counts the tasks); docker-compose with ``interval: 1s`` and ``depends_on:
condition: service_healthy``; ``docker run --health-interval 500ms`` refused with
the field, the value and the limit. Checked by hand and left out: an ``ops.yaml``
with ``admin: true`` (``ps -a``, ``service ls`` and ``node ls`` show everyone's,
whoami says admin); the image-HEALTHCHECK merge for containers (``--health-interval
5s`` over a 100 ms image passes, ``--no-healthcheck`` passes). Timings through the
gate and direct were within 10-30 ms of each other for ``ps``, ``service ls``,
``stack ls``, ``stack deploy`` and ``run --rm`` (0.11 s direct, 0.13 s gate).

Noticed and left alone: a global service counts every node for the quota, also a
drained one or a manager the intern's placement excludes (documented in
``swarm_nodes``); a stack redeploy that moves replicas from one service to another
at the quota can be refused for the service the CLI updates first; ``docker service
update`` of a service stored with a log size above a lowered cap is refused until
``--log-opt max-size=`` is given (older than today, names the field).

Only the local ``busybox`` image; loopback only; one module-scoped gate with a copy
of the shipped profiles plus ``team``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, UnixUser, dockergate_argv, policies_gate, remove_owned

pytestmark = pytest.mark.timeout(120)

OWNER = "dockergate.owner"
MEMBER = "r26b-m"
INTERN = "r26b-i"
TEAM = "r26b-t"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g26(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    team = {"team.yaml": "description: r26b team\nextends: member\n"}
    with policies_gate(session_dir, docker_host, team) as g:
        yield g


def dg(g: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKERGATE_POLICIES_DIR": str(g.policies)}  # type: ignore[attr-defined]
    argv = [*dockergate_argv(), "--state-dir", str(g.state_dir), *args]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def people(g26: Gate, unix_user) -> dict[str, UnixUser]:
    out = {}
    for short, name, profile in (
        ("r26bm", MEMBER, "member"),
        ("r26bi", INTERN, "intern"),
        ("r26bt", TEAM, "team"),
    ):
        u = unix_user(short)
        dg(g26, "user", "add", name, "--profile", profile, "--uid", str(u.uid))
        out[profile] = u
    return out


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    remove_owned(direct_client, MEMBER, INTERN, TEAM)
    for tag in ("r26b/fasthc:1", "r26b/jupyter:2", "r26b/worker:2"):
        with contextlib.suppress(Exception):
            direct_client.images.remove(tag)


def workdir(session_dir: Path, u: UnixUser, files: dict[str, str]) -> Path:
    """A directory ``u`` owns (under the world-traversable session dir) with files."""
    d = Path(tempfile.mkdtemp(prefix="r26b", dir=session_dir))
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text))
    for p in (d, *d.iterdir()):
        os.chown(p, u.uid, u.gid)
    return d


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args}\nrc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def whoami(g: Gate, u: UnixUser) -> str:
    argv = ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups"]
    argv += [*dockergate_argv(), "whoami"]
    env = {"PATH": os.environ["PATH"], "DOCKER_HOST": g.unix_url}
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    return ok(r)


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# ======================================================================== findings


def test_finding_service_inherits_a_fast_image_healthcheck(cli, g26, people, direct_client):
    """``docker run`` of an image whose HEALTHCHECK probes every 100 ms is refused
    (``containers.check_image_healthcheck``); a service of the same image is not:
    ``services._service_spec`` / ``policy.service.check_service`` look only at
    ``ContainerSpec.Healthcheck``, and dockerd fills the task container's missing
    health settings from the image (measured: ``Interval=100ms``, ~7 execs a second
    per task, in dockerd and containerd). Severity: Medium (the day's rule is
    bypassed with an ordinary ``docker commit`` or build). Expected: the service is
    refused like the container, naming the image's HEALTHCHECK interval."""
    m = people["member"]
    cid = ok(cli(["create", "busybox", "sleep", "1"], user=m, gate=g26)).strip()
    change = "HEALTHCHECK --interval=100ms CMD true"
    r = cli(["commit", "--change", change, cid, "r26b/fasthc:1"], user=m, gate=g26)
    assert r.returncode != 0 and "HEALTHCHECK" in r.stderr, r.stderr  # since 27a's fix
    base = direct_client.containers.create("busybox", ["true"])  # an admin's, then
    base.commit("r26b/fasthc", "1", changes=[change])
    base.remove()
    r = cli(["run", "--rm", "r26b/fasthc:1", "true"], user=m, gate=g26)
    assert r.returncode != 0 and "HEALTHCHECK.Interval=100ms" in r.stderr, r.stderr  # held
    name = f"r26b-hc-{_rand()}"
    r = cli(
        ["service", "create", "--detach", "--name", name, "r26b/fasthc:1", "sleep", "600"],
        user=m,
        gate=g26,
    )
    if r.returncode == 0:
        with contextlib.suppress(Exception):
            direct_client.services.get(name).remove()
    assert r.returncode != 0, f"a service of the 100 ms HEALTHCHECK image was created:\n{r.stdout}"
    assert "dockergate:" in r.stderr and "HEALTHCHECK" in r.stderr, r.stderr


STACK_ROLLBACK = """
version: "3.8"
services:
  worker:
    image: IMAGE
    command: ["sleep", "3600"]
    healthcheck: {test: ["CMD", "true"], interval: 10s, start_period: 30s}
    deploy:
      replicas: 1
      update_config: {failure_action: rollback, monitor: 1s}
"""


def test_finding_failure_action_rollback_blocks_a_fitting_redeploy(cli, g26, people, session_dir):
    """The team's stack, deployed; the operator lowers ``resources.logs.max_size``
    from 100m to 50m in ``team.yaml`` and reloads. The next ``docker stack deploy``
    (a new image) sends a spec that fits (the gate fills in max-size 50m), but
    ``service_update`` also checks the running spec, Swarm's rollback target under
    ``failure_action: rollback`` (``_check_restored`` -> ``check_service``), and the
    user reads ``forbids logs this large (TaskTemplate.LogDriver.Options.max-size=
    100m)``, a setting their file does not have. The same after ``user set-profile
    X intern``. Severity: Medium (every stack with automatic rollback stops
    deploying after a profile edit; the message points at the wrong thing).
    Expected: the deploy goes through (the new spec fits), or the refusal says the
    running spec, Swarm's rollback target, no longer fits and names
    ``UpdateConfig.FailureAction`` (deploy once with ``failure_action: pause``)."""
    t = people["team"]
    d = workdir(session_dir, t, {"stack.yml": STACK_ROLLBACK.replace("IMAGE", "busybox")})
    stack = f"r26bt{_rand()}"
    ok(cli(["stack", "deploy", "-c", str(d / "stack.yml"), stack], user=t, gate=g26))
    ok(cli(["tag", "busybox", "r26b/worker:2"], user=t, gate=g26))

    team = g26.policies / "team.yaml"  # type: ignore[attr-defined]
    team.write_text(team.read_text() + "resources:\n  logs:\n    max_size: 50m\n")
    assert "reloaded dockergate" in dg(g26, "policy", "reload").stdout  # confirmed

    (d / "stack.yml").write_text(STACK_ROLLBACK.replace("IMAGE", "r26b/worker:2"))
    r = cli(["stack", "deploy", "-c", str(d / "stack.yml"), stack], user=t, gate=g26)
    assert r.returncode == 0, f"a fitting redeploy was refused for the running spec:\n{r.stderr}"
    # The fix: the update goes ahead with FailureAction pause, and the CLI says why.
    assert "FailureAction (failure_action) is pause" in r.stderr, r.stderr
    assert "50m" in r.stderr, r.stderr


def test_finding_whoami_counts_tasks_running_but_not_in_total(cli, g26, people, direct_client):
    """A member with no containers of their own and a service of 2 replicas (running
    on the manager): ``dockergate whoami`` prints ``2 running, 0 in total, 2 service
    tasks``. ``quota.usage`` counts ``running`` over all the user's containers (task
    containers included) and ``containers`` without tasks; ``whoami_text`` prints
    both side by side (here ``2 running, 1 in total``: the 1 is the container the
    first test created). Severity: Low. Expected: the numbers agree (running no more
    than the total they are part of), e.g. ``0 running, 0 in total, 2 service
    tasks`` or the tasks counted in both."""
    m = people["member"]
    name = f"r26b-who-{_rand()}"
    argv = ["service", "create", "--detach", "--name", name, "--replicas", "2"]
    ok(cli([*argv, "busybox", "sleep", "600"], user=m, gate=g26))
    flt = {"label": f"com.docker.swarm.service.name={name}", "status": "running"}
    assert wait_for(lambda: len(direct_client.containers.list(filters=flt)) == 2)
    text = whoami(g26, m)
    found = re.search(r"containers:\s+(\d+) running, (\d+) in total", text)
    assert found, text
    running, total = int(found[1]), int(found[2])
    assert running <= total, text


# ======================================================================== held


HDFS_STACK = """
version: "3.8"
services:
  namenode:
    image: busybox
    command: ["sleep", "3600"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 10s
      timeout: 5s
      retries: 3
      start_period: 30s
    volumes: ["nn-data:/data"]
    networks: [hadoop]
    configs: [{source: core-site, target: /etc/core-site.xml}]
    secrets: [hdfs-key]
    deploy:
      resources:
        limits: {memory: 256M, cpus: "0.5"}
        reservations: {memory: 64M}
  datanode:
    image: busybox
    command: ["sleep", "3600"]
    healthcheck: {test: ["CMD-SHELL", "true"], interval: 30s, start_period: 1m}
    networks: [hadoop]
    deploy:
      replicas: REPLICAS
      resources:
        limits: {memory: 128M}
      update_config: {parallelism: 1, failure_action: rollback}
  jupyter:
    image: JUPYTER
    command: ["sleep", "3600"]
    networks: [hadoop]
networks:
  hadoop: {driver: overlay}
volumes:
  nn-data: {}
configs:
  core-site: {file: ./core-site.xml}
secrets:
  hdfs-key: {file: ./hdfs.key}
"""


def test_works_member_stack_redeploy_rollback_scale(cli, g26, people, session_dir, direct_client):
    m = people["member"]
    files = {"core-site.xml": "<configuration/>\n", "hdfs.key": "k\n"}
    files["stack.yml"] = HDFS_STACK.replace("REPLICAS", "1").replace("JUPYTER", "busybox")
    d = workdir(session_dir, m, files)
    stack = f"r26bh{_rand()}"

    def deploy() -> None:
        ok(cli(["stack", "deploy", "-c", "stack.yml", stack], user=m, gate=g26, cwd=d))

    deploy()
    ok(cli(["tag", "busybox", "r26b/jupyter:2"], user=m, gate=g26))
    (d / "stack.yml").write_text(
        HDFS_STACK.replace("REPLICAS", "2").replace("JUPYTER", "r26b/jupyter:2")
    )
    deploy()
    for args in (
        ["service", "rollback", "--detach", f"{stack}_jupyter"],
        ["service", "update", "--detach", "--rollback", f"{stack}_datanode"],
        ["service", "scale", "--detach", f"{stack}_datanode=3", f"{stack}_jupyter=2"],
        ["service", "update", "--detach", "--health-interval", "5s", f"{stack}_namenode"],
        ["service", "rollback", "--detach", f"{stack}_namenode"],
    ):
        ok(cli(args, user=m, gate=g26))
    specs = {s.name: s.attrs["Spec"] for s in direct_client.services.list(filters={"name": stack})}
    assert specs[f"{stack}_jupyter"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:latest"
    assert specs[f"{stack}_jupyter"]["Mode"]["Replicated"]["Replicas"] == 2
    assert specs[f"{stack}_datanode"]["Mode"]["Replicated"]["Replicas"] == 3
    health = specs[f"{stack}_namenode"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]
    assert health["Interval"] == 10 * 10**9 and health["StartPeriod"] == 30 * 10**9
    ok(cli(["stack", "rm", stack], user=m, gate=g26))


def test_works_intern_near_the_containers_quota(cli, g26, people):
    """The intern's tasks stay pending (off the manager, the worker is drained): no
    container starts, the quota counts the replicas."""
    i = people["intern"]
    t = _rand()
    web, job, db = f"r26b-web-{t}", f"r26b-job-{t}", f"r26b-db-{t}"

    def svc(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(["service", *args], user=i, gate=g26)

    ok(svc("create", "--detach", "--name", web, "--replicas", "6", "busybox", "sleep", "600"))
    ok(svc("create", "--detach", "--name", job, "--replicas", "3", "busybox", "sleep", "600"))
    r = svc("create", "--detach", "--name", db, "--replicas", "2", "busybox", "sleep", "600")
    assert r.returncode != 0, r.stdout
    assert "quota.containers=0 containers + 9 tasks of other services + 2 asked" in r.stderr
    assert "the quota is 10 containers, service tasks included" in r.stderr, r.stderr
    ok(svc("scale", "--detach", f"{web}=2"))
    ok(svc("create", "--detach", "--name", db, "--replicas", "3", "busybox", "sleep", "600"))
    r = svc("rollback", "--detach", web)  # back to 6: 6 + 3 + 3 > 10
    assert r.returncode != 0 and "quota.containers" in r.stderr, (r.stdout, r.stderr)
    ok(svc("scale", "--detach", f"{job}=5"))  # 2 + 5 + 3 = 10: exactly the quota
    ok(svc("update", "--detach", "--health-cmd", "true", "--health-interval", "10s", job))
    ok(svc("rollback", "--detach", job))
    assert "10 service tasks (quota 10, service tasks included)" in whoami(g26, i)


def test_works_compose_health_dependency_and_fast_probe_refusal(cli, g26, people, session_dir):
    m = people["member"]
    compose = """
        version: "2.4"
        services:
          db:
            image: busybox
            command: ["sleep", "600"]
            healthcheck: {test: ["CMD", "true"], interval: 1s, timeout: 2s, retries: 3}
          app:
            image: busybox
            command: ["sleep", "600"]
            depends_on:
              db: {condition: service_healthy}
    """
    d = workdir(session_dir, m, {"docker-compose.yml": compose})
    project = f"r26bc{_rand()}"
    up = f"docker-compose -p {project} up -d"
    ok(cli(up, user=m, gate=g26, cwd=d, shell=True))
    ps = ok(cli(f"docker-compose -p {project} ps", user=m, gate=g26, cwd=d, shell=True))
    assert "Up (healthy)" in ps, ps
    ok(cli(f"docker-compose -p {project} down -t 0", user=m, gate=g26, cwd=d, shell=True))
    r = cli(
        ["run", "--rm", "--health-cmd", "true", "--health-interval", "500ms", "busybox", "true"],
        user=m,
        gate=g26,
    )
    assert r.returncode != 0
    assert "forbids health checks more often than once a second" in r.stderr, r.stderr
    assert "Healthcheck.Interval=500ms" in r.stderr and "1s or more" in r.stderr, r.stderr
