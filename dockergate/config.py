"""Settings for the gate: defaults < YAML config file < DOCKERGATE_* environment < CLI flags.

One flat dataclass so that every option has exactly one name, used in all three
sources: the YAML key ``tls_listen`` is the variable ``DOCKERGATE_TLS_LISTEN`` and
the flag ``--tls-listen``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_STATE_DIR = "/var/lib/dockergate"
POLICY_STATUS = "policies.json"  # in the state dir: see Gate.write_policy_status
DEFAULT_UPSTREAM = "unix:///var/run/docker.sock"
DEFAULT_SOCKET = "/run/dockergate/docker.sock"
ENV_PREFIX = "DOCKERGATE_"


class ConfigError(Exception):
    """A setting has a wrong name, type or value; the message names it."""


@dataclass
class Settings:
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    db: str | None = None
    upstream: str = DEFAULT_UPSTREAM
    # TLS material for a tcp:// upstream (a remote dockerd with --tlsverify).
    upstream_ca: str | None = None
    upstream_cert: str | None = None
    upstream_key: str | None = None
    socket: str | None = DEFAULT_SOCKET
    # 0666 is safe: identity comes from the kernel (SO_PEERCRED), not from file modes.
    socket_mode: int = 0o666
    tls_listen: str | None = None
    # The listener's certificate, key and the CA its clients' certificates chain to;
    # default: the state dir's pki/ files. Set them to serve from elsewhere, e.g. the
    # Docker secrets of deploy/dockergate-stack.yml (no CA key needed on the nodes).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # uid 0 on the unix socket is the built-in admin unless this is turned off.
    root_is_admin: bool = True
    log_level: str = "info"
    log_json: bool = False
    # How long a SIGTERM waits for requests in flight before cutting long streams.
    shutdown_grace: float = 10.0
    # "auto": uvloop when installed; "asyncio" or "uvloop" to insist.
    event_loop: str = "auto"
    policies_dir: Path | None = None
    # Audit log (the ``audit`` table): rows older than this many days are deleted
    # (0 keeps them forever); reads are recorded only when ``audit_reads`` is on,
    # because ``docker ps`` loops would otherwise drown the writes that matter.
    audit_retention_days: int = 90
    audit_reads: bool = False
    # Refusals recorded one by one per caller and minute; the rest become one row.
    audit_refusals_per_minute: int = 120
    # Open connections one client (a unix uid, a certificate, a token's user) may
    # hold; admins are not counted. 0: no limit. Idle keep-alive connections last
    # 300 s: without a limit one member could hold every file descriptor.
    max_connections_per_client: int = 256
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def server_cert_path(self) -> Path:
        return Path(self.tls_cert) if self.tls_cert else self.pki_dir / "server-cert.pem"

    @property
    def server_key_path(self) -> Path:
        return Path(self.tls_key) if self.tls_key else self.pki_dir / "server-key.pem"

    @property
    def client_ca_path(self) -> Path:
        return Path(self.tls_ca) if self.tls_ca else self.pki_dir / "ca.pem"

    @property
    def clients_dir(self) -> Path:
        return self.state_dir / "clients"

    def db_url(self) -> str:
        if self.db:
            return self.db
        return f"sqlite:///{self.state_dir / 'dockergate.db'}"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    """Turn a YAML or environment value into the field's type, or explain why not."""
    default = getattr(Settings(), name)
    if value is None:
        return None
    try:
        if name == "socket_mode":
            if isinstance(value, int):
                return value
            return int(str(value), 8)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError(f"not an integer: {value!r}")
            return int(str(value).strip(), 10) if not isinstance(value, int) else value
        if isinstance(default, float):
            return float(value)
        if isinstance(default, Path) or name == "policies_dir":
            return Path(str(value))
        return str(value)
    except ValueError as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from exc


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings; ``overrides`` are CLI flags (None = not given)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a mapping of settings")
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(
                    f"config file {path}: unknown setting {key!r}; known: {', '.join(_FIELDS)}"
                )
            values[name] = _coerce(name, value)
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    return Settings(**values)
