"""Which profile names exist: one file ``<name>.yaml`` per profile in the policies dir.

The store only needs the names (to refuse a typo in ``user add --profile``); what a
profile allows is :mod:`dockergate.policy`'s business.
"""

from __future__ import annotations

from pathlib import Path

from dockergate.config import Settings
from dockergate.policy.location import policies_directory
from dockergate.policy.model import PolicyError, ProfileSet
from dockergate.store.errors import NotFound, StoreError


def known_profiles(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml") if p.is_file())


def check_profile(settings: Settings, name: str) -> None:
    """Raise :class:`NotFound` unless ``policies/<name>.yaml`` exists, and
    :class:`StoreError` when the profiles do not load (a gate would refuse the user,
    and would not start)."""
    directory = policies_directory(settings)
    known = known_profiles(directory)
    if name in known:
        try:
            ProfileSet(directory)
        except PolicyError as exc:
            raise StoreError(
                f"profile {name!r} cannot be given: the profiles do not load ({exc}); "
                "fix the file (dockergate policy validate), then dockergate policy reload"
            ) from None
        return
    listed = ", ".join(known) if known else "none"
    raise NotFound(
        f"unknown profile {name!r}: there is no {directory / (name + '.yaml')} "
        f"(known profiles: {listed})"
    )
