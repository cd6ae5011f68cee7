"""``dockergate user ...`` and ``dockergate db ...`` driven like an operator would.

Runs on SQLite and, when DOCKERGATE_TEST_PG_URL is set, on PostgreSQL too.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import NameOID

from dockergate.cli import cli
from dockergate.store import tokens
from dockergate.store.db import head_revision

# Settings from the environment of whoever runs the tests must not leak in.
CLEAN_ENV: dict[str, str | None] = {
    f"DOCKERGATE_{k}": None
    for k in ("DB", "CONFIG", "STATE_DIR", "POLICIES_DIR", "TLS_LISTEN", "ROOT_IS_ADMIN")
}

Run = Callable[..., Result]


@pytest.fixture
def fresh(base_args: list[str]) -> Run:
    """Run the CLI against a state dir that was never initialised."""

    def run(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return CliRunner().invoke(
            cli, [*base_args, *args], env={**CLEAN_ENV, **(env or {})}, catch_exceptions=False
        )

    return run


@pytest.fixture
def dg(fresh: Run) -> Run:
    """Run the CLI against an initialised state dir (CA, schema, admin)."""
    result = fresh("init")
    assert result.exit_code == 0, result.output
    return fresh


def fails(result: Result, message: str) -> None:
    """Exit status 1 and one line on stderr that says what is wrong."""
    assert result.exit_code == 1, result.output
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1, result.stderr


def users_json(dg: Run) -> dict[str, dict[str, object]]:
    result = dg("user", "list", "--json")
    assert result.exit_code == 0, result.output
    return {u["name"]: u for u in json.loads(result.stdout)}


# -- before init ---------------------------------------------------------------------------


def test_commands_before_init_say_what_to_do(fresh: Run, base_args: list[str]) -> None:
    result = fresh("user", "list")
    assert result.exit_code == 1
    assert "dockergate init" in result.stderr or "dockergate db upgrade" in result.stderr
    status = fresh("db", "status")
    assert status.exit_code == 1
    up = fresh("db", "upgrade")
    assert up.exit_code == 0, up.output
    assert f"upgraded from empty to {head_revision()}" in up.stdout
    assert "up to date" in fresh("db", "upgrade").stdout
    status = fresh("db", "status")
    assert status.exit_code == 0, status.output
    assert f"schema:     {head_revision()}" in status.stdout
    if "--db" in base_args:
        assert "***" in status.stdout, "the password must not be printed"
    fails(fresh("user", "cert", "x", "--out", "/tmp/never"), "run `dockergate init` first")


def test_init_registers_the_admin(dg: Run) -> None:
    users = users_json(dg)
    assert list(users) == ["admin"]
    assert users["admin"]["profile"] == "admin"
    assert users["admin"]["active_certs"] == 1
    again = dg("init")
    assert again.exit_code == 0
    assert "registered" not in again.stdout


# -- users ---------------------------------------------------------------------------------


def test_add_list_show(dg: Run) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    result = dg("user", "add", "alice", "--profile", "member", "--unix-user", "nobody")
    assert result.exit_code == 0, result.output
    assert f"unix uid {nobody}" in result.stdout
    assert dg("user", "add", "bob", "--profile", "intern", "--uid", "1234").exit_code == 0
    assert dg("user", "add", "carol", "--profile", "member").exit_code == 0
    table = dg("user", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "PROFILE", "STATUS", "UID", "CERTS", "TOKENS", "CREATED"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["alice"][1:4] == ["member", "enabled", str(nobody)]
    assert rows["bob"][1:4] == ["intern", "enabled", "1234"]
    assert rows["carol"][3] == "-"
    shown = dg("user", "show", "bob")
    assert shown.exit_code == 0
    assert "profile:   intern" in shown.stdout
    data = json.loads(dg("user", "show", "bob", "--json").stdout)
    assert data["unix_uid"] == 1234 and data["enabled"] is True and data["credentials"] == []


def test_add_errors(dg: Run) -> None:
    assert dg("user", "add", "alice", "--profile", "member", "--uid", "1001").exit_code == 0
    fails(dg("user", "add", "alice", "--profile", "member"), "user 'alice' already exists")
    fails(
        dg("user", "add", "bob", "--profile", "member", "--uid", "1001"),
        "uid 1001 is already registered to user 'alice'",
    )
    fails(dg("user", "add", "bob", "--profile", "wizard"), "unknown profile 'wizard'")
    fails(
        dg("user", "add", "bob", "--profile", "member", "--unix-user", "no-such-login-x"),
        "unknown unix user 'no-such-login-x'",
    )
    fails(
        dg("user", "add", "bob", "--profile", "member", "--unix-user", "nobody", "--uid", "5"),
        "not both",
    )
    fails(dg("user", "add", "Bob", "--profile", "member"), "invalid user name 'Bob'")
    assert list(users_json(dg)) == ["admin", "alice"]


def test_unknown_user_everywhere(dg: Run) -> None:
    for args in (
        ("show", "ghost"),
        ("set-profile", "ghost", "member"),
        ("disable", "ghost"),
        ("enable", "ghost"),
        ("remove", "ghost"),
        ("token", "ghost"),
        ("revoke", "ghost"),
    ):
        fails(dg("user", *args), "unknown user 'ghost'")


def test_set_profile_disable_enable_remove(dg: Run) -> None:
    dg("user", "add", "alice", "--profile", "member", "--uid", "1001")
    result = dg("user", "set-profile", "alice", "intern")
    assert result.exit_code == 0 and "member -> intern" in result.stdout
    fails(dg("user", "set-profile", "alice", "nope"), "unknown profile 'nope'")
    assert users_json(dg)["alice"]["profile"] == "intern"
    assert dg("user", "disable", "alice").exit_code == 0
    assert users_json(dg)["alice"]["enabled"] is False
    assert "disabled" in dg("user", "list").stdout
    assert dg("user", "enable", "alice").exit_code == 0
    assert users_json(dg)["alice"]["enabled"] is True
    assert dg("user", "remove", "alice").exit_code == 0
    fails(dg("user", "show", "alice"), "unknown user 'alice'")
    # the uid is free again
    assert dg("user", "add", "alice2", "--profile", "member", "--uid", "1001").exit_code == 0


def test_profiles_come_from_the_policies_dir(dg: Run, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "ops.yaml").write_text("description: ops\n")
    env = {"DOCKERGATE_POLICIES_DIR": str(policies)}
    assert dg("user", "add", "olga", "--profile", "ops", env=env).exit_code == 0
    result = dg("user", "add", "mia", "--profile", "member", env=env)
    fails(result, "unknown profile 'member'")
    assert "known profiles: ops" in result.stderr


# -- credentials -----------------------------------------------------------------------------


def test_cert_writes_a_bundle_and_prints_the_exports(dg: Run, tmp_path: Path) -> None:
    dg("user", "add", "alice", "--profile", "member")
    out = tmp_path / "bundle"
    result = dg("user", "cert", "alice", "--out", str(out), "--days", "30")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "export DOCKER_HOST=tcp://GATE_HOST:2376",
        "export DOCKER_TLS_VERIFY=1",
        f"export DOCKER_CERT_PATH={out}",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    serial = format(cert.serial_number, "x")
    assert serial in result.stderr
    [cred] = json.loads(dg("user", "show", "alice", "--json").stdout)["credentials"]
    assert cred["kind"] == "cert" and cred["cert_serial"] == serial
    assert cred["state"] == "active" and cred["expires_at"] is not None


def test_cert_uses_tls_listen_and_relative_out(
    dg: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dg("user", "add", "alice", "--profile", "member")
    monkeypatch.chdir(tmp_path)
    result = dg(
        "user", "cert", "alice", "--out", "rel", env={"DOCKERGATE_TLS_LISTEN": "gate.lan:2400"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "export DOCKER_HOST=tcp://gate.lan:2400"
    assert lines[2] == f"export DOCKER_CERT_PATH={tmp_path / 'rel'}"


def test_cert_for_unknown_user_writes_nothing(dg: Run, tmp_path: Path) -> None:
    out = tmp_path / "nothing"
    fails(dg("user", "cert", "ghost", "--out", str(out)), "unknown user 'ghost'")
    assert not out.exists()


def test_token_alone_on_stdout_with_hints_on_stderr(dg: Run, base_args: list[str]) -> None:
    dg("user", "add", "alice", "--profile", "member")
    result = dg("user", "token", "alice")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert tokens.parse(token) is not None
    assert json.dumps({"HttpHeaders": {"X-Dockergate-Token": token}}) in result.stderr
    assert "config.json" in result.stderr
    [cred] = json.loads(dg("user", "show", "alice", "--json").stdout)["credentials"]
    assert cred["kind"] == "token" and cred["token_id"] == token.split("_")[1]
    assert token not in json.dumps(cred)


def test_revoke_revokes_everything(dg: Run, tmp_path: Path) -> None:
    dg("user", "add", "alice", "--profile", "member")
    dg("user", "cert", "alice", "--out", str(tmp_path / "a"))
    dg("user", "cert", "alice", "--out", str(tmp_path / "b"))
    dg("user", "token", "alice")
    result = dg("user", "revoke", "alice")
    assert result.exit_code == 0
    assert "revoked 2 certificate(s) and 1 token(s)" in result.stdout
    creds = json.loads(dg("user", "show", "alice", "--json").stdout)["credentials"]
    assert [c["state"] for c in creds] == ["revoked"] * 3
    row = next(r for r in dg("user", "list").stdout.splitlines() if r.startswith("alice"))
    assert row.split()[4:6] == ["0", "0"]
    assert "REVOKED" in dg("user", "show", "alice").stdout


def test_real_entry_point_prints_only_the_token(tmp_path: Path) -> None:
    """Through ``python -m dockergate``, as `TOKEN=$(dockergate user token x)` would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERGATE_")}
    base = [sys.executable, "-m", "dockergate", "--state-dir", str(tmp_path)]
    subprocess.run([*base, "init"], check=True, env=env, capture_output=True)
    subprocess.run([*base, "user", "add", "alice", "--profile", "member"], check=True, env=env)
    proc = subprocess.run(
        [*base, "user", "token", "alice"], check=True, env=env, capture_output=True, text=True
    )
    assert tokens.parse(proc.stdout.strip()) is not None
    assert proc.stdout.count("\n") == 1
    bad = subprocess.run(
        [*base, "user", "add", "bob", "--profile", "nope"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: unknown profile 'nope'")


@pytest.mark.parametrize(
    "url", ["nonsense", "postgresql://u:secret@h:notaport/db", "mysql://u:secret@h/db"]
)
def test_bad_database_urls_are_one_line_errors(tmp_path: Path, url: str) -> None:
    for args in (("user", "list"), ("db", "status"), ("db", "upgrade")):
        result = CliRunner().invoke(
            cli, ["--state-dir", str(tmp_path), "--db", url, *args], env=CLEAN_ENV
        )
        fails(result, "cannot use the database")
        assert "secret" not in result.output
