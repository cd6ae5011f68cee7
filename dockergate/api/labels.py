"""Stamping the owner label: the one place a ``dockergate.*`` label is ever written."""

from __future__ import annotations

from typing import Any

from dockergate.api.ownership import OWNER_LABEL, RESERVED_PREFIX
from dockergate.listen.identity import Refusal


def stamp(labels: Any, owner: str | None) -> dict[str, str]:
    """Labels with every client-sent ``dockergate.*`` label dropped and the owner set
    (None: an admin updating an object nobody owns; it stays unowned).

    Dropping (not refusing) keeps ``docker service update`` working: it sends back
    the labels it read, owner label included.
    """
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise Refusal(400, "Labels must be a JSON object of strings")
    out = {k: v for k, v in labels.items() if not str(k).startswith(RESERVED_PREFIX)}
    if owner is not None:
        out[OWNER_LABEL] = owner
    return out


def stamp_volume_mounts(mounts: Any, owner: str | None) -> None:
    """Volumes a mount creates on the fly (``Mounts[type=volume]``, on any node for a
    service) carry the owner too, through ``VolumeOptions.Labels``."""
    for mount in mounts or []:
        if isinstance(mount, dict) and mount.get("Type", "volume") == "volume":
            options = mount.get("VolumeOptions") or {}
            mount["VolumeOptions"] = options
            options["Labels"] = stamp(options.get("Labels"), owner)
