"""Admin routes of the gate's own API: ``POST /_dockergate/purge`` and
``GET /_dockergate/usage`` (both ``admin`` in the route table, so a non-admin is
refused before these handlers run).

They make ``dockergate purge --host tcp://node:2376`` and ``dockergate usage
--host ...`` work against a remote engine with only the admin bundle: the same
code as the local commands, run by the gate next to that engine.
"""

from __future__ import annotations

import asyncio
import time

from dockergate.admin.purge import PurgeError, PurgeOptions, purge
from dockergate.admin.usage import collect_usage
from dockergate.api.dispatch import handles
from dockergate.api.exchange import Exchange
from dockergate.audit.record import RequestRecord
from dockergate.audit.writer import writer_of
from dockergate.listen.identity import Refusal
from dockergate.store.errors import StoreError

PURGE_PATH = "/_dockergate/purge"


@handles("gate.purge")
async def purge_handler(ex: Exchange) -> None:
    """Run a purge here; besides the request's own audit row, a summary row with
    the counts goes to the audit log (the request row cannot carry them)."""
    started = time.time()
    body = await ex.read_json(None)
    try:
        opts = PurgeOptions.from_json(body)
    except ValueError as exc:
        raise Refusal(400, f"purge: {exc}") from None
    if not opts.dry_run and ex.gate is not None:
        await ex.gate.end_requests_of(opts.user)
    try:
        report = await purge(ex.daemon, opts)
    except PurgeError as exc:
        raise Refusal(502, f"purge: {exc}", rule="purge failed") from None
    writer = writer_of(ex.gate.sinks) if ex.gate is not None else None
    if writer is not None:
        writer.add(
            RequestRecord(
                started=started,
                user=ex.identity.name,
                identified_by=ex.identity.method,
                listener="unix" if ex.identity.method.startswith("unix ") else "tls",
                method=ex.req.method,
                path=PURGE_PATH,
                route="gate.purge.summary",
                kind="user",
                object_id=opts.user,
                decision="allow",
                rule=None,
                status=200,
                seconds=time.time() - started,
                detail=f"{opts.command_line()}: {report.summary()}",
            )
        )
    ex.reply = (200, report.as_dict())


@handles("gate.usage")
async def usage_handler(ex: Exchange) -> None:
    """Usage of every registered user and every owner label on this engine."""
    assert ex.gate is not None
    store = ex.gate.store
    if store is None:
        raise Refusal(503, "usage: this gate has no user store")
    try:
        users = await asyncio.to_thread(store.list_users)
        last = await asyncio.to_thread(store.last_activity)
    except StoreError as exc:
        raise Refusal(503, f"usage: {exc}", rule="store unavailable") from None
    rows = await collect_usage(ex.daemon, users, ex.gate.profiles, last)
    ex.reply = (200, {"users": [r.as_dict() for r in rows]})
