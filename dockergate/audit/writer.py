"""The audit writer: request records into the ``audit`` table, off the request path.

The gate hands every :class:`RequestRecord` to its sinks synchronously, inside the
event loop, so a sink that touched the database would put a disk write (or a
PostgreSQL round-trip) into every request's latency. :class:`AuditWriter` only
appends to an in-memory deque; a background task drains it in batches (up to
``batch_size`` rows, at least every ``interval`` seconds) through
:func:`asyncio.to_thread`, so the loop never waits for the store.

Failure policy, in order of what matters:

* the proxy never blocks or crashes because of the audit log;
* when the store is unavailable the records stay buffered (bounded by
  ``max_buffer``; beyond it the *oldest* are dropped and counted) and are retried
  with a backoff, with one log line per failure episode rather than per batch;
* rows the database refuses as such (never expected: :func:`row_of` sanitises
  everything) are retried one by one so a single bad row cannot hold the rest back;
* :meth:`AuditWriter.stop` flushes everything that is buffered (a clean shutdown
  loses nothing), waiting up to ``stop_timeout`` for an unavailable store.

Retention (``audit_retention_days``) runs in the same task, at start and then
every ``retention_every`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dockergate.audit.record import PROFILE_RULE_PREFIX, RequestRecord
from dockergate.config import Settings
from dockergate.logs import cut
from dockergate.store.db import engine_for
from dockergate.store.errors import StoreError, StoreUnavailable
from dockergate.store.models import AUDIT_DECISIONS
from dockergate.store.repository import Store

log = logging.getLogger("dockergate.audit")

BATCH_SIZE = 500
FLUSH_INTERVAL = 0.5
MAX_BUFFER = 100_000
RETENTION_EVERY = 3600.0
BACKOFF_MAX = 30.0
STOP_TIMEOUT = 30.0
REMIND_EVERY = 60.0  # while the store is down, remind the operator this often
REFUSALS_PER_MINUTE = 120  # refusals recorded one by one per caller and minute
REFUSAL_WINDOW = 60.0
REFUSAL_CALLERS_MAX = 10_000  # callers tracked at once; beyond, they share one window
SUMMARY_RULES = 16  # rules a summary row counts one by one (the others together)
SUMMARY_RULE_CHARS = 160

# Column sizes of the audit table (models.AuditEntry): longer values are cut, not refused.
_LIMITS = {
    "user_name": 64,
    "identified_by": 200,
    "listener": 16,
    "method": 16,
    "path": 1024,
    "route": 64,
    "kind": 32,
    "object_id": 128,
    "decision": 8,
    "rule": 4000,
    "detail": 4000,
}


# Routes that are POSTs only for historical reasons and change nothing: reads.
POST_READS = frozenset({"container.wait"})


def should_audit(record: RequestRecord, reads: bool) -> bool:
    """Writes and refusals always; allowed reads (GET, HEAD, ``wait``) only when
    ``audit_reads`` is on: ``docker ps`` in a loop would drown what matters."""
    if reads or record.decision != "allow":
        return True
    return record.mutating and record.route not in POST_READS


def _clean(value: str | None, limit: int) -> str | None:
    """Text any database accepts: valid UTF-8 (lone surrogates escaped), no NUL
    (PostgreSQL refuses it in text), cut to the column size."""
    if value is None:
        return None
    text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return cut(text, limit)


def row_of(record: RequestRecord) -> dict[str, Any]:
    """The audit-table row for a record. Only the record's fields are stored, and a
    record holds no header, body, credential or environment value by construction."""
    decision = record.decision if record.decision in AUDIT_DECISIONS else "error"
    row: dict[str, Any] = {
        "at": dt.datetime.fromtimestamp(record.started, dt.UTC),
        "user_name": record.user,
        "identified_by": record.identified_by,
        "listener": record.listener,
        "method": record.method,
        "path": record.path,
        "route": record.route,
        "kind": record.kind,
        "object_id": record.object_id,
        "decision": decision,
        "rule": record.rule,
        "detail": record.detail,
    }
    for key, limit in _LIMITS.items():
        row[key] = _clean(row[key], limit)
    row["identified_by"] = row["identified_by"] or "-"
    row["status"] = int(record.status)
    row["duration_ms"] = float(record.seconds) * 1000.0
    return row


class AuditWriter:
    """A gate sink (``gate.sinks.append(writer)``) that stores audited records."""

    def __init__(
        self,
        store: Store,
        *,
        retention_days: int = 90,
        reads: bool = False,
        batch_size: int = BATCH_SIZE,
        interval: float = FLUSH_INTERVAL,
        max_buffer: int = MAX_BUFFER,
        retention_every: float = RETENTION_EVERY,
        stop_timeout: float = STOP_TIMEOUT,
        own_store: bool = False,
        refusals_per_minute: int = REFUSALS_PER_MINUTE,
    ) -> None:
        self.store = store
        self.refusals_per_minute = refusals_per_minute
        self._refusals: dict[str, _Refusals] = {}
        self.retention_days = retention_days
        self.reads = reads
        self.batch_size = max(1, batch_size)
        self.interval = interval
        self.max_buffer = max(self.batch_size, max_buffer)
        self.retention_every = retention_every
        self.stop_timeout = stop_timeout
        self._own_store = own_store
        self._buffer: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None  # monotonic; None while the store works
        self._last_error = ""
        self._reminded_at = 0.0
        self._backoff = interval
        self._next_prune = 0.0
        self.written = 0  # rows stored since start
        self.dropped = 0  # records lost to a full buffer or refused by the database

    @classmethod
    def for_settings(cls, settings: Settings) -> AuditWriter:
        """A writer with its own engine on the configured store (the schema was
        checked by ``serve`` before the gate started)."""
        return cls(
            Store(engine_for(settings), settings.db_url()),
            retention_days=settings.audit_retention_days,
            reads=settings.audit_reads,
            own_store=True,
            refusals_per_minute=settings.audit_refusals_per_minute,
        )

    # -- the sink (request path: no I/O) -------------------------------------------------
    def __call__(self, record: RequestRecord) -> None:
        if should_audit(record, self.reads) and self._counted_refusal(record):
            self.add(record)

    def _counted_refusal(self, record: RequestRecord) -> bool:
        """Whether to record a request one by one: a caller's refusals beyond
        ``refusals_per_minute`` are summed into one row when their minute ends (a
        client looping on a refused request would otherwise fill the store's disk, and
        push other rows out of the buffer while the store is slow)."""
        if record.decision != "deny" or self.refusals_per_minute <= 0:
            return True
        key = record.user or record.identified_by
        window = self._refusals.get(key)
        if window is None:
            if len(self._refusals) >= REFUSAL_CALLERS_MAX:
                key, window = "", self._refusals.get("")
            if window is None:
                window = self._refusals[key] = _Refusals(record.started)
        window.count += 1
        if window.count <= self.refusals_per_minute:
            return True
        window.last = record
        window.suppressed += 1
        window.rules[summary_key(record, window.rules)] += 1
        return False

    def _close_refusal_windows(self, now: float | None) -> None:
        """Ended minutes (all, when ``now`` is None): one row each for what they held
        back, and the caller starts a new count."""
        for key, window in list(self._refusals.items()):
            if now is not None and now - window.start < REFUSAL_WINDOW:
                continue
            del self._refusals[key]
            if window.last is not None:
                counts = "; ".join(
                    f"{n} x {rule[:SUMMARY_RULE_CHARS] or 'other rules'}"
                    for rule, n in window.rules.most_common()
                )
                self.add(
                    replace(
                        window.last,
                        object_id=None,
                        rule=f"{window.suppressed} more refusals of this caller within a "
                        "minute, not recorded one by one (audit_refusals_per_minute: "
                        f"{self.refusals_per_minute}; the last one's route and path "
                        f"shown): {counts}",
                        seconds=0.0,
                    )
                )
                log.warning(
                    "audit: %d refusals of %s in a minute summed into one row "
                    "(audit_refusals_per_minute %d)",
                    window.suppressed,
                    key or "callers beyond the tracked",
                    self.refusals_per_minute,
                )

    def add(self, record: RequestRecord) -> None:
        """Queue a record unconditionally (admin actions, purge summaries)."""
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self._lost(1, "the buffer is full")
        self._buffer.append(record)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Write everything still buffered, then release the store."""
        self._close_refusal_windows(None)
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        while self._buffer:
            if await self._drain():
                continue
            if loop.time() >= deadline:
                self._lost(len(self._buffer), f"the store stayed unavailable: {self._last_error}")
                self._buffer.clear()
                break
            await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
        if self._own_store:
            self.store.close()
        log.debug("audit writer stopped: %d rows written, %d lost", self.written, self.dropped)

    async def flush(self) -> bool:
        """Write what is buffered now; False if the store was unavailable."""
        while self._buffer:
            if not await self._drain():
                return False
        return True

    # -- the background task -------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_prune = loop.time()
        while not self._stopping.is_set():
            delay = self._backoff if self._failing_since is not None else self.interval
            with contextlib.suppress(TimeoutError):
                if self._failing_since is not None:
                    # Backing off: only a stop cuts the wait short, not a full batch.
                    await asyncio.wait_for(self._stopping.wait(), delay)
                else:
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if self._stopping.is_set():
                return  # stop() drains, with its own deadline
            try:
                self._close_refusal_windows(time.time())
                while self._buffer and not self._stopping.is_set():
                    if not await self._drain():
                        break
                if self._failing_since is None and loop.time() >= self._next_prune:
                    self._next_prune = loop.time() + self.retention_every
                    await self._prune()
            except Exception:  # never let the writer die: the gate would stop auditing
                log.exception("audit writer: unexpected error; continuing")

    async def _drain(self) -> bool:
        """Write one batch; False (records kept) when the store is unavailable."""
        count = min(self.batch_size, len(self._buffer))
        batch = [self._buffer.popleft() for _ in range(count)]
        if not batch:
            return True
        try:
            await asyncio.to_thread(self._insert, batch)
        except StoreUnavailable as exc:
            self._buffer.extendleft(reversed(batch))
            excess = len(self._buffer) - self.max_buffer
            for _ in range(max(0, excess)):
                self._buffer.popleft()
            if excess > 0:
                self._lost(excess, "the buffer is full")
            self._failed(str(exc))
            return False
        except StoreError as exc:
            if not await self._one_by_one(batch, str(exc)):
                return False
        self._recovered(len(batch))
        return True

    def _insert(self, batch: list[RequestRecord]) -> None:
        """In a worker thread: convert and insert one batch in one transaction."""
        self.store.append_audit([row_of(r) for r in batch])
        self.written += len(batch)

    async def _one_by_one(self, batch: list[RequestRecord], why: str) -> bool:
        """A batch the database refused: store what it takes, drop (and log) the rest.
        False (the unwritten records back in front of the buffer) if the store went
        away meanwhile."""
        log.error(
            "audit: a batch of %d rows was refused (%s); retrying row by row", len(batch), why
        )
        for i, record in enumerate(batch):
            try:
                await asyncio.to_thread(self._insert, [record])
            except StoreUnavailable as exc:
                self._buffer.extendleft(reversed(batch[i:]))
                self._failed(str(exc))
                return False
            except StoreError as exc:
                self._lost(1, f"the database refused the row: {exc}")
        return True

    async def _prune(self) -> None:
        if self.retention_days <= 0:
            return
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days)
        try:
            removed = await asyncio.to_thread(self.store.prune_audit, before)
        except StoreError as exc:
            log.warning("audit retention: could not delete old rows (will retry): %s", exc)
            return
        if removed:
            log.info(
                "audit retention: deleted %d rows older than %d days",
                removed,
                self.retention_days,
            )

    # -- reporting -----------------------------------------------------------------------
    def _failed(self, error: str) -> None:
        now = time.monotonic()
        self._last_error = error
        if self._failing_since is None:
            self._failing_since = now
            self._reminded_at = now
            self._backoff = max(self.interval, 0.5)
            log.error(
                "audit: cannot write to the store, keeping up to %d records in memory "
                "and retrying: %s",
                self.max_buffer,
                error,
            )
        else:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            if now - self._reminded_at >= REMIND_EVERY:
                self._reminded_at = now
                log.warning(
                    "audit: store still unavailable after %.0fs, %d records waiting, "
                    "%d lost so far: %s",
                    now - self._failing_since,
                    len(self._buffer),
                    self.dropped,
                    error,
                )

    def _recovered(self, written: int) -> None:
        """The store took a batch again: say so once, with what the outage held."""
        if self._failing_since is not None:
            log.warning(
                "audit: store reachable again after %.0fs; %d buffered records written, "
                "%d more to write",
                time.monotonic() - self._failing_since,
                written,
                len(self._buffer),
            )
            self._failing_since = None
            self._backoff = self.interval

    def _lost(self, count: int, why: str) -> None:
        first = self.dropped == 0
        self.dropped += count
        now = time.monotonic()
        if first or now - self._reminded_at >= REMIND_EVERY:
            self._reminded_at = now
            log.error("audit: %d record(s) lost (%d in total): %s", count, self.dropped, why)


def writer_of(sinks: Iterable[object]) -> AuditWriter | None:
    """The gate's audit writer among its sinks, if auditing is on."""
    return next((s for s in sinks if isinstance(s, AuditWriter)), None)


def summary_key(record: RequestRecord, seen: Counter[str]) -> str:
    """What a held-back refusal is counted under in its summary row: a profile rule by
    its name (there are few, and each is worth naming); any other refusal by its route
    and status, not its message (which names objects, so a flood of distinct
    messages would take every place), and past ``SUMMARY_RULES`` such keys together."""
    if record.by_profile_rule and record.rule:
        return record.rule
    key = f"{record.route or record.method + ' ' + record.path} ({record.status})"
    by_route = sum(1 for k in seen if not k.startswith(PROFILE_RULE_PREFIX))
    if key in seen or by_route < SUMMARY_RULES:
        return key
    return ""


@dataclass(slots=True)
class _Refusals:
    """One caller's refusals in the minute from ``start`` (wall-clock)."""

    start: float
    count: int = 0
    suppressed: int = 0
    last: RequestRecord | None = None
    rules: Counter[str] = field(default_factory=Counter)  # what was held back, by rule
