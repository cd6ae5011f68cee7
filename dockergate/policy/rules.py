"""What every profile rule shares: the refusal it raises and the engine facts some
rules need.

The rules themselves are split by what they guard: :mod:`.container` (container,
exec and update bodies), :mod:`.service` (Swarm service specs), :mod:`.hostpaths`
(binds, mounts, volumes), :mod:`.resources` (memory, CPU, pids, logs, stop waits)
and :mod:`.network` (networks, ports, addresses). Each takes the parsed body,
checks it against the profile and fills in defaults in place, raising
:class:`Denied` with the field, the value and what is allowed. The same rules serve
the gate and ``dockergate check`` (offline compose/stack files), so a file that
passes ``check`` passes the gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dockergate.policy.model import Profile

NANO = 1_000_000_000

SHOWN_MAX = 200  # characters of a refused value a refusal repeats


class Denied(Exception):
    """A profile rule forbids a field; ``message`` is written for the user."""

    def __init__(self, profile: Profile, what: str, field: str, value: Any, allowed: str) -> None:
        if isinstance(value, str):
            shown = value
        elif isinstance(value, list | dict):
            shown = json.dumps(value, separators=(",", ":"), default=str)  # as it was sent
        else:
            shown = repr(value)
        if len(shown) > SHOWN_MAX:  # an inlined seccomp profile is kilobytes of JSON
            shown = f"{shown[: SHOWN_MAX - 20]}... ({len(shown)} characters)"
        message = f"profile {profile.name!r} forbids {what} ({field}={shown}); {allowed}"
        super().__init__(message)
        self.message = message
        self.rule = what
        self.profile = profile.name


@dataclass(frozen=True)
class NodeFacts:
    """What some rules need to know about the engine: RAM (for shares), Swarm role."""

    mem_total: int = 0
    ncpu: int = 0
    manager: bool = False
    worker: bool = False  # in a swarm, not a manager
    log_driver: str = "json-file"  # the daemon's default (``docker info``'s LoggingDriver)
    tasks_max: int = 0  # processes and threads the node may run (pid_max, threads-max)
