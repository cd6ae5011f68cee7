"""Stamping the owner label: the one place a ``dockergate.*`` label is ever written."""

from __future__ import annotations

from typing import Any

from dockergate.api.ownership import BUILT_BY_LABEL, OWNER_LABEL, RESERVED_PREFIX
from dockergate.listen.identity import Refusal

SWARM_LABEL_PREFIX = "com.docker.swarm."  # Swarm's labels on the containers of tasks
TASK_LABEL = "com.docker.swarm.service.id"


def is_task(labels: Any) -> bool:
    """A service task's container: Swarm's label with a value (a member's commit of a
    task container empties it, and the gate refuses containers setting it)."""
    return isinstance(labels, dict) and bool(labels.get(TASK_LABEL))


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


def image_labels(labels: Any, author: str) -> dict[str, str]:
    """Labels for an image a user builds or commits: the author under ``built-by``, and
    the owner label present but empty.

    An image's labels are inherited by every container made from it, the builder's
    own RUN containers included, which the gate never sees created. An owner label on
    an image would make its author the owner of other users' build containers; the
    empty value (no user has an empty name) overrides any the base image or the
    Dockerfile set."""
    out = stamp(labels, None)
    out[OWNER_LABEL] = ""
    out[BUILT_BY_LABEL] = author
    return out
