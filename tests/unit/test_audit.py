"""The audit log on real databases: the writer (batching, flush on stop, retention,
an unavailable store), the store's audit queries, and the CLI that reads them.

SQLite always; PostgreSQL too when DOCKERGATE_TEST_PG_URL is set (as in
tests/unit/test_store.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from dockergate.audit.actions import cli_record
from dockergate.audit.record import RequestRecord
from dockergate.audit.writer import AuditWriter, row_of, should_audit, writer_of
from dockergate.cli import cli
from dockergate.cli.admin_cmd import parse_since
from dockergate.config import ConfigError, Settings, load_settings
from dockergate.store.db import make_engine, upgrade
from dockergate.store.errors import StoreError
from dockergate.store.repository import Store

CLEAN_ENV: dict[str, str | None] = {
    f"DOCKERGATE_{k}": None
    for k in ("DB", "CONFIG", "STATE_DIR", "POLICIES_DIR", "UPSTREAM", "AUDIT_RETENTION_DAYS")
}


class CountingStore(Store):
    """The real store, remembering the size of every insert (one per transaction)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inserts: list[int] = []

    def append_audit(self, rows: Sequence[Mapping[str, Any]]) -> int:
        done = super().append_audit(rows)
        self.inserts.append(len(rows))
        return done


@pytest.fixture
def store(settings: Settings) -> Iterator[CountingStore]:
    s = CountingStore(make_engine(settings.db_url()), settings.db_url())
    yield s
    s.close()


def rec(
    n: int = 0,
    *,
    user: str | None = "alice",
    method: str = "POST",
    decision: str = "allow",
    rule: str | None = None,
    kind: str | None = "container",
    started: float | None = None,
    path: str | None = None,
) -> RequestRecord:
    return RequestRecord(
        started=time.time() if started is None else started,
        user=user,
        identified_by="unix uid 1000",
        listener="unix",
        method=method,
        path=path or f"/containers/c{n}/start",
        route="container.start",
        kind=kind,
        object_id=f"{n:064x}",
        decision=decision,
        rule=rule,
        status=204 if decision == "allow" else 403,
        seconds=0.0012,
    )


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


# -- what is recorded ------------------------------------------------------------------


def test_what_is_audited() -> None:
    assert should_audit(rec(method="POST"), reads=False)
    assert should_audit(rec(method="DELETE"), reads=False)
    assert not should_audit(rec(method="GET"), reads=False)
    assert not should_audit(rec(method="HEAD"), reads=False)
    assert should_audit(rec(method="GET", decision="deny", rule="x"), reads=False)
    assert should_audit(rec(method="GET", decision="error", rule="x"), reads=False)
    assert should_audit(rec(method="GET"), reads=True)
    wait = rec(method="POST")
    wait.route = "container.wait"  # a POST that only waits: a read
    assert not should_audit(wait, reads=False) and should_audit(wait, reads=True)


def test_row_is_sanitised_and_bounded() -> None:
    r = rec(path="/x\x00y/" + "a" * 5000 + "\udcff")
    r.user = "u" * 100
    r.decision = "weird"
    row = row_of(r)
    assert "\x00" not in row["path"] and "\\x00" in row["path"]
    assert len(row["path"]) == 1024
    row["path"].encode("utf-8")  # no lone surrogate left
    assert len(row["user_name"]) == 64
    assert row["decision"] == "error"
    assert row["at"].tzinfo is not None
    assert row["duration_ms"] == pytest.approx(1.2)
    # Only the record's fields: nothing else can reach the table.
    assert set(row) == {
        "at",
        "user_name",
        "identified_by",
        "listener",
        "method",
        "path",
        "route",
        "kind",
        "object_id",
        "decision",
        "rule",
        "status",
        "duration_ms",
        "detail",
    }


def test_int_settings_from_env_and_yaml(tmp_path: Path) -> None:
    s = load_settings(
        environ={"DOCKERGATE_AUDIT_RETENTION_DAYS": "7", "DOCKERGATE_AUDIT_READS": "yes"}
    )
    assert s.audit_retention_days == 7 and s.audit_reads is True
    cfg = tmp_path / "c.yaml"
    cfg.write_text("audit_retention_days: 30\n")
    assert load_settings(cfg, environ={}).audit_retention_days == 30
    with pytest.raises(ConfigError, match="audit_retention_days"):
        load_settings(environ={"DOCKERGATE_AUDIT_RETENTION_DAYS": "a week"})
    cfg.write_text("audit_retention_days: true\n")
    with pytest.raises(ConfigError, match="audit_retention_days"):
        load_settings(cfg, environ={})


# -- the writer --------------------------------------------------------------------------


async def test_sink_only_queues(store: CountingStore) -> None:
    """The sink never touches the database: 5000 records are queued in well under a
    millisecond each, and nothing is inserted until the loop runs the writer."""
    writer = AuditWriter(store, batch_size=500, interval=0.05)
    records = [rec(i) for i in range(5000)]
    t0 = time.perf_counter()
    for r in records:
        writer(r)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.25, elapsed
    assert store.inserts == [] and writer.pending == 5000
    writer.start()
    await writer.stop()
    assert store.audit_count() == 5000


async def test_batches(store: CountingStore) -> None:
    writer = AuditWriter(store, batch_size=100, interval=0.05)
    writer.start()
    try:
        for i in range(1050):
            writer(rec(i))
        writer(rec(9999, method="GET"))  # an allowed read: not recorded
        await wait_for(lambda: writer.written == 1050)
    finally:
        await writer.stop()
    assert store.audit_count() == 1050
    assert max(store.inserts) <= 100
    assert sum(store.inserts) == 1050
    assert len(store.inserts) >= 11


async def test_timed_flush_of_a_small_batch(store: CountingStore) -> None:
    writer = AuditWriter(store, batch_size=500, interval=0.1)
    writer.start()
    try:
        for i in range(3):
            writer(rec(i))
        await wait_for(lambda: writer.written == 3, timeout=3)
        assert store.inserts == [3]
    finally:
        await writer.stop()


async def test_stop_flushes_everything(store: CountingStore) -> None:
    """A clean shutdown loses nothing, even with no timed flush due yet."""
    writer = AuditWriter(store, batch_size=500, interval=3600)
    writer.start()
    await asyncio.sleep(0.05)
    for i in range(1234):
        writer(rec(i))
    await writer.stop()
    assert store.audit_count() == 1234
    assert writer.pending == 0 and writer.dropped == 0


async def test_retention(store: CountingStore) -> None:
    now = time.time()
    old = [rec(i, started=now - 100 * 86400) for i in range(30)]
    recent = [rec(i, started=now - 10 * 86400) for i in range(5)]
    store.append_audit([row_of(r) for r in old + recent])
    writer = AuditWriter(store, retention_days=90, interval=0.05)
    writer.start()
    try:
        await wait_for(lambda: store.audit_count() == 5)
    finally:
        await writer.stop()
    assert len(store.audit_entries()) == 5


def test_prune_in_chunks(store: CountingStore) -> None:
    now = time.time()
    store.append_audit([row_of(rec(i, started=now - 3 * 86400)) for i in range(23)])
    store.append_audit([row_of(rec(i)) for i in range(4)])
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    assert store.prune_audit(before, chunk=5) == 23
    assert store.audit_count() == 4
    assert store.prune_audit(before, chunk=5) == 0


async def test_retention_zero_keeps_everything(store: CountingStore) -> None:
    store.append_audit([row_of(rec(1, started=time.time() - 5000 * 86400))])
    writer = AuditWriter(store, retention_days=0, interval=0.02)
    writer.start()
    await asyncio.sleep(0.2)
    await writer.stop()
    assert store.audit_count() == 1


async def test_unavailable_store_buffers_bounded_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database file disappears: the proxy side never fails, the buffer keeps the
    newest records up to its bound, one error is logged; when the file is back,
    what was kept is written."""
    settings = Settings(state_dir=tmp_path / "state")
    upgrade(settings)
    db = tmp_path / "state" / "dockergate.db"
    store = Store(make_engine(settings.db_url()), settings.db_url())
    writer = AuditWriter(store, batch_size=10, interval=0.02, max_buffer=50)
    writer.start()
    try:
        hidden = tmp_path / "hidden.db"
        db.rename(hidden)
        caplog.set_level(logging.INFO, logger="dockergate.audit")
        for i in range(80):
            writer(rec(i))
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.3)
        assert writer.written == 0
        assert writer.pending == 50 and writer.dropped == 30
        errors = [r for r in caplog.records if "cannot write to the store" in r.getMessage()]
        assert len(errors) == 1
        hidden.rename(db)
        await wait_for(lambda: writer.written == 50, timeout=40)
    finally:
        await writer.stop()
    rows = store.audit_entries()
    # The oldest were dropped: the newest 50 are kept, in order.
    assert [r.object_id for r in rows] == [f"{i:064x}" for i in range(30, 80)]
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    store.close()


async def test_stop_gives_up_on_a_dead_store_without_hanging(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    upgrade(settings)
    store = Store(make_engine(settings.db_url()), settings.db_url())
    (tmp_path / "state" / "dockergate.db").unlink()
    writer = AuditWriter(store, interval=0.02, stop_timeout=0.5)
    writer.start()
    writer(rec(1))
    t0 = time.monotonic()
    await writer.stop()
    assert time.monotonic() - t0 < 5
    assert writer.dropped == 1
    store.close()


def test_writer_of() -> None:
    def other(_r: RequestRecord) -> None:
        return None

    assert writer_of([other]) is None


# -- queries -----------------------------------------------------------------------------


def test_audit_queries(store: CountingStore) -> None:
    now = time.time()
    store.append_audit(
        [
            row_of(rec(1, user="alice", started=now - 7200)),
            row_of(
                rec(
                    2,
                    user="alice",
                    decision="deny",
                    rule="profile member: privileged",
                    started=now - 60,
                )
            ),
            row_of(rec(3, user="bob", kind="volume", started=now - 30)),
            row_of(
                rec(4, user="bob", decision="error", rule="upstream unreachable", started=now - 20)
            ),
            row_of(rec(5, user=None, decision="deny", rule="unknown uid", started=now - 10)),
        ]
    )
    assert [r.user for r in store.audit_entries()] == ["alice", "alice", "bob", "bob", None]
    assert [r.object_id[-1] for r in store.audit_entries(user="alice")] == ["1", "2"]
    denied = store.audit_entries(decisions=("deny", "error"))
    assert [r.rule for r in denied] == [
        "profile member: privileged",
        "upstream unreachable",
        "unknown uid",
    ]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert len(store.audit_entries(since=since)) == 4
    assert [r.kind for r in store.audit_entries(kind="volume")] == ["volume"]
    newest = store.audit_entries(limit=2)
    assert [r.object_id[-1] for r in newest] == ["4", "5"]  # the newest, oldest first
    after = store.audit_entries(after_id=newest[0].id)
    assert [r.object_id[-1] for r in after] == ["5"]
    last = store.last_activity()
    assert set(last) == {"alice", "bob"}
    assert abs(last["bob"].timestamp() - (now - 20)) < 1
    d = newest[-1].as_dict()
    assert d["decision"] == "deny" and d["time"].endswith("+00:00")


def test_audit_rows_do_not_bump_the_user_revision(store: CountingStore) -> None:
    """Gates reload their user snapshot when the revision moves: audit writes must not."""
    before = store.revision()
    store.append_audit([row_of(rec(i)) for i in range(3)])
    store.prune_audit(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert store.revision() == before


def test_refused_rows_are_reported_as_such(store: CountingStore) -> None:
    row = row_of(rec(1))
    row["decision"] = "maybe"  # bypasses row_of's coercion: the check constraint refuses it
    with pytest.raises(StoreError, match="refused by the database"):
        store.append_audit([row])


async def test_a_refused_row_does_not_hold_back_the_batch(store: CountingStore) -> None:
    writer = AuditWriter(store, batch_size=10, interval=0.02)
    good = [rec(i) for i in range(5)]
    bad = rec(99)
    bad.status = 2**40  # out of range for an INTEGER column on PostgreSQL; SQLite takes it
    for r in [*good[:2], bad, *good[2:]]:
        writer(r)
    writer.start()
    await writer.stop()
    stored = store.audit_count()
    assert stored in (5, 6)
    assert writer.dropped == 6 - stored


# -- the CLI -----------------------------------------------------------------------------


def dg(args: Sequence[str], settings: Settings) -> Any:
    base = ["--state-dir", str(settings.state_dir)]
    if settings.db:
        base += ["--db", settings.db]
    return CliRunner().invoke(cli, [*base, *args], env=CLEAN_ENV, catch_exceptions=False)


def test_parse_since() -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    assert parse_since("30m", now) == now - dt.timedelta(minutes=30)
    assert parse_since("1h", now) == now - dt.timedelta(hours=1)
    assert parse_since("2d", now) == now - dt.timedelta(days=2)
    assert parse_since("1w", now) == now - dt.timedelta(days=7)
    assert parse_since("2026-11-28", now) == dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    assert parse_since("2026-11-28T10:30", now) == dt.datetime(2026, 11, 28, 10, 30, tzinfo=dt.UTC)
    assert parse_since("2026-11-28T10:30+01:00", now).hour == 10
    with pytest.raises(click.BadParameter, match="duration"):
        parse_since("yesterday", now)


def test_audit_command(store: CountingStore, settings: Settings) -> None:
    now = time.time()
    store.append_audit(
        [
            row_of(rec(1, user="alice", started=now - 3 * 86400)),
            row_of(rec(2, user="alice", decision="deny", rule="profile member: privileged")),
            row_of(rec(3, user="bob")),
        ]
    )
    r = dg(["audit"], settings)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["TIME", "(UTC)", "USER"]
    assert len(lines) == 4 and "bob" in lines[-1]  # newest last
    r = dg(["audit", "--user", "alice", "--denied"], settings)
    assert r.exit_code == 0
    assert "profile member: privileged" in r.stdout and "bob" not in r.stdout
    assert len(r.stdout.splitlines()) == 2
    r = dg(["audit", "--since", "1d", "--json"], settings)
    rows = json.loads(r.stdout)
    assert [x["user"] for x in rows] == ["alice", "bob"]
    r = dg(["audit", "--limit", "1", "--json"], settings)
    assert [x["user"] for x in json.loads(r.stdout)] == ["bob"]
    r = dg(["audit", "--since", "soon"], settings)
    assert r.exit_code == 2 and "--since" in r.output


def test_user_commands_are_audited(settings: Settings) -> None:
    r = dg(["user", "add", "carol", "--profile", "member", "--uid", "4242"], settings)
    assert r.exit_code == 0, r.output
    r = dg(["user", "token", "carol"], settings)
    assert r.exit_code == 0, r.output
    token = r.stdout.splitlines()[0]
    assert dg(["user", "disable", "carol"], settings).exit_code == 0
    assert dg(["user", "revoke", "carol"], settings).exit_code == 0
    assert dg(["user", "remove", "nobody"], settings).exit_code == 1
    with Store.open(settings) as s:
        rows = s.audit_entries(kind="user")
    assert [r.path for r in rows] == [
        "user add carol",
        "user token carol",
        "user disable carol",
        "user revoke carol",
        "user remove nobody",
    ]
    assert rows[0].detail == "profile=member uid=4242"
    assert rows[0].listener == "cli" and rows[0].route == "cli.user.add"
    assert rows[0].object_id == "carol" and rows[0].decision == "allow"
    assert rows[-1].decision == "error" and "unknown user" in (rows[-1].rule or "")
    # The token itself never reaches the audit log.
    everything = json.dumps([r.as_dict() for r in rows])
    assert token not in everything and token.split(".")[-1] not in everything
    out = dg(["audit", "--kind", "users"], settings).stdout  # the plural reads as "user"
    assert "user add carol" in out and "exit 0" in out


def test_cli_record_shape() -> None:
    r = cli_record(
        "purge --user bob --volumes", kind="user", object_id="bob", detail="1 container removed"
    )
    assert r.listener == "cli" and r.method == "CLI" and r.route == "cli.purge"
    assert r.mutating and r.decision == "allow" and r.status == 0


def test_audit_follow_prints_new_rows(tmp_path: Path) -> None:
    """`audit --follow --json` prints what is already there, then each new row, and
    stops cleanly on Ctrl-C."""
    import select
    import signal
    import subprocess
    import sys

    settings = Settings(state_dir=tmp_path / "state")
    upgrade(settings)
    with Store.open(settings) as s:
        s.append_audit([row_of(rec(1, user="alice"))])
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERGATE_")}
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "dockergate", "--state-dir", str(settings.state_dir)),
                *("audit", "--follow", "--json", "--user", "bob"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # A suite started in the background (``cmd &``) inherits SIGINT ignored,
            # and Python then installs no KeyboardInterrupt handler: restore it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
        )
        try:
            assert proc.stdout is not None

            def next_line(timeout: float = 10.0) -> str:
                ready, _, _ = select.select([proc.stdout], [], [], timeout)
                assert ready, "no line from audit --follow"
                return proc.stdout.readline()  # type: ignore[union-attr]

            time.sleep(1.5)  # it is polling now
            s.append_audit([row_of(rec(2, user="alice")), row_of(rec(3, user="bob"))])
            row = json.loads(next_line())
            assert row["user"] == "bob" and row["object_id"].endswith("3")
            s.append_audit([row_of(rec(4, user="bob"))])
            assert json.loads(next_line())["object_id"].endswith("4")
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


# -- a caller looping on refusals ------------------------------------------------------


async def test_refusals_beyond_the_minute_budget_are_summed_into_one_row(
    store: CountingStore,
) -> None:
    """A member looping on a refused request: 5 rows one by one (the budget here), the
    rest one row when their minute ends; another caller's refusals and every allowed
    request are recorded as usual meanwhile."""
    writer = AuditWriter(store, batch_size=100, interval=0.05, refusals_per_minute=5)
    writer.start()
    long_ago = time.time() - 61  # a minute that has ended by the writer's next turn
    try:
        for i in range(500):
            writer(rec(i, decision="deny", rule="profile member: privileged", started=long_ago))
        writer(rec(1, user="bob", decision="deny", rule="privileged"))
        writer(rec(2))  # an allowed write
        await wait_for(lambda: store.audit_count() == 5 + 1 + 1 + 1)
    finally:
        await writer.stop()
    rows = store.audit_entries(user="alice", decisions=["deny"])
    summary = [r for r in rows if "495 more refusals" in (r.rule or "")]
    assert len(rows) == 6 and len(summary) == 1, [r.rule for r in rows]
    assert "audit_refusals_per_minute" in summary[0].rule
    assert "495 x profile member: privileged" in summary[0].rule, summary[0].rule


async def test_refusal_budget_off_records_every_refusal(store: CountingStore) -> None:
    writer = AuditWriter(store, batch_size=100, interval=0.05, refusals_per_minute=0)
    writer.start()
    try:
        for i in range(300):
            writer(rec(i, decision="deny", rule="privileged"))
        await wait_for(lambda: store.audit_count() == 300)
    finally:
        await writer.stop()


def test_audit_cli_names_the_known_kinds(settings: Settings) -> None:
    """An unknown ``--kind`` is an error listing the kinds, not an empty answer."""
    r = CliRunner().invoke(cli, ["--db", settings.db_url(), "audit", "--kind", "containr"])
    assert r.exit_code == 2 and "known: config, container" in r.output, r.output
