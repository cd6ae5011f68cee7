"""``dockergate purge --all-nodes`` on a two-node swarm, with one gate per node.

The test engine is a swarm manager on 127.0.0.1 and scripts/test.sh starts a second
engine that joins it as a (drained) worker on 127.0.0.2, in the same private network
namespace. Each engine gets its own gate, both on one state (CA, users: what the
stack's shared PostgreSQL gives a real cluster), their TLS listeners on the same port
of the two "node addresses". Swarm sees both nodes arrive from 127.0.0.1 (on
loopback the source address is the destination's), so the worker carries the
``dockergate.address`` node label, the override an operator uses for the same
reason on multi-homed nodes.

bob has a service and a container on node 1 and a container and a volume on node 2;
alice has a container on node 2. The purge goes through the manager's gate, finds
node 2's gate from the node list and reports per node; afterwards nothing of bob's
is left on either engine and alice's container is untouched. A second run is a
no-op; with node 2's gate down the purge still cleans node 1, names node 2's
failure and exits 1, and once it is back the same command succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import UnixUser, dockergate_argv, free_port

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.environ.get("DOCKERGATE_TEST_DOCKER_HOST2"),
        reason="needs the second test engine (scripts/test.sh starts it)",
    ),
]

OWNER = "dockergate.owner"


def _port_free_on_both() -> int:
    for _ in range(20):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.2", port))
            return port
    pytest.fail("no TCP port free on both 127.0.0.1 and 127.0.0.2")


def run_dg(state: Path, upstream: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKERGATE_"))}
    full["DOCKERGATE_UPSTREAM"] = upstream
    full.update(env)
    return subprocess.run(
        [*dockergate_argv(), "--state-dir", str(state), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full,
        timeout=180,
        check=False,
    )


def out(r: subprocess.CompletedProcess[str]) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


@pytest.fixture(scope="module")
def engine2() -> Iterator[Any]:
    import docker

    c = docker.DockerClient(
        base_url=os.environ["DOCKERGATE_TEST_DOCKER_HOST2"], version="auto", timeout=120
    )
    yield c
    c.close()


@pytest.fixture
def cluster(
    tmp_path: Path,
    gate_factory: Any,
    docker_host: str,
    direct_client: Any,
    engine2: Any,
    unix_user: Any,
) -> Iterator[dict[str, Any]]:
    state = tmp_path / "state"
    r = run_dg(state, docker_host, "init", "--hostname", "127.0.0.2")
    assert r.returncode == 0, out(r)
    users: dict[str, tuple[UnixUser, str]] = {}
    for short in ("alice", "bob"):
        u = unix_user(f"cl-{short}")
        r = run_dg(
            state, docker_host, "user", "add", u.name, "--profile", "member", "--uid", str(u.uid)
        )
        assert r.returncode == 0, out(r)
        users[short] = (u, u.name)
    port = _port_free_on_both()
    g1 = gate_factory(docker_host, state_dir=state, tls_port=port)
    g2 = gate_factory(
        os.environ["DOCKERGATE_TEST_DOCKER_HOST2"],
        state_dir=state,
        tls_host="127.0.0.2",
        tls_port=port,
    )
    worker = engine2.info()["Swarm"]["NodeID"]
    node = direct_client.nodes.get(worker)
    spec = node.attrs["Spec"]
    spec.setdefault("Labels", {})["dockergate.address"] = "127.0.0.2"
    node.update(spec)
    try:
        yield {"state": state, "g1": g1, "g2": g2, "port": port, "users": users}
    finally:
        node.reload()
        spec = node.attrs["Spec"]
        (spec.get("Labels") or {}).pop("dockergate.address", None)
        with contextlib.suppress(Exception):
            node.update(spec)
        for client in (direct_client, engine2):
            for short in ("alice", "bob"):
                flt = {"label": f"{OWNER}={users[short][1]}"}
                for c in client.containers.list(all=True, filters=flt):
                    with contextlib.suppress(Exception):
                        c.remove(force=True)
                for v in client.volumes.list(filters=flt):
                    with contextlib.suppress(Exception):
                        v.remove(force=True)
        for s in direct_client.services.list(filters={"label": f"{OWNER}={users['bob'][1]}"}):
            with contextlib.suppress(Exception):
                s.remove()


def owned(client: Any, user: str, services: bool = False) -> dict[str, set[str]]:
    flt = {"label": f"{OWNER}={user}"}
    found = {
        "container": {c.name for c in client.containers.list(all=True, filters=flt)},
        "volume": {v.name for v in client.volumes.list(filters=flt)},
    }
    if services:
        found["service"] = {s.name for s in client.services.list(filters=flt)}
    return found


def test_purge_all_nodes(
    cluster: dict[str, Any], cli: Any, direct_client: Any, engine2: Any
) -> None:
    g1, g2, state = cluster["g1"], cluster["g2"], cluster["state"]
    (alice, alice_name), (bob, bob_name) = cluster["users"]["alice"], cluster["users"]["bob"]
    tag = uuid.uuid4().hex[:6]

    def as_user(u: UnixUser, gate: Any, *args: str) -> None:
        r = cli(list(args), user=u, gate=gate)
        assert r.returncode == 0, f"{args}: {r.stderr}"

    as_user(bob, g1, "run", "-d", "--name", f"cl-b1-{tag}", "busybox", "sleep", "600")
    as_user(bob, g1, "service", "create", "-d", "--name", f"cl-bs-{tag}", "busybox", "sleep", "600")
    as_user(bob, g2, "run", "-d", "--name", f"cl-b2-{tag}", "busybox", "sleep", "600")
    as_user(bob, g2, "volume", "create", f"cl-bv-{tag}")
    as_user(alice, g2, "run", "-d", "--name", f"cl-a2-{tag}", "busybox", "sleep", "600")
    assert owned(engine2, bob_name) == {"container": {f"cl-b2-{tag}"}, "volume": {f"cl-bv-{tag}"}}
    assert f"cl-b1-{tag}" in owned(direct_client, bob_name)["container"]

    admin_tls = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(g1.admin_cert_dir)}
    port = str(cluster["port"])

    def purge_all(*flags: str, upstream: str = g1.upstream, **env: str) -> Any:
        """`dockergate purge --user bob --all-nodes --gate-port PORT FLAGS...`"""
        args = ["purge", "--user", bob_name, "--all-nodes", "--gate-port", port, *flags]
        return run_dg(state, upstream, *args, **env)

    # A dry run on the manager's engine itself: the node list comes from it, node 2's
    # gate is found by its label and reached with the state's admin bundle.
    r = purge_all("--volumes", "--dry-run", "--json")
    assert r.returncode == 0, out(r)
    nodes = json.loads(r.stdout)["nodes"]
    assert len(nodes) == 2, r.stdout
    assert nodes[0]["node"].split()[2:4] == ["(manager,", "ready)"], nodes[0]
    assert nodes[1]["gate"] == f"tcp://127.0.0.2:{port}", nodes[1]
    planned = [{(row["kind"], row["name"]) for row in n["report"]["rows"]} for n in nodes]
    assert ("service", f"cl-bs-{tag}") in planned[0] and ("container", f"cl-b1-{tag}") in planned[
        0
    ], planned
    assert planned[1] == {("container", f"cl-b2-{tag}"), ("volume", f"cl-bv-{tag}")}, planned
    assert not any(row["kind"] == "service" for row in nodes[1]["report"]["rows"])
    assert f"cl-b2-{tag}" in owned(engine2, bob_name)["container"]  # a dry run

    # The purge itself, through the manager's gate over TLS.
    r = purge_all(
        "--volumes", "--yes", "--host", g1.tls_url, upstream="unix:///nonexistent", **admin_tls
    )
    assert r.returncode == 0, out(r)
    assert r.stdout.count("== node ") == 2, out(r)
    assert "2 node(s): 2 done, 0 with failures" in r.stderr, out(r)
    assert owned(engine2, bob_name) == {"container": set(), "volume": set()}
    left = owned(direct_client, bob_name, services=True)
    assert left["service"] == set() and not {f"cl-b1-{tag}"} & left["container"], left
    assert f"cl-a2-{tag}" in owned(engine2, alice_name)["container"]

    # Again: nothing to do anywhere.
    r = purge_all("--yes")
    assert r.returncode == 0, out(r)
    assert r.stdout.count(f"nothing owned by '{bob_name}'") == 2, out(r)

    # Node 2's gate down: node 1 is still purged, node 2's failure is named, exit 1.
    as_user(bob, g1, "run", "-d", "--name", f"cl-b3-{tag}", "busybox", "sleep", "600")
    g2.stop()
    r = purge_all("--yes")
    assert r.returncode == 1, out(r)
    assert f"cannot reach the gate at tcp://127.0.0.2:{port}" in r.stderr, out(r)
    assert "2 node(s): 1 done, 1 with failures" in r.stderr, out(r)
    assert f"cl-b3-{tag}" not in owned(direct_client, bob_name)["container"]
    # With the gate back, the same command succeeds: repeating a purge is safe.
    g2.start()
    r = purge_all("--yes")
    assert r.returncode == 0, out(r)


def test_all_nodes_needs_a_manager(cluster: dict[str, Any]) -> None:
    """Asked of a worker's gate, the purge says why it cannot list the nodes."""
    g2 = cluster["g2"]
    r = run_dg(
        cluster["state"],
        "unix:///nonexistent",
        "purge",
        "--user",
        "cl-bob",
        "--all-nodes",
        "--yes",
        "--host",
        g2.tls_url,
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=str(g2.admin_cert_dir),
    )
    assert r.returncode == 1, out(r)
    assert "needs the node list of a swarm manager" in r.stderr, out(r)
