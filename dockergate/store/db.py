"""Engines and schema: one place that knows how to open the store safely.

SQLite (the default, a file in the state dir) is opened so that the CLI and a
running gate can use it at once: WAL journal (readers never block the writer),
a busy timeout (a second writer waits instead of failing), foreign keys on, and
``BEGIN IMMEDIATE`` for write transactions (a deferred transaction that upgrades
to a write lock can fail with SQLITE_BUSY without waiting). Connections are not
pooled, so every poll of the gate opens the file anew and notices when it was
removed, replaced or corrupted. Only :func:`upgrade` may create the file; everything
else opens it read-write-existing and says "run dockergate init" when it is absent.

PostgreSQL is reached through psycopg 3 (``postgresql+psycopg://``); plain
``postgresql://`` URLs are accepted and mapped to it.

Migrations run programmatically from the package ``dockergate._migrations`` (the
repository's ``migrations/``), so no ``alembic.ini`` is needed at runtime.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from dockergate.config import Settings
from dockergate.store.errors import SchemaError, StoreUnavailable

SQLITE_BUSY_MS = 10_000
PG_CONNECT_TIMEOUT_S = 3
# Execution option that makes a SQLite transaction take the write lock up front.
WRITE = "dockergate_write"


def normalise_url(url: str) -> URL:
    """Parse a store URL; ``postgresql://``/``postgres://`` mean psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return normalise_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url if "@" not in url else "the configured URL (unparsable)"


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for other backends or in-memory)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine for ``url``; for SQLite, ``create`` allows creating the file."""
    try:
        parsed = normalise_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            return _sqlite_engine(parsed, create)
        kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4}
        if backend == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return create_engine(parsed, **kwargs)
    except (ArgumentError, ValueError, ImportError) as exc:  # malformed URL, missing driver
        shown = url if "@" not in url else "the configured URL"
        raise StoreUnavailable(f"cannot use the database {shown}: {exc}") from exc
    except OSError as exc:  # the SQLite file or its directory cannot be created
        raise StoreUnavailable(f"cannot create the database {url}: {exc}") from exc


def _sqlite_engine(url: URL, create: bool) -> Engine:
    path = sqlite_path(url)
    if path is None:
        raise StoreUnavailable(f"unsupported SQLite URL {url}: give a file path")
    if create:
        # Token hashes and who-is-who: 0700/0600 like the rest of the state dir
        # (SQLite gives its -wal and -shm files the database file's mode).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    mode = "rwc" if create else "rw"
    target = f"file:{quote(str(path.absolute()))}?mode={mode}"

    def connect() -> sqlite3.Connection:
        # isolation_level=None: the driver never opens transactions on its own; the
        # "begin" hook below does, so that writes can say BEGIN IMMEDIATE.
        return sqlite3.connect(
            target,
            uri=True,
            timeout=SQLITE_BUSY_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            # Only a writer can switch the journal mode; an existing WAL db stays WAL.
            if mode == "rwc":
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def engine_for(settings: Settings, *, create: bool = False) -> Engine:
    return make_engine(settings.db_url(), create=create)


def unavailable(exc: BaseException, url: str) -> StoreUnavailable:
    """Wrap a driver error as one line that names the database."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    where = describe_url(url)
    hint = ""
    parsed = normalise_url(url)
    path = sqlite_path(parsed)
    try:
        missing = path is not None and not path.exists()
    except OSError:  # a state dir this user may not enter (an admin command not as root)
        missing = False
        hint = "; is this the gate's user (root)?"
    if missing:
        hint = "; run `dockergate init` (or `dockergate db upgrade`) to create it"
    return StoreUnavailable(f"cannot use the database {where}: {detail}{hint}")


# -- schema ----------------------------------------------------------------------------


def migrations_dir() -> Path:
    """Where the Alembic scripts are: the installed package, or the source tree."""
    try:
        import dockergate._migrations as shipped

        return Path(shipped.__file__).resolve().parent
    except ImportError:  # pragma: no cover - running from a tree without the link
        return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str, connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # configparser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option(
        "sqlalchemy.url", normalise_url(url).render_as_string(False).replace("%", "%%")
    )
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise SchemaError(f"no migrations found in {migrations_dir()}")
    return str(head)


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database (None: empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    return None if rev is None else str(rev)


MIGRATION_LOCK = 0x646F636B67617465  # "dockgate": the advisory lock key of migrations


def upgrade(settings: Settings, target: str = "head") -> tuple[str | None, str]:
    """Bring the schema to ``target``; return (revision before, revision after)."""
    from alembic import command

    url = settings.db_url()
    engine = make_engine(url, create=True)
    try:
        before = current_revision(engine)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Gates starting together on several nodes (the stack's `db upgrade
                # && serve`) take turns; the later ones find the schema at head.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            command.upgrade(alembic_config(url, conn), target)
        after = current_revision(engine)
    except SQLAlchemyError as exc:
        raise unavailable(exc, url) from exc
    finally:
        engine.dispose()
    return before, after or "?"


def check_schema(settings: Settings, engine: Engine | None = None) -> str:
    """Raise :class:`SchemaError` unless the database is at the code's head revision."""
    url = settings.db_url()
    own = engine is None
    eng = engine or make_engine(url)
    try:
        current = current_revision(eng)
    except SQLAlchemyError as exc:
        raise unavailable(exc, url) from exc
    finally:
        if own:
            eng.dispose()
    head = head_revision()
    if current == head:
        return head
    if current is None:
        raise SchemaError(
            f"database schema is at nothing (empty database), code needs {head}: "
            "run `dockergate db upgrade`"
        )
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"database schema is at {current}, which this dockergate does not know "
            f"(code needs {head}): the database was upgraded by a newer dockergate; "
            "upgrade dockergate"
        )
    raise SchemaError(
        f"database schema is at {current}, code needs {head}: run `dockergate db upgrade`"
    )
