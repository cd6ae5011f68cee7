"""Hostile requests, raw on the unix socket as a member: every way found to reach the
host or another user's data (from the Engine API spec, Go's decoding rules and
published authorization-plugin bypasses such as CVE-2024-41110).

Each refusal sits next to the legitimate form of the same request.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from tests.helpers import connect_as_uid

pytestmark = pytest.mark.timeout(120)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> str:
        try:
            return str(json.loads(self.body).get("message", ""))
        except ValueError:
            return self.body.decode(errors="replace")


def _read_reply(sock: socket.socket) -> Reply:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and len(lines[0].split(" ")) > 1 else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = rest
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    elif headers.get("transfer-encoding") == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            body += data
        out, rest2 = b"", body
        while rest2:
            size_line, _, rest2 = rest2.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest2 = out + rest2[:size], rest2[size + 2 :]
        body = out
    return Reply(status, headers, body)


class Raw:
    """Raw HTTP/1.1 on the gate's unix socket, as a given uid (the kernel says who)."""

    def __init__(self, path: str, uid: int) -> None:
        self.path = path
        self.uid = uid

    def connect(self) -> socket.socket:
        sock = connect_as_uid(self.path, self.uid)[0]
        sock.settimeout(30)
        return sock

    def send(self, data: bytes) -> Reply:
        sock = self.connect()
        try:
            try:
                sock.sendall(data)
            except BrokenPipeError:
                pass  # the gate may answer (and close) before a refused body is sent
            return _read_reply(sock)
        finally:
            sock.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict | None = None,
        headers: dict[str, str] | None = None,
        ctype: str = "application/json",
    ) -> Reply:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: docker"]
        if body is not None:
            lines += [f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))


@pytest.fixture(scope="module")
def raw_users(gate, unix_user):
    out = {}
    for short in ("mallory", "victim"):
        _login, uid, _gid = unix_user(short)
        name = f"h-{short}"
        gate.dockergate("user", "add", name, "--profile", "member", "--uid", str(uid))
        out[short] = Raw(str(gate.socket), uid)
    return out


@pytest.fixture(scope="module")
def victim_container(raw_users, direct_client):
    name = f"victim-{uuid.uuid4().hex[:6]}"
    r = raw_users["victim"].request(
        "POST",
        f"/v1.41/containers/create?name={name}",
        {"Image": "busybox", "Cmd": ["sleep", "600"]},
    )
    assert r.status == 201, r.body
    cid = json.loads(r.body)["Id"]
    stopped = f"victim-stopped-{uuid.uuid4().hex[:6]}"
    r = raw_users["victim"].request(
        "POST", f"/v1.41/containers/create?name={stopped}", {"Image": "busybox", "Cmd": ["true"]}
    )
    assert r.status == 201
    yield {"name": name, "id": cid, "stopped": stopped}
    for n in (name, stopped):
        try:
            direct_client.containers.get(n).remove(force=True)
        except Exception:
            pass


def create(raw: Raw, body: dict | str, **kw) -> Reply:
    return raw.request("POST", "/v1.41/containers/create", body, **kw)


OK_BODY = {"Image": "busybox", "Cmd": ["true"]}


def test_legitimate_create_works(raw_users, direct_client):
    r = create(raw_users["mallory"], OK_BODY)
    assert r.status == 201, r.body
    direct_client.containers.get(json.loads(r.body)["Id"]).remove(force=True)


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ('{"Image":"busybox","HoſtConfig":{"Privileged":true}}', 400, "must be spelled"),
        ('{"Image":"busybox","hostconfig":{"Privileged":true}}', 400, "must be spelled"),
        ('{"Image":"busybox","HostConfig":{"privileged":true}}', 400, "must be spelled"),
        (
            '{"Image":"busybox","HostConfig":{"Binds":[]},"HostConfig":{"Privileged":true}}',
            400,
            "duplicate",
        ),
        ('{"Image":"busybox","HostConfig":{},"hostConfig":{"Privileged":true}}', 400, ""),
        ('{"Image":"busybox","Labels":{},"Labelſ":{"dockergate.owner":"x"}}', 400, ""),
        ('{"Image":"busybox","Privileged":true}', 400, "unknown field"),
        ('{"Image":"busybox","HostConfig":{"Privileged":true}}', 403, "privileged"),
        ('{"Image":"busybox"} {"HostConfig":{"Privileged":true}}', 400, ""),
        ('{"Image":"busybox","Memory":NaN}', 400, ""),
        ("", 400, "empty body"),
    ],
)
def test_ambiguous_or_forbidden_create_bodies(raw_users, body, status, text):
    r = create(raw_users["mallory"], body)
    assert r.status == status, (r.status, r.body)
    assert text in r.message
    assert r.message.startswith("dockergate:")


def test_zero_length_with_payload_cve_2024_41110(raw_users, direct_client):
    payload = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()
    head = (
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    )
    r = raw_users["mallory"].send(head + payload)
    assert r.status == 400, r.body  # the body is empty: nothing was inspected


def test_chunked_body_is_inspected(raw_users):
    payload = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()
    chunks = (
        b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (payload[:10], payload[10:])) + b"0\r\n\r\n"
    )
    head = (
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    r = raw_users["mallory"].send(head + chunks)
    assert r.status == 403 and "privileged" in r.message


def test_smuggling_forms_refused(raw_users):
    payload = json.dumps(OK_BODY).encode()
    for extra in (
        f"Content-Length: {len(payload)}\r\nTransfer-Encoding: chunked\r\n",
        f"Content-Length: {len(payload)}\r\nContent-Length: 2\r\n",
        "Transfer-Encoding: xchunked\r\n",
        " Transfer-Encoding: chunked\r\n",
    ):
        head = f"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n{extra}\r\n"
        r = raw_users["mallory"].send(head.encode() + payload)
        assert r.status in (400, 501), (extra, r.status)


def test_oversized_and_wrong_type_bodies(raw_users):
    big = {"Image": "busybox", "Env": ["X=" + "a" * (5 << 20)]}
    assert create(raw_users["mallory"], big).status == 413
    assert create(raw_users["mallory"], OK_BODY, ctype="text/plain").status == 415


def test_form_encoded_prune_refused(raw_users, victim_container, direct_client):
    r = raw_users["mallory"].request(
        "POST",
        "/v1.41/containers/prune",
        "filters=%7B%7D",
        ctype="application/x-www-form-urlencoded",
    )
    assert r.status == 415
    direct_client.containers.get(victim_container["stopped"])
    r = raw_users["mallory"].request("POST", "/v1.41/containers/prune")
    assert r.status == 200
    direct_client.containers.get(victim_container["stopped"])  # still spared


@pytest.mark.parametrize(
    "query",
    [
        "all=1",
        "all=1&filters=%7B%7D&filters=" + quote('{"label":{"x":true}}'),
        "all=1&filters=" + quote('{"label!":{"dockergate.owner=h-mallory":true}}'),
        "all=1&filters=" + quote('{"name":["victim"]}'),
        "all=1&filters=" + quote('{"id":["VICTIM"]}'),
        "all=1&filters=" + quote('{"label":["dockergate.owner"]}'),
    ],
)
def test_list_filters_cannot_widen(raw_users, victim_container, query):
    q = query.replace("VICTIM", victim_container["id"])
    r = raw_users["mallory"].request("GET", f"/v1.41/containers/json?{q}")
    assert r.status in (200, 400), r.body
    if r.status == 200:
        names = json.dumps(json.loads(r.body))
        assert victim_container["id"] not in names


@pytest.mark.parametrize(
    "path",
    [
        "/v1.41/containers/{id}/json",
        "/v1.41/containers/{short}/json",
        "/v1.41/containers/{name}/json",
        "/v1.41//containers/{name}/json",
        "/v1.41/containers/x/../{name}/json",
        "/v1.41/%63ontainers/{name}/json",
        "/containers/{name}/json",
        "/v1.41/containers/{name}/logs?stdout=1",
        "/v1.41/containers/{name}/top",
        "/v1.41/containers/{name}/changes",
        "/v1.41/containers/{name}/export",
        "/v1.41/containers/{name}/archive?path=/etc",
        "/v1.41/containers/{name}/stats?stream=0",
    ],
)
def test_victims_container_is_missing(raw_users, victim_container, path):
    p = path.format(
        id=victim_container["id"], short=victim_container["id"][:5], name=victim_container["name"]
    )
    r = raw_users["mallory"].request("GET", p)
    assert r.status in (301, 404), (p, r.status, r.body)
    if r.status == 404:
        assert "No such container" in r.message


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1.41/containers/{name}/kill"),
        ("POST", "/v1.41/containers/{name}/stop"),
        ("POST", "/v1.41/containers/{name}/rename?name=stolen"),
        ("DELETE", "/v1.41/containers/{name}?force=1"),
        ("POST", "/v1.41/containers/{name}/attach?stream=1&stdout=1"),
        ("POST", "/v1.41/commit?container={name}"),
    ],
)
def test_victims_container_untouchable(raw_users, victim_container, method, path):
    r = raw_users["mallory"].request(method, path.format(name=victim_container["name"]))
    assert r.status == 404, r.body


def test_exec_on_victim_refused_and_privileged_exec_refused(
    raw_users, victim_container, direct_client
):
    r = raw_users["mallory"].request(
        "POST", f"/v1.41/containers/{victim_container['name']}/exec", {"Cmd": ["id"]}
    )
    assert r.status == 404
    r = create(raw_users["mallory"], {"Image": "busybox", "Cmd": ["sleep", "60"]})
    own = json.loads(r.body)["Id"]
    try:
        assert raw_users["mallory"].request("POST", f"/v1.41/containers/{own}/start").status == 204
        r = raw_users["mallory"].request(
            "POST", f"/v1.41/containers/{own}/exec", {"Cmd": ["id"], "Privileged": True}
        )
        assert r.status == 403 and "privileged" in r.message
        r = raw_users["mallory"].request("POST", f"/v1.41/containers/{own}/exec", {"Cmd": ["id"]})
        assert r.status == 201
    finally:
        direct_client.containers.get(own).remove(force=True)


def test_start_with_hostconfig_body_refused(raw_users, direct_client):
    r = create(raw_users["mallory"], OK_BODY)
    own = json.loads(r.body)["Id"]
    try:
        r = raw_users["mallory"].request(
            "POST", f"/v1.41/containers/{own}/start", {"Privileged": True, "Binds": ["/:/host"]}
        )
        assert r.status == 400
        assert not direct_client.api.inspect_container(own)["HostConfig"]["Privileged"]
    finally:
        direct_client.containers.get(own).remove(force=True)


@pytest.mark.parametrize(
    "host",
    [
        {"Binds": ["/:/host"]},
        {"Binds": ["/var/run/docker.sock:/s"]},
        {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]},
        {
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": "esc",
                    "Target": "/e",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/"},
                        }
                    },
                }
            ]
        },
        {"NetworkMode": "host"},
        {"PidMode": "host"},
        {"CapAdd": ["sys_admin"]},
        {"SecurityOpt": ["seccomp:unconfined"]},
        {
            "Devices": [
                {
                    "PathOnHost": "/dev/sda",
                    "PathInContainer": "/dev/sda",
                    "CgroupPermissions": "rwm",
                }
            ]
        },
        {"CgroupParent": "/"},
    ],
)
def test_host_access_refused(raw_users, host):
    r = create(raw_users["mallory"], {"Image": "busybox", "HostConfig": host})
    assert r.status == 403, r.body
    assert "forbids" in r.message


def test_volume_bind_options_refused_plain_volume_works(raw_users, direct_client):
    name = f"hv-{uuid.uuid4().hex[:6]}"
    r = raw_users["mallory"].request(
        "POST",
        "/v1.41/volumes/create",
        {"Name": name, "DriverOpts": {"type": "none", "o": "bind", "device": "/"}},
    )
    assert r.status == 403
    r = raw_users["mallory"].request("POST", "/v1.41/volumes/create", {"Name": name})
    assert r.status == 201
    direct_client.volumes.get(name).remove()


def test_network_driver_refused(raw_users, direct_client):
    r = raw_users["mallory"].request(
        "POST", "/v1.41/networks/create", {"Name": "mv", "Driver": "macvlan"}
    )
    assert r.status == 403


def test_admin_routes_refused(raw_users):
    for method, path in (
        ("GET", "/v1.41/swarm/unlockkey"),
        ("POST", "/v1.41/swarm/leave?force=1"),
        ("GET", "/v1.41/plugins"),
        ("POST", "/v1.41/plugins/pull?remote=x"),
        ("GET", "/debug/pprof/"),
        ("DELETE", "/v1.41/images/busybox"),
        ("DELETE", "/v1.41/images/busybox?force=1"),
        ("POST", "/v1.41/images/prune?filters=%7B%22dangling%22%3A%5B%22false%22%5D%7D"),
    ):
        r = raw_users["mallory"].request(method, path)
        assert r.status == 403, (path, r.status)


def test_swarm_inspect_without_join_tokens(raw_users):
    """Members read the swarm's ID and spec (docker-py's ``client.swarm``), never the
    join tokens; the admin's answer keeps them."""
    r = raw_users["mallory"].request("GET", "/v1.41/swarm")
    assert r.status == 200, (r.status, r.body)
    assert json.loads(r.body).get("ID") and b"SWMTKN" not in r.body


def test_member_prunes_touch_only_their_own_images(raw_users):
    """Image prune is pushed the member's built-by label (dangling images only); the
    build-cache prune frees nothing for a profile without BuildKit, and says so."""
    r = raw_users["mallory"].request("POST", "/v1.41/images/prune")
    assert r.status == 200, (r.status, r.body)
    r = raw_users["mallory"].request("POST", "/v1.41/build/prune")
    assert r.status == 200 and json.loads(r.body)["SpaceReclaimed"] == 0, (r.status, r.body)


def test_buildkit_refused_with_hint(raw_users):
    r = raw_users["mallory"].request(
        "POST", "/grpc", headers={"Connection": "Upgrade", "Upgrade": "h2c"}
    )
    assert r.status == 403 and "DOCKER_BUILDKIT=0" in r.message


def test_identity_headers_ignored(raw_users, victim_container):
    r = raw_users["mallory"].request(
        "GET",
        f"/v1.41/containers/{victim_container['name']}/json",
        headers={"X-Dockergate-User": "h-victim", "Authz-User": "root", "X-Dockergate-Token": "x"},
    )
    assert r.status == 404


def test_pipelined_second_request_is_authorised(raw_users, victim_container):
    first = "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
    second = f"GET /v1.41/containers/{victim_container['name']}/json HTTP/1.1\r\nHost: d\r\n\r\n"
    sock = raw_users["mallory"].connect()
    data = b""
    try:
        sock.sendall((first + second).encode())
        while b"No such container" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"404"], data


def test_semicolon_query_refused(raw_users):
    r = raw_users["mallory"].request("GET", "/v1.41/containers/json?all=1;filters=%7B%7D")
    assert r.status == 400


def test_daemon_side_fetches_refused(raw_users):
    """The daemon fetching a URL for a member (import fromSrc, remote build context)
    would reach whatever the host can reach."""
    r = raw_users["mallory"].request(
        "POST", "/v1.41/images/create?fromSrc=http://127.0.0.1:1/x.tar&repo=x"
    )
    assert r.status == 403 and "importing from a URL" in r.message
    r = raw_users["mallory"].request("POST", "/v1.41/build?remote=http://127.0.0.1:1/ctx.tar")
    assert r.status == 403 and "remote build contexts" in r.message


@pytest.mark.parametrize(
    "query",
    ["memory=abc", "shmsize=1e9", "memory=99999999999999999999999", "ulimits=not-json"],
)
def test_malformed_build_parameters_are_400(raw_users, query):
    """dockerd reads a malformed number as 0; the gate answers 400 instead of guessing
    (and never drops the connection without an answer)."""
    r = raw_users["mallory"].request(
        "POST", f"/v1.41/build?{query}", body=b"", ctype="application/x-tar"
    )
    assert r.status == 400, (r.status, r.message)
    assert r.message.startswith("dockergate: "), r.message
