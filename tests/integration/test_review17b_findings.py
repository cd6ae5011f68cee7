"""Review round 17b: one member exhausting what the node and the swarm share, with
legitimate-looking API use through the gate (disk, dockerd's memory, the managers'
raft store, the host's pid space, the managers' CPUs).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (what one member holds of a resource every user shares is bounded, or
refused with a ``dockergate:`` message naming the rule). The ``test_works_*`` tests
pass and pin the legitimate neighbour.

They reuse the first round's gate, profile (64m default and 256m maximum memory, a
512m memory quota, 2 CPUs at most, the default pids rules: 4096 by default, 32768 at
most), users and cleanup (tests/integration/test_review_findings.py) and raw requests
as members. They assert on the configuration the daemon received (inspect), never by
filling a disk: the measurements quoted in the docstrings were made once, capped at a
few hundred MB, on the test engine (``daemon.json`` ``{}``: dockerd's defaults, as on
a Debian install). Only the local ``busybox`` image is used; traffic stays on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid

import pytest

from dockergate.policy.model import ProfileSet, shipped_policies_dir
from tests.integration import test_review_findings as first_round

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _message(body: bytes) -> str:
    with contextlib.suppress(ValueError):
        return str(json.loads(body).get("message") or "")
    return body.decode(errors="replace")


def _running(m, cleanup, **host) -> str:
    cid = created(
        m, {"Image": "busybox", "Cmd": ["sleep", "120"], "HostConfig": dict(host)}, cleanup
    )
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    return cid


# ------------------------------------------------------------------ disk: container logs


def test_finding_container_logs_have_no_size_cap(users, cleanup, direct_client):
    """A member's ``docker run`` without ``--log-opt`` gets dockerd's default log
    driver, json-file, with ``LogConfig.Config`` empty: no ``max-size``, so the log
    file under the data root grows without end (``check_host_config`` in
    policy/resources.py checks ``LogConfig.Type`` against ``log_drivers`` and never
    looks at, or fills in, ``LogConfig.Config``). Measured: ``yes <70 chars> | head -c
    100M`` in a member's container wrote a 208 MB ``-json.log`` in 5.7 s (36 MB/s,
    the json-file framing doubles it): a 100 GB data disk is full in ~47 minutes, for
    every container, image pull and build on the node, and on a manager the raft
    WAL cannot be written any more (the swarm loses that manager). The memory cap
    and quota do not bound it: the file is written by dockerd, outside the
    container's cgroup. Severity: High. Expected: the gate sets a size cap when the
    request has none (``max-size``/``max-file`` for json-file; ``local`` caps itself
    at 5 x 20 MB), visible in ``docker inspect``, like the memory default."""
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    log = direct_client.api.inspect_container(cid)["HostConfig"]["LogConfig"]
    driver = log.get("Type") or "json-file"
    config = log.get("Config") or {}
    assert driver in ("local", "none", "journald") or config.get("max-size"), (
        f"a member's container logs with {driver} and no size cap: {log}"
    )


@pytest.mark.parametrize(
    "log",
    [
        {"Type": "json-file", "Config": {"max-size": "100g"}},
        {"Type": "local", "Config": {"max-size": "100g", "max-file": "1000"}},
    ],
    ids=["json-file-100g", "local-100g-x1000"],
)
def test_finding_member_raises_the_log_cap_without_bound(users, cleanup, log):
    """Even with a default in place, ``LogConfig.Config`` is forwarded as sent: a
    member's ``--log-opt max-size=100g`` (json-file), or ``--log-driver local
    --log-opt max-size=100g --log-opt max-file=1000`` (100 TB; ``local`` alone would
    keep 100 MB), was created as asked. Severity: High (same effect as above,
    deliberately). Expected: refused, naming the profile's cap (e.g. a
    ``containers.log_max_size: 100m`` and ``log_max_files: 5``)."""
    r = users["mallory"].request(
        "POST", "/v1.41/containers/create", {"Image": "busybox", "HostConfig": {"LogConfig": log}}
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert r.status == 403 and "dockergate" in _message(r.body), (r.status, r.body)


def test_finding_service_log_options_are_not_checked(users, direct_client):
    """Services: ``check_service`` checks ``TaskTemplate.LogDriver.Name`` only. A
    member's service with ``--log-driver json-file --log-opt max-size=500g`` was
    created, and its task container ran with ``LogConfig {"Type": "json-file",
    "Config": {"max-size": "500g"}}``; one with no ``LogDriver`` gets none either
    (dockerd's default, uncapped). Tasks of members (``avoid_managers: false``)
    run on managers. Severity: High. Expected: refused (or capped and defaulted, as
    for containers)."""
    m = users["mallory"]
    spec = {
        "Name": f"dgt-rv17b-log-{_rand()}",
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "1"]},
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "500g"}},
        },
        "Mode": {"Replicated": {"Replicas": 0}},
    }
    r = m.request("POST", "/v1.41/services/create", spec)
    if r.status == 201:
        direct_client.api.remove_service(json.loads(r.body)["ID"])
    assert r.status == 403 and "dockergate" in _message(r.body), (r.status, r.body)


def test_works_member_sets_a_small_log_cap(users, cleanup, direct_client):
    log = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    r = users["mallory"].request(
        "POST",
        "/v1.41/containers/create",
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"LogConfig": log}},
    )
    assert r.status == 201, (r.status, r.body)
    cid = json.loads(r.body)["Id"]
    cleanup.append(("container", cid))
    got = direct_client.api.inspect_container(cid)["HostConfig"]["LogConfig"]
    assert got["Type"] == "json-file" and got["Config"].get("max-size") == "10m", got


# ------------------------------------------------------------- dockerd's memory: execs


def test_finding_unstarted_execs_pile_up_in_dockerd(users, cleanup):
    """``exec_create`` (api/containers.py) checks ``--privileged`` and the user, then
    forwards: nothing bounds how many execs a member creates and never starts.
    dockerd keeps every exec config in memory while its container lives (its exec
    GC, every 5 minutes, drops only execs whose process has ended). Measured: 100 ``POST
    /containers/{id}/exec`` with a 1.9 MB command line each, never started, took
    8.5 s and raised dockerd's RSS from 97 to 578 MiB, where it stayed (~4.8 MiB per
    exec); 300 small ones took 2.5 s, all kept (``ExecIDs``: 400). At that rate a
    member grows dockerd by ~3.4 GB a minute, memory charged to no container and no
    quota: on a manager, dockerd (and the raft member inside it) is what the OOM
    killer finds. Severity: High. Expected: a bound on a member's pending execs
    (per container and per user, e.g. ``exec.pending: 64``), refused with a
    ``dockergate:`` message."""
    m = users["mallory"]
    cid = _running(m, cleanup)
    refused = None
    for i in range(300):
        r = m.request("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["true"]})
        if r.status != 201:
            refused = (i, r.status, _message(r.body))
            break
    assert refused is not None and "dockergate" in refused[2], (
        "300 unstarted execs of one member all kept by dockerd"
    )


def test_works_exec_runs_and_counts_against_the_pids_limit(users, cleanup):
    """Held: an exec's processes join the container's pids cgroup (a container with
    ``--pids-limit 10`` and an exec spawning 20 ``sleep``s stayed at 9-10 pids)."""
    m = users["mallory"]
    cid = _running(m, cleanup, PidsLimit=10)
    # The exec's shell writes to the container's own stdout: its logs.
    loop = "exec >/proc/1/fd/1 2>&1; for i in $(seq 20); do sleep 5 & done; echo done"
    r = m.request("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["sh", "-c", loop]})
    assert r.status == 201, (r.status, r.body)
    eid = json.loads(r.body)["Id"]
    start = m.request("POST", f"/v1.41/exec/{eid}/start", {"Detach": True, "Tty": False})
    assert start.status == 200, (start.status, start.body)
    logs = b""
    for _ in range(40):
        logs = m.request("GET", f"/v1.41/containers/{cid}/logs?stdout=1&stderr=1").body
        if b"done" in logs:
            break
        time.sleep(0.1)
    assert b"can't fork" in logs or b"Resource temporarily" in logs, logs


# ------------------------------------------------------------ the managers' raft store


def test_finding_configs_and_secrets_have_no_quota(users, direct_client):
    """``secret_create`` (api/secrets.py) stamps the owner label and forwards; no
    quota counts secrets or configs. They live in the swarm's raft store: in the
    memory of every manager, in its WAL and snapshots, replicated to each. Measured:
    40 configs of 750 kB (Swarm takes up to 1000 kB a config, 500 kB a secret) from
    one member in 1.6 s, dockerd's RSS 85 -> 206 MiB on the manager; 150 more small
    ones in 1.4 s, all accepted. Severity: Medium (every manager's memory and disk,
    and the raft snapshot every manager and joining node loads). Expected: a quota
    (count and/or bytes, e.g. ``quota.configs: 100`` covering secrets too), refused
    with a ``dockergate:`` message."""
    m = users["mallory"]
    made: list[str] = []
    refused = None
    try:
        for i in range(150):
            r = m.request(
                "POST",
                "/v1.41/configs/create",
                {"Name": f"dgt-rv17b-cfg-{_rand()}-{i}", "Data": "eA=="},
            )
            if r.status != 201:
                refused = (i, r.status, _message(r.body))
                break
            made.append(json.loads(r.body)["ID"])
    finally:
        for cfg in made:
            with contextlib.suppress(Exception):
                direct_client.api.remove_config(cfg)
    assert refused is not None and "dockergate" in refused[2], (
        f"one member created {len(made)} configs, none refused"
    )


def test_works_member_creates_a_secret_and_a_config(users, direct_client):
    m = users["mallory"]
    data = base64.b64encode(b"hello").decode()
    for kind in ("secrets", "configs"):
        r = m.request(
            "POST", f"/v1.41/{kind}/create", {"Name": f"dgt-rv17b-{_rand()}", "Data": data}
        )
        assert r.status == 201, (kind, r.status, r.body)
        oid = json.loads(r.body)["ID"]
        if kind == "secrets":
            direct_client.api.remove_secret(oid)
        else:
            direct_client.api.remove_config(oid)


# ------------------------------------------------------------------- the host's pids


def _host_task_limit() -> int:
    """What the kernel lets the whole host run: pid_max and threads-max both bound it."""
    values = []
    for path in ("/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"):
        with open(path) as f:
            values.append(int(f.read().strip()))
    return min(values)


def test_finding_one_member_may_hold_every_pid_of_the_host(users, cleanup):
    """``apply_pids`` caps each container (default 4096, max 32768) but nothing sums
    them per user or compares them with the host: on this machine
    ``kernel.pid_max`` is 32768, and a member's ``docker run --pids-limit 32768`` was
    created as asked (8 containers at the default 4096 get there too, well inside
    the 100-container quota of the shipped member profile). A fork bomb in it takes
    every pid of the node: no user, no ``docker exec``, no sshd, and no dockerd
    goroutine that needs a thread can start anything (not run here: it would take
    this shared machine down). Severity: High where ``pid_max`` is Linux's default
    32768 (without systemd's 4194304; threads-max, from RAM, bounds it otherwise).
    Expected: the sum of a member's pids limits stays well below the host's
    (a per-user ``quota.pids``, or a max as a share of ``pid_max`` like memory's
    "25%"), the container that would pass it refused with a ``dockergate:``
    message."""
    m = users["mallory"]
    host = _host_task_limit()
    total, refused = 0, None
    for i in range(8):
        r = m.request(
            "POST",
            "/v1.41/containers/create",
            {"Image": "busybox", "HostConfig": {"PidsLimit": 32768, "Memory": 16 * MIB}},
        )
        if r.status != 201:
            refused = (i, r.status, _message(r.body))
            break
        cleanup.append(("container", json.loads(r.body)["Id"]))
        total += 32768
        if total >= host:
            break
    if refused is None and total < host:
        pytest.skip(f"this host allows {host} tasks, beyond 8 containers of 32768")
    assert refused is not None and "dockergate" in refused[2], (
        f"one member holds pids limits of {total} on a host with {host} pids"
    )


# -------------------------------------------------------------------------- tmpfs


def test_works_tmpfs_is_charged_to_the_memory_limit(users, cleanup, direct_client):
    """Held: ``--tmpfs /t:size=2g`` is not checked, but its pages count in the
    container's memory cgroup: writing 150 MB into it under the 64m default was
    OOM-killed at ~62 MB and freed when the container exited."""
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "dd if=/dev/zero of=/t/big bs=1M count=150"],
            "HostConfig": {"Tmpfs": {"/t": "size=2g"}},
        },
        cleanup,
    )
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    m.request("POST", f"/v1.41/containers/{cid}/wait")
    state = direct_client.api.inspect_container(cid)["State"]
    logs = m.request("GET", f"/v1.41/containers/{cid}/logs?stdout=1&stderr=1").body
    assert state["OOMKilled"] or b"150+0 records out" not in logs, (state, logs[-200:])


# ----------------------------------------------------------------- managers' CPUs


def test_finding_shipped_member_profile_leaves_cpus_unlimited_on_managers():
    """The shipped ``member`` profile sets a memory default ("a memory limit on
    everything, so one job cannot take a node down") but no CPU default, with
    ``containers.on_managers: true`` and ``swarm.avoid_managers: false``. A member's
    container created through the gate had ``NanoCpus 0`` and ``CpuQuota 0``, and a
    service's ``Resources.Limits`` only ``MemoryBytes`` and ``Pids``: on a manager,
    one member's busy job or a global service takes every CPU the raft member and
    dockerd need for heartbeats (the effect on the swarm was not measured here:
    lead). Severity: Medium (a shipped default, the knob exists). Expected: the
    shipped member profile caps CPUs by default (``cpus.default``) or keeps members
    off managers."""
    member = ProfileSet(shipped_policies_dir()).get("member")
    assert member is not None
    assert member.cpus.default or (member.avoid_managers and not member.containers_on_managers), (
        f"member: cpus {member.cpus}, on_managers {member.containers_on_managers}, "
        f"avoid_managers {member.avoid_managers}"
    )
