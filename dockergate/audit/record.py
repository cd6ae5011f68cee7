"""The record the gate makes of every request, whatever became of it."""

from __future__ import annotations

from dataclasses import dataclass

# A refusal by a profile rule is recorded as "profile <name>: <rule>": the audit
# summary and the metrics name such refusals by rule, others by route and status.
PROFILE_RULE_PREFIX = "profile "


def profile_rule(profile: str, rule: str) -> str:
    """The ``rule`` a refusal by ``profile``'s ``rule`` is recorded under."""
    return f"{PROFILE_RULE_PREFIX}{profile}: {rule}"


@dataclass(slots=True)
class RequestRecord:
    started: float  # wall-clock time (time.time()) when the request head was read
    user: str | None  # None: the caller was not identified
    identified_by: str  # "unix uid 1000", "cert serial 1f2e", "token", or the peer
    listener: str  # "unix" or "tls"
    method: str
    path: str  # normalised (no version prefix, no dot-segments)
    route: str | None  # route name from the table, None for unknown routes
    kind: str | None  # object kind the route touches
    object_id: str | None  # full ID the request was forwarded for, when resolved
    decision: str  # "allow", "deny" (refused by the gate) or "error"
    rule: str | None  # why it was refused
    status: int
    seconds: float
    # Free text for records that are not plain requests (a purge's counts, the options
    # of an admin CLI command). Never credentials, bodies or environment values.
    detail: str | None = None

    @property
    def by_profile_rule(self) -> bool:
        """Refused by a rule of the caller's profile (see :func:`profile_rule`)."""
        return self.rule is not None and self.rule.startswith(PROFILE_RULE_PREFIX)

    @property
    def mutating(self) -> bool:
        return self.method not in ("GET", "HEAD")
