"""dockergate's own certificate authority: the CA, the server certificate, client bundles.

Client certificates carry the user name as CN (the convention dockerd's own authz
uses) and a random serial that the store records, so that a certificate is
accepted only while its serial is known and not revoked. Keys are written 0600.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 365

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: bytes
    key_pem: bytes
    serial: int
    fingerprint: str  # sha256 of the DER certificate, hex
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> Key:
    # P-256: small, fast handshakes, supported by Go's crypto/tls and OpenSSL alike.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode from the start (no window at 0644).

    The temporary file is a new one of random name (``mkstemp``: ``O_EXCL``, 0600):
    a file or symlink someone planted in the directory is never opened, so root
    writes neither into another user's file nor through a link (``user cert --out``
    may point into a directory a user can write)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare_bundle_dir(out_dir: Path) -> None:
    """Make ``out_dir`` for a client bundle, or accept it if the caller owns it.

    Whoever owns the directory, or any directory or symbolic link on the way to it,
    may swap what the admin is about to write (their own cert.pem; a link sending
    root's writes into /etc/docker): every component, and every link followed, must
    be root's or the caller's, and the directory itself the caller's. PermissionError
    otherwise; missing directories are made."""
    me = os.geteuid()
    parts = list(out_dir.absolute().parts[1:])
    current = Path("/")
    st = os.lstat(current)
    hops = 0
    while parts:
        current = current / parts.pop(0)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            st = os.lstat(current)
        if st.st_uid not in (0, me):
            raise PermissionError(
                f"{current} belongs to uid {st.st_uid}: write the bundle into a new "
                "directory of yours (not below or through someone else's), then hand it over"
            )
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise PermissionError(f"{out_dir}: too many symbolic links")
            target = Path(os.readlink(current))
            base = target if target.is_absolute() else current.parent / target
            parts = list(base.parts[1:]) + parts  # walk the link's target, checked alike
            current = Path("/")
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{current} is not a directory")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            # Others may rename what is in it (a team's setgid directory): they could
            # swap the bundle's directory for a link between two of the writes.
            raise PermissionError(
                f"{current} is writable by others (and not sticky): write the bundle "
                "into a directory only you can change, then hand it over"
            )
    if st.st_uid != me:
        raise PermissionError(
            f"{out_dir} belongs to uid {st.st_uid}, not to you: write the bundle into a "
            "new directory (or one of yours), then hand it over"
        )


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class CertificateAuthority:
    """The CA kept in ``<state-dir>/pki``."""

    def __init__(self, pki_dir: Path) -> None:
        self.dir = pki_dir

    @property
    def cert_path(self) -> Path:
        return self.dir / CA_CERT

    @property
    def server_cert_path(self) -> Path:
        return self.dir / SERVER_CERT

    @property
    def server_key_path(self) -> Path:
        return self.dir / SERVER_KEY

    def exists(self) -> bool:
        return (self.dir / CA_CERT).exists() and (self.dir / CA_KEY).exists()

    def ensure(self) -> bool:
        """Create the CA unless it exists; True if it was created."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if self.exists():
            return False
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockergate CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write(self.dir / CA_KEY, _key_pem(key), 0o600)
        _write(self.dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return True

    def ca_pem(self) -> bytes:
        return (self.dir / CA_CERT).read_bytes()

    def _load(self) -> tuple[x509.Certificate, Key]:
        cert = x509.load_pem_x509_certificate(self.ca_pem())
        key = serialization.load_pem_private_key((self.dir / CA_KEY).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.dir / CA_KEY}: expected an EC private key")
        return cert, key

    def _issue(
        self,
        common_name: str,
        days: int,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> IssuedCert:
        ca_cert, ca_key = self._load()
        key = _new_key()
        now = _now()
        not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return IssuedCert(
            cert.public_bytes(serialization.Encoding.PEM),
            _key_pem(key),
            cert.serial_number,
            fingerprint(cert),
            not_after,
        )

    def ensure_server_cert(self, hostnames: list[str], rotate: bool = False) -> bool:
        """Issue the listener's certificate (localhost, 127.0.0.1, ::1 + hostnames)."""
        if self.server_cert_path.exists() and self.server_key_path.exists() and not rotate:
            return False
        if rotate and self.server_cert_path.exists():
            # A rotation keeps the names clients already reach the gate by.
            hostnames = [*self.server_names(), *hostnames]
        names: list[x509.GeneralName] = []
        seen: set[str] = set()
        for host in ["localhost", "127.0.0.1", "::1", *hostnames]:
            if host in seen:
                continue
            seen.add(host)
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        issued = self._issue(
            hostnames[0] if hostnames else "localhost",
            SERVER_DAYS,
            ExtendedKeyUsageOID.SERVER_AUTH,
            names,
        )
        _write(self.server_key_path, issued.key_pem, 0o600)
        _write(self.server_cert_path, issued.cert_pem, 0o644)
        return True

    def server_names(self) -> list[str]:
        """The DNS names and IP addresses the current server certificate is valid for."""
        cert = x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [
            *san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        ]

    def issue_client(self, user: str, days: int = CLIENT_DAYS) -> IssuedCert:
        return self._issue(user, days, ExtendedKeyUsageOID.CLIENT_AUTH)

    def write_bundle(self, out_dir: Path, issued: IssuedCert) -> None:
        """Write ``ca.pem``, ``cert.pem``, ``key.pem``: a DOCKER_CERT_PATH directory."""
        prepare_bundle_dir(out_dir)
        _write(out_dir / "ca.pem", self.ca_pem(), 0o644)
        _write(out_dir / "cert.pem", issued.cert_pem, 0o644)
        _write(out_dir / "key.pem", issued.key_pem, 0o600)
