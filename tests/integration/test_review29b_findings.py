"""Review round 29b: do the docs say what the code now does (the day's changes,
1426eba..953d7c5)?

README.md, policies/README.md, the profiles' comments, bench/README.md, deploy/ and
every ``--help`` were read against the code and, where cheap, a running gate (one
module gate on a copy of the shipped profiles, an intern and a member as unix users,
the real docker CLI 28, dockerd 20.10 as a Swarm manager with a drained worker).

Findings (each ``test_finding_*`` FAILS on the reviewed code, 953d7c5):

- Low: ``dockergate check`` passes a stack that the profile's quotas alone refuse.
  README ("lists every violation in a compose/stack file ... and exits 1, for CI")
  and policies/README.md ("exit 1 on any violation") promise CI a verdict, but
  ``policy/compose.py:check_file`` checks no quota: an intern's stack with one
  service of ``replicas: 11`` (``quota.containers`` 10, service tasks included since
  today) is "ok" and ``docker service create --replicas 11`` is refused; a stack of 4
  services (``quota.services`` 3) is "ok" and ``docker stack deploy`` leaves it half
  made (3 services created, then "forbids more services").
- Low: policies/README.md's schema, which README calls the place where "every knob
  is documented", still shows ``quota.containers`` bare: nothing says that service
  tasks count in it (replicas; global: one per node, drained nodes included), which
  is what the gate's refusal now says ("the quota is 10 containers, service tasks
  included"). The shipped member.yaml/intern.yaml comments say nothing either.
- Low: README says "a create's row names the new object's ID and the name asked
  for", but the ``dockergate audit`` table shows only ``name=X`` for a create; the
  ID is in ``--json`` (``object_id``) alone, and later rows' paths use what the
  client typed, so the table never ties a name to an ID.
- Low: README says ``/_dockergate/health`` shows "the store revision the gate
  applies: a ``dockergate user ...`` change is in force once it is reached", but no
  command tells the operator which revision a change made (``user add/set-profile/
  disable/revoke`` print none; ``user show --json`` has none; ``db current`` is the
  schema's alembic revision, another thing). The test suite's own ``Gate.settle``
  reads the counter from the database.

Held (``test_works_*``): the health answer carries ``store.revision`` and it moves
past a user change; ``audit --kind`` reads the plural and names the known kinds for
an unknown one, as its commit says.

One module-scoped gate, no running containers (the intern's services wait for a
worker: the shipped intern profile keeps them off managers and the worker is
drained), one created member container; only ``busybox``; loopback only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Gate,
    UnixUser,
    dockergate_argv,
    policies_gate,
    raw_request,
    remove_owned,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

INTERN = "r29b-intern"
MEMBER = "r29b-member"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def g29(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


def dg(g: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    """``dockergate --state-dir <gate's> ARGS`` as root (the CLI finds the running
    gate's policies directory itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    env["DOCKERGATE_UPSTREAM"] = g.upstream
    argv = [*dockergate_argv(), "--state-dir", str(g.state_dir), *args]
    return subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args}\nrc={r.returncode}\nout:{r.stdout}\nerr:{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def people(g29: Gate, unix_user, direct_client) -> Iterator[dict[str, UnixUser]]:
    out = {}
    for short, name, profile in (("r29bi", INTERN, "intern"), ("r29bm", MEMBER, "member")):
        u = unix_user(short)
        ok(dg(g29, "user", "add", name, "--profile", profile, "--uid", str(u.uid)))
        out[name] = u
    g29.settle()
    yield out
    remove_owned(direct_client, INTERN, MEMBER)


def health(g: Gate) -> dict[str, Any]:
    r = raw_request(g.socket, "GET", "/_dockergate/health")
    assert r.status == 200, r.body
    return json.loads(r.body)


def stack_dir(g: Gate) -> Path:
    """A directory the test users can read (pytest's tmp_path is root's 0700)."""
    d = Path(g.socket).parent / "stacks"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    return d


def write_stack(g: Gate, name: str, text: str) -> Path:
    path = stack_dir(g) / name
    path.write_text(text)
    path.chmod(0o644)
    return path


SERVICE = "  {}:\n    image: busybox\n    command: sleep 600\n"


@pytest.fixture(scope="module")
def eleven_refused(cli, g29: Gate, people) -> str:
    """The gate's refusal of an intern's 11-replica service (quota.containers 10)."""
    argv = ["service", "create", "-d", "--name", "r29b-eleven", "--replicas", "11"]
    r = cli([*argv, "busybox", "sleep", "600"], user=people[INTERN], gate=g29)
    assert r.returncode != 0 and "quota.containers" in r.stderr, r.stderr
    return r.stderr


# ======================================================================== findings


def test_finding_check_passes_a_stack_the_quotas_refuse(cli, g29, people, eleven_refused):
    """Low. ``dockergate check --profile intern`` (README: "lists every violation ...
    exits 1, for CI") says ok to a stack the gate can never deploy for an intern: one
    service of 11 replicas (quota.containers 10, tasks included: the gate refuses
    it, see the fixture) and a stack of 4 services (quota.services 3: ``docker stack
    deploy`` creates 3 and then fails, a half-made stack). Expected: check reports
    what the file alone exceeds (tasks against quota.containers, services against
    quota.services; memory x replicas against quota.memory), exit 1 naming the
    quota; or the docs say that quotas are not checked."""
    many = write_stack(g29, "many.yml", "services:\n" + SERVICE.format("app") + (
        "    deploy:\n      replicas: 11\n"
    ))  # fmt: skip
    four = write_stack(
        g29, "four.yml", "services:\n" + "".join(SERVICE.format(f"s{n}") for n in range(4))
    )
    r = cli(["stack", "deploy", "-c", str(four), "r29b-four"], user=people[INTERN], gate=g29)
    assert r.returncode != 0 and "quota.services" in r.stderr, r.stderr  # the gate's verdict
    r_many = dg(g29, "check", "--profile", "intern", str(many))
    r_four = dg(g29, "check", "--profile", "intern", str(four))
    assert r_many.returncode == 1 and "quota.containers" in r_many.stdout, r_many.stdout
    assert r_four.returncode == 1 and "quota.services" in r_four.stdout, r_four.stdout


def test_finding_policies_readme_quota_containers_omits_tasks(eleven_refused):
    """Low. The gate refuses an intern's 11 replicas under ``quota.containers`` ("the
    quota is 10 containers, service tasks included"), but policies/README.md's schema
    (README: "the schema and every knob are documented" there) shows ``containers:
    100`` with no word of tasks. Expected: the schema line says what is counted, e.g.
    ``containers: 100  # the user's containers (any state) + the tasks their services
    run at once (replicas; global: one per swarm node, drained ones included)``."""
    assert "service tasks included" in eleven_refused
    schema = (REPO / "policies" / "README.md").read_text()
    quota = schema[schema.index("\nquota:") : schema.index("\nswarm:")]
    line = next(x for x in quota.splitlines() if x.strip().startswith("containers:"))
    following = quota[quota.index(line) :].split("services:")[0]
    assert "task" in following, following


def test_finding_audit_table_shows_no_id_of_a_create(cli, g29, people, direct_client):
    """Low. README: "a create's row names the new object's ID and the name asked for".
    The ``dockergate audit`` table shows ``name=X`` only; the ID dockerd answered is
    in ``--json`` (``object_id``) alone. Expected: the table row of the create shows
    the ID too (12 hex digits, as for paths), e.g. RULE/DETAIL ``<id12> name=X``."""
    name = "r29b-made"
    ok(cli(["create", "--name", name, "busybox", "true"], user=people[MEMBER], gate=g29))
    cid = direct_client.containers.get(name).id

    def row() -> str | None:
        out = dg(g29, "audit", "--user", MEMBER, "--kind", "container").stdout
        return next((x for x in out.splitlines() if f"name={name}" in x), None)

    line = wait_until(row, 15, interval=0.25, what="the create's audit row")
    assert cid[:12] in line, line


def test_finding_no_command_names_the_store_revision_health_shows(g29, people):
    """Low. README: ``/_dockergate/health`` shows "the store revision the gate
    applies: a ``dockergate user ...`` change is in force once it is reached"; but
    no command tells the operator which revision their change made (the suite's own
    ``Gate.settle`` reads it from the database). Expected: ``user add`` (and the other
    user changes) print the store revision they made, which health then reaches;
    or the README drops the promise."""
    r = dg(g29, "user", "add", "r29b-rev", "--profile", "member", "--uid", "64929")
    out = ok(r) + r.stderr
    said = re.search(r"revision (\d+)", out)
    assert said is not None, out
    wait_until(
        lambda: (health(g29)["store"]["revision"] or 0) >= int(said.group(1)),
        10,
        what="health's store revision to reach the change",
    )


# ============================================================================ works


def test_works_health_revision_moves_past_a_user_change(g29, people):
    """The health answer has ``store.revision`` and it moves on after a user change."""
    before = health(g29)["store"]["revision"]
    assert isinstance(before, int), before
    ok(dg(g29, "user", "disable", MEMBER))
    ok(dg(g29, "user", "enable", MEMBER))
    wait_until(lambda: health(g29)["store"]["revision"] >= before + 2, 10, what="revision")


def test_works_audit_kind_plural_and_unknown(g29, people):
    """``--kind containers`` reads as ``container``; an unknown kind is an error that
    lists the known kinds (not "no matching audit rows")."""
    ok(dg(g29, "audit", "--kind", "containers", "--limit", "1"))
    r = dg(g29, "audit", "--kind", "bogus")
    assert r.returncode == 2 and "known:" in r.stderr and "container" in r.stderr, r.stderr
