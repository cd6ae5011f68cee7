"""The gate: listeners, the upstream pool, the authenticator, and a bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from dockergate.api.dispatch import load_handlers
from dockergate.api.exchange import ADMIN_PROFILE
from dockergate.api.ownership import OWNER_LABEL, image_claim, imprinted, keep_removals
from dockergate.api.volumes import seed_volume_claims
from dockergate.audit.record import RequestRecord
from dockergate.audit.writer import AuditWriter, writer_of
from dockergate.config import POLICY_STATUS, Settings
from dockergate.listen.identity import Authenticator, Identity, Peer, Refusal
from dockergate.listen.listeners import remote_host, start_tls, start_unix
from dockergate.listen.tlsconfig import server_context, upstream_context
from dockergate.logs import cut, printable
from dockergate.metrics import Metrics
from dockergate.pidfile import PIDFILE, claim_pidfile, release_pidfile
from dockergate.policy.model import PolicyError, Profile, ProfileSet, shipped_policies_dir
from dockergate.proxy.connection import ClientConnection
from dockergate.proxy.daemon import Daemon
from dockergate.proxy.http import Writer
from dockergate.proxy.upstream import Upstream, UpstreamError
from dockergate.store.errors import StoreError
from dockergate.store.repository import Store

# Whole bodies one user's requests may be sending at once (each up to INSPECT_CAP);
# more wait. Compose's parallel creates finish theirs in milliseconds.
BODY_SLOTS = 8
UNIDENTIFIED_PER_ADDRESS = 64  # TLS connections without a certificate, before a token

log = logging.getLogger("dockergate")
SWEEP_INTERVAL = 5.0
access = logging.getLogger("dockergate.access")


LOGGED_PATH_MAX = 1024  # characters of a request path in the access log (the audit row's)
# Access-log lines a minute for requests of callers nobody identified (all of them
# together); past it they are counted, and one line says how many were left out.
UNIDENTIFIED_LINES_PER_MINUTE = 120


class AccessLogBudget:
    """Callers without a credential get the access log's lines only up to a budget:
    one client looping on refused requests wrote a line each, 1.3 GB an hour into
    the engine's json-file log (round 32b). Identified users are logged in full (the
    audit log budgets their refusals)."""

    def __init__(self, per_minute: int = UNIDENTIFIED_LINES_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self.window = 0.0
        self.count = 0
        self.left_out = 0

    def allows(self, record: RequestRecord) -> bool:
        if record.user is not None:
            return True
        if record.started - self.window >= 60:
            if self.left_out:
                access.info(
                    "%d more requests of unidentified callers in the minute from %s not "
                    "logged (at most %d lines a minute)",
                    self.left_out,
                    time.strftime("%H:%M:%S", time.gmtime(self.window)),
                    self.per_minute,
                )
            self.window, self.count, self.left_out = record.started, 0, 0
        self.count += 1
        if self.count <= self.per_minute:
            return True
        self.left_out += 1
        return False


class Gate:
    def __init__(self, settings: Settings, authenticator: Authenticator) -> None:
        self.settings = settings
        self.authenticator = authenticator
        tls = None
        if settings.upstream.startswith("tcp://") and (
            settings.upstream_ca or settings.upstream_cert
        ):
            tls = upstream_context(
                settings.upstream_ca, settings.upstream_cert, settings.upstream_key
            )
        self.upstream = Upstream(settings.upstream, tls)
        self.daemon = Daemon(self.upstream)
        self._own_pid_ns: str | None = None  # /proc/self/ns/pid, read when needed
        self.profiles = ProfileSet(settings.policies_dir or shipped_policies_dir())
        load_handlers()
        self.closing = False
        self.connections: dict[asyncio.Task[Any], ClientConnection] = {}
        self.per_client: Counter[str] = Counter()  # open connections by counted client
        self.unidentified: Counter[str] = Counter()  # TLS connections not identified yet
        self._body_slots: dict[str, asyncio.Semaphore] = {}
        self.warned_clients: set[str] = set()
        self.servers: list[asyncio.Server] = []
        self.tls_context: ssl.SSLContext | None = None
        self.streams = 0
        self.metrics = Metrics(self)
        self.sinks: list[Callable[[RequestRecord], None]] = [self.metrics.observe]
        self._log_budget = AccessLogBudget()

    @property
    def store(self) -> Store | None:
        """The store handle: the audit writer's, else the authenticator's (None for a
        gate run without one, as some tests do)."""
        writer = writer_of(self.sinks)
        if writer is not None:
            return writer.store
        store = getattr(self.authenticator, "store", None)
        return store if isinstance(store, Store) else None

    # -- profiles ----------------------------------------------------------------------
    def identify(self, peer: Peer, token: str | None) -> Identity:
        """The caller, as the authenticator knows them, with admin rights as their
        profile's file says (``admin: true``, e.g. an ``ops.yaml`` or a profile that
        extends ``admin``): the one answer for routes, ownership and rules alike. A
        profile with no file keeps what the authenticator said (root, and the
        ``admin`` profile, are admins built in)."""
        identity = self.authenticator.authenticate(peer, token)
        profile = self.profiles.get(identity.profile)
        if profile is None or profile.admin == identity.admin:
            return identity
        return dataclasses.replace(identity, admin=profile.admin)

    def profile_for(self, identity: Identity) -> Profile:
        profile = self.profiles.get(identity.profile)
        if profile is not None:
            return profile
        if identity.admin:
            return ADMIN_PROFILE
        raise Refusal(
            403,
            f"user {identity.name!r} has profile {identity.profile!r}, which the gate has "
            f"not loaded from {self.profiles.directory} (no such file, or added since the "
            "last reload); ask an admin: dockergate policy reload, or dockergate user "
            f"set-profile {identity.name} PROFILE",
        )

    def reload_profiles(self) -> None:
        """SIGHUP / ``dockergate policy reload``: swap in new rules, keep connections.
        A broken file leaves the old rules in force."""
        try:
            self.profiles = ProfileSet(self.profiles.directory)
        except PolicyError as exc:
            log.error("policy reload failed, keeping the previous rules: %s", exc)
            self.write_policy_status(str(exc))
            return
        log.info(
            "policies reloaded from %s: %s",
            self.profiles.directory,
            ", ".join(self.profiles.profiles),
        )
        self.write_policy_status(None)
        self.recheck_streams()  # a profile that gained or lost admin: true

    def write_policy_status(self, error: str | None) -> None:
        """``<state dir>/policies.json``: which directory the running gate reads its
        profiles from and how the last load went, for ``dockergate policy reload``
        (which otherwise only knows its own configuration), and its socket, for
        ``dockergate usage`` (which asks the running gate when it can)."""
        status = {
            "directory": str(self.profiles.directory.resolve()),  # read from elsewhere
            "socket": self.settings.socket or None,
            "profiles": sorted(self.profiles.profiles),
            "error": error,
            "at": time.time(),
        }
        with contextlib.suppress(OSError):
            path = self.settings.state_dir / POLICY_STATUS
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(status))
            tmp.replace(path)

    def reload_server_cert(self) -> None:
        """SIGHUP: new TLS handshakes present the server certificate now on disk (after
        ``dockergate init --rotate-server-cert``); open connections keep theirs. The
        pair is tried on a scratch context first, so a half-written or mismatched
        file never leaves the listener with a certificate and a key that disagree."""
        if self.tls_context is None:
            return
        cert, key = self.settings.server_cert_path, self.settings.server_key_path
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            self.tls_context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.error("server certificate reload failed, keeping the previous one: %s", exc)
            return
        log.info("server certificate reloaded from %s", cert)

    def reload(self) -> None:
        """SIGHUP: profiles and the server certificate."""
        self.reload_profiles()
        self.reload_server_cert()

    # -- health --------------------------------------------------------------------------
    async def health(self) -> tuple[int, dict[str, Any]]:
        """Upstream and store reachability; 503 when either is down."""
        checks: dict[str, Any] = {}
        try:
            reply = await self.daemon.get("/_ping")
            checks["upstream"] = {"ok": reply.ok, "url": self.upstream.url}
        except UpstreamError as exc:
            checks["upstream"] = {"ok": False, "url": self.upstream.url, "error": str(exc)}
        if hasattr(self.authenticator, "problem"):
            problem = self.authenticator.problem
            # Anyone on the unix socket may ask: say that the store is down, not where it is.
            checks["store"] = {
                "ok": problem is None,
                **({"error": "unavailable"} if problem else {}),
                "revision": getattr(self.authenticator, "revision", None),
            }
        healthy = all(c["ok"] for c in checks.values())
        return (200 if healthy else 503), {"status": "ok" if healthy else "unhealthy", **checks}

    # -- connections -------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: Writer, peer: Peer) -> None:
        if peer.container is not None:
            try:
                peer = await self._container_peer(peer)
            except Exception as exc:  # the peer is refused, never served unplaced
                log.warning("placing unix peer pid %s: %r", peer.pid, exc)
                peer = dataclasses.replace(
                    peer, problem=f"the gate could not tell whose container this is ({exc})"
                )
        conn = ClientConnection(self, reader, writer, peer)
        task = asyncio.current_task()
        assert task is not None
        if self.settings.max_connections_per_client > 0:
            self._admit_at_connect(conn)
        self.connections[task] = conn
        try:
            await conn.serve()
        except asyncio.CancelledError:
            # Cancelled by shutdown(). End normally: asyncio's stream server (3.11)
            # would otherwise log the cancellation of its own task as an error.
            pass
        finally:
            self.connections.pop(task, None)
            self._release(conn)

    async def _container_peer(self, peer: Peer) -> Peer:
        """A unix peer whose cgroup names a container: whose container it is, from its
        owner label, once the peer is seen to be in the container's pid and mount
        namespaces (a cgroup is only a name; a container with the host's pids still
        has mounts of its own). A container the daemon does not know is not this
        engine's, and a process outside the container's namespace is not in it:
        the peer is then taken as the host sees it."""
        assert peer.container is not None
        short = peer.container[:12]
        try:
            reply = await self.daemon.get(f"/containers/{peer.container}/json")
        except UpstreamError as exc:
            return dataclasses.replace(
                peer, problem=f"cannot ask the daemon whose container {short} is: {exc}"
            )
        if reply.status == 404:
            return self._unmatched(peer, f"container {short} is not the engine's")
        obj = reply.json() if reply.ok else None
        if not isinstance(obj, dict):
            return dataclasses.replace(
                peer, problem=f"the daemon does not say whose container {short} is"
            )
        init = int((obj.get("State") or {}).get("Pid") or 0)
        try:
            if init <= 0:
                raise FileNotFoundError
            init_ns = os.readlink(f"/proc/{init}/ns/pid"), os.readlink(f"/proc/{init}/ns/mnt")
        except OSError:
            return dataclasses.replace(peer, problem=f"container {short} is not running")
        if init_ns != (peer.pid_ns, peer.mnt_ns):
            return self._unmatched(peer, f"it is not in container {short}")
        labels = (obj.get("Config") or {}).get("Labels") or {}
        owner = labels.get(OWNER_LABEL) if isinstance(labels, dict) else None
        if not isinstance(owner, str):
            return dataclasses.replace(peer, container_owner=None)
        if imprinted(await image_claim(self.daemon, str(obj.get("Image") or "")), owner):
            # The label may have come with the image (a build's RUN container, say):
            # it names nobody for sure, and the uid is the container's.
            return dataclasses.replace(
                peer, problem=f"container {short}'s owner label may come from its image"
            )
        return dataclasses.replace(peer, container_owner=owner)

    def _unmatched(self, peer: Peer, why: str) -> Peer:
        """A peer whose cgroup names a container it cannot be matched to: a process of
        the host (in the gate's pid namespace) is taken by its uid; one in another pid
        namespace is refused (the container may have gone, or a pid been reused,
        between the connect and the check: its uid cannot be trusted)."""
        if self._own_pid_ns is None:
            self._own_pid_ns = os.readlink("/proc/self/ns/pid")
        if peer.pid_ns == self._own_pid_ns:
            return dataclasses.replace(peer, container=None)
        return dataclasses.replace(
            peer, problem=f"a process in another pid namespace, and {why}; connect again"
        )

    # -- connections per client ---------------------------------------------------------
    # A connection counts against its client (max_connections_per_client): the unix
    # uid or the certificate from the start; a TLS client without a certificate (a
    # token comes with each request) against the token's user from its first request
    # that identifies, and until then against its address among the unidentified
    # (UNIDENTIFIED_PER_ADDRESS, closed after FIRST_REQUEST_TIMEOUT): anyone who can
    # reach the port could otherwise take a token user's slots. Admins are not counted
    # (Portainer opens a stream per container).

    def _admit_at_connect(self, conn: ClientConnection) -> None:
        """Count a new connection where it can be counted yet."""
        peer = conn.peer
        if peer.listener == "tls" and peer.cert_serial is None:
            self._admit_unidentified(conn)
            return
        try:
            identity = self.identify(peer, None)
        except Refusal as exc:
            if peer.listener == "tls" and exc.status != 503:
                # A revoked or unknown certificate names nobody: held as a client
                # without one (per address, closed soon if idle), not as a user with
                # max_connections_per_client places.
                self._admit_unidentified(conn)
                return
            # Not a user: every request will be refused, but the slot is counted.
            self._count(conn, peer.describe())
            return
        self._count_user(conn, identity)

    def _admit_unidentified(self, conn: ClientConnection) -> None:
        host = remote_host(conn.writer)
        if self.unidentified[host] >= UNIDENTIFIED_PER_ADDRESS:
            # Not counted; closed unless its first request, sent at once, brings a
            # token (a token user behind the same address as a flood gets through).
            conn.probation = True
            return
        self.unidentified[host] += 1
        conn.unidentified_at = host

    def identified(self, conn: ClientConnection, identity: Identity) -> None:
        """A token client's first identified request: counted against its user now."""
        host, conn.unidentified_at = conn.unidentified_at, None
        if host is not None:
            self._uncount(self.unidentified, host)
        if self.settings.max_connections_per_client <= 0:
            return
        self._count_user(conn, identity)

    def _count_user(self, conn: ClientConnection, identity: Identity) -> None:
        """One count per user however they connect: uid, certificates, tokens, and
        processes in their containers (each of those is a peer of its own)."""
        if not identity.admin:
            self._count(conn, f"user {identity.name!r}")

    def _count(self, conn: ClientConnection, client: str) -> None:
        limit = self.settings.max_connections_per_client
        if self.per_client[client] >= limit:
            # Its request gets the refusal (the CLI prints it), then it closes.
            conn.turned_away = (
                f"{client} has {limit} connections open, the most one client may "
                "(max_connections_per_client): close some and retry"
            )
            if client not in self.warned_clients:
                self.warned_clients.add(client)
                log.warning("%s reached max_connections_per_client (%d)", client, limit)
            return
        self.per_client[client] += 1
        conn.counted_as = client

    def _release(self, conn: ClientConnection) -> None:
        if conn.counted_as is not None:
            self._uncount(self.per_client, conn.counted_as)
            conn.counted_as = None
        if conn.unidentified_at is not None:
            self._uncount(self.unidentified, conn.unidentified_at)
            conn.unidentified_at = None

    def _uncount(self, counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]
            self.warned_clients.discard(key)

    def body_slot(self, user: str) -> asyncio.Semaphore:
        """Bodies of ``user`` the gate may hold at once (``Exchange.read_held_body``)."""
        slot = self._body_slots.get(user)
        if slot is None:
            slot = self._body_slots[user] = asyncio.Semaphore(BODY_SLOTS)
        return slot

    @contextlib.contextmanager
    def track_stream(self) -> Iterator[None]:
        self.streams += 1
        try:
            yield
        finally:
            self.streams -= 1

    def on_request(self, record: RequestRecord) -> None:
        """Every request ends here: one access-log line, then the sinks (audit, metrics).

        Sinks must not block: the audit writer queues, metrics count in memory."""
        if access.isEnabledFor(logging.INFO) and self._log_budget.allows(record):
            access.info(
                "user=%s via=%r %s %s route=%s status=%s decision=%s%s ms=%.1f",
                record.user or "-",
                record.identified_by,
                printable(record.method),
                # Decoded (a %0a would forge a line), and cut as in the audit row: a
                # path may be a whole head long.
                printable(cut(record.path, LOGGED_PATH_MAX)),
                record.route or "-",
                record.status,
                record.decision,
                f" rule={cut(record.rule, LOGGED_PATH_MAX)!r}" if record.rule else "",
                record.seconds * 1000,
            )
        for sink in self.sinks:
            try:
                sink(record)
            except Exception:  # a broken sink must never break the proxy
                log.exception("request sink %r failed", sink)

    def log_upstream_error(self, exc: BaseException) -> None:
        log.warning("upstream %s: %s", self.upstream.url, exc)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        if s.socket:
            self.servers.append(await start_unix(s.socket, s.socket_mode, self.handle))
            log.info("unix listener on %s (mode %o)", s.socket, s.socket_mode)
        if s.tls_listen:
            ctx = server_context(s.server_cert_path, s.server_key_path, s.client_ca_path)
            self.tls_context = ctx
            self.servers.append(await start_tls(s.tls_listen, ctx, self.handle))  # logs it
        if not self.servers:
            raise RuntimeError("no listener configured: give --socket and/or --tls-listen")
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self.write_policy_status(None)
        if hasattr(self.authenticator, "on_change"):
            self.authenticator.on_change = self.recheck_streams
        log.info("forwarding to %s", self.upstream.url)

    async def _sweep(self) -> None:
        """Close idle keep-alive connections and stalled request heads, every few seconds;
        cut streams whose credentials have expired since (``recheck_streams``); close
        the daemon connections idle in the pool too long."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for conn in list(self.connections.values()):
                conn.expire(now)
            self.recheck_streams()
            self.upstream.trim()

    def recheck_streams(self) -> None:
        """Requests in progress whose user was disabled, removed, given another profile,
        purged, or had the credential revoked (or expired) are cut, connection and all: every
        request is checked when it starts, but a stream (an exec shell, ``logs -f``,
        ``events``) has no end of its own. Called when the user store changes, and by
        the sweeper. A store that cannot be read (503) cuts nothing: new requests are
        refused meanwhile."""
        for task, conn in list(self.connections.items()):
            identity = conn.identity
            if identity is None:
                self._recheck_idle(task, conn)
                continue
            try:
                now = self.identify(conn.peer, conn.token)
            except Refusal as exc:
                if exc.status == 503:
                    continue
                now = None
            if now is None or (now.name, now.profile, now.admin) != (
                identity.name,
                identity.profile,
                identity.admin,
            ):
                why = "the user's access changed"
            elif (
                now.purged_at is not None
                and now.purged_at != identity.purged_at
                and conn.began_at() < now.purged_at.timestamp()
            ):
                # Only what began before the purge: the user's next request may have
                # started before this gate saw the purge (it polls), and is theirs.
                why = "an admin purged the user"
            else:
                continue
            log.warning(
                "cut a request in progress of %s (%s): %s", identity.name, identity.method, why
            )
            task.cancel()

    async def end_requests_of(self, user: str) -> None:
        """A purge through this gate's API: the store records it (so every gate on it
        cuts the user's requests in progress), and this gate cuts its own at once."""
        store = self.store
        if store is not None:
            try:
                await asyncio.to_thread(store.mark_purged, user)
            except StoreError as exc:
                log.warning("purge of %s not recorded in the store: %s", user, exc)
        for task, conn in list(self.connections.items()):
            if conn.identity is not None and conn.identity.name == user:
                log.warning("cut a request in progress of %s: an admin purged the user", user)
                task.cancel()

    def _recheck_idle(self, task: asyncio.Task[None], conn: ClientConnection) -> None:
        """An idle connection whose certificate (or uid) no longer identifies anyone is
        closed: nothing it could send would be let in, and it held a place in its
        client's connection limit (up to the idle timeout). Only connections that were
        served once: a new one gets its refusal with its first request (which says how
        to register). A TLS client without a certificate identifies per request
        (tokens) and is left to the sweeper."""
        peer = conn.peer
        if conn.busy or not conn.requests or (peer.listener == "tls" and peer.cert_serial is None):
            return
        try:
            self.identify(peer, None)
        except Refusal as exc:
            if exc.status != 503:
                log.info("closed an idle connection of %s: %s", peer.describe(), exc.message)
                task.cancel()

    async def shutdown(self) -> None:
        """Stop accepting, let requests in flight finish, then cut long streams."""
        self.closing = True
        self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for task, conn in list(self.connections.items()):
            if not conn.busy:
                task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=2)
        self.upstream.close()
        if self.settings.socket:
            with contextlib.suppress(OSError):
                os.unlink(self.settings.socket)
        log.info("stopped")


async def run(settings: Settings, authenticator: Authenticator) -> None:
    gate = Gate(settings, authenticator)
    audit = AuditWriter.for_settings(settings)  # the audit log, written off the request path
    gate.sinks.append(audit)
    store = gate.store
    # Who owned what was removed, read back before the listeners open: an events
    # request at once would otherwise replay those objects' events to no one.
    flush_removals = (
        await keep_removals(store, settings.audit_retention_days) if store is not None else None
    )
    try:
        await gate.start()
    except BaseException:
        if flush_removals is not None:
            await flush_removals()
        raise
    audit.start()
    seeding = (
        asyncio.get_running_loop().create_task(seed_volume_claims(gate.daemon, store))
        if store is not None
        else None
    )
    # Start-up leaves ~90,000 long-lived objects (SQLAlchemy, click, the schema tables);
    # a full collection walks them all, a 20-50 ms stall of every request in flight.
    # Frozen, the collector only walks what requests allocate.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gate.reload)
    pidfile = claim_pidfile(settings.state_dir / PIDFILE)
    try:
        await stop.wait()
    finally:
        if pidfile is not None:
            release_pidfile(pidfile)
        if seeding is not None:
            seeding.cancel()
        log.info("shutting down (grace %.0fs)", settings.shutdown_grace)
        await gate.shutdown()
        if flush_removals is not None:
            await flush_removals()
        await audit.stop()  # after the last request: every record is written
