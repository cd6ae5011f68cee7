"""Findings of a security review, each with the legitimate neighbour that must keep
working. Every attack here succeeded before the fixes that came with these tests.

They use their own gate with a small test profile (an allowed bind root mounted
nosymfollow in a temp dir, a 512m memory quota, 2 CPUs, ports 8000-8999, no exec as
root, one shared volume) and raw requests as members.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ENV_DOCKER_HOST, Gate
from tests.integration.test_hostile import Raw, Reply

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20


def _rand() -> str:
    return uuid.uuid4().hex[:8]


# The review gate, its area and its users are started once per session (in
# tests/integration/conftest.py) and shared by every module that imports these
# fixtures: each module used to start its own identical gate.


@pytest.fixture(scope="module")
def area(review_area: Path) -> Path:
    return review_area


@pytest.fixture(scope="module")
def shared_name(review_shared_name: str) -> str:
    return review_shared_name


@pytest.fixture(scope="module")
def rgate(review_gate: Gate) -> Gate:
    return review_gate


@pytest.fixture(scope="module")
def users(rgate: Gate, review_users: dict[str, int]) -> dict[str, Raw]:
    return {short: Raw(str(rgate.socket), uid) for short, uid in review_users.items()}


@pytest.fixture
def cleanup(direct_client) -> Iterator[list[tuple[str, str]]]:
    """Append (kind, id-or-name); removed directly on the daemon after the test."""
    items: list[tuple[str, str]] = []
    yield items
    for kind, ref in reversed(items):
        with contextlib.suppress(Exception):
            if kind == "container":
                direct_client.containers.get(ref).remove(force=True)
            elif kind == "network":
                direct_client.networks.get(ref).remove()
            elif kind == "volume":
                direct_client.volumes.get(ref).remove(force=True)
            elif kind == "service":
                direct_client.services.get(ref).remove()
            elif kind == "image":
                direct_client.images.remove(ref, force=True)
            elif kind == "secret":
                direct_client.secrets.get(ref).remove()


def create(raw: Raw, body: dict, name: str | None = None) -> Reply:
    q = f"?name={name}" if name else ""
    return raw.request("POST", f"/v1.41/containers/create{q}", body)


def created(raw: Raw, body: dict, cleanup, name: str | None = None) -> str:
    r = create(raw, body, name)
    assert r.status == 201, (r.status, r.body)
    cid = json.loads(r.body)["Id"]
    cleanup.append(("container", cid))
    return cid


def start(raw: Raw, cid: str) -> Reply:
    return raw.request("POST", f"/v1.41/containers/{cid}/start")


def context_tar(dockerfile: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(raw: Raw, query: str, dockerfile: str) -> Reply:
    return raw.request(
        "POST", f"/v1.41/build?{query}", context_tar(dockerfile), ctype="application/x-tar"
    )


def network(raw: Raw, name: str, cleanup) -> str:
    r = raw.request("POST", "/v1.41/networks/create", {"Name": name, "Driver": "bridge"})
    assert r.status == 201, (r.status, r.body)
    nid = json.loads(r.body)["Id"]
    cleanup.append(("network", nid))
    return nid


# --------------------------------------------------------------- host access


def test_seccomp_null_profile_refused(users):
    """``seccomp=null`` decodes to an empty profile, which dockerd reads as
    'seccomp disabled' (setupSeccomp: no default action and no syscalls). The gate
    only refuses 'unconfined' and values starting with '{'."""
    r = create(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"SecurityOpt": ["seccomp=null"]}},
    )
    assert r.status == 403, (r.status, r.body)


def test_bind_source_swapped_for_symlink_after_create(users, area, cleanup, direct_client):
    """The bind source is realpath-checked at create; the daemon follows symlinks when
    it mounts at *start*. Replacing the checked directory by a symlink in between
    (the user owns it) mounts anything on the host."""
    src = area / "data" / f"x-{_rand()}"
    src.mkdir()
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["cat", "/h/flag"], "HostConfig": {"Binds": [f"{src}:/h"]}},
        cleanup,
    )
    src.rmdir()
    os.symlink(area / "secret", src)
    r = start(users["mallory"], cid)
    if r.status == 204:
        direct_client.containers.get(cid).wait(timeout=30)
        logs = direct_client.containers.get(cid).logs().decode()
        assert "REVIEW-FLAG" not in logs, "read a file outside the allowed bind root"


# --------------------------------------------------------------- shared images


@pytest.fixture
def victim_tag(direct_client) -> Iterator[str]:
    """An existing tag (made by an admin) that members must not move."""
    repo = f"dgt-review-victim-{_rand()}"
    direct_client.images.get("busybox:latest").tag(repo, "v1")
    yield repo
    with contextlib.suppress(Exception):
        direct_client.images.remove(f"{repo}:v1", force=True)


def test_tag_cannot_move_existing_tag_with_repo_holding_the_tag(users, victim_tag):
    normal = users["mallory"].request(
        "POST", f"/v1.41/images/busybox:latest/tag?repo={victim_tag}&tag=v1"
    )
    assert normal.status == 403, normal.body  # handled: the plain form is refused
    r = users["mallory"].request("POST", f"/v1.41/images/busybox:latest/tag?repo={victim_tag}:v1")
    assert r.status == 403, (r.status, r.body)


def test_commit_cannot_move_existing_tag(users, victim_tag, cleanup):
    cid = created(users["mallory"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    r = users["mallory"].request(
        "POST", f"/v1.41/commit?container={cid}&repo={victim_tag}&tag=v1", {}
    )
    assert r.status == 403, (r.status, r.body)


def test_import_cannot_move_existing_tag(users, victim_tag):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    r = users["mallory"].request(
        "POST",
        f"/v1.41/images/create?fromSrc=-&repo={victim_tag}&tag=v1",
        buf.getvalue(),
        ctype="application/x-tar",
    )
    assert r.status == 403, (r.status, r.body)


def test_build_cannot_move_existing_tag(users, victim_tag):
    r = build(users["mallory"], f"t={victim_tag}:v1", "FROM busybox\nLABEL x=y\n")
    assert r.status == 403, (r.status, r.body[-300:])


def during_victim_build(users, base: str, probe, looks: int = 6) -> list:
    """Run the victim's classic build FROM ``base``, whose RUN step's command holds a
    marker; once its RUN container exists (asked of the daemon directly), call
    ``probe(marker)`` as mallory up to ``looks`` times, 0.5 s apart, until it reports
    something; then remove that container (which ends the build) and return what the
    probe reported. The RUN step sleeps long; nobody waits it out."""
    import docker

    marker = f"MARK{_rand()}"
    done = threading.Event()

    def victim_build() -> None:
        try:
            build(users["victim"], "nocache=1", f"FROM {base}\nRUN sleep 120 && echo {marker}\n")
        finally:
            done.set()

    client = docker.APIClient(base_url=os.environ[ENV_DOCKER_HOST], version="auto")
    t = threading.Thread(target=victim_build, daemon=True)
    t.start()
    seen: list = []
    running: list[dict] = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not done.is_set():
            running = [c for c in client.containers(all=True) if marker in (c.get("Command") or "")]
            if running:
                break
            time.sleep(0.2)
        for _ in range(looks if running else 0):
            seen = probe(marker)
            if seen or done.is_set():
                break
            time.sleep(0.5)
    finally:
        for c in running:
            with contextlib.suppress(Exception):
                client.remove_container(c["Id"], force=True)
        t.join(60)
        client.close()
    return seen


def victim_build_seen_by_mallory(users, base: str) -> list[dict]:
    """The victim's build containers that mallory's container list shows while the
    build's RUN step runs."""

    def probe(marker: str) -> list[dict]:
        r = users["mallory"].request("GET", "/v1.41/containers/json?all=1")
        return [c for c in json.loads(r.body) if marker in (c.get("Command") or "")]

    return during_victim_build(users, base, probe)


def test_build_container_of_other_user_not_owned_through_base_image_label(
    users, direct_client, cleanup
):
    """Built images carry ``dockergate.owner``; a legacy build's RUN containers inherit
    the base image's labels, so the base image's author owns (sees, execs into,
    copies from) other users' build containers."""
    base = f"dgt-review-base-{_rand()}"
    r = build(users["mallory"], f"t={base}:1", "FROM busybox\nRUN true\n")
    assert r.status == 200, r.body[-300:]
    cleanup.append(("image", f"{base}:1"))
    seen = victim_build_seen_by_mallory(users, f"{base}:1")
    assert not seen, f"mallory sees the victim's build container: {seen[0]['Id'][:12]}"


# --------------------------------------------------------------- networks


def test_network_name_with_colon_is_owner_checked(users, cleanup):
    name = f"v:net-{_rand()}"
    network(users["victim"], name, cleanup)
    r = create(
        users["mallory"], {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": name}}
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert r.status == 403, (r.status, r.body)


def test_endpoint_network_id_cannot_point_at_another_users_network(users, cleanup):
    """dockerd's getNetworkID prefers EndpointSettings.NetworkID over the key (and
    over the connect path's network) for user-defined networks."""
    own = f"rv-own-{_rand()}"
    network(users["mallory"], own, cleanup)
    theirs = network(users["victim"], f"rv-theirs-{_rand()}", cleanup)
    r = create(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"NetworkMode": own},
            "NetworkingConfig": {"EndpointsConfig": {own: {"NetworkID": theirs}}},
        },
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert r.status == 403, (r.status, r.body)


def test_network_connect_network_id_cannot_point_at_another_users_network(
    users, cleanup, direct_client
):
    own = f"rv-own-{_rand()}"
    network(users["mallory"], own, cleanup)
    theirs = network(users["victim"], f"rv-theirs-{_rand()}", cleanup)
    cid = created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": {"NetworkMode": own}},
        cleanup,
    )
    assert start(users["mallory"], cid).status == 204
    r = users["mallory"].request(
        "POST",
        f"/v1.41/networks/{own}/connect",
        {"Container": cid, "EndpointConfig": {"NetworkID": theirs}},
    )
    attached = direct_client.networks.get(theirs).attrs.get("Containers") or {}
    assert r.status == 403 and cid not in attached, (r.status, r.body, list(attached))


def test_build_cannot_join_another_users_network(users, cleanup):
    theirs = network(users["victim"], f"rv-theirs-{_rand()}", cleanup)
    r = build(users["mallory"], f"networkmode={theirs}&nocache=1", "FROM busybox\nRUN true\n")
    assert r.status == 403, (r.status, r.body[-300:])


# --------------------------------------------------------------- volumes


def test_shared_volume_name_cannot_be_squatted(users, shared_name, cleanup, direct_client):
    """A profile's shared volume that does not exist yet is created by the gate with
    the first user's owner label: that user then owns (and can fill or delete) the
    volume every other member mounts as 'shared'."""
    cleanup.append(("volume", shared_name))
    r = create(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": [f"{shared_name}:/s:ro"]}},
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    labels: dict[str, str] = {}
    with contextlib.suppress(Exception):
        labels = direct_client.volumes.get(shared_name).attrs.get("Labels") or {}
    assert labels.get("dockergate.owner") != "rv-mallory", labels


# --------------------------------------------------------------- quotas and caps


def _run_with_memory(raw: Raw, cleanup, mib: int) -> str:
    cid = created(
        raw,
        {"Image": "busybox", "Cmd": ["sleep", "120"], "HostConfig": {"Memory": mib * MIB}},
        cleanup,
    )
    assert start(raw, cid).status == 204
    return cid


def test_quota_applies_when_restarting_a_stopped_container(users, cleanup, direct_client):
    m = users["victim"]
    c1 = _run_with_memory(m, cleanup, 256)
    _run_with_memory(m, cleanup, 256)  # 512m of 512m used
    direct_client.containers.get(c1).stop(timeout=0)
    _run_with_memory(m, cleanup, 256)  # allowed: c1 is stopped
    r = start(m, c1)  # would make 768m
    assert r.status == 403, (r.status, r.body)


def test_quota_applies_to_docker_update(users, cleanup):
    m = users["victim"]
    _run_with_memory(m, cleanup, 256)
    _run_with_memory(m, cleanup, 200)
    c3 = _run_with_memory(m, cleanup, 32)  # 488m of 512m
    r = m.request(
        "POST",
        f"/v1.41/containers/{c3}/update",
        {"Memory": 256 * MIB, "MemorySwap": 256 * MIB},
    )
    assert r.status == 403, (r.status, r.body)  # would make 712m


def test_quota_counts_replicated_job_concurrency(users, cleanup):
    name = f"rv-job-{_rand()}"
    cleanup.append(("service", name))
    r = users["mallory"].request(
        "POST",
        "/v1.41/services/create",
        {
            "Name": name,
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 10, "TotalCompletions": 10}},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "busybox", "Command": ["true"]},
                "Resources": {"Limits": {"MemoryBytes": 256 * MIB}},
            },
        },
    )
    assert r.status == 403, (r.status, r.body)  # 10 x 256m at once, quota 512m


def test_cpu_cap_not_bypassed_by_update_against_a_small_period(users, cleanup, direct_client):
    m = users["mallory"]
    cid = created(
        m,
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"CpuPeriod": 1000, "CpuQuota": 2000},  # 2 CPUs: the cap
        },
        cleanup,
    )
    r = m.request("POST", f"/v1.41/containers/{cid}/update", {"CpuQuota": 200000})
    host = direct_client.containers.get(cid).attrs["HostConfig"]
    cpus = host["CpuQuota"] / host["CpuPeriod"] if host["CpuQuota"] > 0 else 0
    assert r.status == 403 and cpus <= 2, (r.status, cpus)


def test_publish_all_ports_respects_the_port_range(users, cleanup):
    r = create(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"PublishAllPorts": True, "PortBindings": {"81/tcp": [{"HostPort": ""}]}},
        },
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert r.status == 403, (r.status, r.body)  # random host ports: outside 8000-8999


# --------------------------------------------------------------- exec and placement


def test_exec_root_refused_in_numeric_forms(users, cleanup):
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "60"], "User": "1000"}, cleanup)
    assert start(m, cid).status == 204
    neighbour = m.request("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["id"], "User": "0"})
    assert neighbour.status == 403
    for user in ("00", "+0", "0000:0"):
        r = m.request("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["id"], "User": user})
        assert r.status == 403, (user, r.status, r.body)


def test_no_containers_on_managers_also_covers_build_steps(users):
    neighbour = create(users["pintern"], {"Image": "busybox", "Cmd": ["true"]})
    assert neighbour.status == 403
    r = build(users["pintern"], "nocache=1", "FROM busybox\nRUN echo on-the-manager\n")
    assert r.status == 403, (r.status, r.body[-300:])


# --------------------------------------------------------------- the neighbours


def test_rebuilding_and_retagging_ones_own_image_works(users, cleanup):
    m = users["mallory"]
    name = f"dgt-review-own-{_rand()}"
    for _ in range(2):  # the second build moves the tag of mallory's own first build
        r = build(m, f"t={name}:dev&nocache=1", "FROM busybox\nRUN true\n")
        assert r.status == 200 and b"errorDetail" not in r.body, r.body[-300:]
    cleanup.append(("image", f"{name}:dev"))
    r = m.request("POST", f"/v1.41/images/{name}:dev/tag?repo={name}&tag=v1")
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{name}:v1"))
    victim = users["victim"].request("POST", f"/v1.41/images/busybox:latest/tag?repo={name}:dev")
    assert victim.status == 403, (victim.status, victim.body)  # not the victim's build


def test_commit_to_a_new_tag_with_harmless_changes_works(users, cleanup, direct_client):
    m = users["mallory"]
    cid = created(m, {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    name = f"dgt-review-commit-{_rand()}"
    r = m.request(
        "POST",
        f"/v1.41/commit?container={cid}&repo={name}&tag=v1&changes=ENV%20A%3Db"
        "&changes=LABEL%20team%3Dml",
        {"Labels": {"dockergate.owner": "rv-victim", "x": "y"}},
    )
    assert r.status == 201, (r.status, r.body)
    cleanup.append(("image", f"{name}:v1"))
    labels = direct_client.images.get(f"{name}:v1").labels
    assert labels["dockergate.owner"] == "" and labels["dockergate.built-by"] == "rv-mallory"
    assert labels["x"] == "y" and labels["team"] == "ml"
    refused = m.request(
        "POST",
        f"/v1.41/commit?container={cid}&repo={name}&tag=v2&changes=LABEL%20dockergate.owner%3Dx",
    )
    assert refused.status == 403, (refused.status, refused.body)


def test_own_networks_by_any_name_and_id_work(users, cleanup):
    m = users["mallory"]
    name = f"m:net-{_rand()}"
    nid = network(m, name, cleanup)
    body = {
        "Image": "busybox",
        "Cmd": ["true"],
        "HostConfig": {"NetworkMode": name},
        "NetworkingConfig": {"EndpointsConfig": {name: {"NetworkID": nid}}},
    }
    created(m, body, cleanup)
    created(
        m, {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}}, cleanup
    )


def test_shared_volume_made_by_an_admin_mounts_read_only(
    users, shared_name, cleanup, direct_client
):
    direct_client.volumes.create(shared_name)
    cleanup.append(("volume", shared_name))
    created(
        users["mallory"],
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": [f"{shared_name}:/s:ro"]}},
        cleanup,
    )
    r = users["mallory"].request("POST", "/v1.41/volumes/create", {"Name": shared_name})
    assert r.status == 403, (r.status, r.body)


def test_restart_and_update_within_the_quota_work(users, cleanup):
    m = users["victim"]
    c1 = _run_with_memory(m, cleanup, 128)
    assert m.request("POST", f"/v1.41/containers/{c1}/restart?t=0").status == 204
    r = m.request(
        "POST", f"/v1.41/containers/{c1}/update", {"Memory": 192 * MIB, "MemorySwap": 192 * MIB}
    )
    assert r.status == 200, (r.status, r.body)


def test_docker_load_is_for_admins(users):
    r = users["mallory"].request("POST", "/v1.41/images/load", b"", ctype="application/x-tar")
    assert r.status == 403 and b"registry" in r.body, (r.status, r.body)


def test_no_new_privileges_works(users, cleanup):
    created(
        users["mallory"],
        {
            "Image": "busybox",
            "Cmd": ["true"],
            "HostConfig": {"SecurityOpt": ["no-new-privileges"]},
        },
        cleanup,
    )
