"""API tokens: ``dgt_<id>_<secret>``, of which only a hash of the secret is stored.

The public id selects one credential row (a dict lookup at the gate, an indexed
column in the database); only the secret is checked against its passlib hash. The
secret has 256 bits of entropy, so the hash does not need to be slow to resist
guessing; PBKDF2-SHA256 with a moderate round count keeps the one-off verification
at the gate (cached per token afterwards) in the low milliseconds while still never
storing anything that can be replayed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from passlib.hash import pbkdf2_sha256

PREFIX = "dgt"
_ID_BYTES = 8  # 16 hex characters
_SECRET_BYTES = 32
_ROUNDS = 5000
_FORMAT = re.compile(r"dgt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewToken:
    token: str  # shown to the user once, never stored
    token_id: str
    token_hash: str


def generate() -> NewToken:
    token_id = secrets.token_hex(_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return NewToken(f"{PREFIX}_{token_id}_{secret}", token_id, hash_secret(secret))


def hash_secret(secret: str) -> str:
    return str(pbkdf2_sha256.using(rounds=_ROUNDS).hash(secret))


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None (nothing else is looked at)."""
    match = _FORMAT.fullmatch(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def verify(secret: str, token_hash: str) -> bool:
    try:
        return bool(pbkdf2_sha256.verify(secret, token_hash))
    except (ValueError, TypeError):
        return False
