"""What dockerd drops from a request body when the path names an older API version.

dockerd reads a ``/vX.Y`` request as a client of that version would mean it, and
clears the fields that version did not have before it acts (``adjustForAPIVersion``
for services, the version checks of container create). The gate checks, fills in and
forwards a body as the current API: a field it checked or set (a service's pids
limit, a bind's ``NonRecursive``) would be dropped after the check, and the object
would not be the one that passed. For non-admins such a request is refused, naming
the field and the version that has it (see the tables below); clients that
negotiate (the docker CLI, docker-py) send the daemon's own version and never meet
this.
"""

from __future__ import annotations

from typing import Any

from dockergate.api.dispatch import who
from dockergate.api.exchange import Exchange
from dockergate.listen.identity import Refusal

# (field path, first API version that has it); "[]" walks every item of a list.
# Only the fields whose loss undoes a check: the pids limit the profile puts on a
# service's tasks, and a bind's NonRecursive, which lets a bind pass that would be
# refused recursively (a read-only mount below a writable one). dockerd's other
# adjustments for old clients only take away what the caller asked for (capabilities
# to add or drop, ulimits, sysctls, AutoRemove below 1.25, which such a client does
# itself): the object is no more than the one that passed.
# The job modes too: next to Replicated (which dockerd refuses from 1.41 on) the quota
# counts the job, and below 1.41 dockerd would drop it and run the replicas.
SERVICE_FIELDS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("TaskTemplate.Resources.Limits.Pids", (1, 41)),
    ("Mode.ReplicatedJob", (1, 41)),
    ("Mode.GlobalJob", (1, 41)),
)
CONTAINER_FIELDS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("HostConfig.Mounts[].BindOptions.NonRecursive", (1, 40)),
)


def api_version(text: str | None) -> tuple[int, ...] | None:
    """``"1.40"`` as (1, 40); None without a version in the path (dockerd then
    reads the body as its own, newest, API)."""
    if not text:
        return None
    return tuple(int(part) for part in text.split("."))


def _set(value: Any, path: list[str]) -> bool:
    """Whether ``path`` leads to a value dockerd would have to clear: an object (a
    job mode is ``{}``), or a value other than null, false, 0 or empty."""
    if not path:
        return isinstance(value, dict) or bool(value)
    key, rest = path[0], path[1:]
    if key.endswith("[]"):
        items = value.get(key[:-2]) if isinstance(value, dict) else None
        return isinstance(items, list) and any(_set(item, rest) for item in items)
    return isinstance(value, dict) and _set(value.get(key), rest)


def refuse_dropped_fields(
    ex: Exchange, body: dict[str, Any], fields: tuple[tuple[str, tuple[int, int]], ...]
) -> None:
    """Refuse a non-admin's body with a field the request's API version would drop
    (after the gate's checks, so that what the profile filled in counts too)."""
    version = api_version(ex.version)
    if ex.admin or version is None:
        return
    for field, since in fields:
        if version < since and _set(body, field.split(".")):
            wanted = ".".join(map(str, since))
            raise Refusal(
                403,
                f"{who(ex)} may not send {field} through API v{ex.version}: dockerd "
                f"ignores it below API {wanted}, "
                f"after the gate checked the request with it (or set it: the profile's "
                f"limits); send the request through API {wanted} or later (the docker CLI "
                "and docker-py negotiate it), or without a version in the path",
                rule=f"API version below {wanted}",
            )
