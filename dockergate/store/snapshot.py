"""Everything the gate needs to identify callers, read in one go into plain dicts.

The revision is read *before* the rows: a change committed while the rows are being
read bumps the counter past the value recorded here, so the next poll reloads. That
keeps the snapshot correct even under READ COMMITTED (PostgreSQL's default), where
each statement may see newer data than the previous one.

Revoked credentials are left out: the gate only needs to know what is valid; an
unknown serial and a revoked one get the same answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockergate.store.models import CERT, REVISION_ROW, TOKEN, Credential, Revision, User


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    profile: str
    enabled: bool
    unix_uid: int | None
    purged_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class CertEntry:
    user: Member
    fingerprint: str | None
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TokenEntry:
    user: Member
    token_hash: str
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Snapshot:
    revision: int
    by_uid: Mapping[int, Member] = field(default_factory=dict)
    by_serial: Mapping[str, CertEntry] = field(default_factory=dict)  # lowercase hex
    by_token_id: Mapping[str, TokenEntry] = field(default_factory=dict)
    by_name: Mapping[str, Member] = field(default_factory=dict)


def read_revision(session: Session) -> int:
    value = session.scalar(select(Revision.counter).where(Revision.id == REVISION_ROW))
    if value is None:
        raise LookupError("the revision row is missing")
    return int(value)


def load(session: Session) -> Snapshot:
    revision = read_revision(session)
    members: dict[int, Member] = {}
    by_uid: dict[int, Member] = {}
    by_name: dict[str, Member] = {}
    for user in session.scalars(select(User)):
        member = Member(user.name, user.profile, user.enabled, user.unix_uid, user.purged_at)
        members[user.id] = member
        by_name[user.name] = member
        if user.unix_uid is not None:
            by_uid[user.unix_uid] = member
    by_serial: dict[str, CertEntry] = {}
    by_token: dict[str, TokenEntry] = {}
    for cred in session.scalars(select(Credential).where(Credential.revoked_at.is_(None))):
        owner = members.get(cred.user_id)
        if owner is None:  # a user added after the users query: next poll sees it
            continue
        if cred.kind == CERT and cred.cert_serial:
            by_serial[cred.cert_serial] = CertEntry(owner, cred.cert_fingerprint, cred.expires_at)
        elif cred.kind == TOKEN and cred.token_id and cred.token_hash:
            by_token[cred.token_id] = TokenEntry(owner, cred.token_hash, cred.expires_at)
    return Snapshot(revision, by_uid, by_serial, by_token, by_name)
