"""The route table: every Docker Engine API endpoint the gate knows, as data.

Each row is method + path pattern (matched against the normalised path) → a route
name, the object kind it touches and the access it needs. ``match`` returning
``None`` is the one and only default-deny: a route missing here is refused for
every non-admin.

Access levels:
- ``public``: any authenticated caller (version negotiation must always work).
- ``read`` / ``write``: resource-level access; ownership and profile rules decide.
- ``admin``: admins only (swarm membership, nodes, plugins, debug...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dockergate.caching import short_calls_cached

Access = Literal["public", "read", "write", "admin"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    name: str
    kind: str | None
    access: Access
    hijack: bool = False  # may upgrade to a raw stream
    finite: bool = False  # its answer ends by itself: relayed whole, no client watch


_ROWS: list[tuple[str, str, str, str | None, Access]] = [
    # the gate's own API (answered by the gate, never forwarded)
    ("GET", "/_dockergate/health", "gate.health", None, "public"),
    ("GET", "/_dockergate/whoami", "gate.whoami", None, "public"),
    ("GET", "/_dockergate/metrics", "gate.metrics", None, "admin"),
    ("POST", "/_dockergate/purge", "gate.purge", None, "admin"),
    ("GET", "/_dockergate/usage", "gate.usage", None, "admin"),
    # system
    ("GET", "/_ping", "system.ping", None, "public"),
    ("HEAD", "/_ping", "system.ping", None, "public"),
    ("GET", "/version", "system.version", None, "public"),
    ("GET", "/info", "system.info", None, "read"),
    ("GET", "/events", "system.events", None, "read"),
    ("GET", "/system/df", "system.df", None, "read"),
    ("POST", "/auth", "system.auth", None, "read"),
    # containers
    ("GET", "/containers/json", "container.list", "container", "read"),
    ("POST", "/containers/create", "container.create", "container", "write"),
    ("POST", "/containers/prune", "container.prune", "container", "write"),
    ("GET", "/containers/{id}/json", "container.inspect", "container", "read"),
    ("GET", "/containers/{id}/top", "container.top", "container", "read"),
    ("GET", "/containers/{id}/logs", "container.logs", "container", "read"),
    ("GET", "/containers/{id}/changes", "container.changes", "container", "read"),
    ("GET", "/containers/{id}/export", "container.export", "container", "read"),
    ("GET", "/containers/{id}/stats", "container.stats", "container", "read"),
    ("POST", "/containers/{id}/resize", "container.resize", "container", "write"),
    ("POST", "/containers/{id}/start", "container.start", "container", "write"),
    ("POST", "/containers/{id}/stop", "container.stop", "container", "write"),
    ("POST", "/containers/{id}/restart", "container.restart", "container", "write"),
    ("POST", "/containers/{id}/kill", "container.kill", "container", "write"),
    ("POST", "/containers/{id}/update", "container.update", "container", "write"),
    ("POST", "/containers/{id}/rename", "container.rename", "container", "write"),
    ("POST", "/containers/{id}/pause", "container.pause", "container", "write"),
    ("POST", "/containers/{id}/unpause", "container.unpause", "container", "write"),
    ("POST", "/containers/{id}/attach", "container.attach", "container", "write"),
    ("GET", "/containers/{id}/attach/ws", "container.attach_ws", "container", "write"),
    ("POST", "/containers/{id}/wait", "container.wait", "container", "read"),
    ("DELETE", "/containers/{id}", "container.delete", "container", "write"),
    ("HEAD", "/containers/{id}/archive", "container.archive_stat", "container", "read"),
    ("GET", "/containers/{id}/archive", "container.archive_get", "container", "read"),
    ("PUT", "/containers/{id}/archive", "container.archive_put", "container", "write"),
    ("POST", "/containers/{id}/exec", "exec.create", "container", "write"),
    # exec
    ("POST", "/exec/{id}/start", "exec.start", "exec", "write"),
    ("POST", "/exec/{id}/resize", "exec.resize", "exec", "write"),
    ("GET", "/exec/{id}/json", "exec.inspect", "exec", "read"),
    # images (shared; the profile decides)
    ("GET", "/images/json", "image.list", "image", "read"),
    ("POST", "/build", "image.build", "image", "write"),
    ("POST", "/build/prune", "image.build_prune", "image", "write"),
    ("POST", "/build/cancel", "image.build_cancel", "image", "write"),
    ("POST", "/images/create", "image.create", "image", "write"),
    ("GET", "/images/{name*}/json", "image.inspect", "image", "read"),
    ("GET", "/images/{name*}/history", "image.history", "image", "read"),
    ("POST", "/images/{name*}/push", "image.push", "image", "admin"),
    ("POST", "/images/{name*}/tag", "image.tag", "image", "write"),
    ("DELETE", "/images/{name*}", "image.delete", "image", "write"),
    ("GET", "/images/search", "image.search", "image", "read"),
    ("POST", "/images/prune", "image.prune", "image", "write"),
    ("POST", "/commit", "image.commit", "image", "write"),
    ("GET", "/images/{name*}/get", "image.get", "image", "read"),
    ("GET", "/images/get", "image.get_all", "image", "read"),
    ("POST", "/images/load", "image.load", "image", "write"),
    ("GET", "/distribution/{name*}/json", "image.distribution", "image", "read"),
    # BuildKit sessions (opaque HTTP/2 after the upgrade: one all-or-nothing capability)
    ("POST", "/session", "buildkit.session", None, "write"),
    ("POST", "/grpc", "buildkit.grpc", None, "write"),
    # networks
    ("GET", "/networks", "network.list", "network", "read"),
    ("GET", "/networks/{id}", "network.inspect", "network", "read"),
    ("DELETE", "/networks/{id}", "network.delete", "network", "write"),
    ("POST", "/networks/create", "network.create", "network", "write"),
    ("POST", "/networks/{id}/connect", "network.connect", "network", "write"),
    ("POST", "/networks/{id}/disconnect", "network.disconnect", "network", "write"),
    ("POST", "/networks/prune", "network.prune", "network", "write"),
    # volumes
    ("GET", "/volumes", "volume.list", "volume", "read"),
    ("POST", "/volumes/create", "volume.create", "volume", "write"),
    ("GET", "/volumes/{id}", "volume.inspect", "volume", "read"),
    ("PUT", "/volumes/{id}", "volume.update", "volume", "admin"),
    ("DELETE", "/volumes/{id}", "volume.delete", "volume", "write"),
    ("POST", "/volumes/prune", "volume.prune", "volume", "write"),
    # swarm
    ("GET", "/swarm", "swarm.inspect", "swarm", "read"),  # join tokens: admins only
    ("POST", "/swarm/init", "swarm.init", "swarm", "admin"),
    ("POST", "/swarm/join", "swarm.join", "swarm", "admin"),
    ("POST", "/swarm/leave", "swarm.leave", "swarm", "admin"),
    ("POST", "/swarm/update", "swarm.update", "swarm", "admin"),
    ("GET", "/swarm/unlockkey", "swarm.unlockkey", "swarm", "admin"),
    ("POST", "/swarm/unlock", "swarm.unlock", "swarm", "admin"),
    ("GET", "/nodes", "node.list", "node", "read"),
    ("GET", "/nodes/{id}", "node.inspect", "node", "read"),
    ("DELETE", "/nodes/{id}", "node.delete", "node", "admin"),
    ("POST", "/nodes/{id}/update", "node.update", "node", "admin"),
    # services and tasks
    ("GET", "/services", "service.list", "service", "read"),
    ("POST", "/services/create", "service.create", "service", "write"),
    ("GET", "/services/{id}", "service.inspect", "service", "read"),
    ("DELETE", "/services/{id}", "service.delete", "service", "write"),
    ("POST", "/services/{id}/update", "service.update", "service", "write"),
    ("GET", "/services/{id}/logs", "service.logs", "service", "read"),
    ("GET", "/tasks", "task.list", "task", "read"),
    ("GET", "/tasks/{id}", "task.inspect", "task", "read"),
    ("GET", "/tasks/{id}/logs", "task.logs", "task", "read"),
    # secrets and configs
    ("GET", "/secrets", "secret.list", "secret", "read"),
    ("POST", "/secrets/create", "secret.create", "secret", "write"),
    ("GET", "/secrets/{id}", "secret.inspect", "secret", "read"),
    ("DELETE", "/secrets/{id}", "secret.delete", "secret", "write"),
    ("POST", "/secrets/{id}/update", "secret.update", "secret", "write"),
    ("GET", "/configs", "config.list", "config", "read"),
    ("POST", "/configs/create", "config.create", "config", "write"),
    ("GET", "/configs/{id}", "config.inspect", "config", "read"),
    ("DELETE", "/configs/{id}", "config.delete", "config", "write"),
    ("POST", "/configs/{id}/update", "config.update", "config", "write"),
    # plugins: host-level code, admins only
    ("GET", "/plugins", "plugin.list", "plugin", "admin"),
    ("GET", "/plugins/privileges", "plugin.privileges", "plugin", "admin"),
    ("POST", "/plugins/pull", "plugin.pull", "plugin", "admin"),
    ("GET", "/plugins/{name*}/json", "plugin.inspect", "plugin", "read"),
    ("DELETE", "/plugins/{name*}", "plugin.delete", "plugin", "admin"),
    ("POST", "/plugins/{name*}/enable", "plugin.enable", "plugin", "admin"),
    ("POST", "/plugins/{name*}/disable", "plugin.disable", "plugin", "admin"),
    ("POST", "/plugins/{name*}/upgrade", "plugin.upgrade", "plugin", "admin"),
    ("POST", "/plugins/create", "plugin.create", "plugin", "admin"),
    ("POST", "/plugins/{name*}/push", "plugin.push", "plugin", "admin"),
    ("POST", "/plugins/{name*}/set", "plugin.set", "plugin", "admin"),
]

HIJACK_ROUTES = frozenset(
    {"container.attach", "container.attach_ws", "exec.start", "buildkit.session", "buildkit.grpc"}
)
# Answers that end on their own however long they are (lists, inspects): relayed
# without a task watching for the client, which only long streams need. (Registry
# lookups, image.search and image.distribution, may wait long: watched.)
FINITE_ROUTES = frozenset(
    {
        "system.info",
        "system.version",
        "system.df",
        "container.list",
        "container.inspect",
        "container.top",
        "container.changes",
        "exec.inspect",
        "image.list",
        "image.inspect",
        "image.history",
        "network.list",
        "network.inspect",
        "volume.list",
        "volume.inspect",
        "swarm.inspect",
        "node.list",
        "node.inspect",
        "service.list",
        "service.inspect",
        "task.list",
        "task.inspect",
        "secret.list",
        "secret.inspect",
        "config.list",
        "config.inspect",
        "plugin.list",
        "plugin.inspect",
    }
)


def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    for part in pattern.strip("/").split("/"):
        if part.endswith("*}"):
            out.append(rf"(?P<{part[1:-2]}>.+)")
        elif part.startswith("{"):
            out.append(rf"(?P<{part[1:-1]}>[^/]+)")
        else:
            out.append(re.escape(part))
    return re.compile("^/" + "/".join(out) + "$")


ROUTES: tuple[Route, ...] = tuple(
    Route(m, p, n, k, a, hijack=n in HIJACK_ROUTES, finite=n in FINITE_ROUTES)
    for m, p, n, k, a in _ROWS
)

# Exact paths are looked up in a dict; patterns are tried in table order, with
# literal segments winning over placeholders ("/containers/create" is not an id).
_EXACT: dict[tuple[str, str], Route] = {
    (r.method, r.pattern): r for r in ROUTES if "{" not in r.pattern
}
_PATTERNS: list[tuple[str, re.Pattern[str], Route]] = [
    (r.method, _compile(r.pattern), r) for r in ROUTES if "{" in r.pattern
]


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: dict[str, str]


@short_calls_cached(maxsize=4096)
def match(method: str, path: str) -> Match | None:
    """The route for a normalised path, or None: the default deny."""
    route = _EXACT.get((method, path))
    if route is not None:
        return Match(route, {})
    for route_method, regex, route in _PATTERNS:
        if route_method != method:
            continue
        found = regex.match(path)
        if found:
            return Match(route, found.groupdict())
    return None
