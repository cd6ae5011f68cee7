"""Who is calling, answered from an in-memory copy of the user store.

:class:`DirectoryAuthenticator` is the gate's :class:`~dockergate.listen.identity.Authenticator`
once users exist. ``authenticate`` runs on every request (so a revocation reaches
keep-alive connections on their next request) and therefore never touches the
database: it reads a :class:`~dockergate.store.snapshot.Snapshot` held in memory.

A background task reads the store's single ``revision`` counter every 0.25 s, in a
worker thread so the event loop never blocks on I/O, and reloads the snapshot when
the counter moved. A change made by the CLI is thus in force within about half a
second.

It fails closed: when the database cannot be read (file removed or corrupt,
PostgreSQL down) or has not answered for ``stale_after`` seconds, everybody is
refused with 503 until a poll succeeds again. An outage never lets a revoked
credential back in, and a hung database never freezes the last-known state
forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import pwd
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dockergate.config import Settings
from dockergate.listen.identity import Identity, Peer, Refusal
from dockergate.store import tokens
from dockergate.store.db import engine_for
from dockergate.store.errors import StoreError, StoreUnavailable
from dockergate.store.repository import Store, serial_hex
from dockergate.store.snapshot import Member, Snapshot

log = logging.getLogger("dockergate.directory")

ADMIN_PROFILE = "admin"
POLL_INTERVAL = 0.25
STALE_AFTER = 5.0
_CACHE_SIZE = 4096
# Root on the unix socket: the same answer for every request (Identity is frozen).
_ROOT_ON_UNIX = Identity("root", ADMIN_PROFILE, True, "unix uid 0", uid=0)


class DirectoryAuthenticator:
    """Maps peers (and tokens on TLS) to registered users; see the module docstring.

    ``store`` defaults to the one configured in ``settings`` (``db_url()``); pass one
    to share an engine or in tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        poll_interval: float = POLL_INTERVAL,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.root_is_admin = settings.root_is_admin
        self.store = store or Store(engine_for(settings), settings.db_url())
        self._own_store = store is None
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self._snapshot: Snapshot | None = None
        # Why the gate is closed: the full reason (logged) and the one clients see,
        # which names no database host, path or user.
        self._error: str | None = "not started"
        self._public_error = "not loaded yet"
        self._fresh_at = 0.0  # monotonic time of the last successful poll
        self._task: asyncio.Task[None] | None = None
        # Called after a new snapshot replaced an older one (the gate cuts streams of
        # users who are no longer allowed in).
        self.on_change: Callable[[], None] | None = None
        # sha256(token) -> the hash string it was verified against (positive results
        # only; the snapshot still decides whether that credential is valid now).
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._logins: dict[int, str | None] = {}
        self._executor: ThreadPoolExecutor | None = None  # made by start()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Load the snapshot and start polling. Never raises for a database outage:
        the gate then starts closed (503 for everyone) and opens when the store is back.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="dockergate-users")
        await self._poll()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dockergate-directory")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._own_store:
            self.store.close()

    @property
    def problem(self) -> str | None:
        """Why the gate is closed, in full (for logs and operators), or None when open."""
        return self._error

    @property
    def revision(self) -> int | None:
        """The store revision the gate applies now (None before the first load): a
        user or credential change is in force once this reaches its revision."""
        return self._snapshot.revision if self._snapshot is not None else None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self._poll()

    async def _poll(self) -> None:
        current = self._snapshot if self._error is None else None
        try:
            # On a thread of its own: the default executor also runs the audit writer
            # and other store writes, and a queue of them there must not make the
            # snapshot look stale and close the gate for everyone (round 32a).
            loop = asyncio.get_running_loop()
            fresh = await loop.run_in_executor(self._executor, self._refresh, current)
        except StoreUnavailable as exc:
            self._fail(str(exc), "the user database cannot be read")
            return
        except StoreError as exc:
            self._fail(str(exc), "the user database is not usable")
            return
        except Exception as exc:  # anything else: still closed, never open
            self._fail(f"{type(exc).__name__}: {exc}", "the user database cannot be read", exc)
            return
        if fresh is not current:
            replaced = self._snapshot is not None
            self._snapshot = fresh
            if replaced and self.on_change is not None:
                self.on_change()
            log.debug(
                "directory at revision %d: %d users, %d certificates, %d tokens",
                fresh.revision,
                len(fresh.by_name),
                len(fresh.by_serial),
                len(fresh.by_token_id),
            )
        if self._error is not None:
            log.info("user store available (revision %d)", fresh.revision)
        self._error = None
        self._fresh_at = time.monotonic()

    def _refresh(self, current: Snapshot | None) -> Snapshot:
        """In a worker thread: the current snapshot if unchanged, else a new one."""
        if current is not None and self.store.revision() == current.revision:
            return current
        return self.store.load_snapshot()

    def _fail(self, message: str, public: str, exc: BaseException | None = None) -> None:
        """Close the gate; log once per distinct problem, not four times a second."""
        if self._error != message:
            log.error("user store unavailable, refusing everyone: %s", message, exc_info=exc)
        self._error = message
        self._public_error = public

    # -- authentication ----------------------------------------------------------------
    def _current(self) -> Snapshot:
        problem = None if self._error is None else self._public_error
        if problem is None and time.monotonic() - self._fresh_at > self.stale_after:
            problem = f"no answer from the user database for more than {self.stale_after:g} s"
        if problem is not None or self._snapshot is None:
            raise Refusal(
                503,
                f"store unavailable: {problem or 'not loaded'}; refusing everyone until it is back",
            )
        return self._snapshot

    def authenticate(self, peer: Peer, token: str | None) -> Identity:
        snap = self._current()
        if peer.listener == "unix":
            return self._unix(snap, peer)
        if peer.cert_serial is not None:
            return self._cert(snap, peer)
        return self._token(snap, token)

    def _unix(self, snap: Snapshot, peer: Peer) -> Identity:
        # A token header on the unix socket is ignored: the kernel already said who it is.
        uid = peer.uid
        if uid is None:
            raise Refusal(403, "unix peer without credentials; cannot tell who is calling")
        if peer.problem is not None:
            raise Refusal(403, f"cannot tell who is calling: {peer.problem}")
        if peer.container is not None and peer.container_owner is not None:
            return self._in_container(snap, peer, peer.container, peer.container_owner)
        if uid == 0 and self.root_is_admin:
            return _ROOT_ON_UNIX
        member = snap.by_uid.get(uid)
        if member is None:
            login = self._login(uid)
            if login is None:
                raise Refusal(
                    403,
                    f"unix uid {uid} is not registered; ask an admin: "
                    f"dockergate user add NAME --profile member --uid {uid}",
                )
            raise Refusal(
                403,
                f"unix user {login!r} (uid {uid}) is not registered; ask an admin: "
                f"dockergate user add {login} --profile member --unix-user {login}",
            )
        return self._identity(member, f"unix uid {uid}", uid)

    def _in_container(self, snap: Snapshot, peer: Peer, container: str, owner: str) -> Identity:
        """A process in a container made through the gate acts for the container's
        owner, whatever uid it runs as (root in a member's container is not the host's
        root). Containers without an owner label were made on the daemon directly, by
        whoever had its socket: their uid is taken as the host's."""
        method = f"unix uid {peer.uid} in container {container[:12]} of {owner}"
        if owner == "root" and self.root_is_admin:
            return Identity("root", ADMIN_PROFILE, True, method, uid=0)
        member = snap.by_name.get(owner)
        if member is None:
            raise Refusal(
                403,
                f"this process runs in container {container[:12]} of {owner!r}, "
                "who is not a registered user",
            )
        return self._identity(member, method, member.unix_uid)

    def _cert(self, snap: Snapshot, peer: Peer) -> Identity:
        assert peer.cert_serial is not None
        serial = serial_hex(peer.cert_serial)
        entry = snap.by_serial.get(serial)
        who = peer.cert_cn or "NAME"
        if entry is None:
            raise Refusal(
                403,
                f"certificate serial {serial} is revoked or unknown; ask an admin for a new "
                f"bundle: dockergate user cert {who} --out DIR",
            )
        name = entry.user.name
        if peer.cert_cn != name:
            raise Refusal(
                403,
                f"certificate serial {serial} names {peer.cert_cn!r} but was issued to "
                f"{name!r}; ask an admin for a new bundle: dockergate user cert {name} --out DIR",
            )
        if (
            entry.fingerprint
            and peer.cert_fingerprint
            and entry.fingerprint != peer.cert_fingerprint.lower()
        ):
            raise Refusal(
                403,
                f"certificate serial {serial} does not match the one issued to {name!r}; "
                f"ask an admin for a new bundle: dockergate user cert {name} --out DIR",
            )
        if entry.expires_at is not None and entry.expires_at <= dt.datetime.now(dt.UTC):
            raise Refusal(
                403,
                f"certificate serial {serial} of {name!r} expired on "
                f"{entry.expires_at:%Y-%m-%d %H:%M} UTC; ask an admin for a new bundle: "
                f"dockergate user cert {name} --out DIR",
            )
        return self._identity(entry.user, f"cert serial {serial}", entry.user.unix_uid)

    def _token(self, snap: Snapshot, token: str | None) -> Identity:
        if not token:
            raise Refusal(
                403,
                "TLS client without a certificate and without X-Dockergate-Token; ask an "
                "admin for a bundle (dockergate user cert NAME --out DIR) or a token "
                "(dockergate user token NAME)",
            )
        invalid = Refusal(
            403, "invalid X-Dockergate-Token; ask an admin: dockergate user token NAME"
        )
        parsed = tokens.parse(token)
        if parsed is None:
            raise invalid
        token_id, secret = parsed
        entry = snap.by_token_id.get(token_id)
        if entry is None or not self._token_matches(token, secret, entry.token_hash):
            raise invalid
        name = entry.user.name
        if entry.expires_at is not None and entry.expires_at <= dt.datetime.now(dt.UTC):
            raise Refusal(
                403,
                f"X-Dockergate-Token {token_id} of {name!r} expired; ask an admin: "
                f"dockergate user token {name}",
            )
        return self._identity(entry.user, f"token {token_id}", entry.user.unix_uid)

    def _token_matches(self, token: str, secret: str, token_hash: str) -> bool:
        """passlib check, cached by a digest of the token (the clear token is not kept)."""
        key = hashlib.sha256(token.encode()).digest()
        if self._verified.get(key) == token_hash:
            self._verified.move_to_end(key)
            return True
        if not tokens.verify(secret, token_hash):
            return False
        self._verified[key] = token_hash
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    @staticmethod
    def _identity(member: Member, method: str, uid: int | None) -> Identity:
        if not member.enabled:
            raise Refusal(
                403,
                f"user {member.name!r} is disabled; ask an admin: "
                f"dockergate user enable {member.name}",
            )
        admin = member.profile == ADMIN_PROFILE
        return Identity(member.name, member.profile, admin, method, uid, member.purged_at)

    def _login(self, uid: int) -> str | None:
        """The login of an unregistered uid, for the refusal (cached: NSS may be slow)."""
        if uid not in self._logins:
            if len(self._logins) > _CACHE_SIZE:
                self._logins.clear()
            try:
                self._logins[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._logins[uid] = None
        return self._logins[uid]
