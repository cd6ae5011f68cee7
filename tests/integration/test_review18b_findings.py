"""Review round 18b: the limits new in this round (log caps, execs per container and
exec size, secret and config quotas, the pids share, one-part ``Binds``, the events
memory of pruned objects, ``user cert --out``), attacked by a member and used as a
member would.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (the limit holds, or the tool that predicts it agrees with the gate). The
``test_works_*`` tests pass and pin what held and the legitimate neighbours.

They reuse the first round's gate, profile (``secrets: 60``, the default pids and
log rules), users and cleanup (tests/integration/test_review_findings.py), raw
requests as members and the docker CLI run as a member's unix user. Parallel
requests use connections opened before any thread starts (``connect_as_uid`` forks).
Only the local ``busybox`` image is used; traffic stays on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from tests.helpers import connect_as_uid, dockergate_argv
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import _read_reply

area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created

pytestmark = pytest.mark.timeout(120)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def _message(body: bytes) -> str:
    with contextlib.suppress(ValueError):
        return str(json.loads(body).get("message") or "")
    return body.decode(errors="replace")


def _running(m, cleanup) -> str:
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "120"]}, cleanup)
    assert m.request("POST", f"/v1.41/containers/{cid}/start").status == 204
    return cid


def _parallel_posts(m, requests: list[tuple[str, dict]]) -> list[tuple[int, str]]:
    """All requests sent at once, each on its own connection (opened first)."""
    socks = connect_as_uid(m.path, m.uid, count=len(requests))
    out: list[tuple[int, str]] = [(0, "")] * len(requests)

    def run(i: int) -> None:
        path, body = requests[i]
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        try:
            socks[i].settimeout(30)
            socks[i].sendall(head.encode() + data)
            r = _read_reply(socks[i])
            out[i] = (r.status, _message(r.body))
        finally:
            socks[i].close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# ---------------------------------------------------------------------------- execs


def test_finding_parallel_exec_creates_pass_the_per_container_cap(users, cleanup, direct_client):
    """``exec_create`` (api/containers.py) counts the container's ``ExecIDs`` from
    the inspect it made to resolve the container, and forwards: no lock and no
    reservation between the count and dockerd's create. 80 ``POST
    /containers/{id}/exec`` sent at once by a member to a fresh container: 41 were
    created (``ExecIDs``: 41), 39 refused; the cap is 32. The overshoot grows with
    the number of connections (each create is a round trip of ~ms; a member opens
    hundreds of connections), and each exec may carry 128 KiB kept in dockerd's
    memory while its container lives. Severity: Medium (the round-17b exhaustion of
    dockerd's memory, bounded by the client's parallelism instead of the cap).
    Expected: never more than ``EXEC_PENDING_MAX`` execs of one container (hold a
    per-container or per-user lock from the count until dockerd has answered, as
    ``check_count_quota`` does with ``user_lock``)."""
    m = users["mallory"]
    cid = _running(m, cleanup)
    replies = _parallel_posts(m, [(f"/v1.41/containers/{cid}/exec", {"Cmd": ["true"]})] * 80)
    refused = [msg for status, msg in replies if status == 403]
    assert refused and all("at most 32" in r for r in refused), refused[:2]
    execs = direct_client.api.inspect_container(cid)["ExecIDs"] or []
    assert len(execs) <= 32, f"{len(execs)} execs of one container (cap 32)"


def test_works_exec_size_cap_holds_for_a_chunked_body_and_sessions_run(users, cleanup):
    """Held: a 200 kB exec body sent chunked is refused naming the rule; an ordinary
    exec is created and started."""
    m = users["mallory"]
    cid = _running(m, cleanup)
    body = json.dumps({"Cmd": ["echo", "x" * 200_000]}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
        for i in range(0, len(body), 4096)
    )
    head = (
        f"POST /v1.41/containers/{cid}/exec HTTP/1.1\r\nHost: d\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    r = m.send(head + chunks + b"0\r\n\r\n")
    assert r.status == 403 and "128 KiB" in _message(r.body), (r.status, r.body[:300])
    r = m.request("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["echo", "hello-exec"]})
    assert r.status == 201, (r.status, r.body)
    eid = json.loads(r.body)["Id"]
    out = m.request("POST", f"/v1.41/exec/{eid}/start", {"Detach": True, "Tty": False})
    assert out.status == 200, (out.status, out.body)  # attached sessions: the CLI test


# ------------------------------------------------------------------ log caps, pids


def test_works_log_caps_pids_and_secret_quota(users, cleanup, direct_client):
    """Held: a container without ``LogConfig`` (or with an empty ``Type``) gets
    json-file with ``max-size: 100m``; ``10g`` without a Type, 500g on a service
    update, ``max-file: 1_0`` are refused naming ``resources.logs``; a service
    update without ``LogDriver`` gets the cap back; ``docker update`` with
    ``PidsLimit`` 0, -1 or 10^9 and a service's ``Limits.Pids`` -1 are refused
    naming the share of the node; 75 secret creates sent at once stop at the quota
    (60)."""
    m = users["mallory"]

    def create(log):
        return m.request(
            "POST",
            "/v1.41/containers/create",
            {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"LogConfig": log}},
        )

    r = create({"Type": "", "Config": None})
    assert r.status == 201, (r.status, r.body)
    cid = json.loads(r.body)["Id"]
    cleanup.append(("container", cid))
    got = direct_client.api.inspect_container(cid)["HostConfig"]["LogConfig"]
    assert got == {"Type": "json-file", "Config": {"max-size": "100m"}}, got
    for log in (
        {"Config": {"max-size": "10g"}},
        {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1_0"}},
        {"Type": "local", "Config": {"max-size": "-1"}},
    ):
        r = create(log)
        assert r.status == 403 and "resources.logs" in _message(r.body), (log, r.body)

    run = _running(m, cleanup)
    for value in (0, -1, 10**9):
        r = m.request("POST", f"/v1.41/containers/{run}/update", {"PidsLimit": value})
        assert r.status == 403 and "processes" in _message(r.body), (value, r.body)
    assert direct_client.api.inspect_container(run)["HostConfig"]["PidsLimit"] == 4096

    spec = {
        "Name": f"dgt-rv18b-{_rand()}",
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sleep", "1"]}},
        "Mode": {"Replicated": {"Replicas": 0}},
    }
    bad = json.loads(json.dumps(spec))
    bad["Name"] += "x"
    bad["TaskTemplate"]["Resources"] = {"Limits": {"Pids": -1}}
    r = m.request("POST", "/v1.41/services/create", bad)
    assert r.status == 403 and "processes" in _message(r.body), r.body
    r = m.request("POST", "/v1.41/services/create", spec)
    assert r.status == 201, r.body
    sid = json.loads(r.body)["ID"]
    try:
        svc = json.loads(m.request("GET", f"/v1.41/services/{sid}").body)
        assert svc["Spec"]["TaskTemplate"]["LogDriver"]["Options"] == {"max-size": "100m"}
        s = svc["Spec"]
        s["TaskTemplate"]["LogDriver"] = {"Name": "json-file", "Options": {"max-size": "500g"}}
        r = m.request("POST", f"/v1.41/services/{sid}/update?version={svc['Version']['Index']}", s)
        assert r.status == 403 and "resources.logs" in _message(r.body), r.body
        s["TaskTemplate"].pop("LogDriver")
        r = m.request("POST", f"/v1.41/services/{sid}/update?version={svc['Version']['Index']}", s)
        assert r.status == 200, r.body
        now = json.loads(m.request("GET", f"/v1.41/services/{sid}").body)
        assert now["Spec"]["TaskTemplate"]["LogDriver"]["Options"] == {"max-size": "100m"}
    finally:
        direct_client.api.remove_service(sid)

    names = [f"dgt-rv18b-s-{_rand()}" for _ in range(75)]
    data = base64.b64encode(b"x").decode()
    try:
        replies = _parallel_posts(
            m, [("/v1.41/secrets/create", {"Name": n, "Data": data}) for n in names]
        )
        made = sum(1 for status, _ in replies if status == 201)
        assert made <= 60, f"{made} secrets created, quota 60"
        assert any("quota.secrets" in msg for status, msg in replies if status == 403)
    finally:
        for s in direct_client.api.secrets():
            if s["Spec"]["Name"] in names:
                direct_client.api.remove_secret(s["ID"])


def test_works_member_cli_run_logs_exec_and_one_part_volume(users, rgate, cleanup):
    """Held: the docker CLI as the member's unix user: ``run --rm``, ``run -d -v
    /data`` (an anonymous volume, not a host path), ``logs``, ``exec``, ``rm -v``."""
    uid = users["mallory"].uid
    name = f"dgt-rv18b-cli-{_rand()}"

    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["setpriv", f"--reuid={uid}", "--regid=65534", "--clear-groups"]
        argv += ["docker", "-H", f"unix://{rgate.socket}", *args]
        env = {"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir()}
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    r = docker("run", "--rm", "busybox", "echo", "hi-run")
    assert r.returncode == 0 and "hi-run" in r.stdout, r.stderr
    r = docker("run", "-d", "--name", name, "-v", "/data", "busybox", "sh", "-c",
               "echo logged; sleep 60")  # fmt: skip
    assert r.returncode == 0, r.stderr
    cleanup.append(("container", name))
    r = docker("exec", name, "sh", "-c", "echo in >/data/f && cat /data/f")
    assert r.returncode == 0 and "in" in r.stdout, r.stderr
    r = docker("logs", name)
    assert "logged" in r.stdout, (r.stdout, r.stderr)
    r = docker("inspect", "-f", "{{json .Mounts}}", name)
    mounts = json.loads(r.stdout)
    assert [m["Type"] for m in mounts] == ["volume"] and mounts[0]["Destination"] == "/data"
    r = docker("rm", "-fv", name)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------ dockergate check (static)


def test_finding_policy_check_ignores_logging_options(tmp_path):
    """``dockergate check --profile member stack.yml`` (policy/compose.py
    ``host_config``) passes only ``logging.driver`` to the checks, never
    ``logging.options``: a stack with ``max-size: 10g`` and ``max-file: "50"``
    reports ``ok: 1 file(s) pass profile 'member'`` (exit 0), and the same service
    is refused by the gate on ``docker stack deploy``/``compose up`` (``forbids logs
    this large ... resources.logs.max_size``). Severity: Low (usability: the
    pre-flight tool users are told to run says yes to what the gate refuses).
    Expected: a violation naming ``resources.logs`` (call ``capped_log_options``
    with the driver, or the default json-file, and the options)."""
    stack = tmp_path / "stack.yml"
    stack.write_text(
        "services:\n  web:\n    image: busybox\n    logging:\n      driver: json-file\n"
        "      options:\n        max-size: 10g\n        max-file: '50'\n"
    )
    argv = [*dockergate_argv(), "--state-dir", str(tmp_path / "st")]
    argv += ["check", "--profile", "member", str(stack)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "resources.logs" in r.stdout, (r.returncode, r.stdout)


# ------------------------------------------------------------------- user cert --out


def test_finding_user_cert_out_follows_a_users_symlink_into_a_root_directory(
    rgate, users, tmp_path
):
    """``prepare_bundle_dir`` (listen/pki.py) checks the owner of ``--out`` with
    ``stat()``, which follows a symlink: a member who owns ``~/bundle`` only as a
    link to a root-owned directory (``ln -s /etc/docker ~/bundle``) passes the
    "directory the caller owns" rule, and the admin's ``dockergate user cert
    rv-mallory --out ~mallory/bundle`` wrote ``ca.pem``, ``cert.pem`` and
    ``key.pem`` into the root-owned target, replacing files of those names there
    (``/etc/docker/{ca,cert,key}.pem`` are dockerd's TLS files by convention: its
    CA replaced by the gate's). Likewise a parent link (``--out ~/link/new``: mkdir
    creates ``new`` in the target, root's). Severity: Medium (needs the admin to
    write into a user's directory, the case the rule is for). Expected: refused
    (check with ``lstat`` every component below a directory the caller owns, or open
    the directory with ``O_NOFOLLOW`` and write with ``dir_fd``)."""
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, users["mallory"].uid, 65534)
    target = Path(tempfile.mkdtemp(prefix="dgt-rv18b-rootdir-"))
    try:
        (target / "ca.pem").write_text("the node's own CA\n")
        link = home / "bundle"
        os.symlink(target, link)
        os.lchown(link, users["mallory"].uid, 65534)
        r = rgate.dockergate("user", "cert", "rv-mallory", "--out", str(link), check=False)
        assert (target / "ca.pem").read_text() == "the node's own CA\n" and not (
            target / "key.pem"
        ).exists(), f"bundle written through the link into {target}: {r.stdout}{r.stderr}"
        assert r.returncode != 0
    finally:
        shutil.rmtree(target, ignore_errors=True)
