"""Where the gate of each swarm node is, for ``dockergate purge --all-nodes``.

A container lives on one node and only that node's engine can remove it, so a
cluster-wide purge has to reach every node's gate. The node list comes from a
manager (``GET /nodes``); a node's gate is at its address on the gate's TLS port:

- the address is the node label ``dockergate.address`` when an operator set one
  (``docker node update --label-add dockergate.address=10.0.0.5 node2``: for nodes
  whose gate is reached on another interface than Swarm's), else the address Swarm
  reports for the node (``Status.Addr``; for a manager reporting ``0.0.0.0``, the
  host of its ``ManagerStatus.Addr``);
- the port is ``--gate-port``, else the ``dockergate.tls-port`` label of the
  gate's service (``deploy/dockergate-stack.yml`` sets it), else 2376.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ADDRESS_LABEL = "dockergate.address"
PORT_LABEL = "dockergate.tls-port"
DEFAULT_PORT = 2376
_UNSPECIFIED = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True)
class NodeGate:
    """One swarm node and the gate that fronts its engine."""

    node_id: str
    hostname: str
    role: str  # "manager" or "worker"
    state: str  # Swarm's view: "ready", "down", ...
    address: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"tcp://{host}:{self.port}"

    def describe(self) -> str:
        return f"node {self.hostname or self.node_id[:12]} ({self.role}, {self.state}) {self.url}"


def _host_of(addr: str) -> str:
    """``10.0.0.1:2377`` -> ``10.0.0.1``; ``[fd00::1]:2377`` -> ``fd00::1``."""
    if addr.startswith("["):
        return addr[1 : addr.find("]")] if "]" in addr else addr
    return addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr


def node_address(node: Mapping[str, Any]) -> str | None:
    """Where this node's gate is reached; None when Swarm does not know."""
    labels = (node.get("Spec") or {}).get("Labels") or {}
    if isinstance(labels, dict) and str(labels.get(ADDRESS_LABEL) or "").strip():
        return str(labels[ADDRESS_LABEL]).strip()
    addr = str((node.get("Status") or {}).get("Addr") or "")
    if addr not in _UNSPECIFIED:
        return addr
    manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
    host = _host_of(manager) if manager else ""
    return host if host not in _UNSPECIFIED else None


def gate_port(services: Iterable[Mapping[str, Any]]) -> int | None:
    """The TLS port from the gate service's ``dockergate.tls-port`` label."""
    for service in services:
        labels = (service.get("Spec") or {}).get("Labels") or {}
        value = labels.get(PORT_LABEL) if isinstance(labels, dict) else None
        if value is not None and str(value).strip().isdigit():
            port = int(str(value).strip())
            if 0 < port < 65536:
                return port
    return None


def node_gates(nodes: Iterable[Mapping[str, Any]], port: int) -> tuple[list[NodeGate], list[str]]:
    """Every node's gate, managers first, then by host name; plus one problem line
    for each node whose address is unknown (the purge reports those as failed)."""
    gates: list[NodeGate] = []
    problems: list[str] = []
    for node in nodes:
        node_id = str(node.get("ID") or "")
        desc = node.get("Description") or {}
        hostname = str(desc.get("Hostname") or "")
        role = str((node.get("Spec") or {}).get("Role") or "worker")
        state = str((node.get("Status") or {}).get("State") or "unknown")
        address = node_address(node)
        if address is None:
            problems.append(
                f"node {hostname or node_id[:12]}: Swarm reports no address for it; "
                f"set one with `docker node update --label-add {ADDRESS_LABEL}=ADDRESS "
                f"{hostname or node_id}`"
            )
            continue
        gates.append(NodeGate(node_id, hostname, role, state, address, port))
    gates.sort(key=lambda g: (g.role != "manager", g.hostname, g.address, g.node_id))
    return gates, problems
