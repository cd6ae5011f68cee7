"""DirectoryAuthenticator: who gets in, changes seen within a second, and failing closed.

Real databases (SQLite; PostgreSQL when DOCKERGATE_TEST_PG_URL is set), no Docker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import pwd
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event, text

from dockergate.cli import cli
from dockergate.config import Settings
from dockergate.listen.directory import DirectoryAuthenticator
from dockergate.listen.identity import Identity, Peer, Refusal
from dockergate.listen.listeners import peer_container
from dockergate.store import tokens
from dockergate.store.db import make_engine, upgrade
from dockergate.store.repository import Store

FP_A = "aa" * 32
FP_B = "bb" * 32


def in_days(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


def unix(uid: int) -> Peer:
    return Peer("unix", uid=uid, gid=uid, pid=4242)


def tls(serial: int | None = None, cn: str | None = None, fp: str | None = None) -> Peer:
    return Peer("tls", cert_serial=serial, cert_cn=cn, cert_fingerprint=fp)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings) as s:
        s.add_user("alice", "member", 1001)
        s.add_user("bob", "intern", 1002)
        s.add_user("boss", "admin", 1003)
        s.add_certificate("alice", 0xA1, FP_A, in_days(30))
        s.add_certificate("bob", 0xB1, FP_B, in_days(30))
        yield s


@pytest.fixture
async def auth(settings: Settings, store: Store) -> AsyncIterator[DirectoryAuthenticator]:
    a = DirectoryAuthenticator(settings)
    await a.start()
    yield a
    await a.stop()


def refused(auth: DirectoryAuthenticator, peer: Peer, token: str | None = None) -> Refusal:
    with pytest.raises(Refusal) as err:
        auth.authenticate(peer, token)
    return err.value


async def within(check: Callable[[], bool], limit: float = 1.0) -> float:
    """Seconds until ``check()`` holds; fails after ``limit``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            pytest.fail(f"not within {limit} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def lets_in(auth: DirectoryAuthenticator, peer: Peer, token: str | None = None) -> bool:
    try:
        auth.authenticate(peer, token)
    except Refusal:
        return False
    return True


# -- unix socket -------------------------------------------------------------------------


async def test_unix_users(auth: DirectoryAuthenticator) -> None:
    assert auth.authenticate(unix(1001), None) == Identity(
        "alice", "member", False, "unix uid 1001", 1001
    )
    boss = auth.authenticate(unix(1003), None)
    assert (boss.name, boss.admin) == ("boss", True)


async def test_root_is_the_builtin_admin(auth: DirectoryAuthenticator) -> None:
    assert auth.authenticate(unix(0), None) == Identity("root", "admin", True, "unix uid 0", 0)


CID = "c0ffee" * 10 + "abcd"  # 64 hex digits


def in_container(uid: int, owner: str | None) -> Peer:
    return Peer("unix", uid=uid, gid=uid, pid=4242, container=CID, container_owner=owner)


async def test_a_process_in_a_container_acts_for_its_owner(auth: DirectoryAuthenticator) -> None:
    """Root (or any uid) in alice's container is alice, not the host's root or bob."""
    for uid in (0, 1002):
        me = auth.authenticate(in_container(uid, "alice"), None)
        assert (me.name, me.admin, me.uid) == ("alice", False, 1001)
        assert f"in container {CID[:12]} of alice" in me.method
    assert auth.authenticate(in_container(1001, "root"), None).admin  # the admin's container
    assert "not a registered user" in refused(auth, in_container(0, "carol")).message
    # No owner label: made on the daemon directly (by whoever had its socket): the uid.
    assert auth.authenticate(in_container(0, None), None).name == "root"
    gone = Peer("unix", uid=0, gid=0, pid=4242, problem="process 4242 was gone")
    assert "process 4242 was gone" in refused(auth, gone).message


def test_peer_container_reads_the_process_cgroup(tmp_path: Path) -> None:
    def proc(pid: int, cgroup: str, euid: int) -> None:
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cgroup").write_text(cgroup)
        (d / "status").write_text(f"Name:\tx\nUid:\t{euid}\t{euid}\t{euid}\t{euid}\n")

    proc(10, f"0::/system.slice/docker-{CID}.scope\n", 0)
    proc(11, f"12:memory:/dgtest-parent/{CID}\n0::/\n", 0)
    proc(12, "0::/user.slice/user-1001.slice/session-3.scope\n", 1001)
    proc(13, f"0::/system.slice/docker-{CID}.scope\n", 1001)
    look = lambda pid, uid: peer_container(pid, uid, proc=str(tmp_path))  # noqa: E731
    assert look(10, 0) == (CID, None)
    assert look(11, 0) == (CID, None)
    assert look(12, 1001) == (None, None)
    assert look(13, 0)[1] == "process 13 is no longer the uid 0 that connected"  # pid reused
    assert "gone" in str(look(14, 0)[1])
    assert look(0, 0) == (None, None)  # outside the gate's pid namespace: cannot tell


async def test_root_can_be_turned_off(settings: Settings, store: Store) -> None:
    settings.root_is_admin = False
    a = DirectoryAuthenticator(settings, store)
    await a.start()
    try:
        assert "uid 0" in refused(a, unix(0)).message
        store.add_user("rootuser", "admin", 0)
        await within(lambda: lets_in(a, unix(0)))
        assert a.authenticate(unix(0), None).name == "rootuser"
    finally:
        await a.stop()


async def test_unregistered_unix_user_is_told_how_to_get_in(
    auth: DirectoryAuthenticator,
) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    err = refused(auth, unix(nobody))
    assert err.status == 403
    assert err.message == (
        f"unix user 'nobody' (uid {nobody}) is not registered; ask an admin: "
        "dockergate user add nobody --profile member --unix-user nobody"
    )
    err = refused(auth, unix(3_999_999))
    assert err.message == (
        "unix uid 3999999 is not registered; ask an admin: "
        "dockergate user add NAME --profile member --uid 3999999"
    )


async def test_token_is_ignored_on_the_unix_socket(
    auth: DirectoryAuthenticator, store: Store
) -> None:
    tok = store.add_token("alice").token
    await within(lambda: lets_in(auth, tls(), tok))
    assert refused(auth, unix(4242), tok).status == 403
    assert auth.authenticate(unix(1002), tok).name == "bob"


async def test_disabled_user(auth: DirectoryAuthenticator, store: Store) -> None:
    store.set_enabled("bob", False)
    await within(lambda: not lets_in(auth, unix(1002)))
    assert refused(auth, unix(1002)).message == (
        "user 'bob' is disabled; ask an admin: dockergate user enable bob"
    )
    assert "disabled" in refused(auth, tls(0xB1, "bob", FP_B)).message


# -- certificates ------------------------------------------------------------------------


async def test_certificates(auth: DirectoryAuthenticator, store: Store) -> None:
    ident = auth.authenticate(tls(0xA1, "alice", FP_A), None)
    assert (ident.name, ident.profile, ident.method, ident.uid) == (
        "alice",
        "member",
        "cert serial a1",
        1001,
    )
    # a token next to a certificate changes nothing
    assert auth.authenticate(tls(0xA1, "alice", FP_A), "garbage").name == "alice"
    err = refused(auth, tls(0xAB12, "carol", None))
    assert err.message == (
        "certificate serial ab12 is revoked or unknown; ask an admin for a new bundle: "
        "dockergate user cert carol --out DIR"
    )
    assert "issued to 'alice'" in refused(auth, tls(0xA1, "bob", FP_A)).message
    assert "does not match" in refused(auth, tls(0xA1, "alice", FP_B)).message


async def test_expired_certificate(auth: DirectoryAuthenticator, store: Store) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    store.add_certificate("alice", 0xA2, FP_A, past)
    await within(lambda: auth._snapshot is not None and "a2" in auth._snapshot.by_serial)
    err = refused(auth, tls(0xA2, "alice", FP_A))
    assert "expired" in err.message and "dockergate user cert alice --out DIR" in err.message


async def test_certificate_of_a_removed_user(auth: DirectoryAuthenticator, store: Store) -> None:
    store.remove_user("alice")
    await within(lambda: not lets_in(auth, tls(0xA1, "alice", FP_A)))
    assert "revoked or unknown" in refused(auth, tls(0xA1, "alice", FP_A)).message


# -- tokens ------------------------------------------------------------------------------


async def test_tokens(auth: DirectoryAuthenticator, store: Store) -> None:
    tok = store.add_token("alice").token
    await within(lambda: lets_in(auth, tls(), tok))
    ident = auth.authenticate(tls(), tok)
    assert (ident.name, ident.method) == ("alice", f"token {tok.split('_')[1]}")
    invalid = "invalid X-Dockergate-Token; ask an admin: dockergate user token NAME"
    wrong_secret = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    unknown_id = "dgt_" + "0" * 16 + tok[20:]
    for bad in (wrong_secret, unknown_id, "dgt_x", "Bearer " + tok, tok + "\n", "é" * 10):
        assert refused(auth, tls(), bad).message == invalid
    assert "without X-Dockergate-Token" in refused(auth, tls(), None).message
    assert "without X-Dockergate-Token" in refused(auth, tls(), "").message


async def test_expired_and_revoked_tokens(auth: DirectoryAuthenticator, store: Store) -> None:
    old = store.add_token("bob", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).token
    tok = store.add_token("bob").token
    await within(lambda: lets_in(auth, tls(), tok))
    assert "expired" in refused(auth, tls(), old).message
    store.revoke_all("bob")
    await within(lambda: not lets_in(auth, tls(), tok))
    assert refused(auth, tls(), tok).message.startswith("invalid X-Dockergate-Token")


async def test_token_hash_is_checked_once(
    auth: DirectoryAuthenticator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = store.add_token("alice").token
    await within(lambda: lets_in(auth, tls(), tok))
    calls: list[str] = []
    real = tokens.verify

    def counting(secret: str, token_hash: str) -> bool:
        calls.append(secret)
        return real(secret, token_hash)

    monkeypatch.setattr(tokens, "verify", counting)
    for _ in range(100):
        auth.authenticate(tls(), tok)
    assert calls == []  # verified before, cached since
    second = store.add_token("alice").token
    await within(lambda: lets_in(auth, tls(), second))
    for _ in range(10):
        auth.authenticate(tls(), second)
    assert len(calls) == 1


# -- changes reach a running gate ----------------------------------------------------------


async def test_changes_take_effect_within_a_second(
    auth: DirectoryAuthenticator, store: Store
) -> None:
    cert_a = tls(0xA1, "alice", FP_A)
    assert auth.authenticate(cert_a, None).name == "alice"
    store.revoke_all("alice")
    assert await within(lambda: not lets_in(auth, cert_a)) < 1.0
    assert auth.authenticate(unix(1001), None).name == "alice"  # revoke is for credentials
    store.set_profile("bob", "member")
    await within(lambda: auth.authenticate(unix(1002), None).profile == "member")
    store.set_profile("bob", "admin")
    await within(lambda: auth.authenticate(unix(1002), None).admin)
    store.set_enabled("bob", False)
    await within(lambda: not lets_in(auth, unix(1002)))
    store.set_enabled("bob", True)
    await within(lambda: lets_in(auth, unix(1002)))
    store.remove_user("bob")
    await within(lambda: not lets_in(auth, unix(1002)))
    store.add_user("carol", "member", 1002)
    await within(lambda: lets_in(auth, unix(1002)))


async def test_revoke_through_the_cli(auth: DirectoryAuthenticator, settings: Settings) -> None:
    args = ["--state-dir", str(settings.state_dir)] + (["--db", settings.db] if settings.db else [])
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, [*args, "user", "revoke", "alice"], env={"DOCKERGATE_DB": None}
    )
    assert result.exit_code == 0, result.output
    await within(lambda: not lets_in(auth, tls(0xA1, "alice", FP_A)))


async def test_requests_never_touch_the_database(settings: Settings, store: Store) -> None:
    a = DirectoryAuthenticator(settings, store, poll_interval=3600)
    await a.start()
    connects: list[object] = []

    def on_checkout(*args: object) -> None:
        connects.append(args)

    event.listen(store.engine, "checkout", on_checkout)
    try:
        tok = store.add_token("alice").token
        connects.clear()
        for _ in range(300):
            a.authenticate(unix(1001), None)
            a.authenticate(tls(0xB1, "bob", FP_B), None)
            with pytest.raises(Refusal):
                a.authenticate(tls(), tok)  # not in the snapshot yet: no DB lookup either
        assert connects == []
    finally:
        event.remove(store.engine, "checkout", on_checkout)
        await a.stop()


# -- failing closed ----------------------------------------------------------------------


def closed(auth: DirectoryAuthenticator, peer: Peer) -> bool:
    try:
        auth.authenticate(peer, None)
    except Refusal as exc:
        return exc.status == 503
    return False


async def test_fails_closed_while_the_schema_is_broken(
    auth: DirectoryAuthenticator, settings: Settings
) -> None:
    engine = make_engine(settings.db_url())
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE revision RENAME TO revision_gone"))
        await within(lambda: closed(auth, unix(1001)))
        err = refused(auth, unix(0))  # root too: nobody is let in
        assert err.status == 503
        assert err.message.startswith("store unavailable: ")
        assert err.message.endswith("; refusing everyone until it is back")
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE revision_gone RENAME TO revision"))
        await within(lambda: lets_in(auth, unix(1001)))
    finally:
        engine.dispose()


async def test_fails_closed_on_a_corrupt_or_missing_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    upgrade(settings)
    with Store.open(settings) as s:
        s.add_user("alice", "member", 1001)
    db = tmp_path / "dockergate.db"
    auth = DirectoryAuthenticator(settings)
    await auth.start()
    try:
        assert auth.authenticate(unix(1001), None).name == "alice"
        backup = tmp_path / "backup.db"
        shutil.copy(db, backup)
        db.unlink()
        await within(lambda: closed(auth, unix(1001)))
        assert not db.exists(), "the gate must never create an empty store"
        db.write_bytes(b"this is not a database" * 200)
        await asyncio.sleep(0.6)
        assert closed(auth, unix(1001))
        assert "store unavailable" in refused(auth, unix(1001)).message
        db.unlink()
        db.mkdir()
        await asyncio.sleep(0.6)
        assert closed(auth, unix(1001))
        db.rmdir()
        shutil.copy(backup, db)
        await within(lambda: lets_in(auth, unix(1001)))
    finally:
        await auth.stop()


async def test_starts_closed_when_the_server_is_down(tmp_path: Path) -> None:
    """Nothing listens on port 1: the gate starts, refuses everyone, does not crash."""
    settings = Settings(state_dir=tmp_path, db="postgresql://u:p@127.0.0.1:1/dockergate")
    auth = DirectoryAuthenticator(settings)
    await auth.start()
    try:
        err = refused(auth, unix(0))
        assert err.status == 503
        assert err.message == (
            "store unavailable: the user database cannot be read; "
            "refusing everyone until it is back"
        )
        assert auth.problem is not None and "127.0.0.1" in auth.problem  # the log says where
        assert "p@" not in auth.problem
    finally:
        await auth.stop()


async def test_stale_snapshot_fails_closed(settings: Settings, store: Store) -> None:
    """A database that stops answering (hung, not erroring) must not freeze the state."""
    a = DirectoryAuthenticator(settings, store, poll_interval=3600, stale_after=0.3)
    await a.start()
    try:
        assert lets_in(a, unix(1001))
        await asyncio.sleep(0.4)
        err = refused(a, unix(1001))
        assert err.status == 503 and "no answer" in err.message
    finally:
        await a.stop()


async def test_not_started_refuses(settings: Settings, store: Store) -> None:
    a = DirectoryAuthenticator(settings, store)
    assert refused(a, unix(0)).status == 503
