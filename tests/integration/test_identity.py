"""Identity at the gate, end to end, on SQLite and on PostgreSQL.

Real unix users run the real docker CLI (setpriv); TLS clients use bundles issued by
`dockergate user cert` and tokens from `dockergate user token` sent through the
CLI's `HttpHeaders`. Revocation must reach an open keep-alive connection within a
second; an unreadable store must close the gate (503), never open it.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import docker.tls
import pytest

from tests.helpers import Gate, new_gate

pytestmark = pytest.mark.timeout(240)

OWNER = "dockergate.owner"
# The gate sees store changes within a second (it polls every 0.25 s). Grants (user
# add, cert, token, enable) are already waited for by Gate.dockergate; a revocation
# that a test does not time is waited for with Gate.settle (the gate has applied it).


def _pg_database() -> str | None:
    """A fresh database on the test PostgreSQL (None when there is none)."""
    base = os.environ.get("DOCKERGATE_TEST_PG_URL")
    if not base:
        return None
    import psycopg

    name = f"dgt_{uuid.uuid4().hex[:8]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def idgate(request: pytest.FixtureRequest, session_dir: Path, docker_host: str) -> Iterator[Gate]:
    """A gate of its own per store backend (the DB URL reaches init, serve and the
    user CLI through DOCKERGATE_DB)."""
    db = None
    if request.param == "postgresql":
        db = _pg_database()
        if db is None:
            pytest.skip("no PostgreSQL: DOCKERGATE_TEST_PG_URL is not set")
    old = os.environ.get("DOCKERGATE_DB")
    if db:
        os.environ["DOCKERGATE_DB"] = db
    g = new_gate(session_dir, docker_host)
    try:
        g.init()
        g.start()
        yield g
    finally:
        g.stop()
        if db:
            if old is None:
                os.environ.pop("DOCKERGATE_DB", None)
            else:
                os.environ["DOCKERGATE_DB"] = old


@pytest.fixture(scope="module")
def people(idgate: Gate, unix_user) -> dict[str, dict]:
    """carol (registered, with a TLS bundle) and dave (not registered)."""
    carol = unix_user("carol")
    dave = unix_user("dave")
    name = f"carol-{uuid.uuid4().hex[:4]}"
    idgate.dockergate("user", "add", name, "--profile", "member", "--uid", str(carol.uid))
    bundle = idgate.state_dir.parent / f"bundle-{name}"
    idgate.dockergate("user", "cert", name, "--out", str(bundle))
    for p in [bundle, *bundle.iterdir()]:
        os.chown(p, carol.uid, -1)
    return {"carol": {"user": carol, "name": name, "bundle": bundle}, "dave": {"user": dave}}


def tls_client(gate: Gate, bundle: Path) -> docker.DockerClient:
    tls = docker.tls.TLSConfig(
        client_cert=(str(bundle / "cert.pem"), str(bundle / "key.pem")),
        ca_cert=str(bundle / "ca.pem"),
        verify=True,
    )
    return docker.DockerClient(base_url=gate.https_url, tls=tls, version="1.41", timeout=30)


def test_registered_unix_user_works(cli, idgate, people, direct_client):
    name = f"carol-c-{uuid.uuid4().hex[:6]}"
    r = cli(
        ["run", "--name", name, "busybox", "echo", "hello"],
        user=people["carol"]["user"],
        gate=idgate,
    )
    assert r.returncode == 0 and "hello" in r.stdout, r.stderr
    assert direct_client.containers.get(name).labels[OWNER] == people["carol"]["name"]
    direct_client.containers.get(name).remove(force=True)


def test_unregistered_unix_user_refused_with_how_to_get_in(cli, idgate, people):
    r = cli(["ps"], user=people["dave"]["user"], gate=idgate)
    assert r.returncode != 0
    assert "is not registered" in r.stderr and "dockergate user add" in r.stderr, r.stderr


def test_client_identity_headers_do_not_count(idgate, people):
    from tests.integration.test_hostile import Raw

    raw = Raw(str(idgate.socket), people["dave"]["user"].uid)
    r = raw.request(
        "GET",
        "/v1.41/containers/json",
        headers={"X-Dockergate-User": "admin", "Authz-User": "admin"},
    )
    assert r.status == 403


def test_tls_bundle_works_and_owns_what_it_creates(cli, idgate, people, direct_client):
    carol = people["carol"]
    name = f"carol-tls-{uuid.uuid4().hex[:6]}"
    r = cli(
        ["run", "--name", name, "busybox", "true"],
        listener="tls",
        cert_dir=carol["bundle"],
        gate=idgate,
    )
    assert r.returncode == 0, r.stderr
    assert direct_client.containers.get(name).labels[OWNER] == carol["name"]
    direct_client.containers.get(name).remove(force=True)


def test_revoked_certificate_refused_within_a_second_on_keepalive(idgate, unix_user):
    name = f"rev-{uuid.uuid4().hex[:6]}"
    idgate.dockergate("user", "add", name, "--profile", "member")
    bundle = idgate.state_dir.parent / f"bundle-{name}"
    idgate.dockergate("user", "cert", name, "--out", str(bundle))
    client = tls_client(idgate, bundle)
    try:
        assert client.ping()
        client.containers.list()  # the connection is now in docker-py's pool
        idgate.dockergate("user", "revoke", name)
        revoked_at = time.monotonic()
        refused_after = None
        while time.monotonic() - revoked_at < 3:
            try:
                client.containers.list()
            except docker.errors.APIError as exc:
                assert exc.status_code == 403
                refused_after = time.monotonic() - revoked_at
                break
            time.sleep(0.05)
        assert refused_after is not None and refused_after <= 1.0, refused_after
    finally:
        client.close()


def test_disabled_user_refused_then_enabled(cli, idgate, unix_user):
    u = unix_user("erin")
    name = f"erin-{uuid.uuid4().hex[:4]}"
    idgate.dockergate("user", "add", name, "--profile", "member", "--uid", str(u.uid))
    try:
        assert cli(["ps"], user=u, gate=idgate).returncode == 0
        idgate.dockergate("user", "disable", name)
        idgate.settle()
        r = cli(["ps"], user=u, gate=idgate)
        assert (
            r.returncode != 0 and "disabled" in r.stderr and "dockergate user enable" in r.stderr
        ), r.stderr
        idgate.dockergate("user", "enable", name)
        assert cli(["ps"], user=u, gate=idgate).returncode == 0
    finally:
        idgate.dockergate("user", "remove", name, check=False)


def _token_env(idgate: Gate, token: str | None, tmp: Path) -> dict[str, str]:
    certs = tmp / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(idgate.state_dir / "pki" / "ca.pem", certs / "ca.pem")  # CA only: no client cert
    config = tmp / "config"
    config.mkdir(exist_ok=True)
    data = {"HttpHeaders": {"X-Dockergate-Token": token}} if token else {}
    (config / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(config), "DOCKER_CERT_PATH": str(certs)}


def test_token_through_httpheaders(cli, idgate, tmp_path, direct_client):
    name = f"tok-{uuid.uuid4().hex[:6]}"
    idgate.dockergate("user", "add", name, "--profile", "member")
    r = idgate.dockergate("user", "token", name)
    token = r.stdout.strip()
    assert token and "\n" not in token and "X-Dockergate-Token" in r.stderr + r.stdout
    env = _token_env(idgate, token, tmp_path / "with")
    c = f"tok-c-{uuid.uuid4().hex[:6]}"
    r = cli(["run", "--name", c, "busybox", "true"], listener="tls", env=env, gate=idgate)
    assert r.returncode == 0, r.stderr
    assert direct_client.containers.get(c).labels[OWNER] == name
    direct_client.containers.get(c).remove(force=True)
    env = _token_env(idgate, None, tmp_path / "without")
    r = cli(["ps"], listener="tls", env=env, gate=idgate)
    assert r.returncode != 0 and "dockergate" in r.stderr, r.stderr


def test_malformed_token_refused(idgate, tmp_path):
    for bad in ("garbage", "dgt_0000000000000000_" + "x" * 43, "dgt__", "a" * 5000):
        env = _token_env(idgate, bad, tmp_path / uuid.uuid4().hex[:6])
        ctx = ssl.create_default_context(cafile=str(Path(env["DOCKER_CERT_PATH"]) / "ca.pem"))
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", idgate.tls_port, context=ctx, timeout=10)
        conn.request("GET", "/v1.41/containers/json", headers={"X-Dockergate-Token": bad})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 403, (bad[:20], resp.status, body)
        assert b"token" in body


def test_expired_and_foreign_certificates_refused_at_handshake(idgate, tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from dockergate.listen.pki import CertificateAuthority

    ca = CertificateAuthority(idgate.state_dir / "pki")
    ca_cert, ca_key = ca._load()
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "expired").mkdir()
    (tmp_path / "expired" / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "expired" / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other = CertificateAuthority(tmp_path / "other-pki")
    other.ensure()
    foreign = other.issue_client("admin")
    other.write_bundle(tmp_path / "foreign", foreign)
    for kind in ("expired", "foreign"):
        ctx = ssl.create_default_context(cafile=str(idgate.state_dir / "pki" / "ca.pem"))
        ctx.load_cert_chain(tmp_path / kind / "cert.pem", tmp_path / kind / "key.pem")
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", idgate.tls_port, context=ctx, timeout=10)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            conn.request("GET", "/_ping")
            conn.getresponse().read()
        conn.close()


def test_removed_users_certificate_refused(cli, idgate):
    name = f"gone-{uuid.uuid4().hex[:6]}"
    idgate.dockergate("user", "add", name, "--profile", "member")
    bundle = idgate.state_dir.parent / f"bundle-{name}"
    idgate.dockergate("user", "cert", name, "--out", str(bundle))
    assert cli(["ps"], listener="tls", cert_dir=bundle, gate=idgate).returncode == 0
    idgate.dockergate("user", "remove", name)
    time.sleep(1.0)
    r = cli(["ps"], listener="tls", cert_dir=bundle, gate=idgate)
    assert r.returncode != 0 and "revoked or unknown" in r.stderr, r.stderr


def test_unreadable_store_fails_closed(cli, idgate, people):
    if os.environ.get("DOCKERGATE_DB"):
        pytest.skip("the file-level outage is a SQLite test")
    db = idgate.state_dir / "dockergate.db"
    moved = db.with_name("moved.db")
    carol = people["carol"]
    db.rename(moved)
    try:
        time.sleep(1.0)
        for kw in ({}, {"user": carol["user"]}):
            r = cli(["ps"], gate=idgate, **kw)
            assert r.returncode != 0 and "store unavailable" in r.stderr, r.stderr
    finally:
        moved.rename(db)
    time.sleep(1.0)
    assert cli(["ps"], user=carol["user"], gate=idgate).returncode == 0
