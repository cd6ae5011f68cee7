"""Review round 20a: the newest fixes attacked (``docker update --cpu-quota`` made
``NanoCpus``, ``--cpu-period`` alone at create, exec creates under the user's lock,
connections counted per user, ``user cert --out`` walking every link).

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (the CPU cap holds; one stalled request does not hold the user's lock).
The ``test_works_*`` tests pass and pin what held and the legitimate neighbours.

They reuse the first round's gate, profile (``cpus: {max: 2}``, no CPU default),
users and cleanup (tests/integration/test_review_findings.py) and raw requests as
members. Only the local ``busybox`` image is used; traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time

import pytest

from tests.helpers import connect_as_uid
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import _read_reply

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created

pytestmark = pytest.mark.timeout(120)

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
CAP = 2  # the review member profile's resources.cpus.max


def _cpus(host: dict) -> float:
    """The CPUs a container really gets, as the kernel's cpu.max will say."""
    if host.get("NanoCpus"):
        return host["NanoCpus"] / 1e9
    if (host.get("CpuQuota") or 0) > 0:
        return host["CpuQuota"] / (host.get("CpuPeriod") or 100_000)
    return 0.0


def _docker(m, *args: str) -> subprocess.CompletedProcess[str]:
    """The docker CLI as the member's unix user, against the review gate."""
    argv = ["setpriv", f"--reuid={m.uid}", "--regid=65534", "--clear-groups"]
    argv += [DOCKER, "-H", f"unix://{m.path}", *args]
    env = {**os.environ, "DOCKER_CONFIG": "/nonexistent"}  # not root's config
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


def _update_body(**fields: int) -> dict:
    """What the docker CLI sends for `docker update`: every Resources field, zero
    where the flag was not given (container.UpdateConfig has no omitempty)."""
    body = {"CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CpuPeriod": 0, "CpuQuota": 0}
    body.update(fields)
    return body


# ------------------------------------------------------------------------------ CPU


def test_finding_update_cpu_period_alone_multiplies_a_quota(users, cleanup, direct_client):
    """A member's container limited by a CFS quota (``docker run --cpu-period 100000
    --cpu-quota 200000``: 2 CPUs, the cap; or since today ``--cpu-period`` alone,
    which gets the default as a quota) then ``docker update --cpu-period 1000 C``:
    the CLI sends ``CpuQuota: 0`` beside the period (no omitempty), ``check_update``
    merges the body's 0 over the container's quota (``body[k] if k in body``) and
    ``container_cpus`` sees no quota, so no cap; dockerd reads 0 as "unchanged" and
    keeps the quota 200000 against the new period 1000: ``cpu.max`` 200000 1000, 200
    CPUs, every CPU of the node. Severity: Medium (the CPU cap of the profile undone
    with one stock CLI command; noisy-neighbour DoS of the node). Expected: refused,
    or the container's real quota (a 0 in the body is dockerd's "unchanged") checked
    against the new period."""
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"CpuPeriod": 100000, "CpuQuota": 200000},
        },
        cleanup,
    )
    r = _docker(m, "update", "--cpu-period", "1000", cid)  # the stock CLI
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert _cpus(host) <= CAP, (r.returncode, r.stderr, host["CpuQuota"], host["CpuPeriod"])


def test_finding_update_cpu_quota_with_a_zero_period_counts_100ms(users, cleanup, direct_client):
    """The other half: a container of ``--cpu-period 1000 --cpu-quota 2000`` (2
    CPUs), then ``docker update --cpu-quota 200000 C``: the CLI sends ``CpuPeriod:
    0``, the gate divides by the default 100000 (2 CPUs: passes) while dockerd keeps
    the container's period 1000: 200 CPUs. (The first round's test sends the quota
    without the ``CpuPeriod`` key, which the gate reads right.) Severity: Medium, as
    above. Expected: refused (a 0 period is the container's own)."""
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"CpuPeriod": 1000, "CpuQuota": 2000},
        },
        cleanup,
    )
    r = _docker(m, "update", "--cpu-quota", "200000", cid)  # the stock CLI
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert _cpus(host) <= CAP, (r.returncode, r.stderr, host["CpuQuota"], host["CpuPeriod"])


def test_works_cpu_translation_on_a_nanocpus_container(users, cleanup, direct_client):
    """A container of ``--cpus 1`` (NanoCpus): ``--cpu-quota 150000`` (CLI body,
    period 0) becomes NanoCpus 1.5; quota 100000 with period 1000 (100 CPUs) and a
    huge quota are refused; a period alone is refused; a negative period or quota
    gives no more CPUs; ``--cpus 2`` and ``--cpu-shares`` work."""
    m = users["mallory"]
    cid = created(
        m,
        {"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": {"NanoCpus": 10**9}},
        cleanup,
    )
    url = f"/v1.41/containers/{cid}/update"

    def cpus() -> float:
        return _cpus(direct_client.api.inspect_container(cid)["HostConfig"])

    r = m.request("POST", url, _update_body(CpuQuota=150000))
    assert r.status == 200 and cpus() == 1.5, (r.status, r.body, cpus())
    for body in (
        _update_body(CpuQuota=100000, CpuPeriod=1000),
        _update_body(CpuQuota=2**62, CpuPeriod=1000),
        _update_body(CpuPeriod=1000),
        _update_body(CpuQuota=-1),
        _update_body(CpuQuota=-1, CpuPeriod=1000),
    ):
        r = m.request("POST", url, body)
        assert r.status in (400, 403, 409) and cpus() == 1.5, (body, r.status, r.body, cpus())
    r = m.request("POST", url, _update_body(CpuQuota=50000, CpuPeriod=-1000))
    assert r.status != 200 and cpus() == 1.5, (r.status, r.body, cpus())
    r = m.request("POST", url, _update_body(NanoCpus=2 * 10**9, CpuShares=512))
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert r.status == 200 and (host["NanoCpus"], host["CpuShares"]) == (2 * 10**9, 512)
    r = m.request("POST", url, _update_body(NanoCpus=3 * 10**9))
    assert r.status == 403 and cpus() == 2, (r.status, r.body)


def test_works_create_with_cpu_period_and_update_of_quota_with_its_period(
    users, cleanup, direct_client
):
    """Quota containers: ``--cpu-quota 2000 --cpu-period 1000`` at create; an update
    of quota *and* period together is checked against the new pair (``--cpu-quota
    100000 --cpu-period 100000`` passes, ``--cpu-quota 300000 --cpu-period 100000``
    is refused)."""
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"CpuPeriod": 1000, "CpuQuota": 2000},
        },
        cleanup,
    )
    url = f"/v1.41/containers/{cid}/update"
    r = m.request("POST", url, _update_body(CpuQuota=100000, CpuPeriod=100000))
    assert r.status == 200, (r.status, r.body)
    r = m.request("POST", url, _update_body(CpuQuota=300000, CpuPeriod=100000))
    host = direct_client.api.inspect_container(cid)["HostConfig"]
    assert r.status == 403 and _cpus(host) == 1, (r.status, r.body, host)


# ---------------------------------------------------------------------------- execs


def _send_head(sock, path: str, length: int, body: bytes = b"") -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body)


def test_finding_stalled_exec_body_holds_the_users_lock(users, cleanup):
    """``exec_create`` (api/containers.py) now takes ``user_lock`` *before* reading
    its body (``container_create`` reads first): a member's exec create whose body
    does not come (a slow link, a client stopped in a debugger, or on purpose) holds
    the user's lock for BODY_TIMEOUT (60 s), and every create, start, memory update,
    network/secret/config create and exec of that user waits behind it; N such
    connections queue N x 60 s (each reads its body only once it has the lock).
    Observed: a container create on another connection waited until the stalled
    exec gave up. Severity: Low (a user can only stall their own work; a docker
    CLI on a flaky link stalls the user's other sessions). Expected: the body read
    (and the container resolved) before the lock is taken, as for a create; the lock
    held only from the count to dockerd's answer."""
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "60"]}, cleanup)
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    stalled, other = connect_as_uid(m.path, m.uid, count=2)
    try:
        _send_head(stalled, f"/v1.41/containers/{cid}/exec", 40)  # no body follows
        time.sleep(0.5)
        data = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
        other.settimeout(8)
        began = time.monotonic()
        _send_head(other, "/v1.41/containers/create", len(data), data)
        with contextlib.suppress(TimeoutError):  # still waiting: the lock is held
            reply = _read_reply(other)
            if reply.status == 201:
                cleanup.append(("container", json.loads(reply.body)["Id"]))
        waited = time.monotonic() - began
    finally:
        stalled.close()
        other.close()
    assert waited < 5, f"the create waited {waited:.1f} s behind a stalled exec body"


def test_works_parallel_exec_creates_keep_the_cap(users, cleanup, direct_client):
    """60 exec creates sent at once into one container: at most 32 exist, the rest
    refused with the cap's message (the lock spans count and create)."""
    from tests.integration.test_review18b_findings import _parallel_posts

    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "60"]}, cleanup)
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    replies = _parallel_posts(m, [(f"/v1.41/containers/{cid}/exec", {"Cmd": ["true"]})] * 60)
    assert sum(1 for s, _ in replies if s == 201) == 32, replies[:3]
    assert len(direct_client.api.inspect_container(cid)["ExecIDs"] or []) == 32
