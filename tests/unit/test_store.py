"""The user store on real databases: SQLite always, PostgreSQL when
DOCKERGATE_TEST_PG_URL is set (``scripts/lib/postgres.sh``: ``pg_start DIR PORT``).

The same tests run on both, because the gate must behave the same on either.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from dockergate.cli.hooks import after_init
from dockergate.config import Settings
from dockergate.listen.pki import CertificateAuthority
from dockergate.store import Conflict, NotFound, SchemaError, StoreError, StoreUnavailable, tokens
from dockergate.store.db import (
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    normalise_url,
    upgrade,
)
from dockergate.store.models import CERT, TOKEN, Base
from dockergate.store.repository import Store
from tests.unit.conftest import PG_URL, reset_postgres


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings) as s:
        yield s


def in_days(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


# -- schema ------------------------------------------------------------------------------


def test_upgrade_from_empty_is_idempotent(empty_settings: Settings) -> None:
    head = head_revision()
    assert upgrade(empty_settings) == (None, head)
    assert upgrade(empty_settings) == (head, head)
    assert check_schema(empty_settings) == head


def test_upgrade_keeps_the_data_of_an_older_schema(empty_settings: Settings) -> None:
    """An install made at 0003 (before purges and tag records), with a user and a held
    volume name, upgraded as README says (``dockergate db upgrade``): the rows stay,
    the new column and table work."""
    assert upgrade(empty_settings, "0003") == (None, "0003")
    engine = make_engine(empty_settings.db_url(), create=False)
    try:
        with engine.begin() as conn:
            now = dt.datetime.now(dt.UTC)
            conn.execute(
                text(
                    "INSERT INTO users (name, profile, enabled, unix_uid, created_at, "
                    "updated_at) VALUES ('olduser', 'member', true, 4242, :t, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO volume_names (name, owner, claimed_at) VALUES ('v1', 'olduser', :t)"
                ),
                {"t": now},
            )
    finally:
        engine.dispose()
    assert upgrade(empty_settings) == ("0003", head_revision())
    with Store.open(empty_settings) as store:
        user = store.get_user("olduser")
        assert (user.profile, user.unix_uid) == ("member", 4242)
        assert store.volume_name_holders(["v1"]) == {"v1": "olduser"}
        assert store.mark_purged("olduser")
    engine = make_engine(empty_settings.db_url(), create=False)
    try:
        with engine.connect() as conn:
            purged = conn.execute(text("SELECT purged_at FROM users WHERE name = 'olduser'"))
            assert purged.scalar_one() is not None
            assert conn.execute(text("SELECT count(*) FROM image_tags")).scalar_one() == 0
    finally:
        engine.dispose()


def test_check_schema_on_empty_database_says_what_to_run(empty_settings: Settings) -> None:
    if empty_settings.db is None:  # SQLite: an existing but empty file
        empty_settings.state_dir.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(empty_settings.state_dir / "dockergate.db").close()
    with pytest.raises(SchemaError) as err:
        check_schema(empty_settings)
    assert f"code needs {head_revision()}" in str(err.value)
    assert "run `dockergate db upgrade`" in str(err.value)
    with pytest.raises(SchemaError):
        Store.open(empty_settings)


def test_check_schema_behind_and_ahead(settings: Settings) -> None:
    engine = make_engine(settings.db_url())
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        with pytest.raises(SchemaError, match="does not know"):
            check_schema(settings)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
        with pytest.raises(SchemaError, match="is at nothing"):
            check_schema(settings)
    finally:
        engine.dispose()


def test_models_match_the_migrations(settings: Settings) -> None:
    """Autogenerate against the migrated schema finds nothing to do."""
    engine = make_engine(settings.db_url())
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    with pytest.raises(StoreUnavailable, match="dockergate init"):
        Store.open(settings)
    assert not (tmp_path / "dockergate.db").exists()


def test_sqlite_pragmas_wal_and_mode(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "new")
    upgrade(settings)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "dockergate.db").stat().st_mode & 0o777 == 0o600
    engine = make_engine(settings.db_url())
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"


# -- users -------------------------------------------------------------------------------


def test_user_lifecycle_bumps_the_revision(store: Store) -> None:
    rev = store.revision()
    alice = store.add_user("alice", "member", 1001)
    assert (alice.name, alice.profile, alice.enabled, alice.unix_uid) == (
        "alice",
        "member",
        True,
        1001,
    )
    assert alice.created_at.tzinfo is not None
    assert store.revision() == rev + 1
    store.list_users()
    store.get_user("alice")
    assert store.revision() == rev + 1, "reads must not bump the revision"
    assert store.set_profile("alice", "intern").profile == "intern"
    assert store.set_enabled("alice", False).enabled is False
    assert store.set_enabled("alice", True).enabled is True
    assert store.revision() == rev + 4
    updated = store.get_user("alice")
    assert updated.updated_at >= updated.created_at
    store.add_user("bob", "member")
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    store.remove_user("alice")
    assert [u.name for u in store.list_users()] == ["bob"]
    assert store.revision() == rev + 6
    assert store.find_user("alice") is None


def test_conflicts_and_unknown_names(store: Store) -> None:
    store.add_user("alice", "member", 1001)
    rev = store.revision()
    with pytest.raises(Conflict, match="user 'alice' already exists"):
        store.add_user("alice", "member")
    with pytest.raises(Conflict, match="uid 1001 is already registered to user 'alice'"):
        store.add_user("bob", "member", 1001)
    with pytest.raises(NotFound, match="unknown user 'carol'"):
        store.set_profile("carol", "member")
    with pytest.raises(NotFound):
        store.remove_user("carol")
    with pytest.raises(NotFound):
        store.add_token("carol")
    assert store.revision() == rev, "a refused change must not bump the revision"


@pytest.mark.parametrize("name", ["", "Alice", "a b", "-x", "x" * 65, "é", "a/b", "a\n"])
def test_invalid_names(store: Store, name: str) -> None:
    with pytest.raises(StoreError, match="invalid user name"):
        store.add_user(name, "member")


def test_large_uids_fit(store: Store) -> None:
    assert store.add_user("nobody", "member", 4294967294).unix_uid == 4294967294
    with pytest.raises(StoreError, match="invalid uid"):
        store.add_user("neg", "member", -1)


# -- credentials -------------------------------------------------------------------------


def test_certificates_revoke_and_cascade(store: Store) -> None:
    store.add_user("alice", "member")
    serial = (1 << 158) + 0xAB12
    cert = store.add_certificate("alice", serial, "AA" * 32, in_days(30))
    assert cert.cert_serial == format(serial, "x")
    assert cert.cert_fingerprint == "aa" * 32
    assert cert.state() == "active"
    with pytest.raises(Conflict, match="already registered"):
        store.add_certificate("alice", serial, "bb" * 32, None)
    store.add_token("alice")
    assert store.revoke_all("alice") == {CERT: 1, TOKEN: 1}
    assert store.revoke_all("alice") == {CERT: 0, TOKEN: 0}
    states = {c.state() for c in store.get_user("alice").credentials}
    assert states == {"revoked"}
    store.remove_user("alice")
    # the serial is free again once its user is gone (the row went with the user)
    store.add_user("alice", "member")
    store.add_certificate("alice", serial, "cc" * 32, None)


def test_tokens_are_stored_hashed(store: Store, settings: Settings) -> None:
    store.add_user("alice", "member")
    issued = store.add_token("alice", in_days(1))
    token_id, secret = tokens.parse(issued.token) or ("", "")
    assert token_id == issued.token_id
    engine = make_engine(settings.db_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT token_id, token_hash FROM credentials")).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    stored_id, stored_hash = rows[0]
    assert stored_id == token_id
    assert secret not in stored_hash and issued.token not in stored_hash
    assert stored_hash.startswith("$pbkdf2-sha256$")
    assert tokens.verify(secret, stored_hash)
    assert not tokens.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B"), stored_hash)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "dgt_",
        "dgt_0123456789abcdef",
        "dgt_0123456789abcdef_short",
        "xyz_0123456789abcdef_" + "a" * 43,
        "dgt_0123456789ABCDEF_" + "a" * 43,
        "dgt_0123456789abcdef_" + "a" * 42 + "!",
        "dgt_0123456789abcdef_" + "a" * 44,
    ],
)
def test_malformed_tokens_do_not_parse(token: str) -> None:
    assert tokens.parse(token) is None


def test_generated_tokens_parse() -> None:
    for _ in range(50):
        new = tokens.generate()
        assert tokens.parse(new.token) == (new.token_id, new.token.split("_", 2)[2])


def test_snapshot_has_only_valid_credentials(store: Store) -> None:
    store.add_user("alice", "member", 1001)
    store.add_user("bob", "intern")
    store.add_certificate("alice", 0xA1, "aa" * 32, in_days(1))
    store.add_certificate("bob", 0xB1, "bb" * 32, None)
    tok = store.add_token("bob")
    store.revoke_all("alice")
    store.set_enabled("bob", False)
    snap = store.load_snapshot()
    assert snap.revision == store.revision()
    assert set(snap.by_uid) == {1001}
    assert snap.by_uid[1001].name == "alice"
    assert set(snap.by_serial) == {"b1"}
    assert snap.by_serial["b1"].user.enabled is False
    assert set(snap.by_token_id) == {tok.token_id}
    assert set(snap.by_name) == {"alice", "bob"}


def test_ensure_admin_is_idempotent(store: Store) -> None:
    first = store.ensure_admin("admin", 0xAD, "ad" * 32, in_days(3650))
    assert len(first) == 2
    assert store.ensure_admin("admin", 0xAD, "ad" * 32, in_days(3650)) == []
    assert store.get_user("admin").profile == "admin"
    store.add_user("eve", "member")
    store.add_certificate("eve", 0xEE, "ee" * 32, None)
    with pytest.raises(Conflict, match="registered to user 'eve'"):
        store.ensure_admin("admin", 0xEE, "ee" * 32, None)


def test_after_init_registers_the_admin_bundle(empty_settings: Settings) -> None:
    settings = empty_settings
    ca = CertificateAuthority(settings.pki_dir)
    ca.ensure()
    issued = ca.issue_client("admin", days=10)
    ca.write_bundle(settings.clients_dir / "admin", issued)
    done = after_init(settings)
    assert any("schema" in line for line in done)
    assert any(format(issued.serial, "x") in line for line in done)
    assert after_init(settings) == []
    with Store.open(settings) as store:
        admin = store.get_user("admin")
    assert admin.profile == "admin"
    [cred] = admin.credentials
    assert cred.cert_serial == format(issued.serial, "x")
    assert cred.cert_fingerprint == issued.fingerprint
    assert cred.expires_at is not None
    assert abs((cred.expires_at - issued.not_after).total_seconds()) < 1


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_writers_all_succeed(settings: Settings) -> None:
    """The CLI and other writers at once: nobody fails with 'database is locked'."""
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with Store.open(settings, check=False) as s:
                for i in range(10):
                    s.add_user(f"u{n}-{i}", "member")
                    s.set_enabled(f"u{n}-{i}", False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with Store.open(settings) as store:
        rev = store.revision()
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(store.list_users()) == 40
        assert store.revision() == rev + 80


def test_reader_is_not_blocked_by_an_open_write(tmp_path: Path) -> None:
    """WAL: the gate's poll reads while a CLI transaction holds the write lock."""
    settings = Settings(state_dir=tmp_path)
    upgrade(settings)
    holder = sqlite3.connect(tmp_path / "dockergate.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE revision SET counter = counter + 100")
        with Store.open(settings) as store:
            assert store.revision() == 0  # the uncommitted change is invisible
        holder.execute("COMMIT")
        with Store.open(settings) as store:
            assert store.revision() == 100
    finally:
        holder.close()


def test_schema_version_is_recorded(settings: Settings) -> None:
    engine = make_engine(settings.db_url())
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


@pytest.mark.skipif(not PG_URL, reason="DOCKERGATE_TEST_PG_URL not set")
def test_concurrent_upgrades_take_turns(tmp_path: Path) -> None:
    """Gates starting together on several nodes all run `db upgrade` on the shared
    PostgreSQL: every one succeeds and the schema ends at head once."""
    import concurrent.futures

    assert PG_URL
    reset_postgres(PG_URL)

    def one(i: int) -> tuple[str | None, str]:
        return upgrade(Settings(state_dir=tmp_path / f"s{i}", db=PG_URL))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert all(after == head_revision() for _before, after in results), results


def test_volume_names_held_by_their_first_user(store: Store) -> None:
    """A name is the first claimer's on every later claim; claims are independent of
    users (no revision bump: the gates' user snapshots are not reloaded)."""
    before = store.revision()
    assert store.claim_volume_name("data", "alice") == "alice"
    assert store.claim_volume_name("data", "bob") == "alice"
    assert store.claim_volume_name("data", "alice") == "alice"
    assert store.claim_volume_name("Data", "bob") == "bob"  # Docker's names are case-sensitive
    assert store.revision() == before


def test_volume_name_claims_race_to_one_winner(store: Store) -> None:
    """Gates claiming one name at once: exactly one holder, and every caller told it."""
    results: list[str] = []
    lock = threading.Lock()

    def claim(user: str) -> None:
        holder = store.claim_volume_name("contested", user)
        with lock:
            results.append(holder)

    threads = [threading.Thread(target=claim, args=(f"u{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 8


def test_volume_names_listed_and_released(store: Store) -> None:
    for name, owner in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
        store.claim_volume_name(name, owner)
    assert [n for n, _, _ in store.volume_names("alice")] == ["a1", "a2"]
    assert store.release_volume_names(names=["b1"]) == 1
    assert store.release_volume_names("alice") == 2
    assert store.release_volume_names() == 0  # nothing asked, nothing freed
    assert store.volume_names() == []
    assert store.claim_volume_name("a1", "bob") == "bob"


def test_removed_objects_kept_newest_and_forgotten_after_retention(store: Store) -> None:
    """Removals through a gate, for events replayed after a restart (round 31e)."""
    store.remember_removed([("volume", "v1", "alice", 100, 200), ("secret", "s1", "bob", 0, 300)])
    store.remember_removed([("volume", "v1", "carol", 250, 400)])  # the name taken again
    assert store.removed_objects(10) == [
        ("secret", "s1", "bob", 0, 300),
        ("volume", "v1", "carol", 250, 400),
    ]
    assert store.removed_objects(1) == [("volume", "v1", "carol", 250, 400)]
    store.remember_removed([("network", "n1", "alice", 0, 500)], forget_before=350)
    assert [row[1] for row in store.removed_objects(10)] == ["v1", "n1"]


def test_removals_from_the_store_go_under_those_made_since_start() -> None:
    from dockergate.api import ownership

    saved = ownership._removed.copy()
    try:
        ownership._removed.clear()
        ownership._remember("volume", "v", ("carol", 250, 400))  # removed since start
        ownership.load_removals([("volume", "v", "alice", 100, 200), ("config", "c", "bob", 0, 9)])
        assert ownership.removed_owner("volume", "v", 300) == "carol"
        assert ownership.removed_owner("volume", "v", 150) is None  # carol's lifetime only
        assert ownership.removed_owner("config", "c", 5) == "bob"
        assert list(ownership._removed)[-1] == ("volume", "v")  # the newest stays newest
    finally:
        ownership._removed.clear()
        ownership._removed.update(saved)
