"""Ownership through the gate with the real docker CLI: two members and an admin.

bob's objects must be invisible and untouchable for alice by name, full ID and
short ID prefix; every refusal has a neighbouring test where the legitimate action
works. Users are real unix users; the CLI runs as them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid

import docker
import pytest

pytestmark = pytest.mark.timeout(300)

OWNER = "dockergate.owner"


@pytest.fixture(scope="module")
def members(gate, unix_user):
    """alice and bob, registered as members on the gate, plus their TLS bundles."""
    out = {}
    for short in ("alice", "bob"):
        login, uid, _gid = unix_user(short)
        name = f"m-{short}"
        gate.dockergate("user", "add", name, "--profile", "member", "--uid", str(uid))
        bundle = gate.state_dir / "bundles" / name
        gate.dockergate("user", "cert", name, "--out", str(bundle))
        for path in [bundle, *bundle.iterdir()]:
            os.chown(path, uid, -1)
        out[short] = {"login": login, "uid": uid, "name": name, "bundle": bundle}
    return out


def run_as(cli, members, who, args, **kw):
    return cli(args, user=members[who]["login"], **kw)


@pytest.fixture(scope="module")
def bob_objects(cli, members, direct_client):
    tag = uuid.uuid4().hex[:6]
    c = f"bob-c-{tag}"
    v = f"bob-v-{tag}"
    r = run_as(
        cli,
        members,
        "bob",
        ["run", "-d", "--name", c, "-v", f"{v}:/data", "busybox", "sleep", "600"],
    )
    assert r.returncode == 0, r.stderr
    full = r.stdout.strip()
    stopped = f"bob-stopped-{tag}"
    r = run_as(cli, members, "bob", ["create", "--name", stopped, "busybox", "true"])
    assert r.returncode == 0, r.stderr
    yield {"container": c, "id": full, "volume": v, "stopped": stopped}
    for name in (c, stopped):
        try:
            direct_client.containers.get(name).remove(force=True)
        except Exception:
            pass
    try:
        direct_client.volumes.get(v).remove(force=True)
    except Exception:
        pass


def test_created_objects_carry_owner(direct_client, bob_objects, members):
    c = direct_client.containers.get(bob_objects["container"])
    assert c.labels[OWNER] == members["bob"]["name"]
    v = direct_client.volumes.get(bob_objects["volume"])
    assert v.attrs["Labels"][OWNER] == members["bob"]["name"]


@pytest.mark.parametrize("form", ["name", "id", "prefix"])
@pytest.mark.parametrize(
    "verb",
    [
        ["inspect"],
        ["logs"],
        ["exec", "{}", "true"],
        ["stop", "-t", "0"],
        ["rm", "-f"],
        ["rename", "{}", "stolen"],
        ["commit"],
        ["cp", "{}:/etc/passwd", "/tmp/x"],
        ["stats", "--no-stream"],
        ["top"],
        ["export", "-o", "/tmp/dgt-export-{}.tar"],
        ["update", "--memory", "64m"],
        ["kill"],
        ["pause"],
        ["restart", "-t", "0"],
        ["attach", "--no-stdin"],
        ["wait"],
        ["port"],
        ["diff"],
    ],
    ids=lambda v: v[0],
)
def test_alice_cannot_touch_bobs_container(cli, members, bob_objects, direct_client, verb, form):
    ref = {
        "name": bob_objects["container"],
        "id": bob_objects["id"],
        "prefix": bob_objects["id"][:6],
    }[form]
    args = [a.format(ref) if "{}" in a else a for a in verb]
    if verb[0] == "export" or not any("{}" in a for a in verb):
        args.append(ref)
    r = run_as(cli, members, "alice", args, timeout=60)
    if verb[0] != "rm":  # `rm -f` of a missing container exits 0, with the message
        assert r.returncode != 0, (args, r.stdout)
    # Exactly what the CLI says for a container that does not exist.
    assert "No such container" in r.stderr or "No such object" in r.stderr, r.stderr
    assert direct_client.containers.get(bob_objects["id"]).status == "running"


def test_alice_can_touch_her_own(cli, members):
    name = f"alice-c-{uuid.uuid4().hex[:6]}"
    r = run_as(cli, members, "alice", ["run", "-d", "--name", name, "busybox", "sleep", "300"])
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    for args in (
        ["inspect", name],
        ["inspect", cid[:6]],
        ["exec", name, "echo", "in"],
        ["logs", name],
        ["top", name],
        ["stats", "--no-stream", name],
        ["update", "--memory", "64m", "--memory-swap", "64m", name],
        ["rename", name, name + "-r"],
        ["stop", "-t", "0", name + "-r"],
        ["rm", name + "-r"],
    ):
        r = run_as(cli, members, "alice", args, timeout=60)
        assert r.returncode == 0, (args, r.stderr)


def test_lists_show_only_own(cli, members, bob_objects):
    r = run_as(cli, members, "alice", ["ps", "-a", "--format", "{{.Names}}"])
    assert r.returncode == 0, r.stderr
    assert bob_objects["container"] not in r.stdout
    r = run_as(cli, members, "bob", ["ps", "-a", "--format", "{{.Names}}"])
    assert bob_objects["container"] in r.stdout
    # A client filter cannot widen the owner filter.
    r = run_as(
        cli, members, "alice", ["ps", "-a", "--filter", f"name={bob_objects['container']}", "-q"]
    )
    assert r.stdout.strip() == ""
    r = run_as(cli, members, "alice", ["volume", "ls", "-q"])
    assert bob_objects["volume"] not in r.stdout
    r = run_as(cli, members, "bob", ["volume", "ls", "-q"])
    assert bob_objects["volume"] in r.stdout


def test_admin_sees_all(cli, bob_objects):
    r = cli(["ps", "-a", "--format", "{{.Names}}"])
    assert bob_objects["container"] in r.stdout
    r = cli(["inspect", bob_objects["container"]])
    assert r.returncode == 0


@pytest.mark.parametrize(
    "flag",
    ["--volumes-from={c}", "--network=container:{c}", "--pid=container:{c}", "--ipc=container:{c}"],
)
def test_references_to_bobs_container_refused(cli, members, bob_objects, flag):
    r = run_as(
        cli,
        members,
        "alice",
        ["run", "--rm", flag.format(c=bob_objects["container"]), "busybox", "true"],
    )
    assert r.returncode != 0
    assert "dockergate:" in r.stderr and "belongs to someone else" in r.stderr, r.stderr


def test_references_to_own_container_work(cli, members):
    name = f"alice-ref-{uuid.uuid4().hex[:6]}"
    r = run_as(cli, members, "alice", ["run", "-d", "--name", name, "busybox", "sleep", "300"])
    assert r.returncode == 0, r.stderr
    try:
        r = run_as(
            cli,
            members,
            "alice",
            ["run", "--rm", f"--volumes-from={name}", f"--pid=container:{name}", "busybox", "true"],
        )
        assert r.returncode == 0, r.stderr
    finally:
        run_as(cli, members, "alice", ["rm", "-f", name])


def test_bobs_volume_refused_own_volume_works(cli, members, bob_objects):
    r = run_as(
        cli,
        members,
        "alice",
        ["run", "--rm", "-v", f"{bob_objects['volume']}:/x", "busybox", "true"],
    )
    assert r.returncode != 0 and "belongs to someone else" in r.stderr, r.stderr
    r = run_as(cli, members, "alice", ["volume", "inspect", bob_objects["volume"]])
    assert r.returncode != 0
    own = f"alice-v-{uuid.uuid4().hex[:6]}"
    r = run_as(cli, members, "alice", ["run", "--rm", "-v", f"{own}:/x", "busybox", "true"])
    assert r.returncode == 0, r.stderr
    r = run_as(cli, members, "alice", ["volume", "rm", own])
    assert r.returncode == 0, r.stderr


def test_forged_owner_label_does_not_stick(cli, members, direct_client):
    name = f"alice-forge-{uuid.uuid4().hex[:6]}"
    r = run_as(
        cli,
        members,
        "alice",
        [
            "create",
            "--name",
            name,
            "--label",
            f"{OWNER}={members['bob']['name']}",
            "--label",
            "dockergate.x=1",
            "busybox",
            "true",
        ],
    )
    assert r.returncode == 0, r.stderr
    try:
        labels = direct_client.containers.get(name).labels
        assert labels[OWNER] == members["alice"]["name"]
        assert "dockergate.x" not in labels
    finally:
        direct_client.containers.get(name).remove(force=True)


def test_prune_spares_bob(cli, members, bob_objects, direct_client):
    r = run_as(cli, members, "alice", ["container", "prune", "-f"])
    assert r.returncode == 0, r.stderr
    direct_client.containers.get(bob_objects["stopped"])  # still there


def test_events_show_only_own(cli, members, bob_objects):
    since = str(int(time.time()) - 1)
    name = f"alice-ev-{uuid.uuid4().hex[:6]}"
    run_as(cli, members, "alice", ["run", "--rm", "--name", name, "busybox", "true"])
    run_as(cli, members, "bob", ["exec", bob_objects["container"], "true"])
    until = str(int(time.time()) + 1)
    r = run_as(
        cli,
        members,
        "alice",
        ["events", "--since", since, "--until", until, "--format", "{{json .}}"],
    )
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    names = {e.get("Actor", {}).get("Attributes", {}).get("name") for e in events}
    assert name in names
    assert bob_objects["container"] not in names
    r = run_as(
        cli,
        members,
        "bob",
        ["events", "--since", since, "--until", until, "--format", "{{json .}}"],
    )
    assert "exec_start" in r.stdout


def test_tls_member_bundle(cli, members, bob_objects, direct_client):
    bundle = members["alice"]["bundle"]
    name = f"alice-tls-{uuid.uuid4().hex[:6]}"
    r = cli(
        ["run", "-d", "--name", name, "busybox", "sleep", "60"], listener="tls", cert_dir=bundle
    )
    assert r.returncode == 0, r.stderr
    try:
        assert direct_client.containers.get(name).labels[OWNER] == members["alice"]["name"]
        r = cli(["inspect", bob_objects["container"]], listener="tls", cert_dir=bundle)
        assert r.returncode != 0 and "No such object" in r.stderr, r.stderr
    finally:
        direct_client.containers.get(name).remove(force=True)


def test_stack_deploy_as_member(cli, members, direct_client):
    import tempfile

    tmp_path = __import__("pathlib").Path(tempfile.mkdtemp(prefix="dgt-stack-"))
    os.chmod(tmp_path, 0o755)
    stack = f"st{uuid.uuid4().hex[:6]}"
    compose = tmp_path / "stack.yml"
    compose.write_text(
        "version: '3.8'\nservices:\n  app:\n    image: busybox\n    command: sleep 600\n"
        "    networks: [back]\n    secrets: [s1]\n    configs: [c1]\n"
        "networks:\n  back: {}\nsecrets:\n  s1:\n    file: ./s1.txt\nconfigs:\n  c1:\n    file: ./c1.txt\n"
    )
    (tmp_path / "s1.txt").write_text("secret")
    (tmp_path / "c1.txt").write_text("config")
    for p in (tmp_path, compose, tmp_path / "s1.txt", tmp_path / "c1.txt"):
        os.chown(p, members["alice"]["uid"], -1)
    r = run_as(cli, members, "alice", ["stack", "deploy", "-c", str(compose), stack], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    try:
        service = direct_client.services.get(f"{stack}_app")
        spec = service.attrs["Spec"]
        assert spec["Labels"][OWNER] == members["alice"]["name"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Labels"][OWNER] == members["alice"]["name"]
        for obj in (
            direct_client.networks.get(f"{stack}_back").attrs["Labels"],
            direct_client.secrets.get(f"{stack}_s1").attrs["Spec"]["Labels"],
            direct_client.configs.get(f"{stack}_c1").attrs["Spec"]["Labels"],
        ):
            assert obj[OWNER] == members["alice"]["name"]
        r = run_as(cli, members, "alice", ["stack", "ls"])
        assert stack in r.stdout
        r = run_as(cli, members, "bob", ["stack", "ls"])
        assert stack not in r.stdout
        r = run_as(cli, members, "bob", ["service", "inspect", f"{stack}_app"])
        assert r.returncode != 0
        r = run_as(cli, members, "bob", ["stack", "rm", stack])
        assert direct_client.services.get(f"{stack}_app")  # bob removed nothing
        r = run_as(cli, members, "alice", ["stack", "ps", stack])
        assert r.returncode == 0, r.stderr
    finally:
        r = run_as(cli, members, "alice", ["stack", "rm", stack])
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 60
        while time.time() < deadline and direct_client.networks.list(names=[f"{stack}_back"]):
            time.sleep(0.5)


def test_unknown_route_denied_for_member(cli, members):
    # GET /swarm is readable (docker-py reads it), its join tokens are not.
    r = run_as(cli, members, "alice", ["swarm", "join-token", "worker"])
    assert "join tokens are for admins only" in r.stdout and "SWMTKN" not in r.stdout, r
    r = run_as(cli, members, "alice", ["swarm", "unlock-key"])
    assert r.returncode != 0 and "admins only" in r.stderr, r.stderr
    r = run_as(cli, members, "alice", ["plugin", "ls"])
    assert r.returncode != 0 and "dockergate:" in r.stderr


def test_raw_unknown_route_default_deny(gate, members):
    out = subprocess.run(
        [
            "setpriv",
            f"--reuid={members['alice']['uid']}",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "--unix-socket",
            str(gate.socket),
            "http://d/v1.41/debug/pprof/",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "not an API route dockergate knows" in out.stdout, out


def test_docker_compose_up_as_member(cli, members, direct_client):
    """Debian's docker-compose (v1, docker-py inside) works for a member, and what it
    creates is the member's."""
    import shutil
    import tempfile
    from pathlib import Path

    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed")
    d = Path(tempfile.mkdtemp(prefix="dgt-compose-"))
    os.chmod(d, 0o755)
    (d / "docker-compose.yml").write_text(
        "version: '3.8'\nservices:\n  web:\n    image: busybox\n    command: sleep 300\n"
        "    stop_grace_period: 1s\n"  # sleep as pid 1 ignores SIGTERM: down waits this
        "    volumes: [data:/data]\n    networks: [back]\nvolumes:\n  data: {}\nnetworks:\n  back: {}\n"
    )
    project = f"cmp{uuid.uuid4().hex[:6]}"
    compose = ["docker-compose", "-p", project]
    r = run_as(cli, members, "alice", [*compose, "up", "-d"], shell=True, cwd=d)
    try:
        assert r.returncode == 0, r.stderr
        c = direct_client.containers.get(f"{project}_web_1")
        assert c.labels[OWNER] == members["alice"]["name"]
        assert (
            direct_client.volumes.get(f"{project}_data").attrs["Labels"][OWNER]
            == members["alice"]["name"]
        )
        r = run_as(cli, members, "bob", ["ps", "-a", "--format", "{{.Names}}"])
        assert f"{project}_web_1" not in r.stdout
        # Again: the gate's rewrites (network references pinned to IDs) do not make
        # compose see a changed container; a restart joins the same network.
        r = run_as(cli, members, "alice", [*compose, "up", "-d"], shell=True, cwd=d)
        assert r.returncode == 0 and "up-to-date" in r.stderr, r.stderr
        assert direct_client.containers.get(f"{project}_web_1").id == c.id
        r = run_as(cli, members, "alice", [*compose, "restart", "-t", "0"], shell=True, cwd=d)
        assert r.returncode == 0, r.stderr
        networks = direct_client.api.inspect_container(c.id)["NetworkSettings"]["Networks"]
        assert list(networks) == [f"{project}_back"], networks
    finally:
        r = run_as(cli, members, "alice", [*compose, "down", "-v"], shell=True, cwd=d)
        assert r.returncode == 0, r.stderr


def test_owner_label_inherited_from_an_image_does_not_count(cli, members, direct_client, tmp_path):
    """An image labelled dockergate.owner=bob (built on the daemon directly) gives a
    container of alice's no claim to be bob's: the gate's stamp wins."""
    import io
    import tarfile

    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        data = f"FROM busybox\nLABEL {OWNER}={members['bob']['name']}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = f"forged:{uuid.uuid4().hex[:6]}"
    direct_client.images.build(fileobj=io.BytesIO(ctx.getvalue()), custom_context=True, tag=tag)
    name = f"alice-img-{uuid.uuid4().hex[:6]}"
    try:
        r = run_as(cli, members, "alice", ["create", "--name", name, tag, "true"])
        assert r.returncode == 0, r.stderr
        assert direct_client.containers.get(name).labels[OWNER] == members["alice"]["name"]
        r = run_as(cli, members, "bob", ["ps", "-a", "--format", "{{.Names}}"])
        assert name not in r.stdout
    finally:
        try:
            direct_client.containers.get(name).remove(force=True)
        except Exception:
            pass
        direct_client.images.remove(tag, force=True)


def test_images_shared_but_not_overwritten(cli, members, direct_client):
    new_tag = f"alice-tag:{uuid.uuid4().hex[:6]}"
    r = run_as(cli, members, "alice", ["tag", "busybox", new_tag])
    assert r.returncode == 0, r.stderr  # a new name is fine
    try:
        r = run_as(cli, members, "alice", ["tag", new_tag, "busybox:latest"])
        assert r.returncode != 0 and "that tag exists" in r.stderr, r.stderr
        r = run_as(cli, members, "bob", ["rmi", new_tag])
        assert r.returncode != 0 and "yours to remove" in r.stderr, r.stderr
        r = run_as(cli, members, "alice", ["images", "-q"])
        assert r.returncode == 0 and r.stdout.strip()
        # The name is alice's (she made it): she may take it back (review 22b).
        r = run_as(cli, members, "alice", ["rmi", new_tag])
        assert r.returncode == 0 and "Untagged" in r.stdout, r.stderr
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            direct_client.images.remove(new_tag)


def test_system_df_shows_only_own(cli, members, bob_objects):
    r = run_as(cli, members, "alice", ["system", "df", "-v", "--format", "{{json .}}"])
    assert r.returncode == 0, r.stderr
    assert bob_objects["container"] not in r.stdout and bob_objects["volume"] not in r.stdout
    r = run_as(cli, members, "bob", ["system", "df", "-v", "--format", "{{json .}}"])
    assert bob_objects["container"] in r.stdout and bob_objects["volume"] in r.stdout
