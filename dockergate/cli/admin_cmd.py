"""``dockergate purge``, ``audit``, ``usage`` and ``whoami``: run the engine as an admin.

``purge`` and ``usage`` talk to the Docker daemon the gate fronts (``upstream`` in
the settings) or, with ``--host``, to a gate's admin API, so a remote engine is
handled through its own gate with the admin bundle; both paths run the same code
(:mod:`dockergate.admin`). ``audit`` reads the store. ``whoami`` is for everyone:
it asks the gate at ``DOCKER_HOST`` who it thinks you are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from dockergate.admin import cluster
from dockergate.admin.client import GateClient, GateClientError, TLSOptions
from dockergate.admin.purge import PurgeError, PurgeOptions, PurgeReport, purge
from dockergate.admin.usage import collect_usage
from dockergate.api import ownership
from dockergate.api.routes import ROUTES
from dockergate.audit import actions
from dockergate.cli import Context, pass_ctx
from dockergate.cli.init_cmd import ADMIN_BUNDLE
from dockergate.cli.user_cmd import table
from dockergate.config import POLICY_STATUS, Settings
from dockergate.listen.tlsconfig import upstream_context
from dockergate.logs import printable
from dockergate.policy.location import policies_directory
from dockergate.policy.model import PolicyError, ProfileSet, human
from dockergate.proxy.daemon import Daemon
from dockergate.proxy.upstream import Upstream, UpstreamError
from dockergate.store.errors import StoreError
from dockergate.store.repository import AuditInfo, RemovedRow, Store

T = TypeVar("T")
PURGE_TIMEOUT = 900.0  # a purge through a gate waits this long for the answer
FOLLOW_POLL = 1.0


# -- shared helpers -----------------------------------------------------------------------


def tls_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--host`` and the docker CLI's TLS flags (defaults from DOCKER_* variables)."""
    for option in reversed(
        [
            click.option(
                "--host",
                "-H",
                help="A gate (tcp://HOST:2376 or unix:///path) to do it through, with its "
                "admin API; TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH as for docker.",
            ),
            click.option(
                "--tlsverify/--no-tlsverify",
                default=None,
                help="Verify the gate's certificate (default: set when DOCKER_TLS_VERIFY is).",
            ),
            click.option("--tlscacert", help="CA certificate (default DOCKER_CERT_PATH/ca.pem)."),
            click.option(
                "--tlscert", help="Client certificate (default DOCKER_CERT_PATH/cert.pem)."
            ),
            click.option("--tlskey", help="Client key (default DOCKER_CERT_PATH/key.pem)."),
        ]
    ):
        fn = option(fn)
    return fn


def gate_client(
    host: str | None,
    tlsverify: bool | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    default_host: str | None = None,
) -> GateClient:
    try:
        return GateClient.from_env(
            host,
            TLSOptions(tlsverify, tlscacert, tlscert, tlskey),
            default_host=default_host,
        )
    except GateClientError as exc:
        raise click.ClickException(str(exc)) from exc


def on_daemon(settings: Settings, work: Callable[[Daemon], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` against the daemon the gate fronts (settings.upstream)."""

    async def main() -> T:
        tls = None
        if settings.upstream.startswith("tcp://") and (
            settings.upstream_ca or settings.upstream_cert
        ):
            tls = upstream_context(
                settings.upstream_ca, settings.upstream_cert, settings.upstream_key
            )
        upstream = Upstream(settings.upstream, tls)
        try:
            return await work(Daemon(upstream))
        finally:
            upstream.close()

    try:
        return asyncio.run(main())
    except UpstreamError as exc:
        raise click.ClickException(
            f"{exc} (the daemon comes from the `upstream` setting, DOCKERGATE_UPSTREAM; "
            "to act on a remote engine through its gate, pass --host tcp://NODE:2376)"
        ) from exc
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"upstream {settings.upstream!r}: {exc}") from exc


# -- purge --------------------------------------------------------------------------------


def _keep_removals(settings: Settings, rows: list[RemovedRow]) -> None:
    """What a local purge removed, kept in the store as the gate keeps its users'
    removals (``api.ownership.keep_removals``): a gate started after it replays the
    objects' events to their owner. A store that cannot be reached is only warned of."""
    try:
        with Store.open(settings) as store:
            store.remember_removed(rows)
    except StoreError as exc:
        click.echo(f"warning: removals not kept for events replayed later: {exc}", err=True)


def purge_table(report: PurgeReport) -> str:
    rows = [(r.kind, r.name or "-", r.id[:12], r.result) for r in report.rows]
    return table(("KIND", "NAME", "ID", "RESULT"), rows)


@dataclasses.dataclass
class PurgeTarget:
    """One engine to purge: through its gate (``client``) or, for the local one, on
    the daemon the settings name. ``label`` heads its part of a multi-node report."""

    label: str
    where: str
    client: GateClient | None = None
    node_only: bool = False

    def run(self, settings: Settings, opts: PurgeOptions) -> PurgeReport:
        opts = dataclasses.replace(opts, node_only=opts.node_only or self.node_only)
        if self.client is None:
            removed: list[RemovedRow] = []
            ownership.removal_sink = removed.append
            try:
                return on_daemon(settings, lambda daemon: purge(daemon, opts))
            except PurgeError as exc:
                raise click.ClickException(str(exc)) from exc
            finally:
                ownership.removal_sink = None
                if removed:
                    _keep_removals(settings, removed)
        try:
            answer = self.client.call(
                "POST", "/_dockergate/purge", opts.as_json(), timeout=PURGE_TIMEOUT
            )
        except GateClientError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            return PurgeReport.from_dict(answer)
        except (ValueError, TypeError, AttributeError) as exc:
            raise click.ClickException(f"unexpected answer from {self.where}: {exc}") from exc


@dataclasses.dataclass
class NodeOutcome:
    target: PurgeTarget
    report: PurgeReport | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.report is not None and self.report.failed > 0)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.target.label, "gate": self.target.where}
        if self.report is not None:
            out["report"] = self.report.as_dict()
        if self.error is not None:
            out["error"] = self.error
        return out


def _cluster_targets(
    settings: Settings,
    entry: GateClient | None,
    gate_port_opt: int | None,
    tls: TLSOptions,
) -> list[PurgeTarget]:
    """The entry engine (a manager: it has the node list and does the swarm-wide part)
    first, then every other node's gate, reached with the admin bundle."""

    def ask(path: str) -> Any:
        if entry is not None:
            try:
                return entry.call("GET", path)
            except GateClientError as exc:
                raise click.ClickException(str(exc)) from exc

        async def work(daemon: Daemon) -> Any:
            reply = await daemon.get(path)
            if not reply.ok:
                raise click.ClickException(
                    f"GET {path} on {settings.upstream}: HTTP {reply.status} "
                    f"{reply.body.decode(errors='replace').strip()}"
                )
            return reply.json()

        return on_daemon(settings, work)

    info = ask("/info") or {}
    swarm = info.get("Swarm") or {}
    if not swarm.get("ControlAvailable"):
        where = entry.host if entry is not None else settings.upstream
        raise click.ClickException(
            f"--all-nodes needs the node list of a swarm manager, and {where} is not one "
            "(run it on a manager, or pass --host tcp://MANAGER:PORT)"
        )
    port = gate_port_opt or cluster.gate_port(ask("/services") or []) or cluster.DEFAULT_PORT
    gates, problems = cluster.node_gates(ask("/nodes") or [], port)
    if problems:
        raise click.ClickException("; ".join(problems))
    own = str(swarm.get("NodeID") or "")
    entry_where = entry.host if entry is not None else settings.upstream
    targets: list[PurgeTarget] = []
    env = _admin_bundle_env(settings, tls)
    for g in gates:
        if g.node_id == own:
            targets.insert(0, PurgeTarget(g.describe(), entry_where, entry))
            continue
        try:
            client = GateClient.from_env(g.url, dataclasses.replace(tls), env=env)
        except GateClientError as exc:
            raise click.ClickException(str(exc)) from exc
        targets.append(PurgeTarget(g.describe(), g.url, client, node_only=True))
    if not targets or targets[0].client is not entry:  # its node was not listed: still first
        targets.insert(0, PurgeTarget(f"this engine {entry_where}", entry_where, entry))
    return targets


def _admin_bundle_env(settings: Settings, tls: TLSOptions) -> dict[str, str]:
    """The environment the node gates' TLS is configured from: the caller's, or,
    when they name no bundle at all, this state dir's admin bundle (verified)."""
    env = dict(os.environ)
    admin = settings.clients_dir / ADMIN_BUNDLE
    if not env.get("DOCKER_CERT_PATH") and not tls.cert and (admin / "cert.pem").exists():
        env["DOCKER_CERT_PATH"] = str(admin)
        env.setdefault("DOCKER_TLS_VERIFY", "1")
    return env


@click.command("purge")
@click.option(
    "--user",
    "name",
    required=True,
    metavar="NAME",
    help="Whose objects (the dockergate.owner label).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option(
    "--stop-only", is_flag=True, help="Kill containers, scale services to 0; remove nothing."
)
@click.option("--volumes", is_flag=True, help="Remove the user's named volumes too (data!).")
@click.option("--networks", is_flag=True, help="Remove the user's networks too.")
@click.option("--all", "everything", is_flag=True, help="Volumes, networks, secrets, configs too.")
@click.option(
    "--all-nodes",
    is_flag=True,
    help="Every node of the swarm, each through its own gate (admin bundle); run on a "
    "manager or with --host tcp://MANAGER:PORT.",
)
@click.option(
    "--gate-port",
    type=click.IntRange(1, 65535),
    help="With --all-nodes: the gates' TLS port (default: the gate service's "
    "dockergate.tls-port label, else 2376).",
)
@click.option(
    "--node-only",
    is_flag=True,
    help="Only this engine's containers, volumes and local networks (no services, "
    "secrets, configs: those are swarm-wide).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@tls_options
@pass_ctx
def purge_cmd(
    ctx: Context,
    name: str,
    dry_run: bool,
    stop_only: bool,
    volumes: bool,
    networks: bool,
    everything: bool,
    all_nodes: bool,
    gate_port: int | None,
    node_only: bool,
    yes: bool,
    as_json: bool,
    host: str | None,
    tlsverify: bool | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
) -> None:
    """Remove (or stop) everything NAME owns on the engine (with --all-nodes: on every
    node of the swarm).

    Services first (swarm-wide on a manager), then containers (forced), then with
    --volumes/--networks/--all the rest. Works for disabled and removed users.
    Exit status 1 if anything could not be removed (or a node could not be reached);
    running it again is safe.
    """
    started = time.time()
    try:
        opts = PurgeOptions(name, dry_run, stop_only, volumes, networks, everything, node_only)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if all_nodes and node_only:
        raise click.UsageError("--all-nodes and --node-only contradict each other")
    if gate_port and not all_nodes:
        raise click.UsageError("--gate-port goes with --all-nodes")
    settings = ctx.settings()
    tls = TLSOptions(tlsverify, tlscacert, tlscert, tlskey)
    entry = gate_client(host, tlsverify, tlscacert, tlscert, tlskey) if host else None
    where = host or settings.upstream
    if all_nodes:
        targets = _cluster_targets(settings, entry, gate_port, tls)
    else:
        targets = [PurgeTarget(where, where, entry)]

    def run_all(o: PurgeOptions) -> list[NodeOutcome]:
        outcomes = []
        for target in targets:
            try:
                outcomes.append(NodeOutcome(target, target.run(settings, o)))
            except click.ClickException as exc:
                if not all_nodes:
                    raise
                outcomes.append(NodeOutcome(target, error=exc.message))
        return outcomes

    if not dry_run and not yes:
        plan = run_all(dataclasses.replace(opts, dry_run=True))
        planned = sum(len(o.report.rows) for o in plan if o.report is not None)
        if not planned and not any(o.error for o in plan):
            _report(plan, as_json, all_nodes)
            return
        _report(plan, False, all_nodes, quiet_summary=True)
        if not sys.stdin.isatty():
            raise click.ClickException(
                "refusing to purge without confirmation: stdin is not a terminal; "
                "pass --yes (review the list above, or run with --dry-run first)"
            )
        verb = "stop" if stop_only else "remove"
        place = f"{len(targets)} node(s)" if all_nodes else where
        if not click.confirm(
            f"{verb} these {planned} object(s) of {name!r} on {place}?", default=False
        ):
            raise click.ClickException("aborted; nothing was changed")
    if not dry_run:
        _end_requests(settings, name)
    outcomes = run_all(opts)
    _report(outcomes, as_json, all_nodes)
    failed = any(o.failed for o in outcomes)
    if (opts.volumes or opts.everything) and not dry_run and not failed and not stop_only:
        _release_names(settings, name, all_nodes or _single_node(settings, host))
    if not host and not dry_run:
        detail = "; ".join(
            (f"{o.target.label}: " if all_nodes else "")
            + (o.report.summary() if o.report else f"error: {o.error}")
            for o in outcomes
        )
        actions.record(
            settings,
            actions.cli_record(
                opts.command_line() + (" --all-nodes" if all_nodes else ""),
                kind="user",
                object_id=name,
                ok=not failed,
                rule="some objects or nodes could not be handled" if failed else None,
                detail=detail,
                started=started,
            ),
        )
    if failed:
        sys.exit(1)


def _end_requests(settings: Settings, user: str) -> None:
    """Record the purge in the store: every gate on it cuts the user's requests in
    progress within a second or two (a build's RUN step has no owner label and would
    run on; an exec session or ``logs -f`` would hold on)."""
    try:
        with Store.open(settings) as store:
            known = store.mark_purged(user)
    except StoreError as exc:
        click.echo(f"note: the requests of {user!r} in progress were not ended: {exc}", err=True)
        return
    if known:
        click.echo(
            f"gates end the requests of {user!r} in progress (builds, exec sessions, streams)",
            err=True,
        )


def _single_node(settings: Settings, host: str | None) -> bool:
    """Whether the engine purged is the only node (no swarm, or a swarm of one): then
    its volumes were all of the user's volumes."""
    if host:
        return False  # a remote engine: its swarm is not read from here

    async def alone(daemon: Daemon) -> bool:
        reply = await daemon.get("/info")
        swarm = ((reply.json() if reply.ok else None) or {}).get("Swarm") or {}
        if swarm.get("LocalNodeState") == "inactive":
            return True  # no swarm
        # Nodes is filled in on managers only: a worker is never alone.
        return bool(swarm.get("ControlAvailable")) and int(swarm.get("Nodes") or 0) <= 1

    try:
        return on_daemon(settings, alone)
    except click.ClickException:
        return False


def _release_names(settings: Settings, user: str, everywhere: bool) -> None:
    """The user's volumes are gone: their names are free for others (see
    ``dockergate volume-names``), but only if they are gone on every node."""
    if not everywhere:
        click.echo(
            f"note: {user!r} keeps their volume names (other nodes may still hold volumes "
            "of those names): purge with --all-nodes, or `dockergate volume-names release "
            f"--user {user}` once they are gone",
            err=True,
        )
        return
    try:
        with Store.open(settings) as store:
            count = store.release_volume_names(user)
    except StoreError as exc:
        click.echo(f"note: the volume names of {user!r} were not released: {exc}", err=True)
        return
    if count:
        click.echo(f"released the {count} volume name(s) {user!r} held", err=True)


def _report(
    outcomes: list[NodeOutcome], as_json: bool, per_node: bool, quiet_summary: bool = False
) -> None:
    if as_json:
        if per_node:
            click.echo(json.dumps({"nodes": [o.as_dict() for o in outcomes]}, indent=2))
        elif outcomes[0].report is not None:
            click.echo(json.dumps(outcomes[0].report.as_dict(), indent=2))
        return
    for o in outcomes:
        if per_node:
            click.echo(f"== {o.target.label}")
        if o.error is not None:
            click.echo(f"error: {o.error}", err=True)
            continue
        report = o.report
        assert report is not None
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        if not report.rows:
            click.echo(f"nothing owned by {report.options.user!r} on {o.target.where}")
            continue
        click.echo(purge_table(report))
        if not quiet_summary:
            prefix = "dry run: " if report.options.dry_run else ""
            click.echo(f"{prefix}{report.summary()}", err=True)
    if per_node and not quiet_summary:
        bad = sum(1 for o in outcomes if o.failed)
        click.echo(
            f"{len(outcomes)} node(s): {len(outcomes) - bad} done, {bad} with failures", err=True
        )


# -- audit --------------------------------------------------------------------------------

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or a date/time (``2026-11-28``,
    ``2026-11-28T10:00``, with or without a zone; without one it is UTC, as the
    audit table shows times)."""
    now = now or dt.datetime.now(dt.UTC)
    match = _AGO.match(text)
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2).lower()])
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use a duration (30m, 1h, 2d, 1w) or a date/time (2026-11-28, "
            "2026-11-28T10:00, UTC unless a zone is given)",
            param_hint="--since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


AUDIT_HEADERS = ("TIME (UTC)", "USER", "VIA", "METHOD", "PATH", "DECISION", "STATUS", "RULE/DETAIL")


_FULL_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")


def _audit_cells(a: AuditInfo) -> tuple[str, ...]:
    """One table row; full 64-hex IDs in paths are cut to 12 like ``docker ps``
    (``--json`` keeps them whole)."""
    status = f"exit {a.status}" if a.listener == actions.CLI_LISTENER else str(a.status or "-")
    cells = (
        a.at.strftime("%Y-%m-%d %H:%M:%S"),
        a.user or "-",
        a.identified_by if a.listener != "cli" else f"cli, {a.identified_by}",
        a.method,
        _FULL_ID.sub(r"\1", a.path),
        a.decision,
        status,
        a.rule or a.detail or "-",
    )
    return tuple(printable(c) for c in cells)  # paths and rules are what clients sent


def _fixed(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()


@click.command("audit")
@click.option("--user", "user", help="Only what NAME did.")
@click.option("--since", help="Only newer than: 30m, 1h, 2d, 1w, or 2026-11-28[T10:00].")
@click.option("--denied", is_flag=True, help="Only refusals and errors.")
@click.option("--kind", help="Only one object kind (container, service, volume, user...).")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="At most N rows (the newest).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON (one object per line with --follow).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new rows (Ctrl-C to stop).")
@pass_ctx
def audit_cmd(
    ctx: Context,
    user: str | None,
    since: str | None,
    denied: bool,
    kind: str | None,
    limit: int,
    as_json: bool,
    follow: bool,
) -> None:
    """Who did what through the gate (and with this CLI), newest last."""
    settings = ctx.settings()
    if kind is not None:
        kind = audit_kind(kind)
    query: dict[str, Any] = {
        "user": user,
        "since": parse_since(since) if since else None,
        "decisions": ("deny", "error") if denied else None,
        "kind": kind,
    }
    try:
        with Store.open(settings) as store:
            rows = store.audit_entries(**query, limit=limit)
            if not follow:
                if as_json:
                    click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
                elif rows:
                    click.echo(table(AUDIT_HEADERS, [_audit_cells(r) for r in rows]))
                else:
                    click.echo("no matching audit rows", err=True)
                return
            _follow(store, query, rows, as_json)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


# What the audit table's ``kind`` holds: the routes' object kinds, and the admin
# CLI's (users, profiles).
AUDIT_KINDS = frozenset({r.kind for r in ROUTES if r.kind} | {"user", "policy"})


def audit_kind(kind: str) -> str:
    """``--kind``, as the table spells it (``services`` is ``service``); an unknown
    kind is an error listing the known ones, not an empty answer."""
    if kind not in AUDIT_KINDS and kind.endswith("s") and kind[:-1] in AUDIT_KINDS:
        kind = kind[:-1]
    if kind not in AUDIT_KINDS:
        raise click.BadParameter(
            f"unknown kind {kind!r}; known: {', '.join(sorted(AUDIT_KINDS))}",
            param_hint="--kind",
        )
    return kind


def _follow(store: Store, query: dict[str, Any], rows: list[AuditInfo], as_json: bool) -> None:
    """Print rows as they are stored (polling: the gate batches writes every 0.5 s)."""
    minimum = (19, 8, 14, 6, 30, 8, 6, 0)
    cells = [_audit_cells(r) for r in rows]
    widths = [
        max([len(h), m, *(len(c[i]) for c in cells)])
        for i, (h, m) in enumerate(zip(AUDIT_HEADERS, minimum, strict=True))
    ]
    widths = [min(w, 60) for w in widths]
    last = rows[-1].id if rows else _newest_id(store)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.as_dict()))
    else:
        click.echo(_fixed(AUDIT_HEADERS, widths))
        for c in cells:
            click.echo(_fixed(c, widths))
    try:
        while True:
            time.sleep(FOLLOW_POLL)
            try:
                new = store.audit_entries(**query, after_id=last)
            except StoreError as exc:
                click.echo(f"warning: {exc}; retrying", err=True)
                continue
            for r in new:
                click.echo(json.dumps(r.as_dict()) if as_json else _fixed(_audit_cells(r), widths))
                last = r.id
    except KeyboardInterrupt:
        return


def _newest_id(store: Store) -> int:
    newest = store.audit_entries(limit=1)
    return newest[-1].id if newest else 0


# -- usage --------------------------------------------------------------------------------


def _of(used: float, quota: float | None, fmt: Callable[[float], str]) -> str:
    return fmt(used) if quota is None else f"{fmt(used)} of {fmt(quota)}"


def _mem(n: float) -> str:
    return "0" if not n else human(n)


def _cpus(n: float) -> str:
    return f"{n:g}"


def usage_table(users: list[dict[str, Any]]) -> str:
    rows = []
    for u in users:
        c, s, m, p = u["containers"], u["services"], u["memory"], u["cpus"]
        rows.append(
            (
                u["user"],
                u["profile"] if u["registered"] else "(unregistered)",
                f"{c['running']}/{c['total']}",
                _of(c["counted"], c["quota"], str),
                str(s["count"]),
                f"{s['replicas_running']}/{s['replicas_desired']}",
                _of(m["reserved"], m["quota"], _mem),
                _of(p["reserved"], p["quota"], _cpus),
                (u["last_activity"] or "-").replace("T", " ")[:19],
            )
        )
    return table(
        (
            "USER",
            "PROFILE",
            "RUNNING/CONTAINERS",
            "WITH TASKS",
            "SERVICES",
            "REPLICAS",
            "MEMORY",
            "CPUS",
            "LAST ACTIVITY (UTC)",
        ),
        rows,
    )


@click.command("usage")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@tls_options
@pass_ctx
def usage_cmd(
    ctx: Context,
    as_json: bool,
    host: str | None,
    tlsverify: bool | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
) -> None:
    """Per user: containers, and WITH TASKS the containers and service tasks counted
    against quota.containers; services and replicas; memory against quota; CPUs
    reserved; last activity. Owner labels of unregistered users are listed too."""
    if host:
        client = gate_client(host, tlsverify, tlscacert, tlscert, tlskey)
        try:
            users = client.call("GET", "/_dockergate/usage")["users"]
        except GateClientError as exc:
            raise click.ClickException(str(exc)) from exc
    elif (from_gate := _local_gate_usage(ctx.settings())) is not None:
        users = from_gate
    else:
        settings = ctx.settings()
        try:
            with Store.open(settings) as store:
                registered = store.list_users()
                last = store.last_activity()
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        profiles: ProfileSet | None
        try:
            profiles = ProfileSet(policies_directory(settings))
        except PolicyError as exc:
            click.echo(f"warning: quotas not shown: {exc}", err=True)
            profiles = None
        found = on_daemon(
            settings, lambda daemon: collect_usage(daemon, registered, profiles, last)
        )
        users = [u.as_dict() for u in found]
    if as_json:
        click.echo(json.dumps({"users": users}, indent=2))
    elif users:
        click.echo(usage_table(users))
    else:
        click.echo("no users and no labelled objects on the engine")


def _local_gate_usage(settings: Settings) -> list[Any] | None:
    """The usage as the gate on this host's socket counts it, if one answers: with its
    own profiles, and with builds in progress (their memory is held in the quota by
    the gate running them, and nowhere on the engine). None if no gate answers (the
    engine is then asked directly, without builds)."""
    try:
        status = json.loads((settings.state_dir / POLICY_STATUS).read_text())
    except (OSError, ValueError):
        status = {}
    socket = (status.get("socket") if isinstance(status, dict) else None) or settings.socket
    if not isinstance(socket, str) or not socket or not Path(socket).is_socket():
        return None
    try:
        client = GateClient(f"unix://{socket}", None, {})
        users = client.call("GET", "/_dockergate/usage", timeout=10)["users"]
    except (GateClientError, KeyError, TypeError):
        return None
    return users if isinstance(users, list) else None


# -- whoami -------------------------------------------------------------------------------


def _size(n: Any) -> str:
    return "-" if n is None else human(float(n))


def whoami_text(me: dict[str, Any]) -> str:
    limits, quota, used = me.get("limits", {}), me.get("quota", {}), me.get("usage", {})

    def lim(default: Any, top: Any, fmt: Callable[[Any], str], share: Any = None) -> str:
        parts = []
        if default is not None:
            parts.append(f"default {fmt(default)}")
        if top is not None:
            parts.append(f"max {fmt(top)}")
        if share is not None:
            parts.append(f"max {share:.0%} of the node")
        return ", ".join(parts) or "none"

    mem_quota = quota.get("memory")
    tasks = sum((used.get("service_tasks") or {}).values())
    lines = [
        ("user:", f"{me.get('user')} (profile {me.get('profile')})"),
        ("admin:", "yes" if me.get("admin") else "no"),
        ("identified by:", me.get("identified_by", "-")),
        (
            "containers:",
            f"{used.get('running', 0)} running, {used.get('containers', 0)} in total"
            + (f", {tasks} service tasks" if tasks else "")
            + (
                f" (quota {quota['containers']}, service tasks included)"
                if quota.get("containers") is not None
                else ""
            ),
        ),
        (
            "services:",
            f"{used.get('services', 0)}"
            + (f" (quota {quota['services']})" if quota.get("services") is not None else ""),
        ),
        (
            "memory:",
            f"{_size(used.get('memory', 0)) if used.get('memory') else '0'} reserved"
            + (f" of {_size(mem_quota)} quota" if mem_quota is not None else ""),
        ),
        (
            "memory limit:",
            lim(
                limits.get("memory_default"),
                limits.get("memory_max"),
                _size,
                limits.get("memory_max_share"),
            ),
        ),
        (
            "cpus limit:",
            lim(limits.get("cpus_default"), limits.get("cpus_max"), lambda v: f"{v:g}"),
        ),
        (
            "pids limit:",
            lim(limits.get("pids_default"), limits.get("pids_max"), lambda v: f"{v:g}"),
        ),
    ]
    return table(("", ""), lines)


@click.command("whoami")
@click.option("--json", "as_json", is_flag=True, help="The gate's answer as JSON.")
@tls_options
@pass_ctx
def whoami_cmd(
    ctx: Context,
    as_json: bool,
    host: str | None,
    tlsverify: bool | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
) -> None:
    """Who the gate at DOCKER_HOST says you are: profile, limits, quota, usage."""
    default_host = None
    try:
        socket_path = ctx.settings().socket
        default_host = f"unix://{socket_path}" if socket_path else None
    except click.ClickException:
        pass
    client = gate_client(host, tlsverify, tlscacert, tlscert, tlskey, default_host)
    try:
        me = client.call("GET", "/_dockergate/whoami")
    except GateClientError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(me, indent=2))
    else:
        click.echo(whoami_text(me if isinstance(me, dict) else {}))


COMMANDS = [purge_cmd, audit_cmd, usage_cmd, whoami_cmd]
