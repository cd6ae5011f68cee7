"""A small client for a gate's own API, configured the way the docker CLI is.

``dockergate whoami``, ``purge --host`` and ``usage --host`` talk to a *gate*, not
to the daemon, with the credentials a user already has for ``docker``: the host
from ``--host`` or ``DOCKER_HOST``; over ``tcp://``, TLS with the bundle in
``DOCKER_CERT_PATH`` (``ca.pem``, ``cert.pem``, ``key.pem``; default
``~/.docker``), the server verified when ``DOCKER_TLS_VERIFY`` is set (or
``--tlsverify``), exactly as the docker CLI decides; and the
``X-Dockergate-Token`` from ``HttpHeaders`` in ``$DOCKER_CONFIG/config.json``
(default ``~/.docker/config.json``), which is how a token user's ``docker`` gets
in. Nothing else from the docker config is read or sent.

The gate's TCP listener speaks only TLS, so ``tcp://`` always means TLS here.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockergate.listen.identity import TOKEN_HEADER

TOKEN_HEADER_NAME = "X-Dockergate-Token"
DEFAULT_TIMEOUT = 30.0


class GateClientError(Exception):
    """The gate could not be reached or refused; the message says which and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class TLSOptions:
    """``--tlsverify``/``--tlscacert``/``--tlscert``/``--tlskey``; None means "from
    the environment", as for the docker CLI."""

    verify: bool | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


def _docker_config_dir(env: Mapping[str, str]) -> Path:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME") or Path.home()) / ".docker"


def config_token(env: Mapping[str, str]) -> str | None:
    """The token in the docker config's ``HttpHeaders`` (header names are
    case-insensitive), or None. A broken config file is an error the user must see:
    silently going on without the token would fail with a confusing refusal."""
    path = _docker_config_dir(env) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GateClientError(f"cannot read the docker config {path}: {exc}") from exc
    headers = data.get("HttpHeaders") if isinstance(data, dict) else None
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if str(name).lower() == TOKEN_HEADER and isinstance(value, str) and value:
            return value
    return None


def _tls_context(opts: TLSOptions, env: Mapping[str, str]) -> tuple[ssl.SSLContext, bool]:
    verify = opts.verify if opts.verify is not None else bool(env.get("DOCKER_TLS_VERIFY"))
    cert_dir = Path(env.get("DOCKER_CERT_PATH") or _docker_config_dir(env))
    cacert = Path(opts.cacert) if opts.cacert else cert_dir / "ca.pem"
    cert = Path(opts.cert) if opts.cert else cert_dir / "cert.pem"
    key = Path(opts.key) if opts.key else cert_dir / "key.pem"
    try:
        if verify:
            if not cacert.exists():
                raise GateClientError(
                    f"TLS verification is on (DOCKER_TLS_VERIFY or --tlsverify) but there is "
                    f"no CA certificate at {cacert}: set DOCKER_CERT_PATH to your bundle "
                    "directory or pass --tlscacert"
                )
            ctx = ssl.create_default_context(cafile=str(cacert))
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert.exists() and key.exists():
            ctx.load_cert_chain(str(cert), str(key))
        elif opts.cert or opts.key:
            raise GateClientError(f"client certificate {cert} or key {key} not found")
    except (OSError, ssl.SSLError) as exc:
        raise GateClientError(f"cannot load the TLS bundle from {cert_dir}: {exc}") from exc
    return ctx, verify


@dataclass
class GateClient:
    host: str
    tls: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(
        cls,
        host: str | None = None,
        tls: TLSOptions | None = None,
        env: Mapping[str, str] | None = None,
        default_host: str | None = None,
    ) -> GateClient:
        env = os.environ if env is None else env
        host = host or env.get("DOCKER_HOST") or default_host
        if not host:
            raise GateClientError(
                "no gate to talk to: set DOCKER_HOST (as for docker) or pass --host"
            )
        parts = urlsplit(host)
        headers: dict[str, str] = {}
        if parts.scheme == "unix":
            if not parts.path:
                raise GateClientError(f"DOCKER_HOST {host!r}: unix:// needs a socket path")
            return cls(host, None, headers)
        if parts.scheme not in ("tcp", "https"):
            raise GateClientError(
                f"host {host!r}: use unix:///path/to/socket or tcp://HOST:PORT (the gate's "
                "TLS listener)"
            )
        if not parts.hostname or not parts.port:
            raise GateClientError(f"host {host!r} needs a host name and a port")
        ctx, _verify = _tls_context(tls or TLSOptions(), env)
        token = config_token(env)
        if token:
            headers[TOKEN_HEADER_NAME] = token
        return cls(host, ctx, headers)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.host)
        if parts.scheme == "unix":
            return _UnixHTTPConnection(parts.path, timeout)
        assert parts.hostname is not None and self.tls is not None
        return http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=self.tls
        )

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """One request; the decoded JSON answer, or :class:`GateClientError`."""
        conn = self._connection(timeout or self.timeout)
        headers = {"Host": "docker", **self.headers}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except ssl.SSLCertVerificationError as exc:
            raise GateClientError(
                f"the gate at {self.host} has a certificate this client does not trust "
                f"({exc.verify_message}): is DOCKER_CERT_PATH the bundle of this gate?"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise GateClientError(f"cannot reach the gate at {self.host}: {exc}") from exc
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if not 200 <= resp.status < 300:
            message = answer.get("message") if isinstance(answer, dict) else None
            if resp.status == 404 and path.startswith("/_dockergate/") and not message:
                message = "not found"
            if resp.status == 404 and "page not found" in str(message or ""):
                message = (
                    f"{self.host} answered like a Docker daemon, not a dockergate: "
                    "point DOCKER_HOST (or --host) at the gate"
                )
            raise GateClientError(
                f"{method} {path} on {self.host}: {message or f'HTTP {resp.status}'}",
                resp.status,
            )
        if answer is None and raw:
            raise GateClientError(f"{method} {path} on {self.host}: the answer is not JSON")
        return answer
