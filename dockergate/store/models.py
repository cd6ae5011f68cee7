"""Tables of the store, as typed SQLAlchemy 2 models.

Four tables:

* ``users``: a name (also the ``dockergate.owner`` label value and the certificate
  CN), a profile (a file ``policies/<profile>.yaml``), an enabled flag and an
  optional unix uid (identity on the unix socket comes from the kernel).
* ``credentials``: client certificates (by serial, as lowercase hex because serials
  are up to 159 bits and do not fit an integer column) and tokens (by a short public
  id plus a passlib hash of the secret, so a lookup is one dict access and only the
  secret is hash-checked).
* ``revision``: one row whose counter is bumped in the same transaction as every
  change to the two others, so a running gate can notice any change by reading a
  single integer.
* ``audit``: one row per audited request or admin action (``dockergate.audit``).
  It is deliberately outside the revision counter: the gate appends to it all the
  time, and bumping the counter would make every gate reload its user snapshot.

Migrations in ``migrations/`` create exactly this; ``tests/unit/test_store.py``
checks that the models and the migrated schema agree.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints: Alembic's batch mode (SQLite) can only alter what has a name.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CERT = "cert"
TOKEN = "token"
REVISION_ROW = 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on both backends.

    SQLite has no time zones and hands back naive values; PostgreSQL converts to the
    session zone. Storing UTC and re-attaching UTC on load makes comparisons with
    ``utcnow()`` correct everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    profile: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(default=True)
    unix_uid: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When an admin last purged the user: gates cut the user's requests in progress
    # (builds, exec sessions, log streams) when they see it change.
    purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    credentials: Mapped[list[Credential]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Credential.id",
    )


class Credential(Base):
    __tablename__ = "credentials"
    __table_args__ = (
        CheckConstraint(f"kind IN ('{CERT}', '{TOKEN}')", name="kind"),
        CheckConstraint(
            f"(kind = '{CERT}' AND cert_serial IS NOT NULL AND token_id IS NULL)"
            f" OR (kind = '{TOKEN}' AND token_id IS NOT NULL AND token_hash IS NOT NULL"
            " AND cert_serial IS NULL)",
            name="kind_fields",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    # Lowercase hex without leading zeros, as ``format(serial, "x")`` writes it.
    cert_serial: Mapped[str | None] = mapped_column(String(48), unique=True)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64))  # sha256 of the DER, hex
    token_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(255))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="credentials")


class Revision(Base):
    """One row (id 1); ``counter`` changes whenever users or credentials do."""

    __tablename__ = "revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)


# Decisions an audit row can carry: the gate's three, as RequestRecord.decision.
AUDIT_DECISIONS = ("allow", "deny", "error")


class AuditEntry(Base):
    """Who did what, when, and what the gate decided (see :mod:`dockergate.audit`).

    Holds no credentials, request bodies or environment values: rows are built from
    :class:`~dockergate.audit.record.RequestRecord`, which carries none. The user
    column is ``user_name`` (``user`` is reserved in PostgreSQL, and operators query
    this table by hand). The id is a 64-bit integer on PostgreSQL (a busy gate can
    outgrow 2**31 rows over its retention); SQLite's INTEGER primary key is 64-bit.
    """

    __tablename__ = "audit"
    __table_args__ = (
        CheckConstraint(
            "decision IN (" + ", ".join(f"'{d}'" for d in AUDIT_DECISIONS) + ")",
            name="decision",
        ),
        # `dockergate audit --user` and the last activity per user in `dockergate usage`.
        Index("ix_audit_user_name_at", "user_name", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    user_name: Mapped[str | None] = mapped_column(String(64))
    identified_by: Mapped[str] = mapped_column(String(200))
    listener: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    route: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(8))
    rule: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    detail: Mapped[str | None] = mapped_column(Text)


class VolumeName(Base):
    """A named volume's name, held by the user who first used it through a gate of
    this store.

    Volumes live on each node, under whatever name the task or container that made
    them asked for, and a gate can see only its own node's engine: a service placed
    on another node mounts *that* node's volume of the name. Sharing one store (as
    the gates of a cluster do), the gates keep each name to one user cluster-wide,
    so a service cannot name another user's volume on a node its gate cannot see.
    """

    __tablename__ = "volume_names"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageTag(Base):
    """A tag a member put on an image they did not build (``docker tag busybox
    proj:1``), and the image it named then.

    Tags carry no metadata in Docker, and an image's labels (``dockergate.built-by``)
    say who built it, not who named it: without this row the member could neither
    remove the name they made nor build their project under it. The row counts only
    while the tag still names that image (an admin's later tag, through the gate or
    not, ends it).
    """

    __tablename__ = "image_tags"

    name: Mapped[str] = mapped_column(String(512), primary_key=True)  # canonical reference
    owner: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[str] = mapped_column(String(80))
    tagged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RemovedObject(Base):
    """A service, network, volume, secret or config a user removed through a gate,
    with its owner and lifetime (Unix seconds; ``created`` 0 when unknown).

    Its events, replayed later (``docker events --since``), carry only its ID and
    the object is gone: without the row, a restarted gate (or another gate of the
    store) could no longer tell whose they were, and would show them to no one."""

    __tablename__ = "removed_objects"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    created: Mapped[int] = mapped_column(BigInteger)
    removed: Mapped[int] = mapped_column(BigInteger, index=True)
