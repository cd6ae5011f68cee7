"""Who is calling: the peer as the listener saw it, and the user it maps to.

The listener fixes a :class:`Peer` when it accepts a connection (kernel peer
credentials on the unix socket, the verified client certificate on TLS). An
:class:`Authenticator` maps the peer, plus the optional per-request token, to an
:class:`Identity` on *every* request, so that a revocation reaches keep-alive
connections on their next request. Authenticators answer from memory; they must
never hit the database per request.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

TOKEN_HEADER = "x-dockergate-token"

# Headers a client might send to claim an identity. They never decide anything and
# are stripped before forwarding so that nothing downstream can be fooled either.
IDENTITY_HEADERS = frozenset({TOKEN_HEADER, "x-dockergate-user", "authz-user", "x-remote-user"})


@dataclass(frozen=True, slots=True)
class Peer:
    """What the listener learned about the other end at accept time."""

    listener: str  # "unix" or "tls"
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    cert_serial: int | None = None
    cert_cn: str | None = None
    cert_fingerprint: str | None = None  # sha256 of the DER certificate, hex
    # A unix peer whose process runs in a container of the engine (its cgroup says
    # which): its uid is the container's (root, or any uid the image chose), not a
    # person's, so it is taken for the container's owner (the gate asks the daemon).
    container: str | None = None
    # The peer's pid and mount namespaces (``pid:[inode]``, ``mnt:[inode]``): to check
    # it is in the container its cgroup names.
    pid_ns: str | None = None
    mnt_ns: str | None = None
    container_owner: str | None = None  # the owner label; None: the container has none
    problem: str | None = None  # why this peer cannot be identified at all

    def describe(self) -> str:
        """How the peer was identified, for logs and refusals."""
        if self.listener == "unix":
            if self.container:
                return f"unix uid {self.uid} in container {self.container[:12]}"
            return f"unix uid {self.uid}"
        if self.cert_serial is not None:
            return f"certificate CN={self.cert_cn!r} serial {self.cert_serial:x}"
        return "TLS client without certificate"


@dataclass(frozen=True, slots=True)
class Identity:
    """A user the gate let in, and how it knows."""

    name: str
    profile: str
    admin: bool
    method: str  # e.g. "unix uid 1000", "cert serial 1f2e", "token"
    uid: int | None = None
    # The user's last purge when the gate let the request in: a newer one ends it.
    purged_at: dt.datetime | None = None


class Refusal(Exception):
    """The caller is not let in; ``message`` goes to the client after ``dockergate: ``."""

    def __init__(
        self, status: int, message: str, *, raw: bool = False, rule: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.rule = rule or message  # what the audit log records as the reason
        # raw: worded as the daemon would (a 404 for someone else's object), no prefix.
        self.raw = raw


class Authenticator(Protocol):
    def authenticate(self, peer: Peer, token: str | None) -> Identity:
        """Return the caller's identity or raise :class:`Refusal`."""
        ...
