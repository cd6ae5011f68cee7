"""Which profile names exist: one file ``<name>.yaml`` per profile in the policies dir.

The store only needs the names (to refuse a typo in ``user add --profile``); what a
profile allows is :mod:`dockergate.policy`'s business.
"""

from __future__ import annotations

from dockergate.config import Settings
from dockergate.policy.location import policies_directory
from dockergate.store.errors import NotFound


def known_profiles(settings: Settings) -> list[str]:
    directory = policies_directory(settings)
    return sorted(p.stem for p in directory.glob("*.yaml") if p.is_file())


def check_profile(settings: Settings, name: str) -> None:
    """Raise :class:`NotFound` unless ``policies/<name>.yaml`` exists."""
    known = known_profiles(settings)
    if name in known:
        return
    directory = policies_directory(settings)
    listed = ", ".join(known) if known else "none"
    raise NotFound(
        f"unknown profile {name!r}: there is no {directory / (name + '.yaml')} "
        f"(known profiles: {listed})"
    )
