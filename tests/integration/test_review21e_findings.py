"""Review round 21e: can the admin trust ``purge``, ``usage`` and ``audit``?

Played from both sides on a gate of its own (a member profile with a 512m memory
quota): a member who wants to outlive a purge or hide in (or forge) the audit log,
and an admin relying on the tools' answers. Driven with the real docker CLI as unix
users, the real ``dockergate`` CLI, raw requests and a held SQLite lock.

Ranked findings (each ``test_finding_*`` FAILS on the reviewed code, asserting what
the admin should get):

* High   - a classic build in progress survives ``purge``: its RUN container has no
  owner label, so the purge reports "nothing owned" while the member's work keeps
  running (and finishes into an image) on the engine.
* Medium - ``dockergate usage`` leaves out the memory of builds in progress, which
  the quota and ``whoami`` count: the admin sees room the gate refuses.
* Medium - a hijacked session (``exec start``, ``attach``) is audited only when it
  ends: a shell open right now is not in ``dockergate audit`` (and a gate killed
  meanwhile never records it).
* Medium - ``dockergate policy reload`` is no audit row, though every admin CLI
  action is documented to be one.
* Medium - ``purge --stop-only`` leaves ``--restart always`` containers as they
  are: Docker starts them again on its next start, and the report does not say so.
* Medium - a member's request path (percent-decoded) goes raw into the ``audit``
  table: a ``%0a`` forges whole rows naming other users, ``%1b`` sends escape
  sequences to the admin's terminal.
* Low    - after the store was locked, the recovery line says "writing 0 buffered
  records" although the held rows were just written.

``test_works_*`` pin what held: purge of paused, restarting, created containers,
job and global services (others', the admin's and unlabelled containers left
alone); refusals before identification and hijacks are recorded; ``--since`` with
zones; requests served (and rows kept) while the store is locked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pty
import select
import sqlite3
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import UnixUser, connect_as_uid, dockergate_argv, new_gate, read_response

pytestmark = pytest.mark.timeout(120)

OWNER = "dockergate.owner"
MIB = 1 << 20


def _tag() -> str:
    return uuid.uuid4().hex[:8]


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def g21(session_dir: Path, docker_host: str, tmp_path_factory: Any) -> Iterator[Any]:
    pol = tmp_path_factory.mktemp("r21e-policies")
    (pol / "admin.yaml").write_text("admin: true\n")
    (pol / "member.yaml").write_text(
        textwrap.dedent(
            """
            description: review 21e member
            resources:
              memory: {default: 64m, max: 256m}
            quota:
              memory: 512m
            """
        )
    )
    g = new_gate(session_dir, docker_host, extra_args=["--policies-dir", str(pol)])
    g.init()
    g.start()
    g.policies = pol
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def who(g21: Any, unix_user: Any) -> dict[str, tuple[UnixUser, str]]:
    found = {}
    for short in ("alice", "bob"):
        u = unix_user(f"r21e-{short}")
        name = f"r21e-{short}"
        g21.dockergate("user", "add", name, "--profile", "member", "--uid", str(u.uid))
        found[short] = (u, name)
    return found


@pytest.fixture
def wipe(who: Any, direct_client: Any) -> Iterator[None]:
    """Everything of alice's and bob's removed directly after the test."""
    yield
    for _u, name in who.values():
        flt = {"label": f"{OWNER}={name}"}
        for s in direct_client.services.list(filters=flt):
            with contextlib.suppress(Exception):
                s.remove()
        for c in direct_client.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def dg(
    g: Any, *args: str, user: UnixUser | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    argv = [*dockergate_argv(), "--state-dir", str(g.state_dir), *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
        argv += [*dockergate_argv(), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    env["DOCKERGATE_UPSTREAM"] = g.upstream
    env["DOCKERGATE_POLICIES_DIR"] = str(g.policies)
    env.update(kw.pop("env", {}))
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=kw.pop("timeout", 90),
        check=False,
        **kw,
    )


def out(r: subprocess.CompletedProcess[str]) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


def audit_rows(g: Any, *args: str) -> list[dict[str, Any]]:
    r = dg(g, "audit", "--json", "--limit", "500", *args)
    assert r.returncode == 0, out(r)
    return list(json.loads(r.stdout))


def wait_for(predicate: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def raw_as(g: Any, uid: int, method: str, target: str, body: bytes = b"") -> int:
    [s] = connect_as_uid(str(g.socket), uid, 1)
    with s:
        head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        else:
            head += "Content-Length: 0\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        return read_response(s, method=method).status


# -- builds in progress ---------------------------------------------------------------


@pytest.fixture
def bob_build(
    g21: Any, who: Any, cli: Any, session_dir: Path, direct_client: Any
) -> Iterator[dict[str, Any]]:
    """bob's classic build through the gate, its RUN step sleeping: yields the RUN
    container's ID once it runs."""
    u, _name = who["bob"]
    token = f"r21e-{_tag()}"
    ctx = Path(session_dir) / f"ctx-{token}"
    ctx.mkdir()
    ctx.chmod(0o755)
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN sleep 90 # {token}\n")
    (ctx / "Dockerfile").chmod(0o644)
    proc = cli.popen(
        ["build", "-t", f"{token}:1", str(ctx)], user=u, gate=g21, env={"DOCKER_BUILDKIT": "0"}
    )

    def run_container() -> str | None:
        for c in direct_client.api.containers(filters={"status": "running"}):
            if token in str(c.get("Command")):
                return str(c["Id"])
        return None

    try:
        cid = wait_for(run_container, 30)
        if cid is None:
            proc.kill()
            pytest.fail(f"the build's RUN step did not start: {proc.communicate()}")
        yield {"cid": cid, "token": token, "proc": proc}
    finally:
        proc.kill()
        proc.communicate()
        for c in direct_client.api.containers(all=True):
            if token in str(c.get("Command")):
                with contextlib.suppress(Exception):
                    direct_client.api.remove_container(c["Id"], force=True)
        with contextlib.suppress(Exception):
            direct_client.images.remove(f"{token}:1", force=True)


def test_finding_usage_leaves_out_builds_that_the_quota_counts(
    g21: Any, who: Any, bob_build: Any, wipe: None
) -> None:
    """Medium. The gate holds a build's memory in bob's quota until it ends
    (``whoami`` shows it, the next create is refused with it), but ``dockergate
    usage`` counts owner labels only, and a build's RUN container has none: the admin
    reads 0 where the gate refuses at the quota."""
    u, name = who["bob"]
    r = dg(g21, "whoami", "--json", "-H", g21.unix_url, user=u)
    assert r.returncode == 0, out(r)
    gate_says = json.loads(r.stdout)["usage"]["memory"]
    assert gate_says >= 64 * MIB, r.stdout  # the build holds its default 64m
    r = dg(g21, "usage", "--json")
    assert r.returncode == 0, out(r)
    row = next(x for x in json.loads(r.stdout)["users"] if x["user"] == name)
    assert row["memory"]["reserved"] == gate_says, (
        f"usage says {row['memory']['reserved']} bytes, the quota (whoami) {gate_says}"
    )


def test_finding_purge_leaves_a_build_in_progress_running(
    g21: Any, who: Any, bob_build: Any, direct_client: Any, wipe: None
) -> None:
    """High. bob starts a classic build whose RUN step runs for long (a loop, a
    miner...); the admin purges him. The RUN container carries no owner label, so
    the purge says "nothing owned" and bob's work goes on, then lands as an image.
    A purge must stop what the user has running on the engine (the gate knows his
    builds: it counts them in his quota), or at least name it."""
    _u, name = who["bob"]
    r = dg(g21, "purge", "--user", name, "--yes")
    assert r.returncode == 0, out(r)

    def stopped() -> bool:
        with contextlib.suppress(Exception):
            c = direct_client.api.inspect_container(bob_build["cid"])
            return not c["State"]["Running"]
        return True  # gone

    assert wait_for(stopped, 5), (
        "bob's build is still running after the purge; the purge said:\n" + out(r)
    )


# -- audit: hijacks, admin actions, forged rows --------------------------------------


def test_finding_open_exec_session_is_not_in_the_audit_log(
    g21: Any, who: Any, cli: Any, direct_client: Any, wipe: None
) -> None:
    """Medium. A hijacked request is recorded when it ends: while bob's ``docker
    exec`` runs (an interactive shell can stay for days), ``dockergate audit`` shows
    its ``exec`` create but not that it was started; a gate killed meanwhile never
    records it. The start should be on record when it is allowed."""
    u, name = who["bob"]
    c = f"r21e-ex-{_tag()}"
    cli(["run", "-d", "--name", c, "busybox", "sleep", "120"], user=u, gate=g21, check=True)
    proc = cli.popen(["exec", c, "sleep", "8"], user=u, gate=g21)
    try:
        running = wait_for(
            lambda: any(
                "sleep 8" in " ".join(p)
                for p in (direct_client.containers.get(c).top().get("Processes") or [])
            ),
            10,
        )
        assert running, "the exec did not start"

        def started() -> list[dict[str, Any]]:
            return [
                row
                for row in audit_rows(g21, "--user", name, "--since", "2m")
                if row["path"].startswith("/exec/") and row["path"].endswith("/start")
            ]

        rows = wait_for(started, 3, interval=0.5)
        assert rows, "bob's running exec session is not in the audit log"
    finally:
        proc.kill()
        proc.communicate()


def test_works_hijacks_are_audited_once_they_end(g21: Any, who: Any, cli: Any, wipe: None) -> None:
    u, name = who["alice"]
    c = f"r21e-hj-{_tag()}"
    cli(["run", "-d", "--name", c, "busybox", "sleep", "120"], user=u, gate=g21, check=True)
    r = cli(["exec", c, "true"], user=u, gate=g21)
    assert r.returncode == 0, r.stderr
    r = cli(["run", "--rm", "busybox", "true"], user=u, gate=g21)  # attach + start
    assert r.returncode == 0, r.stderr

    def seen() -> set[str]:
        paths = {row["path"] for row in audit_rows(g21, "--user", name, "--since", "2m")}
        return {p.rsplit("/", 1)[1] for p in paths if p.startswith(("/exec/", "/containers/"))}

    found = wait_for(lambda: {"start", "attach", "exec"} <= seen(), 5)
    assert found, seen()


def test_finding_policy_reload_is_not_audited(g21: Any) -> None:
    """Medium. "Every admin CLI action is an audit row": ``user add``, ``purge``,
    ``volume-names release`` are; ``policy reload`` (what the gate enforces from now
    on) is not."""
    before = {row["id"] for row in audit_rows(g21)}
    r = dg(g21, "policy", "reload")
    assert r.returncode == 0, out(r)

    def reload_rows() -> list[dict[str, Any]]:
        return [
            row
            for row in audit_rows(g21)
            if row["id"] not in before
            and row["listener"] == "cli"
            and "reload" in f"{row['path']} {row['route']}"
        ]

    assert wait_for(reload_rows, 3, interval=0.5), "no audit row for `dockergate policy reload`"


def test_works_refusal_before_identification_is_audited(g21: Any) -> None:
    status = raw_as(g21, 65534, "POST", "/v1.41/containers/create", b"{}")
    assert status == 403

    def rows() -> list[dict[str, Any]]:
        return [
            r
            for r in audit_rows(g21, "--denied", "--since", "2m")
            if r["user"] is None and r["identified_by"] == "unix uid 65534"
        ]

    found = wait_for(rows, 3)
    assert found and found[-1]["path"] == "/containers/create", found


def _terminal_output(g: Any, *args: str) -> str:
    """``dockergate ARGS`` as an admin sees it in a terminal (a pty: click keeps the
    escape sequences it would strip from a pipe)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(
        [*dockergate_argv(), "--state-dir", str(g.state_dir), *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=30)
    return b"".join(chunks).decode(errors="replace")


def test_finding_member_forges_audit_rows_and_terminal_escapes(g21: Any, who: Any) -> None:
    """Medium. The gate records the percent-decoded path, and ``dockergate audit``
    prints it (and the rule, which quotes it) as it is. bob's refused request for
    ``/containers/x%0a<date>  r21e-alice ... allow%1b[8m/kill`` prints as a row of
    alice's in the admin's terminal, with escape sequences after it (``--json`` is
    fine). Control characters should be shown escaped."""
    u, name = who["bob"]
    forged = "2020-01-01 00:00:00  r21e-alice  unix uid 1  DELETE  /volumes/data  allow  204"
    target = "/v1.41/containers/x%0a" + forged.replace(" ", "%20") + "%1b[8m/kill"
    assert raw_as(g21, u.uid, "POST", target) in (403, 404)
    assert wait_for(
        lambda: any("\n" in r["path"] for r in audit_rows(g21, "--user", name, "--since", "2m")),
        3,
    )
    shown = _terminal_output(g21, "audit", "--user", name, "--since", "2m")
    lines = shown.replace("\r\n", "\n").split("\n")
    assert not [ln for ln in lines if ln.startswith("2020-01-01")], shown
    assert "\x1b" not in shown, repr(shown)


# -- purge: what it removes, what it leaves ------------------------------------------


def test_works_purge_takes_every_state_and_mode_and_leaves_others(
    g21: Any, who: Any, cli: Any, direct_client: Any, wipe: None
) -> None:
    """bob's paused, restart-looping and created containers, a replicated job and a
    global service go; alice's container and an unlabelled one made on the daemon
    (Portainer's, say) stay."""
    bob, bob_name = who["bob"]
    alice, _ = who["alice"]
    t = _tag()
    run = ["run", "-d", "--name"]
    cli([*run, f"bp-{t}", "busybox", "sleep", "120"], user=bob, gate=g21, check=True)
    cli(["pause", f"bp-{t}"], user=bob, gate=g21, check=True)
    cli(
        [*run, f"br-{t}", "--restart", "always", "busybox", "false"], user=bob, gate=g21, check=True
    )
    cli(["create", "--name", f"bc-{t}", "busybox", "true"], user=bob, gate=g21, check=True)
    for mode in ("replicated-job", "global"):
        cli(
            ["service", "create", "-d", "--name", f"bs-{mode}-{t}", "--mode", mode,
             "--constraint", "node.labels.r21e-nowhere==1", "busybox", "sleep", "120"],
            user=bob, gate=g21, check=True,
        )  # fmt: skip
    cli([*run, f"ak-{t}", "busybox", "sleep", "120"], user=alice, gate=g21, check=True)
    system = direct_client.containers.run("busybox", ["sleep", "120"], detach=True, name=f"sys-{t}")
    try:
        r = dg(g21, "purge", "--user", bob_name, "--yes")
        assert r.returncode == 0, out(r)
        flt = {"label": f"{OWNER}={bob_name}"}
        assert direct_client.containers.list(all=True, filters=flt) == [], out(r)
        assert direct_client.services.list(filters=flt) == [], out(r)
        assert direct_client.containers.get(f"ak-{t}").status == "running"
        assert direct_client.containers.get(f"sys-{t}").status == "running"
    finally:
        system.remove(force=True)


def test_finding_stop_only_leaves_restart_always_to_come_back(
    g21: Any, who: Any, cli: Any, direct_client: Any, wipe: None
) -> None:
    """Medium. ``purge --stop-only`` kills bob's containers; one made with
    ``--restart always`` keeps that policy, and Docker starts every ``always``
    container again when it starts (a daemon restart, a reboot), manual stop or not.
    bob's work comes back unannounced; the report says "killed" and exit 0. The
    stop should hold (policy set to ``no``), or the report should say it will not."""
    bob, bob_name = who["bob"]
    c = f"r21e-ra-{_tag()}"
    cli(["run", "-d", "--name", c, "--restart", "always", "busybox", "sleep", "120"],
        user=bob, gate=g21, check=True)  # fmt: skip
    r = dg(g21, "purge", "--user", bob_name, "--stop-only", "--yes")
    assert r.returncode == 0, out(r)
    state = direct_client.api.inspect_container(c)
    assert not state["State"]["Running"], out(r)  # this much holds
    policy = state["HostConfig"]["RestartPolicy"]["Name"]
    assert policy != "always" or "restart" in r.stdout.lower(), (
        f"restart policy still {policy!r}; the report:\n{out(r)}"
    )


# -- the store locked -----------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_episode(g21: Any, who: Any, cli: Any) -> dict[str, Any]:
    """The gate's SQLite store held under an exclusive lock for 11 s (longer than the
    busy timeout) while alice works; then released."""
    u, name = who["alice"]
    start = g21.log_size()
    ready = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(str(g21.state_dir / "dockergate.db"), isolation_level=None, timeout=5)
        try:
            db.execute("BEGIN EXCLUSIVE")
            ready.set()
            time.sleep(11)
            db.execute("COMMIT")
        finally:
            db.close()

    t = threading.Thread(target=hold)
    t.start()
    assert ready.wait(10)
    c = f"r21e-lk-{_tag()}"
    took = []
    for args in (["ps", "-q"], ["create", "--name", c, "busybox", "true"], ["rm", c]):
        t0 = time.monotonic()
        r = cli(args, user=u, gate=g21)
        took.append((args[0], r.returncode, time.monotonic() - t0, r.stderr))
    t.join()

    def stored() -> list[dict[str, Any]]:
        return [r for r in audit_rows(g21, "--user", name, "--since", "2m") if c in r["path"]]

    wait_for(stored, 10)
    return {"took": took, "rows": stored(), "log": g21.log(start)}


def test_works_requests_served_and_rows_kept_while_the_store_is_locked(
    locked_episode: dict[str, Any],
) -> None:
    for what, rc, seconds, err in locked_episode["took"]:
        assert rc == 0 and seconds < 5, (what, rc, seconds, err)
    assert locked_episode["rows"], "the rows of the locked period were lost"
    assert "cannot write to the store" in locked_episode["log"], locked_episode["log"]


def test_finding_store_recovery_line_says_zero_rows_written(
    locked_episode: dict[str, Any],
) -> None:
    """Low. After the outage the gate logs "store reachable again ...; writing 0
    buffered records" (it counts after it has written them): an operator reads that
    the rows of the outage were lost."""
    lines = [ln for ln in locked_episode["log"].splitlines() if "reachable again" in ln]
    assert lines, locked_episode["log"]
    assert "writing 0 buffered" not in lines[-1], lines[-1]


# -- audit filters ----------------------------------------------------------------------


def test_works_audit_since_with_a_zone_and_user_kind_filters(g21: Any, who: Any) -> None:
    rows = audit_rows(g21)
    assert rows
    newest = rows[-1]
    # Ten minutes before the newest row, written in UTC-05:00 and in UTC+02:00.
    for since in ("-05:00", "+02:00"):
        hours = -5 if since.startswith("-") else 2
        at = dt.datetime.fromisoformat(newest["time"]) - dt.timedelta(minutes=10)
        local = at.astimezone(dt.timezone(dt.timedelta(hours=hours)))
        got = audit_rows(g21, "--since", local.isoformat(timespec="seconds"))
        assert got and got[-1]["id"] == newest["id"], since
        assert all(dt.datetime.fromisoformat(r["time"]) >= at.replace(microsecond=0) for r in got)
    _u, name = who["alice"]
    assert all(r["user"] == name for r in audit_rows(g21, "--user", name))
    assert all(r["kind"] == "user" for r in audit_rows(g21, "--kind", "user"))
