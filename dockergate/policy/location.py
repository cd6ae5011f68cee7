"""Where the profiles the gate applies live, for every command that names one.

``serve`` reads ``--policies-dir`` (or the setting), else the shipped profiles. The
admin commands run later, often without that flag: they take the directory they are
given, else the one the running gate recorded in ``<state dir>/policies.json``, else
the shipped one. ``policy show`` and ``user add --profile`` must agree on it, so
both ask here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockergate.config import POLICY_STATUS, Settings
from dockergate.pidfile import PIDFILE, running_gate
from dockergate.policy.model import shipped_policies_dir


def policy_status(path: Path) -> dict[str, Any]:
    """``policies.json`` as the gate last wrote it ({} when missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running_gate_status(settings: Settings) -> dict[str, Any]:
    """``policies.json`` of the gate running from this state dir ({} when none runs:
    a stopped gate's file says nothing about what will be applied)."""
    status = policy_status(settings.state_dir / POLICY_STATUS)
    if not status:
        return {}
    try:
        running_gate(settings.state_dir / PIDFILE)
    except ValueError:
        return {}
    return status


def policies_directory(settings: Settings) -> Path:
    """The directory this command was given (flag, environment, config file), else
    the running gate's, else the shipped one."""
    if settings.policies_dir:
        return Path(settings.policies_dir)
    directory = running_gate_status(settings).get("directory")
    if isinstance(directory, str) and directory:
        return Path(directory)
    return shipped_policies_dir()


def not_loaded_note(settings: Settings, name: str) -> str | None:
    """A note when a gate runs from this state dir without profile ``name`` loaded (a
    file added or fixed since its last reload): its user would be refused until then."""
    loaded = running_gate_status(settings).get("profiles")
    if not isinstance(loaded, list) or name in loaded:
        return None
    return (
        f"note: the running gate has not loaded profile {name!r} yet; its users are "
        "refused until: dockergate policy reload"
    )
