"""The gate's own API under ``/_dockergate/``: answered here, never forwarded."""

from __future__ import annotations

import logging

from dockergate.admin.usage import ObjectCounts, count_objects
from dockergate.api.dispatch import handles
from dockergate.api.exchange import Exchange
from dockergate.metrics import render_object_counts
from dockergate.policy.quota import usage
from dockergate.proxy.upstream import UpstreamError

log = logging.getLogger(__name__)


@handles("gate.whoami")
async def whoami(ex: Exchange) -> None:
    """Who the gate thinks the caller is, their profile's limits and current usage."""
    profile = ex.profile
    used = await usage(ex.daemon, ex.identity.name)
    used.pop("service_specs", None)
    limits: dict[str, object] = {
        "memory_default": profile.memory.default,
        "memory_max": profile.memory.max,
        "memory_max_share": profile.memory.max_share,
        "cpus_default": profile.cpus.default,
        "cpus_max": profile.cpus.max,
        "pids_default": profile.pids.default,
        "pids_max": profile.pids.max,
    }
    quota: dict[str, object] = {
        "memory": profile.quota_memory,
        "containers": profile.quota_containers,
        "services": profile.quota_services,
    }
    if ex.admin:  # the gate applies no limit and no quota to an admin: show none
        limits = dict.fromkeys(limits)
        quota = dict.fromkeys(quota)
    ex.reply = (
        200,
        {
            "user": ex.identity.name,
            "profile": profile.name,
            "admin": ex.identity.admin,
            "identified_by": ex.identity.method,
            "limits": limits,
            "quota": quota,
            "usage": used,
        },
    )


@handles("gate.health")
async def health_authenticated(ex: Exchange) -> None:
    """Over TLS health needs a valid identity; the unix socket answers anyone."""
    assert ex.gate is not None
    ex.reply = await ex.gate.health()


@handles("gate.metrics")
async def metrics(ex: Exchange) -> None:
    """Prometheus text format (the route is admin-only): the gate's own counters, then
    the per-user object counts read from the daemon now (they are the daemon's state,
    so a restarted gate reports them at once)."""
    assert ex.gate is not None
    try:
        counts: ObjectCounts | None = await count_objects(ex.daemon)
    except UpstreamError as exc:
        log.warning("metrics: per-user object counts skipped: %s", exc)
        counts = None
    ex.reply = (200, ex.gate.metrics.render() + render_object_counts(counts))
