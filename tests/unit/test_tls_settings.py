"""The TLS listener's files: the state dir's pki/ by default, or paths of their own
(the Swarm stack passes Docker secrets); serve names the one that is missing."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dockergate.cli import cli
from dockergate.config import load_settings

CLEAN_ENV: dict[str, str | None] = {
    f"DOCKERGATE_{k}": None
    for k in ("DB", "CONFIG", "STATE_DIR", "TLS_LISTEN", "TLS_CA", "TLS_CERT", "TLS_KEY")
}


def test_tls_files_default_to_the_state_dirs_pki() -> None:
    s = load_settings(environ={"DOCKERGATE_STATE_DIR": "/srv/gate"})
    assert s.client_ca_path == Path("/srv/gate/pki/ca.pem")
    assert s.server_cert_path == Path("/srv/gate/pki/server-cert.pem")
    assert s.server_key_path == Path("/srv/gate/pki/server-key.pem")


def test_tls_files_from_the_environment() -> None:
    s = load_settings(
        environ={
            "DOCKERGATE_TLS_CA": "/run/secrets/dockergate_ca",
            "DOCKERGATE_TLS_CERT": "/run/secrets/dockergate_server_cert",
            "DOCKERGATE_TLS_KEY": "/run/secrets/dockergate_server_key",
        }
    )
    assert s.client_ca_path == Path("/run/secrets/dockergate_ca")
    assert s.server_cert_path == Path("/run/secrets/dockergate_server_cert")
    assert s.server_key_path == Path("/run/secrets/dockergate_server_key")


def test_serve_names_the_missing_tls_file(tmp_path: Path) -> None:
    env = {**CLEAN_ENV, "DOCKERGATE_TLS_KEY": str(tmp_path / "nope.pem")}
    (tmp_path / "state" / "pki").mkdir(parents=True)
    (tmp_path / "state" / "pki" / "server-cert.pem").write_text("x")
    result = CliRunner().invoke(
        cli,
        [
            "--state-dir",
            str(tmp_path / "state"),
            "serve",
            "--socket",
            "",
            "--tls-listen",
            "127.0.0.1:0",
        ],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    assert f"no server key at {tmp_path / 'nope.pem'}" in result.output, result.output
