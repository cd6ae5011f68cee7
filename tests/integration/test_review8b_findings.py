"""Findings of review round 8b (attacks on identity, HTTP framing, exec, archive,
container updates, services, secrets/configs and the JSON key rules).

They reuse the first round's gate, profile, users and cleanup
(tests/integration/test_review_findings.py) and raw requests as members.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import time

import pytest

from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

# The first round's gate, profile, users and cleanup (module-scoped: a gate of our own).
area = first_round.area
shared_name = first_round.shared_name
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
_rand, created, start = first_round._rand, first_round.created, first_round.start
victim_tag = first_round.victim_tag

pytestmark = pytest.mark.timeout(180)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------- exec.root: false


PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"5 :x:0:0:trailing space:/root:/bin/sh\n"
    b"\xc2\xb2:x:0:0:superscript two:/root:/bin/sh\n"
    b"nobody:x:1000:1000:nobody:/:/bin/sh\n"
)


def _non_root_container_with_passwd(m, cleanup) -> str:
    cid = created(m, {"Image": "busybox", "Cmd": ["sleep", "120"], "User": "1000"}, cleanup)
    assert start(m, cid).status == 204
    r = m.request(
        "PUT",
        f"/v1.41/containers/{cid}/archive?path=/etc",
        _tar({"passwd": PASSWD}),
        ctype="application/x-tar",
    )
    assert r.status == 200, (r.status, r.body)
    return cid


@pytest.mark.parametrize("user", ["5 ", "\u00b2"])
def test_exec_root_refused_for_names_that_look_numeric(users, cleanup, direct_client, user):
    """``check_exec`` lets a user through when ``user.split(":")[0].strip().isdigit()``:
    Python strips spaces (Go's ``strconv.Atoi`` does not) and ``str.isdigit`` takes
    Unicode digits such as ``²``. runc's ``GetExecUser`` then fails ``Atoi`` and looks
    the spec up as a *name* in the container's /etc/passwd, which the member writes
    with ``docker cp`` (``PUT /archive``): ``5 :x:0:0`` makes ``exec -u '5 '`` root."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": user, "AttachStdout": True},
    )
    if r.status == 201:
        out = direct_client.api.exec_start(json.loads(r.body)["Id"]).decode(errors="replace")
        pytest.fail(f"exec as {user!r} was allowed; it ran as uid {out.strip()!r}")
    assert r.status == 403, (r.status, r.body)


def test_exec_as_a_numeric_non_root_uid_works(users, cleanup, direct_client):
    """Neighbour: a plain numeric uid other than 0 is still allowed and runs as that uid."""
    m = users["mallory"]
    cid = _non_root_container_with_passwd(m, cleanup)
    r = m.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["id", "-u"], "User": "5", "AttachStdout": True},
    )
    assert r.status == 201, (r.status, r.body)
    assert direct_client.api.exec_start(json.loads(r.body)["Id"]).strip() == b"5"


# --------------------------------------------------------------- revocation and open streams


def _recv_until(sock: socket.socket, needle: bytes, seconds: float) -> bytes:
    got = b""
    deadline = time.monotonic() + seconds
    while needle not in got and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        got += data
    return got


def test_disabling_a_user_ends_their_open_exec_session(rgate, unix_user, cleanup):
    """Identity is checked per request (``ClientConnection.handle``), and "changes reach
    a running gate within a second, also on open keep-alive connections" -- but an
    upgraded stream (``hijack`` -> ``splice_streams``/``pump``) is never looked at again,
    and nothing in ``server.py`` closes a connection whose user was disabled, revoked or
    removed. A shell opened before ``dockergate user disable`` (or before a token or
    certificate is revoked) keeps running commands for as long as the client likes;
    so do ``logs -f``, ``events`` and ``attach`` (no idle timeout on streams)."""
    u = unix_user("r8bleaver")
    name = f"rv8b-leaver-{_rand()}"
    rgate.dockergate("user", "add", name, "--profile", "member", "--uid", str(u.uid))
    raw = Raw(str(rgate.socket), u.uid)
    cid = created(raw, {"Image": "busybox", "Cmd": ["sleep", "120"]}, cleanup)
    assert start(raw, cid).status == 204
    r = raw.request(
        "POST",
        f"/v1.41/containers/{cid}/exec",
        {"Cmd": ["cat"], "AttachStdin": True, "AttachStdout": True, "Tty": True},
    )
    assert r.status == 201, (r.status, r.body)
    exec_id = json.loads(r.body)["Id"]
    body = json.dumps({"Detach": False, "Tty": True}).encode()
    sock = raw.connect()
    try:
        sock.sendall(
            (
                f"POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
                "Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = _recv_until(sock, b"\r\n\r\n", 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(b"before-disable\n")
        assert b"before-disable" in _recv_until(sock, b"before-disable", 10)
        rgate.dockergate("user", "disable", name)
        time.sleep(3)  # well past the documented second
        after = b""
        try:
            sock.sendall(b"after-disable\n")
            after = _recv_until(sock, b"after-disable", 5)
        except OSError:
            pass  # closed by the gate: the secure outcome
        assert b"after-disable" not in after, "a disabled user's exec session still runs"
    finally:
        sock.close()


def test_a_disabled_user_is_refused_new_requests(rgate, unix_user):
    """Neighbour: new requests of a disabled user are refused."""
    u = unix_user("r8bleaver2")
    name = f"rv8b-leaver2-{_rand()}"
    rgate.dockergate("user", "add", name, "--profile", "member", "--uid", str(u.uid))
    raw = Raw(str(rgate.socket), u.uid)
    assert raw.request("GET", "/v1.41/containers/json").status == 200
    rgate.dockergate("user", "disable", name)
    time.sleep(1.5)
    assert raw.request("GET", "/v1.41/containers/json").status == 403


# --------------------------------------------------------------- security options


def test_bare_disable_security_opt_refused_like_label_disable(users, cleanup):
    """``check_security_opts`` refuses ``label=disable`` / ``label:disable``, but dockerd
    20.10's ``parseSecurityOpt`` (daemon_unix.go) also takes the bare option ``disable``
    as a label option (``labelOpts = append(labelOpts, "disable")``): on an SELinux host
    the container then runs unconfined. The gate reads it as key ``disable`` with no
    value and lets it through."""
    m = users["mallory"]
    neighbour = m.request(
        "POST",
        "/v1.41/containers/create",
        {"Image": "busybox", "HostConfig": {"SecurityOpt": ["label=disable"]}},
    )
    assert neighbour.status == 403, (neighbour.status, neighbour.body)
    r = m.request(
        "POST",
        "/v1.41/containers/create",
        {"Image": "busybox", "HostConfig": {"SecurityOpt": ["disable"]}},
    )
    if r.status == 201:
        cleanup.append(("container", json.loads(r.body)["Id"]))
    assert r.status == 403, (r.status, r.body)


# --------------------------------------------------------------- form bodies


# "application" with U+0130 (LATIN CAPITAL LETTER I WITH DOT ABOVE) for its "i", in UTF-8.
DOTTED_FORM_TYPE = "appl\u0130cation/x-www-form-urlencoded"


def _send_form(raw: Raw, path: str, form: bytes, ctype: bytes) -> int:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(form)}\r\n".encode()
        + b"Content-Type: "
        + ctype
        + b"\r\n\r\n"
    )
    return raw.send(head + form).status


def test_form_body_refused_whatever_the_content_type_spelling(users, cleanup, direct_client):
    """``refuse_form_bodies`` compares ``value.split(";")[0].strip().lower()`` of the
    latin-1 decoded header with ``application/x-www-form-urlencoded``. Go's
    ``mime.ParseMediaType`` (``parsePostForm``) lower-cases the UTF-8 value with
    ``strings.ToLower``, which maps U+0130 to an ASCII ``i``: to dockerd the header
    ``applİcation/x-www-form-urlencoded`` *is* a form, to the gate it is not. The body's
    ``filters`` then come first in ``r.Form`` and replace the owner filter the gate put
    in the query: a member's ``container prune`` removes every user's stopped containers
    (likewise volume prune: everyone's data)."""
    victim = created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    status = _send_form(
        users["mallory"],
        "/v1.41/containers/prune",
        b"filters=%7B%7D",
        DOTTED_FORM_TYPE.encode("utf-8"),
    )
    survivors = {c.id for c in direct_client.containers.list(all=True)}
    assert victim in survivors, f"mallory's prune ({status}) removed the victim's container"
    assert status == 415, status


def test_plain_form_body_refused(users, cleanup, direct_client):
    """Neighbour: the ASCII spelling is refused, and nothing is pruned."""
    victim = created(users["victim"], {"Image": "busybox", "Cmd": ["true"]}, cleanup)
    status = _send_form(
        users["mallory"],
        "/v1.41/containers/prune",
        b"filters=%7B%7D",
        b"Application/X-WWW-Form-Urlencoded; charset=utf-8",
    )
    assert status == 415, status
    assert victim in {c.id for c in direct_client.containers.list(all=True)}


def test_form_body_cannot_import_from_a_url_over_a_shared_tag(users, victim_tag, direct_client):
    """The same Content-Type spelling on ``POST /images/create``: ``image_create`` sees
    an empty query (nothing to check: no ``fromSrc``, no registry, no tag), dockerd reads
    ``fromSrc``, ``repo`` and ``tag`` from the body. The daemon fetches a URL of the
    member's choosing (any address its host reaches; here its own loopback, port 9,
    where nothing listens) and would import it over the shared tag everyone runs."""
    before = direct_client.images.get(f"{victim_tag}:v1").id
    form = f"fromSrc=http://127.0.0.1:9/evil.tar&repo={victim_tag}&tag=v1".encode()
    reply = users["mallory"].send(
        f"POST /v1.41/images/create HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(form)}\r\n"
        "Content-Type: ".encode()
        + DOTTED_FORM_TYPE.encode("utf-8")
        + b"\r\n\r\n"
        + form
    )
    assert direct_client.images.get(f"{victim_tag}:v1").id == before
    assert b"127.0.0.1:9" not in reply.body, f"dockerd fetched the URL: {reply.body[:200]!r}"
    assert reply.status == 415, (reply.status, reply.body)


# --------------------------------------------------------------- automatic rollbacks


def test_update_with_automatic_rollback_checks_the_spec_it_would_restore(
    users, direct_client, cleanup
):
    """``UpdateConfig.FailureAction: rollback`` makes Swarm go back by itself to the
    spec running now if the update fails: that spec must pass the profile as it is
    (here it was made on the daemon directly with 1 TiB of memory, as if the profile
    had been tightened since). Since review 26b the update itself goes ahead, with
    ``FailureAction: pause`` (Swarm then never restores that spec) and a warning the
    CLI prints; the same update with ``pause`` is fine."""
    import docker.types

    owner = json.loads(users["mallory"].request("GET", "/_dockergate/whoami").body)["user"]
    svc = direct_client.services.create(
        "busybox",
        ["sleep", "60"],
        name=f"rv8b-rollback-{_rand()}",
        labels={"dockergate.owner": owner},
        container_labels={"dockergate.owner": owner},
        resources=docker.types.Resources(mem_limit=1 << 40),
        mode=docker.types.ServiceMode("replicated", replicas=0),
    )
    cleanup.append(("service", svc.id))

    def update(action: str):
        current = json.loads(users["mallory"].request("GET", f"/v1.41/services/{svc.id}").body)
        spec = current["Spec"]
        spec["TaskTemplate"]["Resources"] = {"Limits": {"MemoryBytes": 64 << 20}}
        spec["UpdateConfig"] = {"FailureAction": action}
        version = current["Version"]["Index"]
        return users["mallory"].request(
            "POST", f"/v1.41/services/{svc.id}/update?version={version}", spec
        )

    r = update("rollback")
    assert r.status == 200 and b"FailureAction (failure_action) is pause" in r.body, r.body
    assert b"memory" in r.body, r.body
    stored = direct_client.services.get(svc.id).attrs["Spec"]
    assert stored["UpdateConfig"]["FailureAction"] == "pause", stored["UpdateConfig"]
    r = update("pause")
    assert r.status == 200, (r.status, r.body)
