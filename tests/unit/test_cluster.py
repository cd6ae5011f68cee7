"""Finding each swarm node's gate from the node list (``purge --all-nodes``)."""

from __future__ import annotations

from typing import Any

from dockergate.admin.cluster import DEFAULT_PORT, gate_port, node_address, node_gates


def node(
    node_id: str,
    hostname: str,
    role: str = "worker",
    addr: str = "10.0.0.9",
    labels: dict[str, str] | None = None,
    manager_addr: str | None = None,
) -> dict[str, Any]:
    n: dict[str, Any] = {
        "ID": node_id,
        "Description": {"Hostname": hostname},
        "Spec": {"Role": role, "Labels": labels or {}},
        "Status": {"State": "ready", "Addr": addr},
    }
    if manager_addr is not None:
        n["ManagerStatus"] = {"Addr": manager_addr}
    return n


def test_address_label_wins_over_swarm_address() -> None:
    assert node_address(node("a", "h", addr="10.0.0.1")) == "10.0.0.1"
    labelled = node("a", "h", addr="10.0.0.1", labels={"dockergate.address": " gate.n1 "})
    assert node_address(labelled) == "gate.n1"


def test_unspecified_manager_address_falls_back_to_its_raft_address() -> None:
    assert node_address(node("m", "h", "manager", "0.0.0.0", manager_addr="10.0.0.2:2377")) == (
        "10.0.0.2"
    )
    assert node_address(node("m", "h", "manager", "0.0.0.0", manager_addr="[fd00::2]:2377")) == (
        "fd00::2"
    )
    assert node_address(node("w", "h", addr="0.0.0.0")) is None


def test_gates_managers_first_and_unknown_addresses_reported() -> None:
    gates, problems = node_gates(
        [
            node("w1", "b-worker"),
            node("m1", "z-manager", "manager", "10.0.0.1"),
            node("w2", "a-worker", addr="fd00::3"),
            node("w3", "lost", addr=""),
        ],
        2376,
    )
    assert [g.node_id for g in gates] == ["m1", "w2", "w1"]
    assert gates[1].url == "tcp://[fd00::3]:2376"
    assert gates[0].describe() == "node z-manager (manager, ready) tcp://10.0.0.1:2376"
    assert len(problems) == 1 and "lost" in problems[0] and "--label-add" in problems[0]


def test_gate_port_from_the_service_label() -> None:
    def svc(labels: dict[str, str]) -> dict[str, Any]:
        return {"Spec": {"Labels": labels}}

    assert gate_port([svc({}), svc({"dockergate.tls-port": "2443"})]) == 2443
    assert gate_port([svc({"dockergate.tls-port": "http"})]) is None
    assert gate_port([svc({"dockergate.tls-port": "70000"})]) is None
    assert gate_port([]) is None
    assert DEFAULT_PORT == 2376
