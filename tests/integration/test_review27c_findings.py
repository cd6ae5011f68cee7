"""Review round 27c: the operator's incident day, with today's changes.

A manager went down last night (an intern's job). The team's operator, with only
README.md and ``dockergate --help``, finds who ran what (``audit`` with ``--user``,
``--kind``, ``--denied``, ``--since``, ``--json``, ``--follow``), compares
``usage``/``usage --json`` with ``whoami`` and the refusals users get now that a
service's tasks count in ``quota.containers``, demotes the intern (``user
set-profile``), makes an ``ops`` profile (``admin: true``) for a colleague, purges the
intern (``--dry-run``, ``--stop-only``, ``--volumes``), reloads a profile with a typo,
restarts the gate under ``logs -f`` and ``exec``, reads ``/_dockergate/metrics`` and
``/_dockergate/health``. One gate on a copy of the shipped profiles, unix users, the
real docker CLI 28, dockerd 20.10 (a Swarm manager and a drained worker).

Findings (each ``test_finding_*`` FAILS on the reviewed code, af42593):

- Medium: the audit rows of creates name nothing. ``docker service create --name
  X`` (and ``docker run``/``create``, volume, network, secret, config creates) is
  recorded as ``POST /services/create allow 201 -`` with ``object_id: null`` and no
  detail: neither the name the user gave nor the ID dockerd answered. Later rows
  (``/containers/<id>/start``, ``/services/<id>/update``) carry IDs that no row ties
  to a name, and once the object is gone (the intern's service purged) ``dockergate
  audit`` cannot say which service the intern ran. (``proxy/connection.py``: the
  record takes ``ex.object_id``, which the create handlers never set.)
- Medium: ``dockergate usage`` disagrees with the ``quota.containers`` the gate
  applies since service tasks count in it. An intern with one service of 9 replicas
  (quota 10) is refused a 2-replica service ("0 containers + 9 tasks of other
  services + 2 asked"; ``whoami``: "0 in total, 9 service tasks (quota 10, service
  tasks included)"), while ``usage`` shows ``RUNNING/CONTAINERS 0/0`` with no
  containers quota in the table at all, and ``usage --json`` says ``containers:
  {total: 0, quota: 10}``: a script's headroom of 10 where the gate has 1.
  (``admin/usage.py:collect_usage`` counts plain containers only and the REPLICAS
  column reads ``DesiredTasks``; ``policy/quota.py:usage`` counts
  ``service_tasks``; ``cli/admin_cmd.py:usage_table`` drops ``containers.quota``.)
- Low: ``dockergate user set-profile colleague ops`` succeeds and prints "running
  gates apply it within a second" when the gate has not loaded ``ops`` (a new
  ``ops.yaml`` before ``policy reload``, or one with a typo that does not load); the
  colleague is then refused everything with "has profile 'ops', which has no file in
  <dir>", although the file is right there. (``cli/user_cmd.py:set_profile`` checks
  only that ``<name>.yaml`` exists, ``store/profiles.py:check_profile``; the refusal
  text is ``server.py:Gate.profile_for``.)

Held (``test_works_*``): ``policy reload`` of a profile with a typo exits 1 naming
file, line and key, the gate keeps its rules, serves members, and the audit has the
failed reload; after the fix and a reload an ``ops`` profile with ``admin: true``
makes the colleague an admin (``whoami``, ``ps -a``); ``purge --dry-run`` changes
nothing, ``--stop-only --yes`` scales the intern's service to 0 (``usage`` then shows
0/0 replicas and no memory), ``--volumes --yes`` removes it, and every step is an
audit row of kind ``user``; ``/_dockergate/metrics`` counts the refusals by rule and
``/_dockergate/health`` answers ok.

Checked by hand and left out (no finding): ``audit --follow --json`` prints new rows
as the gate writes them and keeps running through a gate restart; a restart
(``shutdown_grace`` 1 s) ends ``docker logs -f`` with ``unexpected EOF`` and the gate
is back in under a second; ``user set-profile`` of the intern to another profile shows
in their ``whoami`` (profile, quotas) within a second.

Noticed and left alone: with a broken profile left on disk after a refused ``policy
reload`` the next restart does not serve at all (``cannot serve: <file>:<line>:
...``, everyone locked out; fail-closed, but ``policy reload``'s refusal does not warn
that a restart will not come up); a non-interactive ``docker exec`` cut by the restart
exits 255 with nothing on stderr (the README promises ``unexpected EOF``); ``audit
--kind services`` (the plural, as docker spells the command) answers "no matching
audit rows" instead of naming the known kinds; ``policy show member`` and ``policy
list`` fail entirely while one other file (``ops.yaml``) has a typo; metrics'
``dockergate_user_objects{kind="container"}`` counts task containers (documented),
so it is a third number beside ``usage`` and ``whoami``; a global service counts
every node (also drained ones, known since 26b).

Only the local ``busybox`` image; loopback only; one module-scoped gate.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Gate, UnixUser, dockergate_argv, policies_gate, raw_request, wait_until

pytestmark = pytest.mark.timeout(120)

OWNER = "dockergate.owner"
INTERN = "r27c-intern"
MEMBER = "r27c-member"
COLLEAGUE = "r27c-ops"


def _rand() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def g27(session_dir: Path, docker_host: str) -> Iterator[Gate]:
    with policies_gate(session_dir, docker_host) as g:
        yield g


def dg(g: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    """``dockergate --state-dir <gate's> ARGS`` as root, the private daemon upstream,
    stdin not a terminal (no policies-dir flag: the CLI finds the running gate's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    env["DOCKERGATE_UPSTREAM"] = g.upstream
    argv = [*dockergate_argv(), "--state-dir", str(g.state_dir), *args]
    return subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args}\nrc={r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
    return r.stdout


def whoami(g: Gate, u: UnixUser) -> subprocess.CompletedProcess[str]:
    argv = ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups"]
    argv += [*dockergate_argv(), "whoami"]
    env = {"PATH": os.environ["PATH"], "DOCKER_HOST": g.unix_url}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def people(g27: Gate, unix_user) -> dict[str, UnixUser]:
    out = {}
    for short, name, profile in (
        ("r27ci", INTERN, "intern"),
        ("r27cm", MEMBER, "member"),
        ("r27co", COLLEAGUE, "member"),
    ):
        u = unix_user(short)
        ok(dg(g27, "user", "add", name, "--profile", profile, "--uid", str(u.uid)))
        out[name] = u
    g27.settle()  # the gate applies the new users (it polls the store every 0.25 s)
    return out


@pytest.fixture(scope="module", autouse=True)
def _cleanup(direct_client) -> Iterator[None]:
    yield
    for user in (INTERN, MEMBER, COLLEAGUE):
        flt = {"label": f"{OWNER}={user}"}
        for s in direct_client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                s.remove()
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
        for v in direct_client.volumes.list(filters=flt):
            with contextlib.suppress(Exception):
                v.remove(force=True)


@pytest.fixture(scope="module")
def intern_job(cli, g27: Gate, people) -> str:
    """The intern's job: a service of 9 replicas (its tasks wait for a worker: the
    shipped intern profile keeps them off managers and the test worker is drained);
    the containers quota (10) counts all 9."""
    name = f"r27c-job-{_rand()}"
    argv = ["service", "create", "-d", "--name", name, "--replicas", "9", "busybox", "sleep", "600"]
    ok(cli(argv, user=people[INTERN], gate=g27))
    return name


def usage_row(g: Gate, user: str) -> dict[str, Any]:
    rows = json.loads(ok(dg(g, "usage", "--json")))["users"]
    return next(r for r in rows if r["user"] == user)


# ======================================================================== findings


def test_finding_audit_create_rows_name_no_object(cli, g27, people, intern_job, direct_client):
    """Medium. "Who ran what": the intern's ``docker service create --name JOB`` is
    recorded as ``POST /services/create allow 201`` with ``object_id`` null and no
    detail, so ``dockergate audit --user intern --kind service`` cannot say which
    service it was (nor can ``--kind container`` for a ``docker run``). The gate has
    both the name (request body) and the ID (dockerd's 201 answer). Expected: the
    create row carries the created object's ID (``object_id``) and/or its name."""
    sid = direct_client.services.get(intern_job).id

    def creates() -> list[dict[str, Any]]:
        rows = json.loads(ok(dg(g27, "audit", "--user", INTERN, "--kind", "service", "--json")))
        return [r for r in rows if r["path"] == "/services/create" and r["decision"] == "allow"]

    # The gate's audit writer flushes every 0.5 s (later on a busy machine): the create
    # just made (the fixture) may not be in the table yet.
    row = wait_until(creates, 15, interval=0.25, what="the service create's audit row")[-1]
    said = f"{row['object_id']} {row['detail']}"
    assert sid in said or intern_job in said, (
        f"the audit row of the intern's service create names neither {intern_job!r} "
        f"nor its ID {sid}: {row}"
    )


def test_finding_usage_leaves_out_the_tasks_the_containers_quota_counts(
    cli, g27, people, intern_job
):
    """Medium. Since today a service's tasks count in ``quota.containers``: the
    intern (quota 10) with a 9-replica service is refused 2 more replicas, and
    ``whoami`` says "9 service tasks (quota 10, service tasks included)". ``dockergate
    usage`` shows ``RUNNING/CONTAINERS 0/0`` and no containers quota in its table, and
    ``usage --json`` says ``containers: {total: 0, quota: 10}``. Expected: ``usage``
    counts against ``containers.quota`` what the gate counts (9 of 10), in the table
    and in the JSON."""
    u = people[INTERN]
    r = cli(["service", "create", "-d", "--replicas", "2", "busybox", "true"], user=u, gate=g27)
    assert r.returncode != 0 and "quota.containers" in r.stderr, r.stderr  # held
    assert "9 service tasks (quota 10" in ok(whoami(g27, u))  # held
    row = usage_row(g27, INTERN)
    containers = row["containers"]
    assert containers["quota"] == 10, row
    assert 9 in [v for k, v in containers.items() if k != "quota"], (
        f"usage --json counts {containers} against a quota of 10; the gate counts 9 "
        "(0 containers + 9 service tasks) and refuses a 2-replica service"
    )
    table = ok(dg(g27, "usage"))
    line = next(ln for ln in table.splitlines() if ln.startswith(INTERN))
    assert "9 of 10" in line, f"usage's table row for the intern: {line!r}"


def test_finding_set_profile_to_a_profile_the_gate_has_not_loaded(g27, people, cli):
    """Low. The operator writes ``ops.yaml`` (here with a typo, ``admn: true``) and
    runs ``dockergate user set-profile colleague ops``: exit 0, "running gates apply it
    within a second". The gate has not loaded ``ops`` (a typo, or no ``policy reload``
    yet), so the colleague is refused everything with "has profile 'ops', which has no
    file in <dir>" while the file is there. Expected: ``set-profile`` refuses (or at
    least warns) when the profile does not load or the running gate has not loaded it,
    naming ``dockergate policy reload``; the refusal says the profile is not loaded
    rather than that its file is missing."""
    ops = g27.policies / "ops.yaml"  # type: ignore[attr-defined]
    ops.write_text("description: on-call operators\nadmn: true\n")
    try:
        r = dg(g27, "user", "set-profile", COLLEAGUE, "ops")
        g27.settle()
        refused = cli(["ps"], user=people[COLLEAGUE], gate=g27)
        said = r.stdout + r.stderr
        assert r.returncode != 0 or "reload" in said or "not loaded" in said, (
            f"set-profile to a profile that does not load: exit {r.returncode}, {said!r}; "
            f"the colleague now gets: {refused.stderr.strip()}"
        )
        assert "which has no file" not in refused.stderr, (
            f"{ops} exists; the refusal says: {refused.stderr.strip()}"
        )
    finally:
        ops.unlink()  # the colleague keeps 'ops': the next test loads a good one


# ======================================================================== held


def test_works_typo_reload_refused_then_ops_profile_makes_an_admin(g27, people, cli):
    """A typo in a profile: ``policy reload`` exits 1 naming file, line and key, the
    gate keeps serving with its previous rules, the failed reload is an audit row.
    Fixed and reloaded, ``ops`` (``admin: true``) makes the colleague an admin."""
    ops = g27.policies / "ops.yaml"  # type: ignore[attr-defined]
    mc = f"r27c-mc-{_rand()}"
    ok(cli(["create", "--name", mc, "busybox", "true"], user=people[MEMBER], gate=g27))
    ops.write_text("description: on-call operators\nadmin: true\nquota:\n  containres: 3\n")
    try:
        r = dg(g27, "policy", "reload")
        assert r.returncode == 1 and "ops.yaml:4" in r.stderr and "containres" in r.stderr, r
        ok(cli(["ps", "-a"], user=people[MEMBER], gate=g27))
        rows = json.loads(ok(dg(g27, "audit", "--kind", "policy", "--json")))
        assert rows and rows[-1]["decision"] == "error", rows
        ops.write_text("description: on-call operators\nadmin: true\n")
        assert "ops" in ok(dg(g27, "policy", "reload"))
        ok(dg(g27, "user", "set-profile", COLLEAGUE, "ops"))
        g27.settle()
        assert "admin:          yes" in ok(whoami(g27, people[COLLEAGUE]))
        names = ok(cli(["ps", "-a", "--format", "{{.Names}}"], user=people[COLLEAGUE], gate=g27))
        assert mc in names.split(), names
    finally:
        ops.unlink(missing_ok=True)  # the gate keeps ops loaded; nothing later uses it


def test_works_purge_the_intern_step_by_step(g27, people, intern_job, direct_client):
    """``purge --dry-run`` changes nothing; ``--stop-only --yes`` scales the job to 0
    (usage then shows 0/0 replicas and no memory for it); ``--volumes --yes`` removes
    it; each step is an audit row of kind ``user``; metrics count the refusals by rule;
    health is ok."""
    metrics = raw_request(g27.socket, "GET", "/_dockergate/metrics")
    assert metrics.status == 200 and b'rule="profile intern: this many tasks"' in metrics.body
    health = raw_request(g27.socket, "GET", "/_dockergate/health")
    assert health.status == 200 and json.loads(health.body)["status"] == "ok", health.body

    dry = ok(dg(g27, "purge", "--user", INTERN, "--dry-run"))
    assert intern_job in dry and "would remove" in dry, dry
    assert direct_client.services.get(intern_job).attrs["Spec"]["Mode"]["Replicated"] == {
        "Replicas": 9
    }
    stop = ok(dg(g27, "purge", "--user", INTERN, "--stop-only", "--yes"))
    assert "scaled to 0 (was 9)" in stop, stop
    row = usage_row(g27, INTERN)
    assert row["services"]["replicas_desired"] == 0 and row["memory"]["reserved"] == 0, row
    gone = ok(dg(g27, "purge", "--user", INTERN, "--volumes", "--yes"))
    assert "removed" in gone, gone
    assert not direct_client.services.list(filters={"label": f"{OWNER}={INTERN}"})
    rows = json.loads(ok(dg(g27, "audit", "--kind", "user", "--json")))
    lines = [r["path"] for r in rows]
    assert f"purge --user {INTERN} --stop-only" in lines, lines
    assert f"purge --user {INTERN} --volumes" in lines, lines
