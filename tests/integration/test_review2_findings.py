"""Findings of the second security review round (bypasses of the first round's fixes
and new ones), each with the legitimate neighbour. Every attack here succeeded on
76e64a9.

They reuse the first round's gate and profile (tests/integration/test_review_findings.py:
an allowed bind root mounted nosymfollow, a 512m memory quota, 2 CPUs, no exec as
root) and raw requests as members.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from tests.integration import test_review_findings as first_round

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, build, created, start = (
    first_round._rand,
    first_round.build,
    first_round.created,
    first_round.start,
)

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20


def _service(raw, spec: dict, cleanup) -> tuple[int, bytes]:
    cleanup.append(("service", spec["Name"]))
    r = raw.request("POST", "/v1.41/services/create", spec)
    return r.status, r.body


# --------------------------------------------------------------- host access


@pytest.mark.parametrize("mount_type", ["", None], ids=["empty", "null"])
def test_service_mount_without_a_type_is_checked_as_a_bind(
    users, area, cleanup, direct_client, mount_type
):
    """Swarm converts a service mount's Type with ``Mount_MountType_value[ToUpper(t)]``
    and leaves an empty (or null) Type at the enum's zero value, BIND. The gate reads
    a missing/empty Type as "volume" (check_mount: ``Type or "volume"``) and skips the
    bind check, so any member bind-mounts the host's ``/`` (writable: root on the host)."""
    name = f"rv2-bind-{_rand()}"
    flag = area / "secret" / "flag"
    status, body = _service(
        users["mallory"],
        {
            "Name": name,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Command": ["sh", "-c", f"cat /h{flag}; sleep 60"],
                    "Mounts": [{"Type": mount_type, "Source": "/", "Target": "/h"}],
                }
            },
        },
        cleanup,
    )
    if status == 201:
        logs = ""
        deadline = time.time() + 30
        while time.time() < deadline and "REVIEW-FLAG" not in logs:
            time.sleep(1)
            with contextlib.suppress(Exception):
                svc = direct_client.services.get(name)
                logs = b"".join(svc.logs(stdout=True, stderr=True)).decode(errors="replace")
        assert "REVIEW-FLAG" not in logs, "a member's service bind-mounted the host's /"
    assert status == 403, (status, body)


# --------------------------------------------------------------- build containers


def _victim_build_seen_by_mallory(users, base: str) -> list[dict]:
    return first_round.victim_build_seen_by_mallory(users, base)


def test_onbuild_label_does_not_claim_other_users_build_containers(users, cleanup):
    """The first round gave built images an empty owner label, but an ``ONBUILD LABEL
    dockergate.owner=<me>`` trigger runs in the *child* build, after FROM: the
    victim's RUN containers then carry mallory's owner label, and mallory lists,
    execs into and copies from them (tampering with the victim's image)."""
    base = f"dgt-review2-onbuild-{_rand()}:1"
    r = build(
        users["mallory"],
        f"t={base}&nocache=1",
        "FROM busybox\nONBUILD LABEL dockergate.owner=rv-mallory\n",
    )
    cleanup.append(("image", base))
    if r.status != 200 or b"errorDetail" in r.body:
        return  # refused: secure
    seen = _victim_build_seen_by_mallory(users, base)
    assert not seen, f"mallory owns the victim's build container {seen[0]['Id'][:12]}"


def test_commit_body_onbuild_does_not_claim_other_users_build_containers(users, cleanup):
    """Same through ``POST /commit``: the ``changes`` query is checked for ONBUILD, the
    body's ``OnBuild`` (a container config merged into the image) is not."""
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    repo = f"dgt-review2-onbuild-commit-{_rand()}"
    r = users["mallory"].request(
        "POST",
        f"/v1.41/commit?container={cid}&repo={repo}&tag=1",
        {"OnBuild": ["LABEL dockergate.owner=rv-mallory"]},
    )
    cleanup.append(("image", f"{repo}:1"))
    if r.status != 201:
        return  # refused: secure
    seen = _victim_build_seen_by_mallory(users, f"{repo}:1")
    assert not seen, f"mallory owns the victim's build container {seen[0]['Id'][:12]}"


# --------------------------------------------------------------- quotas and caps


def test_service_rollback_respects_the_memory_quota(users, cleanup, direct_client):
    """``POST /services/{id}/update?rollback=previous`` makes Swarm apply the service's
    PreviousSpec and ignore the body; the gate checks (and counts for the quota) the
    body only. 4x64m, scaled to 1, plus another 6x64m (448m of 512m), then rolled
    back to 4 replicas: 640m."""
    m = users["mallory"]

    def spec(name: str, replicas: int) -> dict:
        return {
            "Name": name,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "120"]},
                "Resources": {"Limits": {"MemoryBytes": 64 * MIB}},
            },
        }

    a, b = f"rv2-rb-a-{_rand()}", f"rv2-rb-b-{_rand()}"
    assert _service(m, spec(a, 4), cleanup)[0] == 201
    version = json.loads(m.request("GET", f"/v1.41/services/{a}").body)["Version"]["Index"]
    r = m.request("POST", f"/v1.41/services/{a}/update?version={version}", spec(a, 1))
    assert r.status == 200, (r.status, r.body)
    assert _service(m, spec(b, 6), cleanup)[0] == 201
    current = json.loads(m.request("GET", f"/v1.41/services/{a}").body)
    r = m.request(
        "POST",
        f"/v1.41/services/{a}/update?version={current['Version']['Index']}&rollback=previous",
        current["Spec"],
    )
    replicas = direct_client.services.get(a).attrs["Spec"]["Mode"]["Replicated"]["Replicas"]
    assert r.status == 403 and replicas == 1, (r.status, r.body, replicas)


def test_cpu_cap_not_bypassed_by_a_negative_cpu_quota_update(users, cleanup, direct_client):
    """``CpuQuota: -1`` on update means "no CPU limit" to dockerd (its conflict checks
    only look at values > 0); the gate computes 0 CPUs from it and lets it pass."""
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"CpuPeriod": 100000, "CpuQuota": 200000},  # 2 CPUs: the cap
        },
        cleanup,
    )
    r = m.request("POST", f"/v1.41/containers/{cid}/update", {"CpuQuota": -1})
    host = direct_client.containers.get(cid).attrs["HostConfig"]
    assert host["CpuQuota"] > 0 or host["NanoCpus"] > 0, (r.status, r.body, host["CpuQuota"])


# --------------------------------------------------------------- leaks and exec


def test_volume_create_does_not_reveal_another_users_volume(users, cleanup):
    """``volume create`` of an existing name returns that volume (local driver): its
    labels, owner and mountpoint. Another user's volume must answer like any refusal,
    not with its details."""
    name = f"rv2-vol-{_rand()}"
    cleanup.append(("volume", name))
    r = users["victim"].request(
        "POST", "/v1.41/volumes/create", {"Name": name, "Labels": {"project": "hush"}}
    )
    assert r.status == 201
    r = users["mallory"].request("POST", "/v1.41/volumes/create", {"Name": name})
    assert b"rv-victim" not in r.body and b"hush" not in r.body, (r.status, r.body)


def test_exec_root_refused_through_a_uid0_alias_in_the_image(users, cleanup):
    """exec.root: false checks the spelling of ``User`` (root, 0, 00, +0); a name the
    image's /etc/passwd maps to uid 0 (any member can build one) is root too."""
    m = users["mallory"]
    image = f"dgt-review2-alias-{_rand()}:1"
    r = build(m, f"t={image}", "FROM busybox\nRUN echo toor:x:0:0::/:/bin/sh >> /etc/passwd\n")
    assert r.status == 200 and b"errorDetail" not in r.body, r.body[-300:]
    cleanup.append(("image", image))
    cid = created(m, {"Image": image, "Cmd": ["sleep", "60"], "User": "1000"}, cleanup)
    assert start(m, cid).status == 204
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["sh", "-c", "test $(id -u) = 0"], "User": "toor"},
    )
    if r.status == 201:
        eid = json.loads(r.body)["Id"]
        m.request("POST", f"/v1.41/exec/{eid}/start", {"Detach": True})
        time.sleep(1)
        code = json.loads(m.request("GET", f"/v1.41/exec/{eid}/json").body)["ExitCode"]
        assert code != 0, "exec ran as uid 0"
    assert r.status == 403, (r.status, r.body)


# --------------------------------------------------------------- the neighbours


def test_service_mounts_of_exact_types_work(users, cleanup, area):
    m = users["mallory"]
    status, body = _service(
        m,
        {
            "Name": f"rv2-mounts-{_rand()}",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Command": ["true"],
                    "Mounts": [
                        {"Type": "volume", "Source": f"rv2v-{_rand()}", "Target": "/v"},
                        {"Type": "tmpfs", "Target": "/t"},
                        {"Type": "bind", "Source": str(area / "data"), "Target": "/d"},
                    ],
                }
            },
        },
        cleanup,
    )
    assert status == 201, body


def test_rollback_within_the_quota_works(users, cleanup):
    m = users["victim"]
    name = f"rv2-rb-ok-{_rand()}"
    spec = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Command": ["sleep", "120"]},
            "Resources": {"Limits": {"MemoryBytes": 32 * MIB}},
        },
    }
    assert _service(m, spec, cleanup)[0] == 201
    current = json.loads(m.request("GET", f"/v1.41/services/{name}").body)
    r = m.request(
        "POST", f"/v1.41/services/{name}/update?version={current['Version']['Index']}", spec
    )
    assert r.status == 200, (r.status, r.body)
    current = json.loads(m.request("GET", f"/v1.41/services/{name}").body)
    r = m.request(
        "POST",
        f"/v1.41/services/{name}/update?version={current['Version']['Index']}&rollback=previous",
        current["Spec"],
    )
    assert r.status == 200, (r.status, r.body)


def test_own_volume_create_again_and_exec_as_a_uid_or_the_containers_user_work(users, cleanup):
    m = users["mallory"]
    name = f"rv2-own-{_rand()}"
    cleanup.append(("volume", name))
    for _ in range(2):  # creating one's own volume again is idempotent, as on dockerd
        assert m.request("POST", "/v1.41/volumes/create", {"Name": name}).status == 201
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "60"], "User": "nobody"}, cleanup)
    assert start(m, cid).status == 204
    for user in ("1000", "1000:1000", "nobody", ""):
        r = m.request("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["id"], "User": user})
        assert r.status == 201, (user, r.status, r.body)


def test_container_name_taken_by_another_user_does_not_leak_its_id(users, cleanup):
    name = f"rv2-name-{_rand()}"
    created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup, name=name)
    r = first_round.create(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, name)
    assert r.status == 409 and b"already in use" in r.body, (r.status, r.body)
    assert b"by container" not in r.body, r.body
    created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup, name=name + "-m")
