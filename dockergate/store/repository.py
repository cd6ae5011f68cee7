"""Operations on users and credentials, each one transaction that bumps the revision.

Every write goes through :meth:`Store._write`, which takes the write lock up front
(SQLite) and increments the ``revision`` counter in the same transaction, so a
running gate that sees the counter move is guaranteed to see the change with it.
Results are returned as frozen dataclasses detached from the session, so callers
(the CLI, tests) never trigger lazy loads on a closed session.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from dockergate.config import Settings
from dockergate.store import snapshot, tokens
from dockergate.store.db import WRITE, check_schema, make_engine, unavailable
from dockergate.store.errors import Conflict, NotFound, StoreError
from dockergate.store.models import (
    CERT,
    REVISION_ROW,
    TOKEN,
    AuditEntry,
    Credential,
    ImageTag,
    RemovedObject,
    Revision,
    User,
    VolumeName,
    utcnow,
)

# A user name is a label value, a certificate CN and a word in shell commands:
# keep it boring. Lowercase so that "Alice" and "alice" cannot be two people.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid"


# Names the gate gives identities of its own: ``root`` is uid 0 on the unix socket.
RESERVED_NAMES = frozenset({"root"})


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise StoreError(
            f"invalid user name {name!r}: use 1-64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )


def serial_hex(serial: int) -> str:
    """How serials are stored and shown: lowercase hex, no leading zeros."""
    return format(serial, "x")


@dataclass(frozen=True)
class CredentialInfo:
    id: int
    kind: str
    cert_serial: str | None
    cert_fingerprint: str | None
    token_id: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def state(self, now: dt.datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "cert_serial": self.cert_serial,
            "cert_fingerprint": self.cert_fingerprint,
            "token_id": self.token_id,
            "issued_at": _iso(self.issued_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "state": self.state(),
        }


@dataclass(frozen=True)
class UserInfo:
    name: str
    profile: str
    enabled: bool
    unix_uid: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    credentials: tuple[CredentialInfo, ...] = ()

    def active(self, kind: str) -> list[CredentialInfo]:
        return [c for c in self.credentials if c.kind == kind and c.state() == "active"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile,
            "enabled": self.enabled,
            "unix_uid": self.unix_uid,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "active_certs": len(self.active(CERT)),
            "active_tokens": len(self.active(TOKEN)),
            "credentials": [c.as_dict() for c in self.credentials],
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _cred_info(c: Credential) -> CredentialInfo:
    return CredentialInfo(
        c.id,
        c.kind,
        c.cert_serial,
        c.cert_fingerprint,
        c.token_id,
        c.issued_at,
        c.expires_at,
        c.revoked_at,
    )


def _user_info(u: User) -> UserInfo:
    return UserInfo(
        u.name,
        u.profile,
        u.enabled,
        u.unix_uid,
        u.created_at,
        u.updated_at,
        tuple(_cred_info(c) for c in u.credentials),
    )


@dataclass(frozen=True)
class AuditInfo:
    """One row of the audit log, detached from the session."""

    id: int
    at: dt.datetime
    user: str | None
    identified_by: str
    listener: str
    method: str
    path: str
    route: str | None
    kind: str | None
    object_id: str | None
    decision: str
    rule: str | None
    status: int
    duration_ms: float
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.at.isoformat(timespec="milliseconds"),
            "user": self.user,
            "identified_by": self.identified_by,
            "listener": self.listener,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "kind": self.kind,
            "object_id": self.object_id,
            "decision": self.decision,
            "rule": self.rule,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "detail": self.detail,
        }


def _audit_info(a: AuditEntry) -> AuditInfo:
    return AuditInfo(
        a.id,
        a.at,
        a.user_name,
        a.identified_by,
        a.listener,
        a.method,
        a.path,
        a.route,
        a.kind,
        a.object_id,
        a.decision,
        a.rule,
        a.status,
        a.duration_ms,
        a.detail,
    )


AUDIT_PRUNE_CHUNK = 5000


@dataclass(frozen=True)
class IssuedToken:
    token: str  # the only time the clear token exists; never stored or logged
    token_id: str
    expires_at: dt.datetime | None


# A removal kept in the store: (kind, ID, owner, created, removed), times in Unix seconds.
RemovedRow = tuple[str, str, str, int, int]


class Store:
    """The users and credentials in one database."""

    def __init__(self, engine: Engine, url: str = "") -> None:
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=True)
        self._writer = engine.execution_options(**{WRITE: True})

    @classmethod
    def open(cls, settings: Settings, *, check: bool = True) -> Store:
        """Open the configured store; ``check`` refuses a schema that is not at head."""
        url = settings.db_url()
        engine = make_engine(url)
        if check:
            try:
                check_schema(settings, engine)
            except StoreError:
                engine.dispose()
                raise
        return cls(engine, url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ----------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction; the revision bump commits with it or not at all."""
        try:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                yield session
                session.flush()
                session.execute(
                    update(Revision)
                    .where(Revision.id == REVISION_ROW)
                    .values(counter=Revision.counter + 1)
                )
        except IntegrityError as exc:
            raise Conflict(f"conflicting change: {str(exc.orig).splitlines()[0]}") from exc
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc

    @staticmethod
    def _user(session: Session, name: str, *, load_credentials: bool = False) -> User:
        query = select(User).where(User.name == name)
        if load_credentials:
            query = query.options(selectinload(User.credentials))
        user = session.scalars(query).one_or_none()
        if user is None:
            raise NotFound(f"unknown user {name!r} (see `dockergate user list`)")
        return user

    # -- users -------------------------------------------------------------------------
    def add_user(self, name: str, profile: str, unix_uid: int | None = None) -> UserInfo:
        check_name(name)
        if name in RESERVED_NAMES:
            raise StoreError(
                f"user name {name!r} is reserved: the gate identifies uid 0 on the unix "
                "socket (the built-in admin) by it and stamps it on what that admin "
                "creates; a user of this name would own those objects. Choose another name"
            )
        if unix_uid is not None and not 0 <= unix_uid <= MAX_UID:
            raise StoreError(f"invalid uid {unix_uid}: must be between 0 and {MAX_UID}")
        with self._write() as session:
            if session.scalars(select(User.id).where(User.name == name)).first() is not None:
                raise Conflict(f"user {name!r} already exists")
            if unix_uid is not None:
                self._check_uid_free(session, unix_uid)
            now = utcnow()
            user = User(
                name=name,
                profile=profile,
                enabled=True,
                unix_uid=unix_uid,
                created_at=now,
                updated_at=now,
                credentials=[],
            )
            session.add(user)
            session.flush()
            return _user_info(user)

    @staticmethod
    def _check_uid_free(session: Session, uid: int) -> None:
        owner = session.scalars(select(User.name).where(User.unix_uid == uid)).first()
        if owner is not None:
            raise Conflict(f"uid {uid} is already registered to user {owner!r}")

    def get_user(self, name: str) -> UserInfo:
        with self._read() as session:
            return _user_info(self._user(session, name, load_credentials=True))

    def find_user(self, name: str) -> UserInfo | None:
        try:
            return self.get_user(name)
        except NotFound:
            return None

    def list_users(self) -> list[UserInfo]:
        with self._read() as session:
            users = session.scalars(
                select(User).options(selectinload(User.credentials)).order_by(User.name)
            ).all()
            return [_user_info(u) for u in users]

    def set_profile(self, name: str, profile: str) -> UserInfo:
        with self._write() as session:
            user = self._user(session, name, load_credentials=True)
            user.profile = profile
            user.updated_at = utcnow()
            return _user_info(user)

    def set_enabled(self, name: str, enabled: bool) -> UserInfo:
        with self._write() as session:
            user = self._user(session, name, load_credentials=True)
            user.enabled = enabled
            user.updated_at = utcnow()
            return _user_info(user)

    def mark_purged(self, name: str) -> bool:
        """Record a purge of ``name`` (False: no such user). Gates polling the store
        cut the user's requests in progress when they see it: a build's RUN step or an
        exec session outlives the containers a purge removes."""
        with self._read() as session:  # no write (no revision bump) for no user
            if session.scalars(select(User.id).where(User.name == name)).first() is None:
                return False
        with self._write() as session:
            user = session.scalars(select(User).where(User.name == name)).first()
            if user is None:
                return False
            user.purged_at = utcnow()
            return True

    def remove_user(self, name: str) -> UserInfo:
        """Delete the user and (by cascade) all their credentials."""
        with self._write() as session:
            user = self._user(session, name, load_credentials=True)
            info = _user_info(user)
            session.delete(user)
            return info

    # -- credentials -------------------------------------------------------------------
    def add_certificate(
        self, name: str, serial: int, fingerprint: str, expires_at: dt.datetime | None
    ) -> CredentialInfo:
        with self._write() as session:
            user = self._user(session, name)
            hexed = serial_hex(serial)
            taken = session.scalars(
                select(Credential).where(Credential.cert_serial == hexed)
            ).first()
            if taken is not None:
                raise Conflict(f"certificate serial {hexed} is already registered")
            cred = Credential(
                user_id=user.id,
                kind=CERT,
                cert_serial=hexed,
                cert_fingerprint=fingerprint.lower(),
                issued_at=utcnow(),
                expires_at=expires_at,
            )
            session.add(cred)
            session.flush()
            return _cred_info(cred)

    def add_token(self, name: str, expires_at: dt.datetime | None = None) -> IssuedToken:
        new = tokens.generate()
        with self._write() as session:
            user = self._user(session, name)
            session.add(
                Credential(
                    user_id=user.id,
                    kind=TOKEN,
                    token_id=new.token_id,
                    token_hash=new.token_hash,
                    issued_at=utcnow(),
                    expires_at=expires_at,
                )
            )
        return IssuedToken(new.token, new.token_id, expires_at)

    def revoke_all(self, name: str) -> dict[str, int]:
        """Revoke every active certificate and token of ``name``; counts per kind."""
        counts = {CERT: 0, TOKEN: 0}
        with self._write() as session:
            user = self._user(session, name, load_credentials=True)
            now = utcnow()
            for cred in user.credentials:
                if cred.revoked_at is None:
                    cred.revoked_at = now
                    counts[cred.kind] += 1
            user.updated_at = now
        return counts

    def ensure_admin(
        self, name: str, serial: int, fingerprint: str, expires_at: dt.datetime | None
    ) -> list[str]:
        """Idempotent: the admin user exists and the given certificate is theirs."""
        done: list[str] = []
        if self.find_user(name) is None:
            self.add_user(name, "admin")
            done.append(f"registered user {name!r} with profile 'admin'")
        hexed = serial_hex(serial)
        with self._read() as session:
            owner = session.scalars(
                select(User.name).join(Credential).where(Credential.cert_serial == hexed)
            ).first()
        if owner is None:
            self.add_certificate(name, serial, fingerprint, expires_at)
            done.append(f"registered the certificate of {name!r} (serial {hexed})")
        elif owner != name:
            raise Conflict(f"certificate serial {hexed} is registered to user {owner!r}")
        return done

    # -- for the gate ------------------------------------------------------------------
    def revision(self) -> int:
        """The change counter: cheap enough to read four times a second."""
        try:
            with self._read() as session:
                return snapshot.read_revision(session)
        except LookupError as exc:
            raise StoreError(f"{exc}: run `dockergate db upgrade`") from exc

    def load_snapshot(self) -> snapshot.Snapshot:
        """All users and valid credentials, for the gate's in-memory directory."""
        try:
            with self._read() as session:
                return snapshot.load(session)
        except LookupError as exc:
            raise StoreError(f"{exc}: run `dockergate db upgrade`") from exc

    # -- audit log ---------------------------------------------------------------------
    # Audit writes do not go through _write: they must not bump the revision counter
    # (every gate would reload its user snapshot after each batch of requests).

    @contextmanager
    def _append(self) -> Iterator[Session]:
        try:
            with Session(self._writer) as session, session.begin():
                yield session
        except (IntegrityError, DataError) as exc:
            # Not an outage: these rows can never be stored as they are.
            detail = str(getattr(exc, "orig", exc)).strip().splitlines()
            raise StoreError(
                f"audit rows refused by the database: {detail[0] if detail else exc}"
            ) from exc
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc

    def append_audit(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert audit rows (column name -> value, ``at`` an aware datetime) in one
        transaction. :class:`StoreUnavailable` means "try again later"; any other
        :class:`StoreError` means these rows themselves were refused."""
        if not rows:
            return 0
        with self._append() as session:
            session.execute(insert(AuditEntry), [dict(r) for r in rows])
        return len(rows)

    def audit_entries(
        self,
        *,
        user: str | None = None,
        since: dt.datetime | None = None,
        decisions: Sequence[str] | None = None,
        kind: str | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditInfo]:
        """Matching rows, oldest first; with ``limit``, the newest ``limit`` of them."""
        query = select(AuditEntry)
        if user is not None:
            query = query.where(AuditEntry.user_name == user)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        if decisions:
            query = query.where(AuditEntry.decision.in_(list(decisions)))
        if kind is not None:
            query = query.where(AuditEntry.kind == kind)
        if after_id is not None:
            query = query.where(AuditEntry.id > after_id)
        with self._read() as session:
            if limit is None:
                rows = session.scalars(query.order_by(AuditEntry.id)).all()
                return [_audit_info(a) for a in rows]
            newest = session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)).all()
            return [_audit_info(a) for a in reversed(newest)]

    def audit_count(self) -> int:
        with self._read() as session:
            return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)

    def prune_audit(self, before: dt.datetime, chunk: int = AUDIT_PRUNE_CHUNK) -> int:
        """Delete rows older than ``before``, ``chunk`` rows per transaction so that the
        gate's inserts (and the CLI) never wait long for the write lock."""
        total = 0
        while True:
            oldest = (
                select(AuditEntry.id)
                .where(AuditEntry.at < before)
                .order_by(AuditEntry.id)
                .limit(chunk)
            )
            with self._append() as session:
                result = session.execute(
                    delete(AuditEntry)
                    .where(AuditEntry.id.in_(oldest.scalar_subquery()))
                    .execution_options(synchronize_session=False)
                )
            done = int(getattr(result, "rowcount", 0) or 0)
            total += done
            if done < chunk:
                return total

    def last_activity(self) -> dict[str, dt.datetime]:
        """The time of each user's latest audit row (for ``dockergate usage``)."""
        query = (
            select(AuditEntry.user_name, func.max(AuditEntry.at))
            .where(AuditEntry.user_name.is_not(None))
            .group_by(AuditEntry.user_name)
        )
        with self._read() as session:
            return {str(name): at for name, at in session.execute(query).all() if at is not None}

    # -- volume names --------------------------------------------------------------------
    # Like audit rows, claims do not bump the revision (no user changed).

    def claim_volume_name(self, name: str, owner: str) -> str:
        """Who holds ``name`` after this call: ``owner`` if it was free (now theirs),
        else the user who claimed it first."""
        try:
            with Session(self._writer) as session, session.begin():
                held = session.get(VolumeName, name)
                if held is not None:
                    return held.owner
                session.add(VolumeName(name=name, owner=owner))
            return owner
        except IntegrityError:
            pass  # claimed by another gate in between: read who won
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc
        with self._read() as session:
            held = session.get(VolumeName, name)
            return held.owner if held is not None else owner

    def name_image(self, name: str, owner: str, image_id: str) -> None:
        """``owner`` put the tag ``name`` on ``image_id`` (see ``models.ImageTag``);
        it replaces what an earlier tag of that name recorded. Like audit rows and
        volume names, it does not bump the revision (no user changed)."""
        try:
            with Session(self._writer) as session, session.begin():
                row = session.get(ImageTag, name)
                if row is None:
                    session.add(ImageTag(name=name, owner=owner, image_id=image_id))
                else:
                    row.owner, row.image_id, row.tagged_at = owner, image_id, utcnow()
        except IntegrityError:
            pass  # another gate named it at the same moment: theirs stands
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc

    def forget_image_tag(self, name: str) -> None:
        """The tag ``name`` is no longer a member's: removed, or written by an admin."""
        try:
            with Session(self._writer) as session, session.begin():
                session.execute(delete(ImageTag).where(ImageTag.name == name))
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc

    def image_namer(self, name: str) -> tuple[str, str] | None:
        """(owner, image ID) of the tag ``name`` as a member made it; None if none."""
        with self._read() as session:
            row = session.get(ImageTag, name)
            return (row.owner, row.image_id) if row is not None else None

    def remember_removed(self, rows: Sequence[RemovedRow], forget_before: int = 0) -> None:
        """Objects users removed: (kind, ID, owner, created, removed) each (see
        ``models.RemovedObject``; a later removal of the same ID replaces the row).
        Rows removed before ``forget_before`` (Unix seconds) are dropped on the way.
        Like audit rows, they do not bump the revision."""
        try:
            self._merge_removed(rows, forget_before)
        except IntegrityError:
            # Another gate inserted one of these rows between merge's read and its
            # insert (the whole batch is rolled back): once more, the row is there to
            # update now.
            try:
                self._merge_removed(rows, forget_before)
            except IntegrityError as exc:
                raise unavailable(exc, self.url) from exc

    def _merge_removed(self, rows: Sequence[RemovedRow], forget_before: int) -> None:
        try:
            with Session(self._writer) as session, session.begin():
                for kind, object_id, owner, created, removed in rows:
                    session.merge(
                        RemovedObject(
                            kind=kind,
                            object_id=object_id,
                            owner=owner,
                            created=created,
                            removed=removed,
                        )
                    )
                if forget_before:
                    session.execute(
                        delete(RemovedObject).where(RemovedObject.removed < forget_before)
                    )
        except IntegrityError:
            raise  # for remember_removed's second try
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc

    def removed_objects(self, limit: int) -> list[RemovedRow]:
        """The ``limit`` newest removals, oldest first (as they were remembered)."""
        with self._read() as session:
            query = select(RemovedObject).order_by(RemovedObject.removed.desc()).limit(limit)
            rows = [
                (r.kind, r.object_id, r.owner, r.created, r.removed) for r in session.scalars(query)
            ]
        return rows[::-1]

    def volume_name_holders(self, names: Sequence[str]) -> dict[str, str]:
        """Who holds each of ``names`` (the names nobody holds are left out)."""
        with self._read() as session:
            query = select(VolumeName).where(VolumeName.name.in_(list(names)))
            return {v.name: v.owner for v in session.scalars(query)}

    def volume_names(self, owner: str | None = None) -> list[tuple[str, str, dt.datetime]]:
        """(name, holder, claimed at), by name; ``owner``: that user's only."""
        with self._read() as session:
            query = select(VolumeName).order_by(VolumeName.name)
            if owner is not None:
                query = query.where(VolumeName.owner == owner)
            return [(v.name, v.owner, v.claimed_at) for v in session.scalars(query)]

    def release_volume_names(self, owner: str | None = None, names: Sequence[str] = ()) -> int:
        """Free ``names`` (any holder's) or every name ``owner`` holds; how many."""
        if owner is None and not names:
            return 0
        try:
            with Session(self._writer) as session, session.begin():
                query = delete(VolumeName)
                if owner is not None:
                    query = query.where(VolumeName.owner == owner)
                if names:
                    query = query.where(VolumeName.name.in_(list(names)))
                return int(getattr(session.execute(query), "rowcount", 0) or 0)
        except SQLAlchemyError as exc:
            raise unavailable(exc, self.url) from exc
